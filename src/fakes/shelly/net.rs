//! The I/O around a fake's pure state: its HTTP server, its MQTT client to venued's
//! broker, the task that fires its timers, and what faults do to each.
//!
//! Both generations plug their state in through [`Model`]; everything with a socket or
//! a sleep lives here, once.

use super::Fault;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Outgoing as Sent,
    Packet, QoS, SubscribeFilter,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest request body a fake reads (a script chunk fits; the firmware's own limit is
/// smaller).
const MAX_BODY: usize = 64 * 1024;

/// How a fake reaches venued's broker (as a `device:` account owning its topic roots).
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub broker: SocketAddr,
    pub username: String,
    pub password: String,
    /// MQTT keep-alive; the broker drops (and publishes the will of) a client silent for
    /// 1.5 times this.
    pub keep_alive: Duration,
    /// Wait between reconnection attempts (the firmware's `reconnect_timeout_min` is 2 s;
    /// shorter here so tests do not idle).
    pub reconnect_delay: Duration,
}

impl MqttConfig {
    pub fn new(broker: SocketAddr, username: &str, password: &str) -> Self {
        Self {
            broker,
            username: username.into(),
            password: password.into(),
            keep_alive: Duration::from_secs(60),
            reconnect_delay: Duration::from_millis(500),
        }
    }
}

/// One HTTP request as the pure handlers see it.
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpRequest {
    pub method: String,
    /// Path and query exactly as on the request line (what a Digest `uri` must match).
    pub target: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A request for `target` ("/path?query"), for the handlers' unit tests.
    #[cfg(test)]
    pub(crate) fn get(target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self {
            method: "GET".into(),
            target: target.into(),
            path: path.into(),
            query: query.into(),
            authorization: None,
            body: Vec::new(),
        }
    }
}

/// What a pure handler answers.
#[derive(Clone, Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub www_authenticate: Option<String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            www_authenticate: None,
            body: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain",
            www_authenticate: None,
            body: body.as_bytes().to_vec(),
        }
    }

    /// The fault "wrong answers": a 200 whose body is cut in half and followed by noise,
    /// so it is never valid JSON but still looks like the start of the real answer.
    pub(crate) fn garbled(self) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            www_authenticate: None,
            body: garble(&self.body),
        }
    }
}

pub(crate) fn garble(body: &[u8]) -> Vec<u8> {
    let mut out = body[..body.len() / 2].to_vec();
    out.extend_from_slice(b"\x00#garbage{{");
    out
}

/// One MQTT message a fake wants published.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

impl Outgoing {
    pub(crate) fn new(topic: String, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload: payload.into(),
            qos,
            retain,
        }
    }
}

/// Client id, will and subscriptions of one MQTT session.
#[derive(Clone, Debug)]
pub(crate) struct MqttSession {
    pub client_id: String,
    pub will: Outgoing,
    pub subscriptions: Vec<String>,
    pub qos: QoS,
}

/// A fake's state, driven by the servers and the timer task. Every method gets `now`;
/// state changes queue their MQTT messages in [`Model::outbox`].
pub(crate) trait Model: Send + 'static {
    /// Fire timers due by `now`, do periodic reports, and queue what changed.
    fn advance(&mut self, now: Instant);
    /// Queue notifications for whatever changed since they were last queued.
    fn report(&mut self, now: Instant);
    /// When [`Model::advance`] must run next on its own (a timer, a periodic report).
    fn next_deadline(&self) -> Option<Instant>;
    fn outbox(&mut self) -> &mut Vec<Outgoing>;
    fn http(&mut self, req: &HttpRequest, fault: &Fault, now: Instant) -> HttpResponse;
    fn mqtt_session(&self) -> MqttSession;
    /// Connected and subscribed: announce ourselves.
    fn mqtt_up(&mut self, now: Instant);
    fn mqtt_down(&mut self);
    fn mqtt_message(&mut self, topic: &str, payload: &[u8], fault: &Fault, now: Instant);
    /// Power lost and back: boot state, uptime from zero.
    fn power_cycle(&mut self, now: Instant);
}

/// The state plus what the I/O tasks watch. Every access goes through [`Core::with`].
pub(crate) struct Core<M> {
    model: Mutex<M>,
    /// Wakes the timer task after a change that may move the next deadline.
    wake: Notify,
    fault: watch::Sender<Fault>,
    /// Bumped by a power cycle: the MQTT session drops and starts again.
    boots: watch::Sender<u64>,
    /// Connected and subscribed to the broker.
    mqtt_ready: watch::Sender<bool>,
    out: Option<mpsc::UnboundedSender<Outgoing>>,
}

impl<M: Model> Core<M> {
    fn lock(&self) -> MutexGuard<'_, M> {
        // A panic under the lock only happens in a failing test; the state is still usable.
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on the state brought up to now, then send what it queued.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        let now = Instant::now();
        let r = {
            let mut m = self.lock();
            m.advance(now);
            let r = f(&mut m, now);
            m.report(now);
            self.flush(&mut m);
            r
        };
        self.wake.notify_one();
        r
    }

    /// Like [`Core::with`] without waking the timer task (the timer task itself).
    fn tick(&self) -> Option<Instant> {
        let mut m = self.lock();
        m.advance(Instant::now());
        self.flush(&mut m);
        m.next_deadline()
    }

    fn flush(&self, m: &mut M) {
        // Sent under the lock so messages keep the order of the changes.
        let out = std::mem::take(m.outbox());
        if let Some(tx) = &self.out {
            for o in out {
                let _ = tx.send(o);
            }
        }
    }

    pub(crate) fn fault(&self) -> Fault {
        self.fault.borrow().clone()
    }

    pub(crate) fn set_fault(&self, f: Fault) {
        self.fault.send_replace(f);
    }

    pub(crate) fn power_cycle(&self) {
        self.with(|m, now| m.power_cycle(now));
        self.boots.send_modify(|n| *n += 1);
    }

    pub(crate) fn mqtt_connected(&self) -> bool {
        *self.mqtt_ready.borrow()
    }

    pub(crate) async fn wait_mqtt(&self, connected: bool, within: Duration) -> bool {
        let mut rx = self.mqtt_ready.subscribe();
        tokio::time::timeout(within, rx.wait_for(|c| *c == connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A started fake: its core and the tasks serving it. Dropping it aborts the tasks.
pub(crate) struct Runner<M> {
    pub core: Arc<Core<M>>,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl<M: Model> Runner<M> {
    /// Bind 127.0.0.1:`port` (0: any) and start the HTTP server, the timer task and, with
    /// `mqtt`, the MQTT session.
    pub(crate) async fn start(
        model: M,
        port: u16,
        mqtt: Option<MqttConfig>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (out_tx, out_rx) = match mqtt {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let core = Arc::new(Core {
            model: Mutex::new(model),
            wake: Notify::new(),
            fault: watch::Sender::new(Fault::None),
            boots: watch::Sender::new(0),
            mqtt_ready: watch::Sender::new(false),
            out: out_tx,
        });
        let (stop, _) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(http_loop(core.clone(), listener, addr, stop.subscribe())),
            tokio::spawn(timer_loop(core.clone(), stop.subscribe())),
        ];
        if let (Some(cfg), Some(rx)) = (mqtt, out_rx) {
            tasks.push(tokio::spawn(mqtt_loop(
                core.clone(),
                cfg,
                rx,
                stop.subscribe(),
            )));
        }
        Ok(Self {
            core,
            addr,
            stop,
            tasks,
        })
    }

    /// Stop serving: the MQTT session ends with a DISCONNECT (no will), the port closes.
    pub(crate) async fn stop(mut self) {
        self.stop.send_replace(true);
        for t in self.tasks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl<M> Drop for Runner<M> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender (the runner is gone) counts as stopped too.
    let _ = stop.wait_for(|s| *s).await;
}

async fn timer_loop<M: Model>(core: Arc<Core<M>>, mut stop: watch::Receiver<bool>) {
    loop {
        // Registered before reading the deadline, so a change in between is not missed.
        let woken = core.wake.notified();
        let next = core.tick();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = woken => {}
            () = stopped(&mut stop) => return,
        }
    }
}

// ---- HTTP -------------------------------------------------------------------------------

async fn http_loop<M: Model>(
    core: Arc<Core<M>>,
    listener: TcpListener,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut fault = core.fault.subscribe();
    let mut listener = Some(listener);
    loop {
        let offline = matches!(*fault.borrow_and_update(), Fault::Offline);
        if offline {
            // Unplugged from the network: nothing listens, connections are refused.
            listener = None;
            tokio::select! {
                r = fault.changed() => if r.is_err() { return },
                () = stopped(&mut stop) => return,
            }
            continue;
        }
        let Some(l) = listener.as_ref() else {
            // Back online on the same address (retried: the port may linger briefly).
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "fake plug cannot listen again yet");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                        () = stopped(&mut stop) => return,
                    }
                }
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(core.clone(), stream, stop.clone()));
                }
            }
            r = fault.changed() => if r.is_err() { return },
            () = stopped(&mut stop) => return,
        }
    }
}

async fn serve_connection<M: Model>(
    core: Arc<Core<M>>,
    stream: TcpStream,
    mut stop: watch::Receiver<bool>,
) {
    let service = {
        let core = core.clone();
        service_fn(move |req| handle(core.clone(), req))
    };
    // The firmware closes after every answer (no keep-alive on Gen2's HTTP channel).
    let conn = http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let mut fault = core.fault.subscribe();
    let offline = fault.wait_for(|f| matches!(f, Fault::Offline));
    tokio::select! {
        _ = conn => {}
        _ = offline => {}
        () = stopped(&mut stop) => {}
    }
}

async fn handle<M: Model>(
    core: Arc<Core<M>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    match core.fault() {
        // Returning an error makes hyper drop the connection without an answer.
        Fault::Offline => return Err(std::io::Error::other("the plug is offline")),
        Fault::Slow(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return Ok(to_hyper(HttpResponse::text(413, "Payload Too Large"))),
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let request = HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        target,
        authorization: parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let fault = core.fault();
    if matches!(fault, Fault::Offline) {
        return Err(std::io::Error::other("the plug went offline"));
    }
    let answer = core.with(|m, now| m.http(&request, &fault, now));
    Ok(to_hyper(answer))
}

fn to_hyper(r: HttpResponse) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(r.content_type),
    );
    h.insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static("Mongoose/6.18"),
    );
    if let Some(v) = r
        .www_authenticate
        .and_then(|c| hyper::header::HeaderValue::from_str(&c).ok())
    {
        h.insert(hyper::header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `a=1&b=x%20y` → [("a","1"), ("b","x y")] (form encoding: `+` is a space).
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `t` can be published to (no wildcards, not empty, no NUL): a reply topic built
/// from a caller's `src` must be checked, or the broker would close our connection.
pub(crate) fn publishable(t: &str) -> bool {
    !t.is_empty() && t.len() <= 65_535 && !t.contains(['+', '#', '\0']) && !t.starts_with('$')
}

// ---- MQTT -------------------------------------------------------------------------------

/// What the polling task reports to the session task.
enum Link {
    Up,
    Subscribed,
    Down,
    Message(String, Vec<u8>),
}

enum End {
    /// Network gone (offline, power cut): the socket closes without DISCONNECT.
    Drop,
    Stop,
}

async fn mqtt_loop<M: Model>(
    core: Arc<Core<M>>,
    cfg: MqttConfig,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    mut stop: watch::Receiver<bool>,
) {
    let mut fault = core.fault.subscribe();
    let mut boots = core.boots.subscribe();
    loop {
        // While offline there is no connection at all; what the plug would say is lost.
        while matches!(*fault.borrow_and_update(), Fault::Offline) {
            tokio::select! {
                r = fault.changed() => if r.is_err() { return },
                Some(_) = out.recv() => {}
                () = stopped(&mut stop) => return,
            }
        }
        boots.borrow_and_update();
        let session = core.with(|m, _| m.mqtt_session());
        let mut opts = MqttOptions::new(
            session.client_id.clone(),
            cfg.broker.ip().to_string(),
            cfg.broker.port(),
        );
        opts.set_credentials(cfg.username.clone(), cfg.password.clone());
        opts.set_keep_alive(cfg.keep_alive);
        opts.set_clean_session(true);
        opts.set_last_will(LastWill::new(
            session.will.topic.clone(),
            session.will.payload.clone(),
            session.will.qos,
            session.will.retain,
        ));
        let (client, eventloop) = AsyncClient::new(opts, 256);
        let (tx, mut links) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(eventloop, tx, cfg.reconnect_delay));
        let abort = poller.abort_handle();
        let mut up = false;
        let end = loop {
            tokio::select! {
                link = links.recv() => match link {
                    Some(Link::Up) => {
                        let filters = session
                            .subscriptions
                            .iter()
                            .map(|t| SubscribeFilter::new(t.clone(), session.qos))
                            .collect::<Vec<_>>();
                        let _ = client.try_subscribe_many(filters);
                    }
                    Some(Link::Subscribed) => {
                        if !up {
                            up = true;
                            core.with(|m, now| m.mqtt_up(now));
                            core.mqtt_ready.send_replace(true);
                        }
                    }
                    Some(Link::Down) => {
                        if up {
                            up = false;
                            core.with(|m, _| m.mqtt_down());
                            core.mqtt_ready.send_replace(false);
                        }
                    }
                    Some(Link::Message(topic, payload)) => {
                        let f = core.fault();
                        if let Fault::Slow(d) = f {
                            let core = core.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(d).await;
                                let f = core.fault();
                                core.with(|m, now| m.mqtt_message(&topic, &payload, &f, now));
                            });
                        } else {
                            core.with(|m, now| m.mqtt_message(&topic, &payload, &f, now));
                        }
                    }
                    None => break End::Drop,
                },
                Some(o) = out.recv() => {
                    // Not connected: the firmware has no queue for status messages either.
                    if up && publishable(&o.topic) {
                        let _ = client.try_publish(o.topic, o.qos, o.retain, o.payload);
                    }
                }
                r = fault.changed() => {
                    if r.is_err() || matches!(*fault.borrow(), Fault::Offline) {
                        break End::Drop;
                    }
                }
                r = boots.changed() => {
                    let _ = r;
                    break End::Drop;
                }
                () = stopped(&mut stop) => break End::Stop,
            }
        };
        if up {
            core.with(|m, _| m.mqtt_down());
            core.mqtt_ready.send_replace(false);
        }
        match end {
            End::Drop => {
                // Dropping the event loop closes the socket with no DISCONNECT: the broker
                // sees the connection die and publishes our will.
                abort.abort();
                let _ = poller.await;
                // A plug takes a while to boot and find Wi-Fi before it reconnects; an
                // instant reconnect would also race the broker's view of the old
                // connection (a takeover rather than a dropped connection).
                tokio::time::sleep(cfg.reconnect_delay).await;
            }
            End::Stop => {
                let _ = client.try_disconnect();
                if tokio::time::timeout(Duration::from_secs(2), poller)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
                return;
            }
        }
    }
}

async fn poll(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Link>, delay: Duration) {
    let mut leaving = false;
    loop {
        let link = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                Some(Link::Up)
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => Some(Link::Subscribed),
            Ok(Event::Incoming(Packet::Publish(p))) => {
                Some(Link::Message(p.topic.clone(), p.payload.to_vec()))
            }
            Ok(Event::Outgoing(Sent::Disconnect)) => {
                leaving = true;
                None
            }
            Ok(_) => None,
            Err(e) => {
                if leaving {
                    return;
                }
                tracing::debug!(error = %e, "fake plug lost its MQTT connection");
                if tx.send(Link::Down).is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
                None
            }
        };
        if let Some(link) = link
            && tx.send(link).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("turn=on&timer=1.5&name=a%20b+c&flag&"),
            vec![
                ("turn".into(), "on".into()),
                ("timer".into(), "1.5".into()),
                ("name".into(), "a b c".into()),
                ("flag".into(), String::new()),
            ]
        );
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn reply_topics_are_checked() {
        assert!(publishable("plug/venued/rpc"));
        assert!(!publishable("plug/#/rpc"));
        assert!(!publishable("+/rpc"));
        assert!(!publishable("$SYS/rpc"));
        assert!(!publishable(""));
    }

    #[test]
    fn garbled_is_not_json() {
        let r = HttpResponse::json(200, &serde_json::json!({"ison": true, "source": "http"}));
        let g = r.garbled();
        assert_eq!(g.status, 200);
        assert!(serde_json::from_slice::<serde_json::Value>(&g.body).is_err());
    }
}
