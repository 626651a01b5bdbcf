//! One client connection: CONNECT and its answer, then packets both ways between the
//! socket and the client's in-process link to rumqttd's router.

use super::auth::{Principal, Refusal};
use super::codec::{self, Frame, ReadError};
use super::feeder::Key;
use super::session::{ClientSession, Close, Out};
use super::{Shared, Ticket, block_once};
use bytes::BytesMut;
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{Connect, LastWill, Login, Packet, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read size per syscall; also the buffer an idle connection keeps (see `trim`).
const READ_CHUNK: usize = 1024;
/// Buffers grown past this by a burst are released once drained.
const KEEP_CAPACITY: usize = 4096;
/// Router notifications written per batch before the socket is flushed.
const MAX_BATCH: usize = 64;

/// Serve one accepted connection to its end. `secure`: it arrived over TLS.
pub async fn serve<S>(shared: Arc<Shared>, mut stream: S, peer: SocketAddr, secure: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut rbuf = BytesMut::new();
    let connect_timeout = shared.settings.connect_timeout;
    let first = tokio::time::timeout(
        connect_timeout,
        read_frame(&mut stream, &mut rbuf, shared.settings.max_packet_size),
    )
    .await;
    let frame = match first {
        Ok(Ok(Some(frame))) => frame,
        Ok(Err(ReadError::Protocol(e))) => {
            tracing::info!(%peer, error = %e, "MQTT CONNECT refused: not MQTT 3.1.1");
            shared.metrics.auth_failure(Refusal::Protocol);
            refuse(&mut stream, Refusal::Protocol).await;
            return;
        }
        Ok(Err(e)) => {
            shared.metrics.protocol_errors.fetch_add(1, Relaxed);
            tracing::info!(%peer, error = %e, "MQTT connection closed before CONNECT");
            return;
        }
        Ok(Ok(None)) => return,
        Err(_) => {
            tracing::debug!(%peer, "no MQTT CONNECT in time");
            return;
        }
    };
    let Packet::Connect(connect, _, will, _, login) = frame.packet else {
        shared.metrics.protocol_errors.fetch_add(1, Relaxed);
        tracing::info!(%peer, "MQTT connection did not start with CONNECT");
        return;
    };
    let client = match admit(&shared, &connect, will.as_ref(), login.as_ref(), secure).await {
        Ok(client) => client,
        Err((refusal, reason)) => {
            shared.metrics.auth_failure(refusal);
            let user = login.as_ref().map(|l| l.username.as_str()).unwrap_or("");
            tracing::warn!(%peer, user, client_id = connect.client_id, reason, code = refusal as u8, "MQTT connection refused");
            refuse(&mut stream, refusal).await;
            return;
        }
    };
    let Admitted {
        principal,
        internal_id,
        ticket,
    } = client;
    let links = shared.clone();
    let clean = connect.clean_session;
    let id = internal_id.clone();
    // Building a link blocks until the router answers.
    let link = tokio::task::spawn_blocking(move || (links.links)(&id, clean)).await;
    let (tx, rx, session_present) = match link {
        Ok(Ok((tx, rx, ack))) => match Option::<Packet>::from(ack) {
            Some(Packet::ConnAck(ack, _)) => (tx, rx, ack.session_present),
            _ => (tx, rx, false),
        },
        other => {
            tracing::warn!(%peer, account = principal.account, ok = other.is_ok(), "the broker's router refused the link");
            shared.metrics.auth_failure(Refusal::Unavailable);
            refuse(&mut stream, Refusal::Unavailable).await;
            return;
        }
    };
    let key = ticket.id();
    if shared.feeder.register(key, tx).await.is_err() {
        refuse(&mut stream, Refusal::Unavailable).await;
        return;
    }
    let mut wbuf = BytesMut::new();
    codec::connack(session_present, 0, &mut wbuf);
    if stream.write_all(&wbuf).await.is_err() {
        finish(&shared, key, Ending::Abrupt, None).await;
        return;
    }
    wbuf.clear();
    tracing::info!(%peer, account = principal.account, client_id = connect.client_id, secure, "MQTT client connected");
    shared.metrics.connected(principal.kind, 1);
    let kind = principal.kind;
    let account = principal.account.clone();
    let mut conn = Conn {
        shared: shared.clone(),
        session: ClientSession::new(principal.acl, shared.settings.limits),
        key,
        rx,
        rbuf,
        wbuf,
        keep_alive: (connect.keep_alive > 0)
            // 3.1.1 §3.1.2.10: one and a half times the keep-alive.
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
        bucket: Bucket::new(shared.settings.publish_rate, shared.settings.publish_burst),
        pause: None,
        unscheduled: false,
        held: 0,
    };
    let ending = conn.run(&mut stream, &ticket).await;
    let will = will.filter(|_| matches!(ending, Ending::Abrupt));
    tracing::info!(%peer, account, reason = ?ending, will = will.is_some(), "MQTT client disconnected");
    conn.account_buffers(0);
    shared.metrics.connected(kind, -1);
    drop(conn);
    finish(&shared, key, ending, will).await;
    drop(ticket);
    let _ = stream.shutdown().await;
}

struct Admitted {
    principal: Principal,
    internal_id: String,
    ticket: Ticket,
}

/// Everything decided before the client gets a link: credentials, client id, will, room.
async fn admit(
    shared: &Shared,
    connect: &Connect,
    will: Option<&LastWill>,
    login: Option<&Login>,
    secure: bool,
) -> Result<Admitted, (Refusal, &'static str)> {
    if connect.client_id.is_empty() && !connect.clean_session {
        return Err((Refusal::ClientId, "empty client id needs clean session"));
    }
    if connect.client_id.len() > 256 {
        return Err((Refusal::ClientId, "client id longer than 256 bytes"));
    }
    let principal = shared
        .auth
        .check(
            login.map(|l| (l.username.as_str(), l.password.as_str())),
            secure,
        )
        .await?;
    if let Some(will) = will {
        let topic = std::str::from_utf8(&will.topic).unwrap_or("");
        if !principal.acl.may_publish(topic) {
            return Err((
                Refusal::NotAuthorised,
                "will topic outside the account's ACL",
            ));
        }
    }
    let ticket = shared
        .registry
        .admit(&principal.account, shared.settings.max_connections)
        .ok_or((Refusal::Unavailable, "mqtt.max-connections reached"))?;
    let client_id = if connect.client_id.is_empty() {
        format!("auto-{}", crate::auth::random_hex(8))
    } else {
        connect.client_id.clone()
    };
    Ok(Admitted {
        internal_id: internal_client_id(&principal.account, &client_id),
        principal,
        ticket,
    })
}

/// The client id rumqttd sees: the account, then the client's own id. Two accounts can
/// never take over each other's session; account names never contain `|`. rumqttd
/// silently drops ids containing `+ $ # /`, so those are escaped.
pub fn internal_client_id(account: &str, client_id: &str) -> String {
    let mut id = String::with_capacity(account.len() + 1 + client_id.len());
    id.push_str(account);
    id.push('|');
    for c in client_id.chars() {
        match c {
            '%' => id.push_str("%25"),
            '+' => id.push_str("%2B"),
            '$' => id.push_str("%24"),
            '#' => id.push_str("%23"),
            '/' => id.push_str("%2F"),
            c => id.push(c),
        }
    }
    id
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, refusal: Refusal) {
    let mut buf = BytesMut::with_capacity(4);
    codec::connack(false, refusal as u8, &mut buf);
    let _ = stream.write_all(&buf).await;
    let _ = stream.shutdown().await;
}

/// Read until one whole packet has arrived.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some(frame) = codec::read(buf, max)? {
            return Ok(Some(frame));
        }
        buf.reserve(READ_CHUNK);
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

#[derive(Debug)]
enum Ending {
    /// DISCONNECT from the client.
    Clean,
    /// The network, a timeout, a violation or a revocation: the will is published.
    Abrupt,
    /// The router closed the link (another connection took over the client id).
    TakenOver,
}

/// Tell the router the client is gone, after its will if it has one. The will is
/// published by us because rumqttd never learned it (it could not be ACL-checked there).
async fn finish(shared: &Shared, key: Key, ending: Ending, will: Option<LastWill>) {
    let mut last = Vec::new();
    if matches!(ending, Ending::TakenOver) {
        // The router already dropped this link: only forget it.
        let _ = shared.feeder.close(key, last).await;
        return;
    }
    if let Some(will) = will {
        let topic = String::from_utf8_lossy(&will.topic);
        // QoS 2 would need a PUBREL round trip on a link about to close; QoS 1 keeps
        // the at-least-once promise to subscribers.
        let qos = if will.qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        if let Some(p) = codec::publish(&topic, &will.message, qos, will.retain, u16::MAX) {
            last.push(p);
        }
    }
    last.push(Packet::Disconnect(
        rumqttd::protocol::Disconnect {
            reason_code: rumqttd::protocol::DisconnectReasonCode::NormalDisconnection,
        },
        None,
    ));
    let _ = shared.feeder.close(key, last).await;
}

/// A token bucket of PUBLISH packets.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Take one token; the wait before the next read if the bucket went empty.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

struct Conn {
    shared: Arc<Shared>,
    session: ClientSession,
    /// This connection's link, as the feeder knows it.
    key: Key,
    rx: LinkRx,
    rbuf: BytesMut,
    wbuf: BytesMut,
    keep_alive: Option<Duration>,
    bucket: Bucket,
    /// Set when the client is over its publish rate: how long to stop reading.
    pause: Option<Duration>,
    /// The router paused this client's deliveries; it must be told when we are ready.
    unscheduled: bool,
    /// Buffer bytes last reported to the metrics.
    held: i64,
}

impl Conn {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        ticket: &Ticket,
    ) -> Ending {
        let mut out = Vec::new();
        let mut last_heard = Instant::now();
        // Packets the first read may have carried after CONNECT.
        if let Err(ending) = self.drain_client(&mut out) {
            return ending;
        }
        if let Err(ending) = self.flush(stream, &mut out).await {
            return ending;
        }
        loop {
            let deadline = self
                .keep_alive
                .map(|k| tokio::time::Instant::from_std(last_heard + k));
            self.trim();
            tokio::select! {
                read = read_some(stream, &mut self.rbuf) => {
                    if !read {
                        return Ending::Abrupt;
                    }
                    last_heard = Instant::now();
                    if let Err(ending) = self.drain_client(&mut out) {
                        let _ = self.flush(stream, &mut out).await;
                        return ending;
                    }
                }
                next = self.rx.next() => {
                    match next {
                        Ok(first) => {
                            if let Err(ending) = self.deliver(first, &mut out) {
                                return ending;
                            }
                        }
                        Err(_) => return Ending::TakenOver,
                    }
                }
                () = crate::runtime::sleep_until(deadline) => {
                    tracing::info!("MQTT client missed its keep-alive");
                    return Ending::Abrupt;
                }
                () = ticket.revoked() => {
                    tracing::info!("MQTT account revoked or its secret rotated: disconnecting");
                    return Ending::Abrupt;
                }
            }
            if let Err(ending) = self.flush(stream, &mut out).await {
                return ending;
            }
        }
    }

    /// Decode every complete packet read so far and route it.
    fn drain_client(&mut self, out: &mut Vec<Out>) -> Result<(), Ending> {
        let max = self.shared.settings.max_packet_size;
        loop {
            let frame = match codec::read(&mut self.rbuf, max) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(ReadError::TooBig(n)) => {
                    self.shared.metrics.oversize.fetch_add(1, Relaxed);
                    tracing::warn!(
                        bytes = n,
                        limit = max,
                        "MQTT packet over mqtt.max-packet-size refused; disconnecting the client"
                    );
                    return Err(Ending::Abrupt);
                }
                Err(e) => {
                    self.shared.metrics.protocol_errors.fetch_add(1, Relaxed);
                    tracing::info!(error = %e, "malformed MQTT packet; disconnecting the client");
                    return Err(Ending::Abrupt);
                }
            };
            let is_publish = matches!(frame.packet, Packet::Publish(..));
            if is_publish {
                self.shared.metrics.messages_in.fetch_add(1, Relaxed);
                if let Some(wait) = self.bucket.take(Instant::now()) {
                    self.shared.metrics.throttled.fetch_add(1, Relaxed);
                    tracing::debug!(?wait, "MQTT client over mqtt.publish-rate: slowing it down");
                    // Stop reading for a while (after this batch): TCP pushes back on
                    // the client.
                    self.pause = Some(wait);
                }
            }
            let before = self.session.tally;
            let result = self.session.from_client(frame, out);
            let after = self.session.tally;
            let m = &self.shared.metrics;
            m.publish_denied
                .fetch_add(after.publish_denied - before.publish_denied, Relaxed);
            m.subscribe_denied
                .fetch_add(after.subscribe_denied - before.subscribe_denied, Relaxed);
            match result {
                Ok(()) => {}
                Err(Close::Clean) => return Err(Ending::Clean),
                Err(Close::Violation(why)) => {
                    m.protocol_errors.fetch_add(1, Relaxed);
                    tracing::info!(why, "MQTT protocol violation; disconnecting the client");
                    return Err(Ending::Abrupt);
                }
            }
        }
    }

    /// One notification from the router, plus any already waiting behind it.
    fn deliver(&mut self, first: Option<Notification>, out: &mut Vec<Out>) -> Result<(), Ending> {
        let mut next = first;
        for _ in 0..MAX_BATCH {
            match next {
                None => {}
                Some(Notification::Unschedule) => self.unscheduled = true,
                Some(Notification::Disconnect(..)) => return Err(Ending::TakenOver),
                Some(n) => {
                    if let Some(p) =
                        Option::<Packet>::from(n).and_then(|p| self.session.from_router(p))
                    {
                        out.push(Out::Client(p));
                    }
                }
            }
            next = match block_once(self.rx.next()) {
                Some(Ok(Some(n))) => Some(n),
                Some(Err(_)) => return Err(Ending::TakenOver),
                _ => break,
            };
        }
        Ok(())
    }

    /// Send what is queued: to the router in one notification, to the client in one write.
    async fn flush<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        out: &mut Vec<Out>,
    ) -> Result<(), Ending> {
        let mut for_router = Vec::new();
        for o in out.drain(..) {
            match o {
                Out::Router(p) => for_router.push(p),
                Out::Client(p) => {
                    if matches!(p, Packet::Publish(..)) {
                        self.shared.metrics.messages_out.fetch_add(1, Relaxed);
                    }
                    if codec::write(p, &mut self.wbuf).is_err() {
                        return Err(Ending::Abrupt);
                    }
                }
            }
        }
        // Waits (without blocking a worker) only while the router is behind.
        if self
            .shared
            .feeder
            .packets(self.key, for_router)
            .await
            .is_err()
        {
            return Err(Ending::TakenOver);
        }
        if !self.wbuf.is_empty() {
            if stream.write_all(&self.wbuf).await.is_err() {
                return Err(Ending::Abrupt);
            }
            self.wbuf.clear();
        }
        if std::mem::take(&mut self.unscheduled) && self.rx.wake().await.is_err() {
            return Err(Ending::TakenOver);
        }
        if let Some(wait) = self.pause.take() {
            tokio::time::sleep(wait).await;
        }
        self.account_buffers(self.rbuf.capacity() + self.wbuf.capacity());
        Ok(())
    }

    /// Release buffers a burst grew, so an idle connection holds almost nothing.
    fn trim(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = BytesMut::new();
        }
    }

    fn account_buffers(&mut self, now: usize) {
        let now = now as i64;
        self.shared
            .metrics
            .buffer_bytes
            .fetch_add(now - self.held, Relaxed);
        self.held = now;
    }
}

/// Read more bytes; false at end of stream or on error.
async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> bool {
    buf.reserve(READ_CHUNK);
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}
