//! The embedded MQTT broker: rumqttd's router behind our own front.
//!
//! Clients never reach rumqttd's network code. Our front accepts TCP and TLS, checks
//! CONNECT against the store, applies each account's topic ACL and per-client limits, and
//! feeds every client through an in-process link into rumqttd's router, which does the
//! routing, QoS and retained messages. There is no internal port to bypass and no second
//! network hop. See docs/protocol.md for what clients may do and why.

pub mod auth;
pub mod codec;
pub mod connection;
pub mod devices;
pub mod feeder;
pub mod metrics;
pub mod mirror;
pub mod session;

use crate::config::MqttConfig;
use crate::domain::session::SessionPolicy;
use crate::engine::Engine;
use auth::Authenticator;
use metrics::BrokerMetrics;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

type Link = (LinkTx, LinkRx, Notification);
/// Makes a client's in-process link (blocks until the router answers).
type LinkFactory = Box<dyn Fn(&str, bool) -> Result<Link, String> + Send + Sync>;

/// Per-client limits, from `[mqtt]`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_packet_size: usize,
    pub max_connections: usize,
    pub publish_rate: u32,
    pub publish_burst: u32,
    pub connect_timeout: Duration,
    pub limits: session::Limits,
}

impl Settings {
    pub fn from_config(c: &MqttConfig) -> Self {
        Self {
            max_packet_size: c.max_packet_size,
            max_connections: c.max_connections,
            publish_rate: c.publish_rate,
            publish_burst: c.publish_burst,
            connect_timeout: c.connect_timeout.unsigned_abs(),
            limits: session::Limits {
                max_subscriptions: c.max_subscriptions,
                ..session::Limits::default()
            },
        }
    }
}

/// What every connection task shares.
pub struct Shared {
    links: LinkFactory,
    auth: Authenticator,
    registry: Arc<Registry>,
    pub metrics: Arc<BrokerMetrics>,
    settings: Settings,
    feeder: feeder::Feeder,
}

/// Open connections by account, so a revocation can end them at once.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    total: usize,
    next: u64,
    by_account: HashMap<String, HashMap<u64, Arc<Notify>>>,
}

/// A connection's place in the registry; dropping it frees the place.
pub struct Ticket {
    registry: Arc<Registry>,
    account: String,
    id: u64,
    kill: Arc<Notify>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(self: &Arc<Self>, account: &str, max: usize) -> Option<Ticket> {
        let mut inner = self.lock();
        if inner.total >= max {
            return None;
        }
        inner.total += 1;
        inner.next += 1;
        let id = inner.next;
        let kill = Arc::new(Notify::new());
        inner
            .by_account
            .entry(account.to_owned())
            .or_default()
            .insert(id, kill.clone());
        Some(Ticket {
            registry: self.clone(),
            account: account.to_owned(),
            id,
            kill,
        })
    }

    /// End every connection of `account`.
    pub fn revoke(&self, account: &str) {
        if let Some(conns) = self.lock().by_account.get(account) {
            tracing::info!(
                account,
                connections = conns.len(),
                "closing MQTT connections of a revoked account"
            );
            for kill in conns.values() {
                // Stores a permit if the connection is not waiting right now.
                kill.notify_one();
            }
        }
    }
}

impl Ticket {
    /// Unique per connection (from 1; the controller's own link is 0).
    fn id(&self) -> u64 {
        self.id
    }

    async fn revoked(&self) {
        self.kill.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(conns) = inner.by_account.get_mut(&self.account) {
            conns.remove(&self.id);
            if conns.is_empty() {
                inner.by_account.remove(&self.account);
            }
        }
    }
}

/// `LinkTx::send` is an async fn that never awaits (it blocks on the router's channel, only
/// while that is full); this drives such a future once.
pub(crate) fn block_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// rumqttd's router, sized for a 1 GB box. Every distinct topic gets an in-memory log of
/// at most `max_segment_size × max_segment_count` bytes; messages are small (states,
/// acks, plug readings) so 8 KiB × 2 holds dozens per topic, and 1,000 stations with six
/// topics each stay under 100 MiB in the worst case.
pub fn router_config(max_connections: usize) -> RouterConfig {
    RouterConfig {
        // Our front enforces mqtt.max-connections; rumqttd's limit counts the internal
        // links too, so it only needs headroom.
        max_connections: max_connections + 16,
        max_outgoing_packet_count: 200,
        max_segment_size: 8 * 1024,
        max_segment_count: 2,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// A running broker.
pub struct Broker {
    /// Where each listener is bound (port 0 resolved), plain first.
    pub plain: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The plug drivers' link, until taken with [`Broker::take_devices`].
    devices: Option<devices::DeviceLink>,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("the MQTT router did not start: {0}")]
    Router(String),
    #[error("{0}")]
    Store(String),
}

impl Broker {
    /// Start the router, republish every retained state from the store, then open the
    /// listeners (in that order, so no client sees a broker without its retained state).
    pub async fn start(
        config: &MqttConfig,
        engine: Engine,
        policy: SessionPolicy,
        tls: Option<TlsAcceptor>,
        stop: watch::Receiver<bool>,
    ) -> Result<Broker, BrokerError> {
        let router_tx = Router::new(0, router_config(config.max_connections)).spawn();
        let links: LinkFactory = Box::new(move |id: &str, clean: bool| {
            LinkBuilder::new(id, router_tx.clone())
                .clean_session(clean)
                // Without it a publish to a topic nobody subscribes to drops the publisher.
                .dynamic_filters(true)
                .build()
                .map_err(|e: LinkError| e.to_string())
        });
        let store = engine
            .store()
            .map_err(|e| BrokerError::Store(e.to_string()))?;
        let feeder = feeder::Feeder::spawn().map_err(|e| BrokerError::Router(e.to_string()))?;
        let shared = Arc::new(Shared {
            links,
            auth: Authenticator::new(store),
            registry: Arc::new(Registry::default()),
            metrics: Arc::new(BrokerMetrics::default()),
            settings: Settings::from_config(config),
            feeder: feeder.clone(),
        });
        metrics::install(shared.metrics.clone());
        let links = shared.clone();
        let (mut tx, rx, _) =
            tokio::task::spawn_blocking(move || (links.links)("venued-controller", true))
                .await
                .map_err(|e| BrokerError::Router(e.to_string()))?
                .map_err(BrokerError::Router)?;
        for filter in mirror::SUBSCRIPTIONS {
            tx.subscribe(filter)
                .map_err(|e| BrokerError::Router(e.to_string()))?;
        }
        let stopped = |_| BrokerError::Router("the router feeder stopped".into());
        feeder
            .register(mirror::CONTROLLER_KEY, tx)
            .await
            .map_err(stopped)?;
        let links = shared.clone();
        let (devices_tx, devices_rx, _) =
            tokio::task::spawn_blocking(move || (links.links)(devices::CLIENT_ID, true))
                .await
                .map_err(|e| BrokerError::Router(e.to_string()))?
                .map_err(BrokerError::Router)?;
        feeder
            .register(devices::DEVICES_KEY, devices_tx)
            .await
            .map_err(stopped)?;
        let devices = devices::DeviceLink::new(feeder.clone(), devices_rx);
        let retry = mirror::Retry {
            base: config.command_retry.unsigned_abs(),
            attempts: config.command_attempts,
        };
        // Before subscribing: anything committed in between is read back from the store.
        let seen = engine.snapshot().seq;
        let events = engine.subscribe();
        let mut controller = mirror::Controller::new(
            feeder.clone(),
            rx,
            engine.clone(),
            policy,
            retry,
            shared.metrics.unhealthy_agents.clone(),
        );
        controller.publish_status(true).await;
        controller.publish_all().await;
        // Handed to the router before any client can connect (its queue is FIFO).
        feeder.sync().await.map_err(stopped)?;
        let mut tasks = vec![tokio::spawn(mirror::run(
            controller,
            events,
            shared.registry.clone(),
            stop.clone(),
            seen,
        ))];

        let mut broker = Broker {
            plain: Vec::new(),
            tls: Vec::new(),
            tasks: Vec::new(),
            devices: Some(devices),
        };
        for addr in &config.listen {
            let listener = bind(*addr, "mqtt.listen").await?;
            broker.plain.push(listener.local_addr().unwrap_or(*addr));
            tasks.push(tokio::spawn(accept(
                listener,
                shared.clone(),
                None,
                stop.clone(),
            )));
        }
        if let Some(acceptor) = tls {
            for addr in &config.tls_listen {
                let listener = bind(*addr, "mqtt.tls-listen").await?;
                broker.tls.push(listener.local_addr().unwrap_or(*addr));
                tasks.push(tokio::spawn(accept(
                    listener,
                    shared.clone(),
                    Some(acceptor.clone()),
                    stop.clone(),
                )));
            }
        }
        broker.tasks = tasks;
        Ok(broker)
    }

    /// The plug drivers' in-process link (`crate::devices::mqtt::MqttPlugs::start` takes
    /// it); `None` once taken. Untaken, it subscribes to nothing and costs nothing.
    pub fn take_devices(&mut self) -> Option<devices::DeviceLink> {
        self.devices.take()
    }

    /// Wait for the listeners and the mirror to stop (after `stop` was signalled).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Bind { addr, key, source })
}

async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let secure = tls.is_some();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = secure, "mqtt listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "mqtt accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match &tls {
            None => {
                tokio::spawn(connection::serve(shared, stream, peer, false));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let timeout = shared.settings.connect_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection::serve(shared, tls, peer, true).await,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "MQTT TLS handshake failed")
                        }
                        Err(_) => tracing::info!(%peer, "MQTT TLS handshake timed out"),
                    }
                });
            }
        }
    }
}
