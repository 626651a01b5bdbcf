//! `venued serve`: open the store, start the engine, serve the control socket and the
//! network listeners, and shut all of it down cleanly on SIGTERM or SIGINT.

use crate::clock::SystemClock;
use crate::config::Config;
use crate::engine::Engine;
use crate::store::StoreLocation;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(config: Config) -> Result<(), String> {
    // Catch SIGTERM/SIGINT before anything else: one arriving during startup is kept and
    // leads to the same clean stop once the listeners are up.
    let mut signals = StopSignals::install()?;
    let clock = Arc::new(SystemClock::new(config.clock.trust));
    let plug_clock: Arc<dyn crate::clock::Clock> = clock.clone();
    let location = StoreLocation::Dir(config.data.dir.clone());
    let (options, engine_config) = (super::store_options(&config), super::engine_config(&config));
    let engine =
        tokio::task::spawn_blocking(move || Engine::start(location, options, engine_config, clock))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let broker_stop = stop_rx.clone();
    let reconciler_stop = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let identity = if config.tls.https_listen.is_empty() && config.mqtt.tls_listen.is_empty() {
        None
    } else {
        Some(tls_identity(&config).await?)
    };
    // The broker republishes every retained station state before its listeners open.
    let mut broker = crate::broker::Broker::start(
        &config.mqtt,
        engine.clone(),
        config.session_policy(),
        identity.clone().map(|(tls, _, _)| {
            // HTTPS offers ALPN http/1.1; an MQTT client offering its own must not fail.
            let mut mqtt = (*tls).clone();
            mqtt.alpn_protocols.clear();
            tokio_rustls::TlsAcceptor::from(Arc::new(mqtt))
        }),
        broker_stop,
    )
    .await
    .map_err(|e| e.to_string())?;
    // Console stations: plugs, router entries and standby actions follow the engine;
    // plugs with an MQTT identity push their state through the broker's device link.
    let settings = crate::enforce::Settings::from(&config.consoles);
    let mqtt = match broker.take_devices() {
        Some(link) => crate::devices::mqtt::MqttPlugs::start(
            link,
            plug_clock,
            &engine.snapshot().state.devices,
            settings.device_timeout,
        )
        .await
        .inspect_err(
            |e| tracing::warn!(error = %e, "plug MQTT hub did not start; polling over HTTP only"),
        )
        .ok(),
        None => None,
    };
    let reconciler = crate::enforce::spawn(engine.clone(), settings, mqtt, reconciler_stop);
    let mqtt_urls: Vec<String> = broker
        .plain
        .iter()
        .map(|a| format!("mqtt://{a}"))
        .chain(broker.tls.iter().map(|a| format!("mqtts://{a}")))
        .collect();

    // What enrollment hands to agents: the CA to pin and where MQTT over TLS listens.
    let box_ca = identity.as_ref().map(|(_, pem, fingerprint)| {
        Arc::new(crate::http::enrollment::BoxCa {
            pem: pem.clone(),
            fingerprint: fingerprint.clone(),
            mqtt_tls_ports: broker.tls.iter().map(|a| a.port()).collect(),
        })
    });

    // We hold the store's lock, so a socket file left behind is stale.
    let socket = config.socket_path();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot create the control socket {}: {e}", socket.display()))?;
    restrict_socket(&socket)?;
    // What `venued device provision` writes into plugs, from [consoles].
    let provision = Arc::new(crate::devices::provision::ProvisionSettings::from(
        &config.consoles,
    ));
    let mut servers = vec![tokio::spawn(crate::http::serve_socket(
        listener,
        engine.clone(),
        box_ca.clone(),
        provision.clone(),
        stopped(),
    ))];

    let mut http_urls = Vec::new();
    // One login table for every network listener.
    let auth = crate::http::auth::Auth::new(crate::http::auth::AuthConfig::default());
    let setup_file = config.data.dir.join(SETUP_TOKEN_FILE);
    let setup_token =
        if engine.snapshot().state.users.is_empty() {
            Some(auth.enable_setup(&setup_file).map_err(|e| {
                format!("cannot write the setup token {}: {e}", setup_file.display())
            })?)
        } else {
            // An account exists (perhaps made with `venued user add`): the token is spent.
            let _ = std::fs::remove_file(&setup_file);
            None
        };
    // HTTPS first, so plain HTTP knows where to redirect and both can offer the CA.
    let mut https_ports = Vec::new();
    let mut ca_routes = None;
    if let Some((tls_config, ca_pem, fingerprint)) = identity
        .clone()
        .filter(|_| !config.tls.https_listen.is_empty())
    {
        ca_routes = Some(crate::http::ca_page::routes(ca_pem, fingerprint.clone()));
        for addr in &config.tls.https_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (tls.https-listen): {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(addr = %local, ca_fingerprint = %fingerprint, "https listening");
            http_urls.push(format!("https://{local}"));
            https_ports.push(local.port());
            let app = with_ca(
                crate::http::network_router(engine.clone(), auth.clone(), true),
                &ca_routes,
                &box_ca,
            )
            .layer(axum::Extension(provision.clone()));
            servers.push(tokio::spawn(crate::tls::serve_https(
                listener,
                tls_config.clone(),
                app,
                crate::http::stream::closing(stopped()),
            )));
        }
    }
    for addr in &config.http.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (http.listen): {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let app = match https_ports.first() {
            Some(port) if config.tls.redirect_http => {
                tracing::info!(addr = %local, "http listening (redirects to https)");
                crate::http::redirect_router(engine.clone(), *port)
            }
            _ => {
                tracing::info!(addr = %local, "http listening (API at /api/v1, login required)");
                with_ca(
                    crate::http::network_router(engine.clone(), auth.clone(), false),
                    &ca_routes,
                    &box_ca,
                )
                .layer(axum::Extension(provision.clone()))
            }
        };
        http_urls.push(format!("http://{local}"));
        servers.push(tokio::spawn(crate::http::serve_tcp(
            listener,
            app,
            stopped(),
        )));
    }

    // Advertised once every listener is up, so a PC never finds a closed port.
    let https_bound: Vec<_> = config
        .tls
        .https_listen
        .iter()
        .zip(&https_ports)
        .map(|(a, port)| std::net::SocketAddr::new(a.ip(), *port))
        .collect();
    let fingerprint = identity.as_ref().map(|(_, _, fp)| fp.as_str());
    let mdns =
        crate::discovery::Advertiser::start(&config.mdns, &https_bound, &broker.tls, fingerprint);

    let snap = engine.snapshot();
    tracing::info!(
        data = %config.data.dir.display(),
        socket = %socket.display(),
        stations = snap.state.stations.len(),
        active_sessions = snap.state.sessions.len(),
        clock_trusted = ?snap.clock.trusted,
        "venued {} ready",
        env!("CARGO_PKG_VERSION")
    );
    print_banner(
        &config,
        &socket,
        &http_urls,
        &mqtt_urls,
        setup_token.as_deref(),
    );

    signals.recv().await;
    tracing::info!("stop requested: finishing in-flight requests");
    if let Some(mdns) = mdns {
        mdns.stop().await;
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        for server in servers {
            if let Ok(Err(e)) = server.await {
                tracing::warn!(error = %e, "listener ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within {DRAIN_GRACE:?}; stopping anyway");
    }
    // The controller's retained status says offline before the engine stops.
    let _ = tokio::time::timeout(DRAIN_GRACE, broker.stopped()).await;
    let _ = tokio::time::timeout(DRAIN_GRACE, reconciler).await;
    engine.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("venued stopped cleanly");
    Ok(())
}

fn with_ca(
    app: axum::Router,
    ca: &Option<axum::Router>,
    box_ca: &Option<Arc<crate::http::enrollment::BoxCa>>,
) -> axum::Router {
    let app = match ca {
        Some(ca) => app.merge(ca.clone()),
        None => app,
    };
    match box_ca {
        Some(b) => app.layer(axum::Extension(b.clone())),
        None => app,
    }
}

/// The box's CA and server certificate (created at first start), or the operator's.
async fn tls_identity(
    config: &Config,
) -> Result<(Arc<rustls::ServerConfig>, String, String), String> {
    let mut names = crate::tls::SubjectNames::default();
    for name in &config.tls.names {
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => names.ips.push(ip),
            Err(_) => names.dns.push(name.clone()),
        }
    }
    // Every concrete address we listen on is a name clients may use.
    for addr in config
        .tls
        .https_listen
        .iter()
        .chain(&config.http.listen)
        .chain(&config.mqtt.tls_listen)
    {
        if !addr.ip().is_unspecified() {
            names.ips.push(addr.ip());
        }
    }
    let dir = config.data.dir.clone();
    let operator = config
        .tls
        .cert_file
        .clone()
        .zip(config.tls.key_file.clone());
    tokio::task::spawn_blocking(move || {
        let mut identity =
            crate::tls::load_or_create(&dir, &names).map_err(|e| format!("tls: {e}"))?;
        if identity.ca_created {
            tracing::info!(dir = %identity.paths.dir.display(), "created the box CA and server certificate");
        }
        if let Some((cert, key)) = operator {
            let op = crate::tls::load_operator(&cert, &key).map_err(|e| format!("tls: {e}"))?;
            identity.replace_server_cert(op);
            tracing::info!(cert = %cert.display(), "serving the operator's certificate");
        }
        let fingerprint = identity.ca_fingerprint();
        let server = crate::tls::server_config(&identity).map_err(|e| format!("tls: {e}"))?;
        Ok((server, identity.ca_cert_pem.clone(), fingerprint))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The one-time token that creates the owner over the network (mode 0600).
pub const SETUP_TOKEN_FILE: &str = "setup-token";

fn print_banner(
    config: &Config,
    socket: &std::path::Path,
    urls: &[String],
    mqtt: &[String],
    setup: Option<&str>,
) {
    println!("venued {} is running.", env!("CARGO_PKG_VERSION"));
    println!("  data directory : {}", config.data.dir.display());
    println!("  control socket : {}", socket.display());
    for url in urls {
        println!("  api            : {url}/api/v1  (probe: {url}/healthz)");
    }
    for url in mqtt {
        println!("  mqtt           : {url}");
    }
    let Some(token) = setup else { return };
    println!();
    println!("Finish setup: no staff account exists yet. In another terminal on this box:");
    println!(
        "  venued user add owner --role owner      (cargo run --release -- user add owner --role owner)"
    );
    if let Some(url) = urls.first() {
        let file = config.data.dir.join(SETUP_TOKEN_FILE);
        println!(
            "or once from the network with the setup token (also in {}):",
            file.display()
        );
        println!("  curl -X POST {url}/api/v1/setup -H 'content-type: application/json' \\");
        println!(
            "       -d '{{\"token\": \"{token}\", \"name\": \"owner\", \"password\": \"<10+ characters>\"}}'"
        );
    }
    println!("Then add a station and sell time:");
    println!("  venued station add pc-01 --name \"PC 01\" --kind pc");
    println!("  venued session start pc-01 30m");
}

fn restrict_socket(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict the control socket {}: {e}", path.display()))
}

struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| format!("cannot install signal handlers: {e}");
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}
