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
    let clock = Arc::new(SystemClock::new(config.clock.trust));
    let location = StoreLocation::Dir(config.data.dir.clone());
    let (options, engine_config) = (super::store_options(&config), super::engine_config(&config));
    let engine =
        tokio::task::spawn_blocking(move || Engine::start(location, options, engine_config, clock))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // We hold the store's lock, so a socket file left behind is stale.
    let socket = config.socket_path();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot create the control socket {}: {e}", socket.display()))?;
    restrict_socket(&socket)?;
    let mut servers = vec![tokio::spawn(crate::http::serve_socket(
        listener,
        engine.clone(),
        stopped(),
    ))];

    let mut http_urls = Vec::new();
    for addr in &config.http.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (http.listen): {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(addr = %local, "http listening (probes: /healthz, /readyz)");
        http_urls.push(format!("http://{local}"));
        servers.push(tokio::spawn(crate::http::serve_tcp(
            listener,
            engine.clone(),
            stopped(),
        )));
    }

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
    print_banner(&config, &socket, &http_urls, snap.state.users.is_empty());

    wait_for_signal().await?;
    tracing::info!("stop requested: finishing in-flight requests");
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
    engine.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("venued stopped cleanly");
    Ok(())
}

fn print_banner(config: &Config, socket: &std::path::Path, urls: &[String], no_users: bool) {
    println!("venued {} is running.", env!("CARGO_PKG_VERSION"));
    println!("  data directory : {}", config.data.dir.display());
    println!("  control socket : {}", socket.display());
    for url in urls {
        println!("  http           : {url}/healthz");
    }
    if no_users {
        println!();
        println!(
            "Finish setup: no staff account exists yet. In another terminal, create the owner:"
        );
        println!(
            "  venued user add owner --role owner      (cargo run --release -- user add owner --role owner)"
        );
        println!("Then add a station and sell time:");
        println!("  venued station add pc-01 --name \"PC 01\" --kind pc");
        println!("  venued session start pc-01 30m");
    }
}

fn restrict_socket(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict the control socket {}: {e}", path.display()))
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
