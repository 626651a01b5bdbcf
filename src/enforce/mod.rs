//! The reconciler of console stations: what each station's devices should do (from the
//! engine's state and the enforcement ladder) against what they report, converged with
//! retries and back-off.
//!
//! It runs as one task beside the engine and never blocks it: device calls run in their
//! own tasks and report back over a channel; what they did, and every disagreement
//! caught, is recorded as an event through the engine like any other change. At start
//! nothing is assumed about a device (retained MQTT messages are gone after a restart):
//! every relay and router entry is unknown, so the first pass asks or sets each one.
//!
//! Power readings live here, in memory; a sample of them is written to the store every
//! `consoles.power-sample-interval`.

pub mod drivers;
pub mod metrics;
pub mod track;

use crate::config::{ConsolesConfig, ResponsesConfig};
use crate::devices::mqtt::MqttPlugs;
use crate::domain::device::{Device, DeviceName};
use crate::domain::enforcement::{ActionOutcome, PowerSample, whole_watts};
use crate::domain::{Actor, Command, StationId};
use crate::engine::{Engine, Request};
use drivers::Drivers;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use track::{Alert, Op, Report, Timing, Track};

/// What the reconciler needs from the config.
#[derive(Clone, Debug)]
pub struct Settings {
    pub timing: Timing,
    pub device_timeout: Duration,
    pub poll_interval: Duration,
    pub power_sample_interval: Duration,
    pub responses: ResponsesConfig,
    pub commands: Arc<BTreeMap<String, crate::config::CommandConfig>>,
}

impl From<&ConsolesConfig> for Settings {
    fn from(c: &ConsolesConfig) -> Self {
        Self {
            timing: Timing {
                retry_min: c.retry_min.unsigned_abs(),
                retry_max: c.retry_max.unsigned_abs(),
                failsafe: c.failsafe.unsigned_abs(),
            },
            device_timeout: c.device_timeout.unsigned_abs(),
            poll_interval: c.poll_interval.unsigned_abs(),
            power_sample_interval: c.power_sample_interval.unsigned_abs(),
            responses: c.responses.clone(),
            commands: Arc::new(c.commands.clone()),
        }
    }
}

/// Plugs that push their state over MQTT are still polled over HTTP, this many times
/// more rarely: a check, not the channel.
const MQTT_POLL_EVERY: u64 = 6;

/// The next pushed report; pending forever without MQTT. A hub that fell behind skips
/// what it missed (the next poll catches up).
async fn recv_report(
    rx: &mut Option<tokio::sync::broadcast::Receiver<(DeviceName, crate::devices::mqtt::Report)>>,
) -> Option<(DeviceName, crate::devices::mqtt::Report)> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(r) => return Some(r),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "reconciler fell behind the plugs' MQTT reports");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return std::future::pending().await;
            }
        }
    }
}

/// A device call that finished.
enum Done {
    Op {
        station: StationId,
        op: Op,
        result: Result<Option<Report>, String>,
    },
    Poll {
        station: StationId,
        epoch: u64,
        result: Result<Report, String>,
    },
    Entry {
        station: StationId,
        epoch: u64,
        present: Result<bool, String>,
    },
    /// The router's clock, as of the middle of the request.
    Clock(Result<Timestamp, String>),
}

/// How often the router's clock is read while the venue clock is untrusted.
const CLOCK_EVERY: Duration = Duration::from_secs(60);

/// Start the reconciler; it stops when `stop` turns true.
pub fn spawn(
    engine: Engine,
    settings: Settings,
    mqtt: Option<MqttPlugs>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::channel(1024);
    let (records, records_rx) = mpsc::channel(4096);
    tokio::spawn(recorder(engine.clone(), records_rx));
    let r = Reconciler {
        records,
        drivers: Drivers::build(
            &BTreeMap::new(),
            None,
            settings.device_timeout,
            settings.timing.failsafe,
            settings.commands.clone(),
            mqtt.clone(),
        ),
        devices: BTreeMap::new(),
        engine,
        settings,
        mqtt,
        poll_round: 0,
        devices_changed: false,
        unpolled: Default::default(),
        tracks: BTreeMap::new(),
        polling: BTreeMap::new(),
        tx,
    };
    tokio::spawn(r.run(rx, stop))
}

struct Reconciler {
    engine: Engine,
    settings: Settings,
    mqtt: Option<MqttPlugs>,
    /// Counts poll rounds: plugs that push over MQTT are polled every
    /// [`MQTT_POLL_EVERY`]th round only.
    poll_round: u64,
    /// The device table changed since the last pass (a new router: read its clock now).
    devices_changed: bool,
    /// Stations whose plug has not been polled since it was tied to them.
    unpolled: std::collections::BTreeSet<StationId>,
    devices: BTreeMap<DeviceName, Device>,
    drivers: Drivers,
    tracks: BTreeMap<StationId, Track>,
    /// Stations with a status poll or entry check in flight (never two at once).
    polling: BTreeMap<StationId, u8>,
    tx: mpsc::Sender<Done>,
    records: mpsc::Sender<Command>,
}

/// Records queued together are submitted together: the engine commits them in one
/// transaction (200 consoles expiring at once: one fsync, not 400).
const RECORD_BATCH: usize = 256;

/// Writes the reconciler's records through the engine in their order: everything queued
/// is submitted at once (so it shares a commit), then the answers are awaited. A busy
/// engine is retried briefly, after the answers already pending.
async fn recorder(engine: Engine, mut rx: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut pending = Vec::with_capacity(batch.len());
        for command in batch.drain(..) {
            let name = command.name();
            let mut wait = Duration::from_millis(20);
            for attempt in 1..=5 {
                match engine.submit(Request::new(command.clone(), Actor::System)) {
                    Ok(answer) => {
                        pending.push((name, answer));
                        break;
                    }
                    Err(crate::engine::EngineError::Busy) if attempt < 5 => {
                        settle(&mut pending).await;
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => {
                        tracing::warn!(command = name, error = %e, "could not record an enforcement event");
                        break;
                    }
                }
            }
        }
        settle(&mut pending).await;
    }
}

/// Await submitted records' answers, in order, logging the ones refused.
async fn settle<F>(pending: &mut Vec<(&'static str, F)>)
where
    F: std::future::Future<Output = Result<crate::engine::Reply, crate::engine::EngineError>>,
{
    for (name, answer) in pending.drain(..) {
        if let Err(e) = answer.await {
            tracing::warn!(command = name, error = %e, "could not record an enforcement event");
        }
    }
}

impl Reconciler {
    async fn run(mut self, mut rx: mpsc::Receiver<Done>, mut stop: watch::Receiver<bool>) {
        let mut snapshots = self.engine.watch();
        let mut pushed = self.mqtt.as_ref().map(MqttPlugs::reports);
        let start = Instant::now();
        let mut next_poll = start;
        let mut next_sample = start + self.settings.power_sample_interval;
        let mut next_clock = start;
        loop {
            self.follow_engine();
            let now = self.engine.now();
            let mono = Instant::now();
            if mono >= next_poll {
                self.poll_all();
                next_poll = mono + self.settings.poll_interval;
            }
            if mono >= next_sample {
                self.sample_power();
                next_sample = mono + self.settings.power_sample_interval;
            }
            if mono >= next_clock || std::mem::take(&mut self.devices_changed) {
                self.read_router_clock();
                next_clock = mono + CLOCK_EVERY;
            }
            self.act(now, mono);
            let wake = self
                .next_wake(now, mono)
                .into_iter()
                .chain([next_poll, next_sample, next_clock])
                .min();
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { break },
                Some(done) = rx.recv() => self.on_done(done),
                report = recv_report(&mut pushed) => if let Some((plug, report)) = report {
                    self.on_push(&plug, &report);
                },
                () = crate::runtime::sleep_until(wake) => {}
                _ = stop.changed() => break,
            }
        }
    }

    /// Take the engine's current state: devices, enforced stations, their sessions.
    fn follow_engine(&mut self) {
        let snap = self.engine.snapshot();
        let state = &snap.state;
        if state.devices != self.devices {
            self.devices = state.devices.clone();
            self.devices_changed = true;
            let store = self.engine.store().ok();
            self.drivers = Drivers::build(
                &self.devices,
                store.as_ref(),
                self.settings.device_timeout,
                self.settings.timing.failsafe,
                self.settings.commands.clone(),
                self.mqtt.clone(),
            );
            if let Some(mqtt) = self.mqtt.clone() {
                let devices = self.devices.clone();
                tokio::spawn(async move {
                    if let Err(e) = mqtt.set_devices(&devices).await {
                        tracing::warn!(error = %e, "could not follow the device table over MQTT");
                    }
                });
            }
        }
        let now = self.engine.now();
        self.tracks
            .retain(|station, _| state.enforcement.contains_key(station));
        let responses = self.settings.responses.clone();
        for (station, enforcement) in &state.enforcement {
            let mut new_plug = !self.tracks.contains_key(station);
            let track = self
                .tracks
                .entry(station.clone())
                .or_insert_with(|| Track::new(enforcement.clone()));
            if &track.enforcement != enforcement {
                // Different devices: nothing known of them yet.
                if track.enforcement.plug != enforcement.plug {
                    track.relay = None;
                    new_plug = true;
                }
                if track.enforcement.network != enforcement.network {
                    track.blocked = None;
                }
                track.enforcement = enforcement.clone();
            }
            track.follow(state.session_on(station), now);
            // A plug newly tied to the station may have reported before that (its
            // report went to no station): start from what the hub last saw, and poll
            // it at the next round whatever its channel.
            if new_plug && let Some(plug) = &enforcement.plug {
                self.unpolled.insert(station.clone());
                if let Some(seen) = self.mqtt.as_ref().and_then(|m| m.last(plug)) {
                    let report = Report {
                        online: seen.online,
                        relay: seen.relay,
                        watts: seen.power_w,
                        source: None,
                    };
                    // A first sight raises nothing worth recording on its own.
                    let _ = track.report(&report, now, &responses);
                }
            }
        }
    }

    /// Start every due action.
    fn act(&mut self, now: Timestamp, mono: Instant) {
        let snap = self.engine.snapshot();
        let mut alerts = Vec::new();
        for (station, track) in &mut self.tracks {
            if let Some(alert) = track.standby_overdue(now) {
                alerts.push((station.clone(), None, alert));
            }
            for op in track.due(now, mono, &self.settings.timing) {
                let drivers = self.drivers.clone();
                let enforcement = track.enforcement.clone();
                let station = station.clone();
                let session = snap.state.session_on(&station).map(|s| s.id.0);
                let tx = self.tx.clone();
                tracing::debug!(%station, action = %op.action(), "enforcing");
                tokio::spawn(async move {
                    let result = drivers.run(op, &station, &enforcement, session).await;
                    let _ = tx
                        .send(Done::Op {
                            station,
                            op,
                            result,
                        })
                        .await;
                });
            }
        }
        for (station, device, alert) in alerts {
            self.alert(&station, device, alert);
        }
    }

    /// Ask every plug for its status and check every router entry that should be
    /// there (the fallback for plugs that push nothing, and tamper detection).
    fn poll_all(&mut self) {
        self.poll_round += 1;
        let full_round = self.poll_round % MQTT_POLL_EVERY == 1;
        for (station, track) in &self.tracks {
            if self.polling.contains_key(station) {
                continue;
            }
            let pushes =
                |name: &DeviceName| self.mqtt.as_ref().is_some_and(|m| m.wire(name).is_some());
            let first = self.unpolled.remove(station);
            let plug = self.drivers.plug(&track.enforcement).filter(|_| {
                first || full_round || !track.enforcement.plug.as_ref().is_some_and(pushes)
            });
            let entry = (track.blocked == Some(true))
                .then(|| {
                    let net = track.enforcement.network.as_ref()?;
                    Some((self.drivers.router(&track.enforcement)?, net.address))
                })
                .flatten();
            let mut pending = 0;
            if let Some(plug) = plug {
                pending += 1;
                let epoch = track.relay_epoch();
                let (tx, station) = (self.tx.clone(), station.clone());
                tokio::spawn(async move {
                    let result = plug
                        .status()
                        .await
                        .map(|s| drivers::report(&s))
                        .map_err(|e| e.to_string());
                    let _ = tx
                        .send(Done::Poll {
                            station,
                            epoch,
                            result,
                        })
                        .await;
                });
            }
            if let Some((router, address)) = entry {
                pending += 1;
                let epoch = track.network_epoch();
                let (tx, station) = (self.tx.clone(), station.clone());
                tokio::spawn(async move {
                    let present = router.is_blocked(address).await.map_err(|e| e.to_string());
                    let _ = tx
                        .send(Done::Entry {
                            station,
                            epoch,
                            present,
                        })
                        .await;
                });
            }
            if pending > 0 {
                self.polling.insert(station.clone(), pending);
            }
        }
    }

    /// A clock source for the engine: while nothing else vouches for the venue clock,
    /// the router's (RouterOS keeps NTP time for the venue network) corrects and
    /// trusts it. Read once a minute until trusted; the engine ignores it after.
    fn read_router_clock(&self) {
        if self.engine.snapshot().clock.trusted.is_some() {
            return;
        }
        let Some(router) = self.drivers.any_router() else {
            return;
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let asked = Instant::now();
            let read = router.clock().await.map_err(|e| e.to_string());
            // The router answered somewhere in the round trip: take its middle, then
            // carry it to now.
            let half = asked.elapsed() / 2;
            let at = read.map(|t| {
                crate::domain::time::add(
                    t,
                    jiff::SignedDuration::try_from(half).unwrap_or(jiff::SignedDuration::ZERO),
                )
            });
            let _ = tx.send(Done::Clock(at)).await;
        });
    }

    fn poll_done(&mut self, station: &StationId) {
        if let Some(n) = self.polling.get_mut(station) {
            *n -= 1;
            if *n == 0 {
                self.polling.remove(station);
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        let now = self.engine.now();
        let mono = Instant::now();
        let responses = self.settings.responses.clone();
        match done {
            Done::Clock(Ok(now)) => self.record(Command::RouterClock { now }),
            Done::Clock(Err(error)) => {
                tracing::info!(%error, "could not read the router's clock");
            }
            Done::Op {
                station,
                op,
                result,
            } => {
                let Some(track) = self.tracks.get_mut(&station) else {
                    return;
                };
                let device = Drivers::target(op, &track.enforcement);
                let failed = result.as_ref().err().cloned();
                let (wait, alert) = track.finished(op, result, now, mono, &self.settings.timing);
                metrics::action(op.action(), failed.is_none());
                let record = match (failed, wait) {
                    (Some(error), wait) => {
                        tracing::warn!(%station, action = %op.action(), %error, "device action failed; retrying");
                        Some(ActionOutcome::Failed {
                            error,
                            retry_in_ms: wait
                                .map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
                        })
                    }
                    // Heartbeats are routine: only their failures are worth a record.
                    (None, _) if op == Op::Heartbeat => None,
                    (None, _) => Some(ActionOutcome::Done),
                };
                if let (Some(outcome), Some(device)) = (record, device.clone()) {
                    self.record(Command::RecordDeviceAction {
                        station: station.clone(),
                        device,
                        action: op.action(),
                        outcome,
                    });
                }
                if let Some(alert) = alert {
                    self.alert(&station, device, alert);
                }
            }
            Done::Poll {
                station,
                epoch,
                result,
            } => {
                self.poll_done(&station);
                let Some(track) = self.tracks.get_mut(&station) else {
                    return;
                };
                let confirmed_before = track.progress.standby_confirmed;
                let alerts = match result {
                    Ok(report) => {
                        tracing::trace!(%station, ?report, "plug status");
                        track.polled(report, epoch, now, &responses)
                    }
                    Err(error) => {
                        tracing::debug!(%station, %error, "plug status poll failed");
                        track.unreachable(&responses, now)
                    }
                };
                let device = track.enforcement.plug.clone();
                let confirmed = (!confirmed_before && track.progress.standby_confirmed)
                    .then(|| track.reading.map(|r| whole_watts(r.watts)))
                    .flatten();
                let standby = track
                    .enforcement
                    .standby
                    .clone()
                    .or_else(|| track.enforcement.standby_command.clone());
                if let (Some(watts), Some(standby)) = (confirmed, standby) {
                    self.record(Command::RecordDeviceAction {
                        station: station.clone(),
                        device: standby,
                        action: crate::domain::enforcement::DeviceAction::Standby,
                        outcome: ActionOutcome::Confirmed { watts },
                    });
                }
                for alert in alerts {
                    self.alert(&station, device.clone(), alert);
                }
            }
            Done::Entry {
                station,
                epoch,
                present,
            } => {
                self.poll_done(&station);
                let Some(track) = self.tracks.get_mut(&station) else {
                    return;
                };
                let router = track.enforcement.network.as_ref().map(|n| n.router.clone());
                match present {
                    Ok(false) => {
                        if let Some(alert) = track.entry_missing(epoch, &responses) {
                            self.alert(&station, router, alert);
                        }
                    }
                    Ok(true) => {}
                    Err(error) => {
                        tracing::debug!(%station, %error, "router entry check failed")
                    }
                }
            }
        }
    }

    /// A report a plug pushed over MQTT, for every station it powers.
    fn on_push(&mut self, plug: &DeviceName, r: &crate::devices::mqtt::Report) {
        let now = self.engine.now();
        let report = Report {
            online: r.online,
            relay: r.relay,
            watts: r.power_w,
            source: r.source.clone(),
        };
        let responses = self.settings.responses.clone();
        let mut alerts = Vec::new();
        for (station, track) in &mut self.tracks {
            if track.enforcement.plug.as_ref() == Some(plug) {
                for alert in track.report(&report, now, &responses) {
                    alerts.push((station.clone(), alert));
                }
            }
        }
        for (station, alert) in alerts {
            self.alert(&station, Some(plug.clone()), alert);
        }
    }

    /// The earliest time a station's ladder, a retry or a standby window needs a look.
    fn next_wake(&self, now: Timestamp, mono: Instant) -> Option<Instant> {
        let to_instant = |t: Timestamp| {
            let ahead = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
            mono + ahead
        };
        self.tracks
            .values()
            .flat_map(|t| {
                [
                    t.next_step(now).map(to_instant),
                    t.standby_window_end().map(to_instant),
                    t.next_retry(&self.settings.timing),
                ]
            })
            .flatten()
            .min()
    }

    fn sample_power(&self) {
        let samples: Vec<PowerSample> = self
            .tracks
            .iter()
            .filter_map(|(station, t)| {
                t.reading.map(|r| PowerSample {
                    station: station.clone(),
                    watts: whole_watts(r.watts),
                })
            })
            .collect();
        if !samples.is_empty() {
            self.record(Command::RecordPowerSamples { samples });
        }
    }

    fn alert(&self, station: &StationId, device: Option<DeviceName>, alert: Alert) {
        tracing::warn!(%station, alert = %alert.kind, detail = %alert.detail, response = ?alert.response, "enforcement alert");
        metrics::alert(alert.kind);
        self.record(Command::RaiseAlert {
            station: station.clone(),
            device,
            alert: alert.kind,
            detail: alert.detail,
            response: alert.response,
        });
    }

    /// Queue an event for the recorder, never waiting: a full queue (the engine far
    /// behind) drops the record with a warning rather than stall enforcement.
    fn record(&self, command: Command) {
        if let Err(e) = self.records.try_send(command) {
            tracing::warn!(
                command = e.into_inner().name(),
                "enforcement record queue full; record dropped"
            );
        }
    }
}
