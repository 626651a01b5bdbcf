//! The devices of the enforced stations, built from the store (with their passwords),
//! and the one place an [`Op`] becomes a device call.
//!
//! One driver object per device, kept across calls: a Gen2 plug's digest session and a
//! plug's 429 back-off live in it. Rebuilt only when the device table changes.

use super::track::{Op, Report};
use crate::config::CommandConfig;
use crate::devices::DeviceError;
use crate::devices::mikrotik::Mikrotik;
use crate::devices::mqtt::MqttPlugs;
use crate::devices::plug::{Plug, PlugStatus};
use crate::domain::StationId;
use crate::domain::device::{Device, DeviceKind, DeviceName, Enforcement};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A device ready to be called.
#[derive(Clone)]
pub enum Driver {
    Plug(Arc<Plug>),
    Router(Arc<Mikrotik>),
    /// Publish this payload on this topic.
    Action {
        topic: String,
        payload: String,
        retain: bool,
    },
}

/// What a plug's firmware showed of its flip-back timer on re-arm.
#[derive(Clone, Debug, Default)]
struct Rearm {
    /// `timer_started_at` after the last switch or heartbeat (Shelly).
    started: Option<jiff::Timestamp>,
    /// The firmware kept its running timer instead of restarting it: arming one would
    /// switch the console off mid-session, so this plug gets none from now on.
    ignored: bool,
}

#[derive(Clone)]
pub struct Drivers {
    devices: BTreeMap<DeviceName, Result<Driver, String>>,
    rearm: Arc<std::sync::Mutex<BTreeMap<DeviceName, Rearm>>>,
    commands: Arc<BTreeMap<String, CommandConfig>>,
    mqtt: Option<MqttPlugs>,
    failsafe: Duration,
}

impl Drivers {
    /// Drivers for every device in `devices`, with passwords read from `store`. A device
    /// that cannot be built (bad address, a password unreadable) keeps its error, which
    /// every call then reports.
    pub fn build(
        devices: &BTreeMap<DeviceName, Device>,
        store: Option<&Store>,
        timeout: Duration,
        failsafe: Duration,
        commands: Arc<BTreeMap<String, CommandConfig>>,
        mqtt: Option<MqttPlugs>,
    ) -> Self {
        let built = devices
            .iter()
            .map(|(name, device)| {
                let password = store
                    .and_then(|s| s.device(name.as_str()).ok().flatten())
                    .and_then(|r| r.password);
                (name.clone(), driver(device, password.as_deref(), timeout))
            })
            .collect();
        Self {
            devices: built,
            rearm: Arc::default(),
            commands,
            mqtt,
            failsafe,
        }
    }

    fn get(&self, name: &DeviceName) -> Result<&Driver, String> {
        match self.devices.get(name) {
            Some(Ok(d)) => Ok(d),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("device {name} is not configured")),
        }
    }

    /// The plug of a station, if it has one that could be built.
    pub fn plug(&self, e: &Enforcement) -> Option<Arc<Plug>> {
        match self.get(e.plug.as_ref()?) {
            Ok(Driver::Plug(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// A router that could be built, for its clock (the first by name).
    pub fn any_router(&self) -> Option<Arc<Mikrotik>> {
        self.devices.values().find_map(|d| match d {
            Ok(Driver::Router(r)) => Some(r.clone()),
            _ => None,
        })
    }

    pub fn router(&self, e: &Enforcement) -> Option<Arc<Mikrotik>> {
        match self.get(&e.network.as_ref()?.router) {
            Ok(Driver::Router(r)) => Some(r.clone()),
            _ => None,
        }
    }

    /// The device an op goes to (for the record).
    pub fn target(op: Op, e: &Enforcement) -> Option<DeviceName> {
        match op {
            Op::Relay { .. } | Op::Heartbeat => e.plug.clone(),
            Op::Network { .. } => e.network.as_ref().map(|n| n.router.clone()),
            Op::Standby => e.standby.clone().or_else(|| e.standby_command.clone()),
        }
    }

    /// Run one op for `station`. The answer carries what the device reported back.
    pub async fn run(
        &self,
        op: Op,
        station: &StationId,
        e: &Enforcement,
        session: Option<u64>,
    ) -> Result<Option<Report>, String> {
        match op {
            Op::Relay { on } => {
                let (name, plug) = self.plug_or_err(e)?;
                // On: the plug's own timer switches it off if venued goes silent.
                let flip_back = (on && !self.rearm_ignored(&name)).then_some(self.failsafe);
                if let Some(report) = self.switch_over_mqtt(&name, on, flip_back).await {
                    if on {
                        self.dead_man_heartbeat(&name).await;
                    }
                    return Ok(Some(report));
                }
                let status = plug
                    .switch(on, flip_back)
                    .await
                    .map_err(|e| e.to_string())?;
                check_relay(&status, on)?;
                // A fresh switch always starts a fresh timer: nothing to check yet.
                let _ = self.note_timer(&name, &status, false);
                if on {
                    self.dead_man_heartbeat(&name).await;
                }
                Ok(Some(report(&status)))
            }
            Op::Heartbeat => {
                let (name, plug) = self.plug_or_err(e)?;
                if self.rearm_ignored(&name) {
                    // Nothing to re-arm: a status read keeps the relay watched.
                    let status = plug.status().await.map_err(|e| e.to_string())?;
                    return Ok(Some(report(&status)));
                }
                let status = plug
                    .switch(true, Some(self.failsafe))
                    .await
                    .map_err(|e| e.to_string())?;
                check_relay(&status, true)?;
                self.dead_man_heartbeat(&name).await;
                self.note_timer(&name, &status, true)?;
                Ok(Some(report(&status)))
            }
            Op::Network { blocked } => {
                let net = e
                    .network
                    .as_ref()
                    .ok_or("the station has no network block")?;
                let router = match self.get(&net.router)? {
                    Driver::Router(r) => r.clone(),
                    _ => return Err(format!("{} is not a router", net.router)),
                };
                if blocked {
                    let comment = match session {
                        Some(id) => format!("venued {station} session {id}"),
                        None => format!("venued {station}"),
                    };
                    router
                        .block(net.address, &comment)
                        .await
                        .map_err(|e| e.to_string())?;
                    // Established flows (a match in progress) would survive the new
                    // entry; cut them. A failure here is logged, the block stands.
                    if let Err(err) = router.clear_connections(net.address).await {
                        tracing::warn!(%station, error = %err, "blocked, but clearing the console's connections failed");
                    }
                } else {
                    router
                        .unblock(net.address)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(None)
            }
            Op::Standby => {
                let mut done = false;
                if let Some(name) = &e.standby {
                    match self.get(name)? {
                        Driver::Action {
                            topic,
                            payload,
                            retain,
                        } => {
                            let mqtt = self
                                .mqtt
                                .as_ref()
                                .ok_or("MQTT actions need the embedded broker")?;
                            mqtt.publish_action(topic, payload.as_bytes(), *retain)
                                .await
                                .map_err(|e| format!("{name}: {e}"))?;
                            done = true;
                        }
                        _ => return Err(format!("{name} is not an MQTT action")),
                    }
                }
                if let Some(name) = &e.standby_command {
                    let cmd = self.commands.get(name.as_str()).ok_or_else(|| {
                        format!("no program {name:?} in the config's [consoles.commands]")
                    })?;
                    run_command(name.as_str(), cmd, station).await?;
                    done = true;
                }
                if done {
                    Ok(None)
                } else {
                    Err("the station has no standby action".into())
                }
            }
        }
    }

    fn plug_or_err(&self, e: &Enforcement) -> Result<(DeviceName, Arc<Plug>), String> {
        let name = e.plug.as_ref().ok_or("the station has no plug")?;
        match self.get(name)? {
            Driver::Plug(p) => Ok((name.clone(), p.clone())),
            _ => Err(format!("{name} is not a plug")),
        }
    }

    /// Renew the plug's dead-man over MQTT, so it and the plug's timer agree:
    /// - Shelly Gen2, the script `firmware/shelly/deadman.js`: `{"grant_s": N}` on
    ///   `<prefix>/venued/heartbeat`, N the fail-safe in seconds;
    /// - Tasmota, the rule `venued device provision` installs: `RuleTimer1 <N>` on
    ///   `cmnd/<topic>/RuleTimer1`.
    ///
    /// A plug without the script or rule ignores it; a failure is logged (the plug's own
    /// flip-back timer is the primary fail-safe).
    async fn dead_man_heartbeat(&self, plug: &DeviceName) {
        use crate::devices::mqtt::Wire;
        let Some(mqtt) = &self.mqtt else { return };
        let (topic, payload) = match mqtt.wire(plug) {
            Some(Wire::ShellyGen2 { prefix, .. }) => {
                let grant = self.failsafe.as_secs().clamp(1, DEAD_MAN_MAX_GRANT_S);
                (
                    format!("{prefix}/{DEAD_MAN_TOPIC}"),
                    format!("{{\"grant_s\":{grant}}}"),
                )
            }
            Some(Wire::Tasmota { topic }) => {
                let (command, payload) = crate::devices::failsafe::tasmota_heartbeat(self.failsafe);
                (format!("cmnd/{topic}/{command}"), payload)
            }
            _ => return,
        };
        if let Err(e) = mqtt.publish_action(&topic, payload.as_bytes(), false).await {
            tracing::warn!(%plug, error = %e, "dead-man heartbeat not published");
        }
    }

    /// MQTT first: a plug that is on MQTT and not known offline is switched there (Gen2
    /// RPC, confirmed by its reply; Gen1 and Tasmota, by a report of the relay). `None`
    /// means "use HTTP": no MQTT, the plug offline, a timer Gen1's MQTT cannot set, or
    /// no confirmation in time (logged). Heartbeats stay on HTTP: their answer carries
    /// the timer state the re-arm check reads.
    async fn switch_over_mqtt(
        &self,
        plug: &DeviceName,
        on: bool,
        flip_back: Option<Duration>,
    ) -> Option<Report> {
        let mqtt = self.mqtt.as_ref()?;
        mqtt.wire(plug)?;
        if mqtt.last(plug).is_some_and(|o| o.online == Some(false)) {
            return None;
        }
        match mqtt.switch(plug, on, flip_back).await {
            Ok(()) => {
                let seen = mqtt.last(plug);
                Some(Report {
                    online: Some(true),
                    relay: Some(on),
                    watts: seen.as_ref().and_then(|o| o.power_w),
                    source: None,
                })
            }
            Err(DeviceError::Config(_)) => None,
            Err(e) => {
                tracing::info!(%plug, error = %e, "switching over MQTT failed; trying HTTP");
                None
            }
        }
    }

    fn rearm_ignored(&self, plug: &DeviceName) -> bool {
        self.rearm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(plug)
            .is_some_and(|r| r.ignored)
    }

    /// Remember the timer a switch left; after a heartbeat, check that it restarted
    /// (real firmware's re-arm behaviour is unverified). A timer that kept its start, or
    /// has less than half the fail-safe left, was not restarted: the plug is marked so it
    /// gets no timer from now on, and the heartbeat fails with an explanation (recorded,
    /// and after three a `device_failing` alert).
    fn note_timer(
        &self,
        plug: &DeviceName,
        status: &PlugStatus,
        rearmed: bool,
    ) -> Result<(), String> {
        let mut all = self
            .rearm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = all.entry(plug.clone()).or_default();
        let started = status.timer.as_ref().and_then(|t| t.started_at);
        let kept_start = rearmed && started.is_some() && started == state.started;
        let short = rearmed
            && status
                .timer
                .as_ref()
                .and_then(|t| t.remaining)
                .is_some_and(|left| left < self.failsafe / 2);
        state.started = started;
        if kept_start || short {
            state.ignored = true;
            return Err(format!(
                "{plug} did not restart its flip-back timer on re-arm (its firmware keeps a \
                 running timer): it will switch the console off when that timer ends; venued \
                 arms no timer on this plug from now on (the plug's auto-off and the dead-man \
                 script remain the fail-safe)"
            ));
        }
        Ok(())
    }
}

/// Under the plug's MQTT prefix; what `firmware/shelly/deadman.js` subscribes to.
pub const DEAD_MAN_TOPIC: &str = "venued/heartbeat";
/// The script accepts grants of 1 to 3600 s.
const DEAD_MAN_MAX_GRANT_S: u64 = 3600;

fn driver(device: &Device, password: Option<&str>, timeout: Duration) -> Result<Driver, String> {
    let err = |e: DeviceError| format!("{}: {e}", device.name);
    match &device.kind {
        k if k.is_plug() => Ok(Driver::Plug(Arc::new(
            Plug::new(k, password, timeout).map_err(err)?,
        ))),
        k @ DeviceKind::Mikrotik { .. } => Ok(Driver::Router(Arc::new(
            Mikrotik::new(k, password)
                .map_err(err)?
                .with_timeout(timeout),
        ))),
        DeviceKind::MqttAction {
            topic,
            payload,
            retain,
        } => Ok(Driver::Action {
            topic: topic.clone(),
            payload: payload.clone(),
            retain: *retain,
        }),
        other => Err(format!(
            "{}: a {} device cannot enforce",
            device.name,
            other.type_name()
        )),
    }
}

/// The plug's answer as a report.
pub fn report(s: &PlugStatus) -> Report {
    Report {
        online: Some(true),
        relay: Some(s.on),
        watts: s.power_w,
        source: s.source.clone(),
    }
}

fn check_relay(s: &PlugStatus, on: bool) -> Result<(), String> {
    if s.on == on {
        Ok(())
    } else {
        let want = if on { "on" } else { "off" };
        Err(format!(
            "the plug acknowledged but reports the relay not {want}"
        ))
    }
}

/// Run a configured program with the station in its environment, killed at its timeout.
async fn run_command(name: &str, cmd: &CommandConfig, station: &StationId) -> Result<(), String> {
    let timeout = cmd.timeout.unsigned_abs();
    let mut child = tokio::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .env("VENUED_STATION", station.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{name}: cannot start {}: {e}", cmd.program.display()))?;
    let stderr = child.stderr.take();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => {
            let mut text = String::new();
            if let Some(mut err) = stderr {
                use tokio::io::AsyncReadExt;
                let mut buf = Vec::new();
                let _ = (&mut err).take(300).read_to_end(&mut buf).await;
                text = String::from_utf8_lossy(&buf).trim().to_owned();
            }
            Err(format!("{name} exited with {status}: {text}"))
        }
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Err(_) => Err(format!("{name} did not finish within {timeout:?} (killed)")),
    }
}
