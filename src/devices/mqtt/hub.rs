//! [`MqttPlugs`]: every MQTT plug over the broker's device link, in one task.
//!
//! It follows the device table ([`MqttPlugs::set_devices`]): subscribes to the topics of
//! each plug configured with an MQTT identity, unsubscribes from those of plugs removed,
//! and asks each new plug to report at once (the broker keeps no retained message across
//! a restart). Every message is decoded by the plug that owns its topic (`Wire::owns`);
//! what it tells is kept as that plug's [`Observed`] state and broadcast to whoever
//! listens ([`MqttPlugs::reports`]) — push, no polling.
//!
//! Commands wait for their outcome: a Gen2 RPC for its reply (matched by id, on our
//! own reply topic), Gen1 and Tasmota for a report showing the relay as asked. All are
//! bounded by the hub's timeout. Gen1 and Tasmota reports carry no correlation: a report
//! still on its way from before the command (Tasmota reports each switch twice, `RESULT`
//! and `POWER`) can confirm it, which only happens when the relay already was in the
//! asked state.
//!
//! Malformed messages on a plug's topics are counted per plug and logged at most once a
//! minute per plug (with how many were not logged), so a broken or hostile publisher
//! cannot flood the log; they change no state.

use super::{Command, Decoder, MqttParseError, Report, RpcReply, Wire};
use crate::broker::devices::{DeviceLink, DeviceTx, Incoming, LinkError};
use crate::clock::Clock;
use crate::devices::DeviceError;
use crate::devices::plug::TimerState;
use crate::domain::device::{Device, DeviceKind, DeviceName};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

/// How often one plug's parse errors are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Reports buffered per listener before a slow one misses some.
const REPORTS: usize = 256;

/// A plug's state as its messages last told it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// From its last will / birth message, or true once it answered or reported live.
    pub online: Option<bool>,
    pub relay: Option<bool>,
    pub power_w: Option<f64>,
    /// Who switched last, if the firmware says (see [`Report::source`]).
    pub source: Option<String>,
    /// A running flip-back or auto-off timer, as last reported.
    pub timer: Option<TimerState>,
    /// When the last report arrived (venued's clock).
    pub at: Timestamp,
}

impl Observed {
    fn apply(&mut self, r: &Report, live: bool, at: Timestamp) {
        if let Some(o) = r.online {
            self.online = Some(o);
        } else if live {
            // It just said something on its own: it is connected.
            self.online = Some(true);
        }
        if r.relay.is_some() {
            self.relay = r.relay;
        }
        if r.power_w.is_some() {
            self.power_w = r.power_w;
        }
        if r.source.is_some() {
            self.source.clone_from(&r.source);
        }
        if let Some(t) = &r.timer {
            self.timer.clone_from(t);
        }
        self.at = at;
    }
}

/// The MQTT side of every plug. Cheap to clone; all clones share one hub, which stops
/// when the last clone is dropped or the broker stops.
#[derive(Clone)]
pub struct MqttPlugs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MqttPlugs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttPlugs")
            .field("tag", &self.inner.tag)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

struct Inner {
    tx: DeviceTx,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    /// Makes our Gen2 RPC `src` unique to this hub.
    tag: String,
    next_id: AtomicU64,
    reports: broadcast::Sender<(DeviceName, Report)>,
    state: Mutex<State>,
    /// One `set_devices` at a time, so subscription changes never interleave.
    table: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<DeviceName, Entry>,
    /// Filters subscribed on the link now.
    subscribed: BTreeSet<String>,
    /// Gen2 requests waiting for their reply, by device and id.
    pending: HashMap<(DeviceName, u64), oneshot::Sender<RpcReply>>,
}

struct Entry {
    kind: DeviceKind,
    decoder: Option<Decoder>,
    observed: Option<Observed>,
    errors: Errors,
}

#[derive(Default)]
struct Errors {
    total: u64,
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Errors {
    /// Count one; whether to log it (and how many went unlogged before it).
    fn hit(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        match self.logged_at {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// What a command waits for.
enum Wait {
    /// The Gen2 reply with this id.
    Reply(u64),
    /// A report showing the relay in this state (`None`: in any state).
    Relay(Option<bool>),
}

impl MqttPlugs {
    /// Take the broker's device link (`Broker::take_devices`), subscribe to the plugs of
    /// `devices` and start the hub's task. Every command is bounded by `timeout`.
    pub async fn start(
        link: DeviceLink,
        clock: Arc<dyn Clock>,
        devices: &BTreeMap<DeviceName, Device>,
        timeout: Duration,
    ) -> Result<MqttPlugs, DeviceError> {
        let (tx, rx) = link.split();
        let inner = Arc::new(Inner {
            tx,
            clock,
            timeout,
            tag: format!("{:08x}", rand::random::<u32>()),
            next_id: AtomicU64::new(1),
            reports: broadcast::channel(REPORTS).0,
            state: Mutex::new(State::default()),
            table: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(run(Arc::downgrade(&inner), rx));
        let hub = MqttPlugs { inner };
        hub.set_devices(devices).await?;
        Ok(hub)
    }

    /// Follow the device table: subscribe to added plugs (and ask them to report),
    /// unsubscribe from removed ones. A plug whose MQTT identity did not change keeps its
    /// observed state.
    pub async fn set_devices(
        &self,
        devices: &BTreeMap<DeviceName, Device>,
    ) -> Result<(), DeviceError> {
        let _one = self.inner.table.lock().await;
        let (subscribe, unsubscribe, fresh) = {
            let mut st = self.inner.lock();
            let mut old = std::mem::take(&mut st.devices);
            let mut fresh = Vec::new();
            for (name, d) in devices {
                let wire = Wire::of(&d.kind, &self.inner.tag);
                let entry = match old.remove(name) {
                    Some(e) if e.decoder.as_ref().map(Decoder::wire) == wire.as_ref() => Entry {
                        kind: d.kind.clone(),
                        ..e
                    },
                    _ => {
                        if let Some(w) = &wire {
                            fresh.push((name.clone(), w.clone()));
                        }
                        Entry {
                            kind: d.kind.clone(),
                            decoder: wire.as_ref().map(Wire::decoder),
                            observed: None,
                            errors: Errors::default(),
                        }
                    }
                };
                st.devices.insert(name.clone(), entry);
            }
            st.pending.retain(|(name, _), _| devices.contains_key(name));
            let mut wanted = BTreeSet::new();
            for (name, e) in &st.devices {
                for f in e.decoder.iter().flat_map(|d| d.wire().subscriptions()) {
                    if !wanted.insert(f.clone()) {
                        tracing::warn!(device = %name, filter = f, "two devices share an MQTT topic: both get its messages");
                    }
                }
            }
            let subscribe: Vec<String> = wanted.difference(&st.subscribed).cloned().collect();
            let unsubscribe: Vec<String> = st.subscribed.difference(&wanted).cloned().collect();
            st.subscribed = wanted;
            (subscribe, unsubscribe, fresh)
        };
        for f in &subscribe {
            self.inner.tx.subscribe(f).await.map_err(link_error)?;
        }
        for f in &unsubscribe {
            self.inner.tx.unsubscribe(f).await.map_err(link_error)?;
        }
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            tracing::debug!(
                subscribed = subscribe.len(),
                unsubscribed = unsubscribe.len(),
                "MQTT plug subscriptions updated"
            );
        }
        // After the subscriptions (same FIFO to the router), so the answers are seen.
        for (name, wire) in fresh {
            let id = self.inner.next_id();
            if let Err(e) = self.publish(&wire.query(id)).await {
                tracing::warn!(device = %name, error = %e, "cannot ask a plug to report over MQTT");
            }
        }
        Ok(())
    }

    /// Every report from now on, by device. A listener that falls more than a few hundred
    /// behind gets `Lagged` and should read [`MqttPlugs::last`].
    pub fn reports(&self) -> broadcast::Receiver<(DeviceName, Report)> {
        self.inner.reports.subscribe()
    }

    /// What the plug's messages last told; `None` before its first report.
    pub fn last(&self, name: &DeviceName) -> Option<Observed> {
        self.inner.lock().devices.get(name)?.observed.clone()
    }

    /// Malformed messages seen on the plug's topics so far.
    pub fn parse_errors(&self, name: &DeviceName) -> u64 {
        self.inner
            .lock()
            .devices
            .get(name)
            .map_or(0, |e| e.errors.total)
    }

    /// The plug's MQTT identity (with our Gen2 `src`); `None` for devices without one.
    pub fn wire(&self, name: &DeviceName) -> Option<Wire> {
        Some(
            self.inner
                .lock()
                .devices
                .get(name)?
                .decoder
                .as_ref()?
                .wire()
                .clone(),
        )
    }

    /// Switch the plug's relay over MQTT; with `flip_back`, the plug switches it back by
    /// itself after that long (not on Gen1 over MQTT: a [`DeviceError::Config`], use
    /// HTTP). Returns once the plug confirmed: Gen2's RPC reply, or for Gen1 and Tasmota
    /// a report of the relay in the asked state; [`DeviceError::Timeout`] otherwise.
    pub async fn switch(
        &self,
        name: &DeviceName,
        on: bool,
        flip_back: Option<Duration>,
    ) -> Result<(), DeviceError> {
        let wire = self.plug_wire(name)?;
        let id = self.inner.next_id();
        let commands = wire.switch(on, flip_back, id)?;
        let wait = match wire {
            Wire::ShellyGen2 { .. } => Wait::Reply(id),
            _ => Wait::Relay(Some(on)),
        };
        self.exchange(name, &commands, wait).await
    }

    /// Ask the plug to report now and wait for its answer (Gen2: the `GetStatus` reply;
    /// Gen1, Tasmota: a relay report); what is known of it then.
    pub async fn query(&self, name: &DeviceName) -> Result<Observed, DeviceError> {
        let wire = self.plug_wire(name)?;
        let id = self.inner.next_id();
        let wait = match wire {
            Wire::ShellyGen2 { .. } => Wait::Reply(id),
            _ => Wait::Relay(None),
        };
        self.exchange(name, &wire.query(id), wait).await?;
        self.last(name)
            .ok_or_else(|| DeviceError::Malformed(name.to_string(), "answered no state".into()))
    }

    /// Publish a configured payload (an `mqtt_action` device: a console bridge, a Home
    /// Assistant script).
    pub async fn publish_action(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), DeviceError> {
        self.inner
            .tx
            .publish(topic, payload, retain)
            .await
            .map_err(link_error)
    }

    /// Run the `mqtt_action` device `name` as configured.
    pub async fn run_action(&self, name: &DeviceName) -> Result<(), DeviceError> {
        let kind = self
            .inner
            .lock()
            .devices
            .get(name)
            .map(|e| e.kind.clone())
            .ok_or_else(|| DeviceError::Config(format!("no device {name}")))?;
        let DeviceKind::MqttAction {
            topic,
            payload,
            retain,
        } = kind
        else {
            return Err(DeviceError::Config(format!(
                "{name} is a {} device, not an mqtt_action",
                kind.type_name()
            )));
        };
        self.publish_action(&topic, payload.as_bytes(), retain)
            .await
    }

    fn plug_wire(&self, name: &DeviceName) -> Result<Wire, DeviceError> {
        let st = self.inner.lock();
        let e = st
            .devices
            .get(name)
            .ok_or_else(|| DeviceError::Config(format!("no device {name}")))?;
        match &e.decoder {
            Some(d) => Ok(d.wire().clone()),
            None if e.kind.is_plug() => Err(DeviceError::Config(format!(
                "{name} has no MQTT identity (mqtt_id, mqtt_prefix or topic): it is reached over HTTP"
            ))),
            None => Err(DeviceError::Config(format!(
                "{name} is a {} device, not a plug",
                e.kind.type_name()
            ))),
        }
    }

    async fn publish(&self, commands: &[Command]) -> Result<(), DeviceError> {
        let batch: Vec<(&str, &[u8])> = commands
            .iter()
            .map(|c| (c.topic.as_str(), c.payload.as_slice()))
            .collect();
        self.inner
            .tx
            .publish_all(&batch, false)
            .await
            .map_err(link_error)
    }

    /// Publish `commands` and wait for what proves they were done.
    async fn exchange(
        &self,
        name: &DeviceName,
        commands: &[Command],
        wait: Wait,
    ) -> Result<(), DeviceError> {
        let timeout = self.inner.timeout;
        let deadline = Instant::now() + timeout;
        let timed_out = || DeviceError::Timeout(name.to_string(), timeout);
        match wait {
            Wait::Reply(id) => {
                let (tx, rx) = oneshot::channel();
                self.inner.lock().pending.insert((name.clone(), id), tx);
                let outcome = match self.publish(commands).await {
                    Ok(()) => tokio::time::timeout_at(deadline, rx).await,
                    Err(e) => {
                        self.inner.lock().pending.remove(&(name.clone(), id));
                        return Err(e);
                    }
                };
                self.inner.lock().pending.remove(&(name.clone(), id));
                match outcome {
                    Ok(Ok(reply)) => reply.outcome.map(drop).map_err(|e| match e.code {
                        429 => DeviceError::TooManyRequests(name.to_string()),
                        401 => DeviceError::Auth(name.to_string()),
                        code => DeviceError::Refused {
                            device: name.to_string(),
                            // Not HTTP: over MQTT there is no status, only the RPC code.
                            status: 0,
                            detail: format!("RPC error {code}: {}", e.message),
                        },
                    }),
                    // The device was removed meanwhile.
                    Ok(Err(_)) => Err(DeviceError::Config(format!("no device {name}"))),
                    Err(_) => Err(timed_out()),
                }
            }
            Wait::Relay(want) => {
                // Listen before publishing, so the answer cannot slip by.
                let mut reports = self.reports();
                self.publish(commands).await?;
                loop {
                    match tokio::time::timeout_at(deadline, reports.recv()).await {
                        Ok(Ok((n, r))) if n == *name => {
                            if r.relay.is_some() && (want.is_none() || r.relay == want) {
                                return Ok(());
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                            // Missed some: the state itself tells.
                            let seen = self.last(name).and_then(|o| o.relay);
                            if seen.is_some() && (want.is_none() || seen == want) {
                                return Ok(());
                            }
                        }
                        Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                            return Err(timed_out());
                        }
                    }
                }
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoned only by a panic elsewhere while holding it; the state is still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// One message: decoded by every plug owning its topic.
    fn on_message(&self, m: &Incoming) {
        let now = self.clock.wall();
        let mut out = Vec::new();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            for (name, e) in st.devices.iter_mut() {
                let Some(decoder) = e.decoder.as_mut() else {
                    continue;
                };
                match decoder.decode(&m.topic, &m.payload) {
                    Ok(Some(report)) => {
                        e.observed
                            .get_or_insert(Observed {
                                online: None,
                                relay: None,
                                power_w: None,
                                source: None,
                                timer: None,
                                at: now,
                            })
                            .apply(&report, !m.retained, now);
                        if let Some(reply) = &report.rpc
                            && let Some(waiting) = st.pending.remove(&(name.clone(), reply.id))
                        {
                            let _ = waiting.send(reply.clone());
                        }
                        out.push((name.clone(), report));
                    }
                    Ok(None) => {}
                    Err(err) => log_parse_error(name, &mut e.errors, &err),
                }
            }
        }
        for r in out {
            // No listener is fine.
            let _ = self.reports.send(r);
        }
    }
}

fn log_parse_error(name: &DeviceName, errors: &mut Errors, err: &MqttParseError) {
    if let Some(unlogged) = errors.hit(Instant::now()) {
        tracing::warn!(
            device = %name,
            error = %err,
            total = errors.total,
            not_logged_since_last = unlogged,
            "malformed MQTT message from a plug ignored (logged at most once a minute per plug)"
        );
    }
}

fn link_error(e: LinkError) -> DeviceError {
    match e {
        LinkError::Filter(_) | LinkError::Topic(_) | LinkError::Encode(_) => {
            DeviceError::Config(e.to_string())
        }
        LinkError::Stopped => DeviceError::Unreachable("the MQTT broker (stopped)".into()),
    }
}

/// The hub's task: every message from the link, until the broker or the last handle goes.
async fn run(hub: Weak<Inner>, mut rx: crate::broker::devices::DeviceRx) {
    while let Some(m) = rx.recv().await {
        let Some(inner) = hub.upgrade() else {
            return;
        };
        inner.on_message(&m);
    }
    tracing::info!("the MQTT plug link closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_logged_once_a_minute() {
        let mut e = Errors::default();
        let t0 = Instant::now();
        assert_eq!(e.hit(t0), Some(0));
        assert_eq!(e.hit(t0 + Duration::from_secs(1)), None);
        assert_eq!(e.hit(t0 + Duration::from_secs(59)), None);
        assert_eq!(e.hit(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(e.total, 4);
    }

    #[test]
    fn observed_keeps_what_a_report_does_not_say() {
        let at = Timestamp::UNIX_EPOCH;
        let mut o = Observed {
            online: None,
            relay: Some(true),
            power_w: Some(10.0),
            source: None,
            timer: None,
            at,
        };
        o.apply(
            &Report {
                power_w: Some(12.0),
                ..Report::default()
            },
            true,
            at,
        );
        assert_eq!(
            (o.online, o.relay, o.power_w),
            (Some(true), Some(true), Some(12.0))
        );
        o.apply(
            &Report {
                online: Some(false),
                ..Report::default()
            },
            true,
            at,
        );
        assert_eq!((o.online, o.relay), (Some(false), Some(true)));
        // A retained message may be old: it does not prove the plug is connected.
        o.apply(
            &Report {
                relay: Some(false),
                ..Report::default()
            },
            false,
            at,
        );
        assert_eq!((o.online, o.relay), (Some(false), Some(false)));
    }
}
