//! `venued agent run`: the MQTT side of the agent around the enforcement core.
//!
//! Connects over TLS trusting only the CA pinned at enrollment, follows its station's
//! retained state and commands, acknowledges every command, reports its status (retained,
//! with a last will saying offline) and keeps enforcing while the controller is away.

use super::adapter::{Adapter, describe};
use super::enforcer::{Action, Enforcer, Mono};
use super::enroll::{AgentCredentials, pinned_client};
use super::overlay::ipc::ToAgent;
use super::overlay::link::{Launcher, Overlay};
use super::overlay::screen::Screen;
use super::status::LocalStatus;
use crate::clock::Clock;
use crate::domain::StationId;
use crate::protocol::{
    self, AgentCommand, AgentStatus, CommandAck, RequestKind, RequestResponse, StationRequest,
    StationState, Topic, agent_status, station_ack, station_request,
};
use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, QoS, TlsConfiguration};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What `run` needs besides the enrolled files.
pub struct Options {
    /// Test-only: pretend the PC's wall clock is this far off (it must change nothing
    /// but the reported clock offset).
    pub wall_offset: jiff::SignedDuration,
    /// Override the controller's MQTT TLS port (default: the first from enrollment).
    pub mqtt_port: Option<u16>,
    /// Start the lock screen and countdown helper with this (None: no overlay; the
    /// adapter alone locks).
    pub overlay: Option<Box<dyn Launcher>>,
}

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the retained status is refreshed (idle time, clock offset).
const STATUS_EVERY: Duration = Duration::from_secs(30);
/// How often the overlay's countdown is resynchronised even without a change.
const SCREEN_EVERY: Duration = Duration::from_secs(5);

/// What the agent knows about the PC besides the enforcer: for the status.
#[derive(Default)]
struct Local {
    connected: bool,
    user: Option<String>,
    idle_s: Option<u64>,
    overlay: bool,
    /// The id of the member login waiting for the controller's answer.
    pending_login: Option<String>,
    requests: u64,
    /// The screen last sent to the overlay and when (our clock).
    shown: Option<(Screen, Mono)>,
}

/// Run the agent until `stop` completes (Ctrl-C, SIGTERM, or the Windows service stop).
pub async fn run(
    dir: &Path,
    mut adapter: Box<dyn Adapter>,
    clock: Arc<dyn Clock>,
    mut opts: Options,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let creds: AgentCredentials =
        serde_json::from_slice(&std::fs::read(dir.join("agent.json")).map_err(|e| {
            format!(
                "cannot read {}: {e} (run `venued agent enroll` first)",
                dir.join("agent.json").display()
            )
        })?)
        .map_err(|e| format!("{}: {e}", dir.join("agent.json").display()))?;
    let station = StationId::parse(&creds.station).map_err(|e| e.to_string())?;
    let port = opts
        .mqtt_port
        .or_else(|| creds.mqtt_tls_ports.first().copied())
        .ok_or("agent.json names no MQTT port")?;
    let tls = pinned_client(&creds.ca_fingerprint)?;

    let status_topic = agent_status(&station);
    let mut mqtt = MqttOptions::new(format!("agent-{station}"), &creds.controller_host, port);
    mqtt.set_credentials(&creds.username, &creds.password)
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(true)
        .set_transport(rumqttc::Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            tls,
        ))))
        .set_last_will(LastWill::new(
            &status_topic,
            protocol::encode(&AgentStatus::will()),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut events) = AsyncClient::new(mqtt, 64);

    let started = clock.monotonic();
    let mono = || Mono((clock.monotonic() - started).as_millis() as u64);
    let wall = || crate::domain::time::add(clock.wall(), opts.wall_offset);
    let mut enforcer = Enforcer::new(station.clone());
    let mut backoff = Duration::from_millis(500);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut local_tick = tokio::time::interval(super::status::EVERY);
    let mut screen_tick = tokio::time::interval(SCREEN_EVERY);
    let mut local = Local::default();
    let (overlay, mut from_helper) = match opts.overlay.take() {
        Some(launcher) => {
            let (o, rx) = Overlay::start(launcher);
            (Some(o), Some(rx))
        }
        None => (None, None),
    };
    let controller = format!("{}:{port}", creds.controller_host);
    let write_local = |enforcer: &Enforcer, local: &Local, now: Mono| {
        let left_ms = match enforcer.screen(now) {
            Screen::Countdown { left_ms, .. } => left_ms,
            Screen::Locked { .. } => None,
        };
        let status = LocalStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            station: station.to_string(),
            controller: controller.clone(),
            connected: local.connected,
            locked: enforcer.locked(),
            left_ms,
            clock_offset_ms: enforcer.clock_offset_ms(),
            user: local.user.clone(),
            idle_s: local.idle_s,
            overlay: local.overlay,
            updated_at: clock.wall(),
        };
        if let Err(e) = super::status::write(dir, &status) {
            tracing::warn!(error = %e, "cannot write status.json");
        }
    };
    let mut stop = std::pin::pin!(stop);
    tracing::info!(%station, host = creds.controller_host, port, "agent starting (locked until a session is known)");
    loop {
        let wake = wake_at(&enforcer, mono());
        let mut actions = Vec::new();
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    backoff = Duration::from_millis(500);
                    local.connected = true;
                    tracing::info!(session_present = ack.session_present, "connected to the controller");
                    // A clean session forgets subscriptions: subscribe on every CONNACK.
                    let own = format!("{}/stations/{station}/#", protocol::ROOT);
                    let subscribed = client.subscribe(own, QoS::AtLeastOnce).await;
                    let announced = publish_status(&client, &status_topic, &enforcer, &local, true).await;
                    if let Err(e) = subscribed.and(announced) {
                        tracing::warn!(error = %e, "cannot subscribe");
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => match protocol::parse(&p.topic) {
                    Some(Topic::StationState(s)) if s == station => {
                        match protocol::decode::<StationState>(&p.payload) {
                            Ok(state) => match enforcer.on_state(&state, mono(), wall()) {
                                Ok(a) => actions = a,
                                Err(why) => tracing::warn!(%why, "station state ignored"),
                            },
                            Err(e) => tracing::warn!(error = %e, "malformed station state ignored"),
                        }
                    }
                    Some(Topic::StationCmd(s)) if s == station => {
                        match protocol::decode::<AgentCommand>(&p.payload) {
                            Ok(cmd) => actions = enforcer.on_command(&cmd, mono()),
                            Err(e) => actions = refuse_command(&p.payload, &e.to_string()),
                        }
                    }
                    Some(Topic::StationResponse(s)) if s == station => {
                        match protocol::decode::<RequestResponse>(&p.payload) {
                            Ok(r) if local.pending_login.as_deref() == Some(r.id.as_str()) => {
                                local.pending_login = None;
                                let text = match (r.ok, r.error) {
                                    (true, _) => "welcome \u{2014} your session is starting".to_owned(),
                                    (false, Some(e)) => e.message,
                                    (false, None) => "login refused".to_owned(),
                                };
                                if let Some(o) = &overlay {
                                    o.login_result(r.ok, text);
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "malformed response ignored"),
                        }
                    }
                    _ => {}
                },
                Ok(_) => {}
                Err(e) => {
                    local.connected = false;
                    // Keep enforcing; rumqttc reconnects on the next poll.
                    tracing::warn!(error = %e, retry_in = ?backoff, "controller unreachable");
                    let jitter = Duration::from_millis(u64::from(rand::random::<u8>()) * 2);
                    let until = tokio::time::Instant::now() + backoff + jitter;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    // Deadlines still come due while we wait to reconnect.
                    loop {
                        match wake_at(&enforcer, mono()) {
                            Some(d) if d < until => {
                                tokio::time::sleep_until(d).await;
                                let a = enforcer.tick(mono());
                                apply(&mut adapter, &client, &station, a).await;
                                show(&overlay, &enforcer, &mut local, mono(), true);
                                write_local(&enforcer, &local, mono());
                            }
                            _ => break,
                        }
                    }
                    tokio::time::sleep_until(until).await;
                }
            },
            () = crate::runtime::sleep_until(wake) => actions = enforcer.tick(mono()),
            _ = status_tick.tick() => {
                let _ = publish_status(&client, &status_topic, &enforcer, &local, true).await;
            }
            _ = local_tick.tick() => write_local(&enforcer, &local, mono()),
            _ = screen_tick.tick() => show(&overlay, &enforcer, &mut local, mono(), true),
            Some(msg) = recv(&mut from_helper) => match msg {
                ToAgent::Login { member, pin } => {
                    local.requests += 1;
                    let id = format!("r-{}-{:06}", std::process::id(), local.requests);
                    let request = StationRequest {
                        id: id.clone(),
                        kind: RequestKind::MemberLogin { member, pin },
                    };
                    let sent = client
                        .publish(station_request(&station), QoS::AtLeastOnce, false, protocol::encode(&request))
                        .await;
                    match sent {
                        Ok(()) => local.pending_login = Some(id),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot send the member login");
                            if let Some(o) = &overlay {
                                o.login_result(false, "the controller is unreachable \u{2014} please ask staff".into());
                            }
                        }
                    }
                }
                ToAgent::Presence { user, idle_s } => {
                    local.overlay = true;
                    local.user = user;
                    local.idle_s = idle_s;
                }
                ToAgent::Hello { .. } => {}
            },
            () = &mut stop => {
                tracing::info!("agent stopping");
                let _ = publish_status(&client, &status_topic, &enforcer, &local, false).await;
                let _ = client.disconnect().await;
                local.connected = false;
                write_local(&enforcer, &local, mono());
                return Ok(());
            }
        }
        let changed = actions
            .iter()
            .any(|a| matches!(a, Action::Lock | Action::Unlock));
        apply(&mut adapter, &client, &station, actions).await;
        show(&overlay, &enforcer, &mut local, mono(), false);
        if changed {
            let _ = publish_status(&client, &status_topic, &enforcer, &local, true).await;
            write_local(&enforcer, &local, mono());
        }
    }
}

/// The next message from the overlay helper, or never without one.
async fn recv(rx: &mut Option<tokio::sync::mpsc::Receiver<ToAgent>>) -> Option<ToAgent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Send the overlay the screen as of `now` if it changed (beyond the countdown running
/// down as the helper expects), or always when `resync`.
fn show(
    overlay: &Option<Overlay>,
    enforcer: &Enforcer,
    local: &mut Local,
    now: Mono,
    resync: bool,
) {
    let Some(overlay) = overlay else { return };
    let screen = enforcer.screen(now);
    let expected = local
        .shown
        .as_ref()
        .map(|(s, at)| s.after(now.0.saturating_sub(at.0) as i64));
    if resync || !same_view(expected.as_ref(), &screen) {
        overlay.show(screen.clone());
        local.shown = Some((screen, now));
    }
}

/// Equal but for up to a second of countdown drift.
fn same_view(a: Option<&Screen>, b: &Screen) -> bool {
    let Some(a) = a else { return false };
    let left = |s: &Screen| match s {
        Screen::Countdown { left_ms, .. } => *left_ms,
        Screen::Locked { .. } => None,
    };
    let strip = |s: &Screen| match s.clone() {
        Screen::Countdown {
            station,
            grace,
            message,
            ..
        } => Screen::Countdown {
            station,
            left_ms: None,
            grace,
            message,
        },
        other => other,
    };
    let close = match (left(a), left(b)) {
        (Some(x), Some(y)) => (x - y).abs() < 1_000,
        (x, y) => x == y,
    };
    close && strip(a) == strip(b)
}

/// When the enforcer next needs a tick, as a timer instant.
fn wake_at(enforcer: &Enforcer, now: Mono) -> Option<tokio::time::Instant> {
    enforcer
        .next_wakeup()
        .map(|at| tokio::time::Instant::now() + Duration::from_millis(at.0.saturating_sub(now.0)))
}

/// A command this agent cannot read: acknowledge it as not done, if it has an id.
fn refuse_command(payload: &[u8], error: &str) -> Vec<Action> {
    let id = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
    tracing::warn!(error, "command refused");
    id.map(|id| Action::Ack {
        id,
        ok: false,
        error: Some(format!("not_supported: {error}")),
    })
    .into_iter()
    .collect()
}

async fn apply(
    adapter: &mut Box<dyn Adapter>,
    client: &AsyncClient,
    station: &StationId,
    actions: Vec<Action>,
) {
    for action in actions {
        tracing::info!(action = describe(&action), "enforcing");
        match action {
            Action::Ack { id, ok, error } => {
                let ack = CommandAck { id, ok, error };
                let sent = client
                    .publish(
                        station_ack(station),
                        QoS::AtLeastOnce,
                        false,
                        protocol::encode(&ack),
                    )
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "cannot send an acknowledgement");
                }
            }
            other => {
                if let Err(e) = adapter.apply(&other) {
                    tracing::error!(action = describe(&other), error = %e, "the OS adapter failed");
                }
            }
        }
    }
}

async fn publish_status(
    client: &AsyncClient,
    topic: &str,
    enforcer: &Enforcer,
    local: &Local,
    online: bool,
) -> Result<(), rumqttc::ClientError> {
    let status = AgentStatus {
        online,
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        user: local.user.clone(),
        idle_s: local.idle_s,
        locked: Some(enforcer.locked()),
        clock_offset_ms: enforcer.clock_offset_ms(),
        at: None,
    };
    client
        .publish(topic, QoS::AtLeastOnce, true, protocol::encode(&status))
        .await
}
