//! A fake Tasmota plug on the network: its web server (`/cm`) on loopback and an MQTT
//! client to venued's broker, in front of the device model of [`device`].
//!
//! MQTT follows the default FullTopic `%prefix%/%topic%/`: the plug subscribes to
//! `cmnd/<topic>/#` (a command per topic, the payload is its parameter), answers on
//! `stat/<topic>/RESULT` (`STATUS<n>` for Status) plus `stat/<topic>/POWER` on every power
//! report, connects with the will `tele/<topic>/LWT` = `Offline` (retained) and publishes
//! `Online` (retained) once connected, and sends `tele/<topic>/STATE` and `SENSOR` every
//! TelePeriod. The rule engine covers the triggers venued's fail-safe uses (see
//! [`rules::Trigger`]); [`parse_rules`] is public so other code can check rule text.
//!
//! Faults ([`Fault`]) make the plug misbehave the way real ones do: unreachable (HTTP
//! refused, MQTT connection cut so the broker publishes the will, while the plug itself
//! keeps running its timers and rules), slow, or answering nonsense.
//!
//! Deviations from real firmware, deliberately: one relay only; the time zone is UTC;
//! MQTT is plain TCP; no group or fallback topic subscriptions; commands not modelled
//! (`SetOption…`, `Timer…`, `Topic <new>` and many more) answer `{"Command":"Unknown"}`
//! where firmware would act on them; rules know only the triggers of [`Trigger`] and
//! neither variables nor `IF`; the `Once` flag is stored, not enforced.

mod device;
pub mod rules;
mod web;

pub use device::{TasmotaSettings, pulse_duration, pulse_raw};
pub use rules::{Command, Rule, RuleError, Trigger, parse_rules, parse_rules_prefix};

use crate::clock::{Clock, SystemClock, TrustMode};
use bytes::Bytes;
use device::{Device, DeviceInit, MqttInfo, Now, Publish};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use web::Web;

/// How the plug misbehaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Off the network (Wi-Fi gone): HTTP connections are refused and the MQTT
    /// connection is cut without a DISCONNECT, so the broker publishes the retained will
    /// `tele/<t>/LWT` = `Offline`. The plug keeps running: timers, PulseTime and rules
    /// (`Mqtt#Disconnected`) go on. Clearing the fault reconnects.
    Offline,
    /// Every command waits this long before it runs and is answered (HTTP and MQTT; one
    /// at a time, like the single-threaded firmware). A client that gives up early still
    /// gets the command applied.
    Slow(Duration),
    /// Commands still take effect, but the answers are wrong: `/cm` answers 200 with an
    /// HTML page (what a captive portal or another device at that address sends), and
    /// every `stat/<t>/RESULT` says `{"Command":"Error"}`. `stat/<t>/POWER` and telemetry
    /// stay truthful.
    WrongAnswers,
}

/// Where the plug's MQTT client connects (plain TCP).
#[derive(Clone, Debug)]
pub struct TasmotaMqtt {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// Firmware default: `DVES_<last 6 MAC hex digits>`.
    pub client_id: Option<String>,
    /// Wait before reconnecting (`MqttRetry`, firmware default 10 s).
    pub retry: Duration,
    /// Firmware uses 30 s.
    pub keep_alive: Duration,
    /// How long a restart keeps the plug off MQTT (booting, joining Wi-Fi).
    pub boot_time: Duration,
}

impl TasmotaMqtt {
    /// Defaults for a broker at `host:port` with these credentials.
    pub fn new(host: &str, port: u16, username: &str, password: &str) -> Self {
        Self {
            host: host.to_owned(),
            port,
            username: username.to_owned(),
            password: password.to_owned(),
            client_id: None,
            retry: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
            boot_time: Duration::from_secs(1),
        }
    }
}

/// A plug to start.
#[derive(Clone)]
pub struct TasmotaConfig {
    /// MQTT `Topic`; default `tasmota_<last 6 MAC hex digits>`.
    pub topic: Option<String>,
    /// Default: random.
    pub mac: Option<[u8; 6]>,
    /// `WebPassword`: `/cm` then needs `user=admin&password=<it>`.
    pub web_password: Option<String>,
    /// None: no MQTT (System#Boot fires at boot).
    pub mqtt: Option<TasmotaMqtt>,
    /// Where the web server listens; default 127.0.0.1, any port.
    pub http_listen: SocketAddr,
    pub settings: TasmotaSettings,
    /// Rule sets already on the plug: (1..=3, text, enabled).
    pub rules: Vec<(u8, String, bool)>,
    /// The relay state saved before this power-up (PowerOnState 3 restores it).
    pub power: bool,
    /// Watts drawn while the relay is on.
    pub load_w: f64,
    /// Pause between Backlog commands (SetOption34, 200 ms).
    pub backlog_delay: Duration,
    /// Wall time for the `Time` fields; timers use tokio's clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for TasmotaConfig {
    fn default() -> Self {
        Self {
            topic: None,
            mac: None,
            web_password: None,
            mqtt: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            settings: TasmotaSettings::default(),
            rules: Vec::new(),
            power: false,
            load_w: 60.0,
            backlog_delay: Duration::from_millis(200),
            clock: Arc::new(SystemClock::new(TrustMode::Always)),
        }
    }
}

/// A running fake plug. Dropping it stops it (abruptly, like pulling the plug).
pub struct Tasmota {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    topic: String,
    tasks: Vec<JoinHandle<()>>,
}

struct Job {
    line: String,
    reply: Option<oneshot::Sender<String>>,
}

struct Shared {
    device: Mutex<Device>,
    origin: tokio::time::Instant,
    clock: Arc<dyn Clock>,
    fault: watch::Sender<Fault>,
    /// Bumped by every restart: the MQTT task drops its connection and starts over.
    restarts: watch::Sender<u64>,
    requests: Mutex<Vec<String>>,
    /// The MQTT client while connected: publishes go nowhere otherwise (firmware drops
    /// them too).
    mqtt: Mutex<Option<AsyncClient>>,
    /// Device state changed: the timer task looks at the next deadline again.
    wake: Notify,
    web_password: Option<String>,
    jobs: mpsc::UnboundedSender<Job>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panicking test thread; the state is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn now(&self) -> Now {
        Now {
            mono: self.origin.elapsed(),
            wall: self.clock.wall(),
        }
    }

    /// Run `f` on the device and send what it publishes, under the device lock so
    /// messages leave in the order the device made them.
    fn with_device<R>(&self, f: impl FnOnce(&mut Device, Now) -> (R, Vec<Publish>)) -> R {
        let now = self.now();
        let mut device = lock(&self.device);
        let (r, out) = f(&mut device, now);
        if let Some(client) = lock(&self.mqtt).as_ref() {
            for p in out {
                if let Err(e) = client.try_publish(p.topic, QoS::AtMostOnce, p.retain, p.payload) {
                    tracing::debug!(error = %e, "tasmota fake: publish dropped");
                }
            }
        }
        drop(device);
        self.wake.notify_one();
        r
    }

    /// Power-cycle: RAM state lost, relay by PowerOnState, MQTT connection cut and made
    /// again (a first connection, so System#Boot fires).
    fn restart(&self) {
        let now = self.now();
        // Nothing the device says while booting reaches the broker: it is not connected.
        *lock(&self.mqtt) = None;
        let _ = lock(&self.device).boot(now);
        self.restarts.send_modify(|n| *n += 1);
        self.wake.notify_one();
    }

    fn record(&self, what: String) {
        lock(&self.requests).push(what);
    }

    fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

impl Tasmota {
    /// Boot the plug: web server on `cfg.http_listen`, MQTT client if `cfg.mqtt` is set.
    pub async fn start(cfg: TasmotaConfig) -> io::Result<Self> {
        let mac = cfg.mac.unwrap_or_else(|| {
            let mut m: [u8; 6] = rand::random();
            m[0] = (m[0] & 0xFE) | 0x02; // unicast, locally administered
            m
        });
        let chip = format!("{:02X}{:02X}{:02X}", mac[3], mac[4], mac[5]);
        let topic = cfg
            .topic
            .clone()
            .unwrap_or_else(|| format!("tasmota_{chip}"));
        let client_id = cfg
            .mqtt
            .as_ref()
            .and_then(|m| m.client_id.clone())
            .unwrap_or_else(|| format!("DVES_{chip}"));
        let init = DeviceInit {
            topic: topic.clone(),
            mac,
            settings: cfg.settings.clone(),
            rules: cfg.rules.clone(),
            saved_power: cfg.power,
            load_w: cfg.load_w,
            mqtt: cfg.mqtt.as_ref().map(|m| MqttInfo {
                host: m.host.clone(),
                port: m.port,
                user: m.username.clone(),
                client: client_id.clone(),
            }),
            backlog_delay: cfg.backlog_delay,
            voltage: 230.0,
        };
        let origin = tokio::time::Instant::now();
        let first = Now {
            mono: Duration::ZERO,
            wall: cfg.clock.wall(),
        };
        let mut device = Device::new(init, first);
        let _ = device.boot(first);
        let listener = bind(cfg.http_listen)?;
        let http_addr = listener.local_addr()?;
        let (jobs, job_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            device: Mutex::new(device),
            origin,
            clock: cfg.clock.clone(),
            fault: watch::channel(Fault::None).0,
            restarts: watch::channel(0).0,
            requests: Mutex::new(Vec::new()),
            mqtt: Mutex::new(None),
            wake: Notify::new(),
            web_password: cfg.web_password.clone(),
            jobs,
        });
        let mut tasks = vec![
            tokio::spawn(timers(shared.clone())),
            tokio::spawn(worker(shared.clone(), job_rx)),
            tokio::spawn(http_server(shared.clone(), http_addr, listener)),
        ];
        if let Some(m) = cfg.mqtt {
            tasks.push(tokio::spawn(mqtt_client(
                shared.clone(),
                m,
                client_id,
                topic.clone(),
            )));
        }
        Ok(Self {
            shared,
            http_addr,
            topic,
            tasks,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The MQTT `Topic`, e.g. `tasmota_AABBCC`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn power_on(&self) -> bool {
        lock(&self.shared.device).power()
    }

    /// Watts drawn now: the load when on, 0 when off.
    pub fn power_w(&self) -> f64 {
        lock(&self.shared.device).power_w()
    }

    /// Energy counted since the plug was made, in Wh.
    pub fn energy_wh(&self) -> f64 {
        lock(&self.shared.device).total_wh()
    }

    /// The appliance now draws `watts` while powered (a PowerDelta report may follow).
    pub fn set_load_w(&self, watts: f64) {
        self.shared
            .with_device(|d, now| ((), d.set_load(watts, now)));
    }

    /// Someone pressed the plug's button: the relay toggles.
    pub fn press_button(&self) {
        self.shared.with_device(|d, now| ((), d.press_button(now)));
    }

    pub fn set_fault(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }

    /// Power-cycle the plug: see [`TasmotaSettings::power_on_state`]; RuleTimers, the
    /// Backlog and PulseTime in progress are lost, the MQTT connection is cut (the broker
    /// publishes the will) and made again.
    pub fn restart(&self) {
        self.shared.restart();
    }

    /// Rule1..3: (number, text, enabled).
    pub fn rules(&self) -> Vec<(u8, String, bool)> {
        lock(&self.shared.device).rules()
    }

    pub fn settings(&self) -> TasmotaSettings {
        lock(&self.shared.device).settings()
    }

    /// Time left on RuleTimer1..8 (None = stopped).
    pub fn rule_timers(&self) -> [Option<Duration>; 8] {
        let now = self.shared.now();
        lock(&self.shared.device).rule_timers(now)
    }

    /// Commands received, in order: `mqtt Power1 ON`, `http Status 8`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// Whether the MQTT session is up.
    pub fn mqtt_connected(&self) -> bool {
        lock(&self.shared.mqtt).is_some()
    }

    /// Stop everything (the broker sees the connection drop and publishes the will).
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Tasmota {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Listen on `addr` with SO_REUSEADDR, so an Offline fault can close the port and open
/// the same one again.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

async fn timers(shared: Arc<Shared>) {
    loop {
        let next = lock(&shared.device).next_deadline();
        let due = async {
            match next {
                Some(d) => tokio::time::sleep_until(shared.origin + d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = due => {}
            () = shared.wake.notified() => continue,
        }
        let restart = shared.with_device(|d, now| {
            let out = d.tick(now);
            (d.take_restart(), out)
        });
        if restart {
            shared.restart();
        }
    }
}

/// Runs received commands one at a time, as the firmware's main loop does.
async fn worker(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let fault = shared.fault();
        if let Fault::Slow(d) = fault {
            tokio::time::sleep(d).await;
        }
        let (reply, restart) = shared.with_device(|d, now| {
            let mut o = d.command(&job.line, now);
            if fault == Fault::WrongAnswers {
                for p in o
                    .publishes
                    .iter_mut()
                    .filter(|p| p.topic.ends_with("/RESULT"))
                {
                    p.payload = r#"{"Command":"Error"}"#.into();
                }
            }
            ((o.reply, o.restart), o.publishes)
        });
        if let Some(tx) = job.reply {
            let _ = tx.send(reply);
        }
        if restart {
            shared.restart();
        }
    }
}

// ---- HTTP -----------------------------------------------------------------------------

async fn http_server(shared: Arc<Shared>, addr: SocketAddr, first: TcpListener) {
    let mut fault = shared.fault.subscribe();
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => {
                if *fault.borrow_and_update() == Fault::Offline {
                    if fault.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                match bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "tasmota fake: cannot listen again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        // Dropping the set (on Offline) drops open connections too.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = l.accept() => if let Ok((tcp, _)) = accepted {
                    conns.spawn(http_connection(shared.clone(), tcp));
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                changed = fault.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *fault.borrow_and_update() == Fault::Offline {
                        break;
                    }
                }
            }
        }
    }
}

async fn http_connection(shared: Arc<Shared>, tcp: TcpStream) {
    let service = service_fn(move |req| http_request(shared.clone(), req));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .await;
}

fn response(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn http_request(
    shared: Arc<Shared>,
    req: Request<Body>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let post = req.method() == hyper::Method::POST;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let form = if post {
        match Limited::new(req.into_body(), 16 * 1024).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        }
    } else {
        String::new()
    };
    match web::route(post, &path, &query, &form, shared.web_password.as_deref()) {
        Web::Command(line) => {
            shared.record(format!("http {line}"));
            let (tx, rx) = oneshot::channel();
            let _ = shared.jobs.send(Job {
                line,
                reply: Some(tx),
            });
            let reply = rx.await.unwrap_or_else(|_| "{}".into());
            Ok(if shared.fault() == Fault::WrongAnswers {
                response(200, "text/html", web::WRONG_ANSWER.into())
            } else {
                response(200, web::JSON, reply)
            })
        }
        Web::Answer {
            status,
            content_type,
            body,
        } => {
            if let Fault::Slow(d) = shared.fault() {
                tokio::time::sleep(d).await;
            }
            Ok(response(status, content_type, body))
        }
    }
}

// ---- MQTT -----------------------------------------------------------------------------

enum Ending {
    /// Never got a CONNACK.
    Failed,
    /// Was connected, the connection broke (broker gone, kicked out).
    Lost,
    /// The Offline fault cut it.
    Offline,
    /// The plug restarted.
    Restart,
    /// The fake is going away.
    Stop,
}

async fn mqtt_client(shared: Arc<Shared>, cfg: TasmotaMqtt, client_id: String, topic: String) {
    let mut fault = shared.fault.subscribe();
    let mut restarts = shared.restarts.subscribe();
    loop {
        if *fault.borrow_and_update() == Fault::Offline {
            if fault.changed().await.is_err() {
                return;
            }
            continue;
        }
        restarts.borrow_and_update();
        let mut opts = MqttOptions::new(&client_id, &cfg.host, cfg.port);
        opts.set_credentials(&cfg.username, &cfg.password);
        opts.set_keep_alive(cfg.keep_alive);
        opts.set_clean_session(true);
        opts.set_last_will(LastWill::new(
            format!("tele/{topic}/LWT"),
            "Offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut events) = AsyncClient::new(opts, 256);
        let ending = session(
            &shared,
            &client,
            &mut events,
            &topic,
            &mut fault,
            &mut restarts,
        )
        .await;
        *lock(&shared.mqtt) = None;
        // Dropping the event loop closes the socket without a DISCONNECT: the broker
        // publishes the will.
        drop(events);
        drop(client);
        match ending {
            Ending::Stop => return,
            Ending::Restart => {
                tokio::select! {
                    () = tokio::time::sleep(cfg.boot_time) => {}
                    _ = fault.changed() => {}
                }
                continue;
            }
            Ending::Offline | Ending::Lost => {
                shared.with_device(|d, now| ((), d.mqtt_disconnected(now)));
            }
            Ending::Failed => {}
        }
        // MqttRetry, cut short by a change of fault or a restart.
        tokio::select! {
            () = tokio::time::sleep(cfg.retry) => {}
            _ = fault.changed() => {}
            _ = restarts.changed() => {}
        }
    }
}

async fn session(
    shared: &Shared,
    client: &AsyncClient,
    events: &mut EventLoop,
    topic: &str,
    fault: &mut watch::Receiver<Fault>,
    restarts: &mut watch::Receiver<u64>,
) -> Ending {
    let prefix = format!("cmnd/{topic}/");
    let mut connected = false;
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    if let Err(e) = client.try_subscribe(format!("{prefix}#"), QoS::AtMostOnce) {
                        tracing::warn!(error = %e, "tasmota fake: cannot subscribe");
                    }
                    connected = true;
                    *lock(&shared.mqtt) = Some(client.clone());
                    shared.with_device(|d, now| ((), d.mqtt_connected(now)));
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let Some(command) = p.topic.strip_prefix(&prefix) else { continue };
                    if command.is_empty() || command.contains('/') {
                        continue;
                    }
                    let payload = String::from_utf8_lossy(&p.payload);
                    let line = if payload.trim().is_empty() {
                        command.to_owned()
                    } else {
                        format!("{command} {payload}")
                    };
                    shared.record(format!("mqtt {line}"));
                    let _ = shared.jobs.send(Job { line, reply: None });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "tasmota fake: MQTT connection ended");
                    return if connected { Ending::Lost } else { Ending::Failed };
                }
            },
            // Only Offline ends the session: waking up for other fault changes would
            // cancel `poll` half-way for nothing.
            offline = fault.wait_for(|f| *f == Fault::Offline) => {
                return if offline.is_err() { Ending::Stop } else { Ending::Offline };
            }
            changed = restarts.changed() => {
                return if changed.is_err() { Ending::Stop } else { Ending::Restart };
            }
        }
    }
}
