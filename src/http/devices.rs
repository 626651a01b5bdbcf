//! `/api/v1/devices` and `/api/v1/stations/{id}/enforcement`: the plugs, routers and MQTT
//! actions venued drives, and how each console station is enforced with them.
//!
//! A device's password is accepted here and never returned: answers say only whether one
//! is set.
//!
//! Three calls talk to a device: `test` reads what it says, `provision` writes a plug's
//! fail-safe into it, `mikrotik-setup` checks (and installs) the router's
//! console-blocking rules, so the operator learns at setup time, not at the first blocked
//! console, whether enforcement works.
//!
//! A device that cannot be reached or refuses its stored password is not a failure of
//! venued: those calls answer `200` with `reached: false` and the device's problem
//! (`device_unreachable`, `device_error`), and the CLI exits non-zero with it. A 5xx
//! stays what it means: venued itself failed.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller, IdempotencyKey};
use crate::devices::DeviceError;
use crate::devices::mikrotik::{Mikrotik, SetupReport};
use crate::devices::plug::Plug;
use crate::devices::provision::{self, Item, Outcome, ProvisionSettings};
use crate::domain::Command;
use crate::domain::device::{Device, DeviceKind, DeviceName, Enforcement};
use crate::engine::Request;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list).post(add))
        .route("/api/v1/devices/{name}", get(one).delete(remove))
        .route(
            "/api/v1/devices/{name}/test",
            axum::routing::post(test_device),
        )
        .route(
            "/api/v1/devices/{name}/provision",
            axum::routing::post(provision_device),
        )
        .route(
            "/api/v1/devices/{name}/mikrotik-setup",
            axum::routing::post(mikrotik_setup),
        )
        .route(
            "/api/v1/stations/{id}/enforcement",
            get(enforcement)
                .put(set_enforcement)
                .delete(clear_enforcement),
        )
}

/// The longest device password accepted.
const MAX_PASSWORD: usize = 128;

/// Body of `POST /api/v1/devices`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewDevice {
    /// 1-40 of a-z 0-9 - _, e.g. `plug-07`.
    name: DeviceName,
    /// What the device is and where to reach it.
    device: DeviceKind,
    /// The password venued logs in to the device with (a plug's web password, the
    /// router user's password). Stored on the box, never shown again.
    #[serde(default)]
    password: Option<String>,
}

fn path_name(raw: &str) -> Result<DeviceName, ApiError> {
    DeviceName::parse(raw).map_err(|e| ApiError::invalid("invalid_device_name", e.to_string()))
}

async fn list(State(state): State<AppState>) -> Json<Vec<Device>> {
    Json(
        state
            .engine
            .snapshot()
            .state
            .devices
            .values()
            .cloned()
            .collect(),
    )
}

async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Device>, ApiError> {
    let name = path_name(&name)?;
    state
        .engine
        .snapshot()
        .state
        .devices
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found("device_not_found", format!("device {name} does not exist"))
        })
}

async fn add(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewDevice>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    if let Some(p) = &body.password
        && (p.is_empty() || p.len() > MAX_PASSWORD || p.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "invalid_field",
            "invalid password: 1 to 128 characters, no control characters",
        ));
    }
    let mut request = Request::new(
        Command::AddDevice {
            name: body.name.clone(),
            kind: body.device,
        },
        caller.0,
    )
    .with_key(key.0);
    request.secret = body.password;
    state.engine.execute(request).await?;
    let device = state
        .engine
        .snapshot()
        .state
        .devices
        .get(&body.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("device_not_found", "device vanished"))?;
    Ok((StatusCode::CREATED, Json(device)))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = path_name(&name)?;
    state
        .engine
        .execute(Request::new(Command::RemoveDevice { name }, caller.0).with_key(key.0))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/v1/devices/{name}/mikrotik-setup` (optional: a bare POST checks).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MikrotikSetup {
    /// Create the missing rules (false: only report).
    #[serde(default)]
    apply: bool,
}

/// The whole setup (at most six REST calls of `mikrotik::DEFAULT_TIMEOUT` each, more
/// after failures) stays under the API's own request timeout, so the caller gets this
/// call's answer rather than a bare `timeout`.
const SETUP_BUDGET: std::time::Duration = std::time::Duration::from_secs(25);

/// Why a device could not be used, inside a `200` answer: the device's problem, not
/// venued's. `device_unreachable`: no answer (refused connection, timeout, no route);
/// `device_error`: it answered but refused (a wrong stored password, an unpinned or
/// changed certificate) or made no sense.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceProblem {
    pub code: String,
    /// What happened and what to check, naming the device's address (never a password).
    pub message: String,
}

impl DeviceProblem {
    pub fn of(e: &DeviceError) -> Self {
        let code = match e {
            DeviceError::Unreachable(_) | DeviceError::Timeout(..) => "device_unreachable",
            _ => "device_error",
        };
        Self {
            code: code.to_owned(),
            message: e.to_string(),
        }
    }
}

/// A device by name from the store, with its password (the snapshot holds none).
fn record(state: &AppState, name: &DeviceName) -> Result<crate::store::DeviceRecord, ApiError> {
    state.engine.store()?.device(name.as_str())?.ok_or_else(|| {
        ApiError::not_found("device_not_found", format!("device {name} does not exist"))
    })
}

/// An optional JSON body `T` (empty or whitespace: `T::default()`), strictly read:
/// unknown fields and wrong types are `422 invalid_body`, broken JSON `400 invalid_json`.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(r.status(), code, r.body_text())
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    // serde reads a struct from an array too (`[]` would be all defaults): an object only.
    if !value.is_object() {
        return Err(ApiError::invalid(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value::<T>(value).map_err(|e| ApiError::invalid("invalid_body", e.to_string()))
}

/// The answer of `mikrotik-setup`: the setup report, and whether the router was reached
/// (when not, the report is empty and `error` says why).
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MikrotikSetupAnswer {
    /// False: the router could not be reached or refused venued; nothing was changed.
    pub reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeviceProblem>,
    #[serde(flatten)]
    pub report: SetupReport,
}

async fn mikrotik_setup(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<MikrotikSetupAnswer>, ApiError> {
    let name = path_name(&name)?;
    let options: MikrotikSetup = optional_body(body)?;
    let record = record(&state, &name)?;
    if !matches!(record.device.kind, DeviceKind::Mikrotik { .. }) {
        return Err(ApiError::invalid(
            "wrong_device_kind",
            format!(
                "device {name} is a {}, not a mikrotik router",
                record.device.kind.type_name()
            ),
        ));
    }
    let outcome = match Mikrotik::from_record(&record) {
        Ok(router) => tokio::time::timeout(SETUP_BUDGET, router.setup(options.apply))
            .await
            .unwrap_or_else(|_| {
                Err(DeviceError::Timeout(
                    format!("router {name} (the whole setup; it is safe to run it again)"),
                    SETUP_BUDGET,
                ))
            }),
        Err(e) => Err(e),
    };
    let answer = match outcome {
        Ok(report) => {
            // The router is the record of what was created; the log says who asked.
            if !report.created.is_empty() {
                tracing::info!(device = %name, actor = ?caller.0, created = ?report.created,
                    "mikrotik setup created firewall rules");
            }
            MikrotikSetupAnswer {
                reached: true,
                error: None,
                report,
            }
        }
        Err(e) => MikrotikSetupAnswer {
            reached: false,
            error: Some(DeviceProblem::of(&e)),
            report: SetupReport {
                list: match &record.device.kind {
                    DeviceKind::Mikrotik { list, .. } => list.clone(),
                    _ => String::new(),
                },
                applied: options.apply,
                before: Vec::new(),
                after: Vec::new(),
                created: Vec::new(),
                fasttrack: None,
                complete: false,
            },
        },
    };
    Ok(Json(answer))
}

/// What a device answered when venued reached it with its stored address and password.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceTest {
    pub name: DeviceName,
    /// The device's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the device answered with the stored password; when not, `error` says why.
    pub reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeviceProblem>,
    /// One line for people, e.g. `SNPL-00112EU, firmware 1.1.0: relay on, 2.7 W`.
    pub summary: String,
    /// Plugs: the product model (Tasmota: its chip); routers: the board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Plugs: the firmware version; routers: the RouterOS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Plugs: the relay now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_on: Option<bool>,
    /// Plugs: watts drawn now, if the plug meters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    /// Shelly plugs: whether the plug's HTTP login is on (Tasmota does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_enabled: Option<bool>,
    /// Routers: the router's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_time: Option<jiff::Timestamp>,
    /// Routers: the address list venued owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// Routers: entries on that list (0: it does not exist yet; the first block makes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_entries: Option<u64>,
}

/// How long each device call of a test or a provisioning may take.
const DEVICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reach a device with its stored configuration and password, read what it says, change
/// nothing on it.
async fn test_device(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DeviceTest>, ApiError> {
    let name = path_name(&name)?;
    let record = record(&state, &name)?;
    let kind = &record.device.kind;
    let mut answer = DeviceTest {
        name: name.clone(),
        kind: kind.type_name().to_owned(),
        reached: true,
        error: None,
        summary: String::new(),
        model: None,
        firmware: None,
        relay_on: None,
        power_w: None,
        auth_enabled: None,
        router_time: None,
        list: None,
        list_entries: None,
    };
    let outcome = if kind.is_plug() {
        test_plug(kind, record.password.as_deref(), &mut answer).await
    } else if let DeviceKind::Mikrotik { list, .. } = kind {
        answer.list = Some(list.clone());
        test_router(&record, &mut answer).await
    } else {
        return Err(ApiError::invalid(
            "device_not_testable",
            format!(
                "device {name} is an MQTT action: it is tested by running it, and venued does \
                 not publish it just to test"
            ),
        ));
    };
    if let Err(e) = outcome {
        answer.reached = false;
        answer.summary = format!("not reached: {e}");
        answer.error = Some(DeviceProblem::of(&e));
    }
    Ok(Json(answer))
}

async fn test_plug(
    kind: &DeviceKind,
    password: Option<&str>,
    answer: &mut DeviceTest,
) -> Result<(), DeviceError> {
    let plug = Plug::new(kind, password, DEVICE_TIMEOUT)?;
    let info = plug.info().await?;
    // `/shelly` needs no password: the status is what proves the stored one.
    let status = plug.status().await?;
    answer.summary = format!(
        "{}, firmware {}: relay {}{}",
        info.model.as_deref().unwrap_or("unknown model"),
        info.firmware.as_deref().unwrap_or("unknown"),
        if status.on { "on" } else { "off" },
        status
            .power_w
            .map(|w| format!(", {w} W"))
            .unwrap_or_default()
    );
    answer.relay_on = Some(status.on);
    answer.power_w = status.power_w;
    answer.model = info.model;
    answer.firmware = info.firmware;
    answer.auth_enabled = info.auth_enabled;
    Ok(())
}

async fn test_router(
    record: &crate::store::DeviceRecord,
    answer: &mut DeviceTest,
) -> Result<(), DeviceError> {
    let router = Mikrotik::from_record(record)?.with_timeout(DEVICE_TIMEOUT);
    let p = router.probe().await?;
    answer.summary = format!(
        "{} RouterOS {}, clock {}; list {}: {}",
        p.board.as_deref().unwrap_or("router"),
        p.version.as_deref().unwrap_or("?"),
        p.clock,
        router.list(),
        match p.list_entries {
            0 => "no entries (made by the first block)".to_owned(),
            n => format!("{n} entries"),
        }
    );
    answer.model = p.board;
    answer.firmware = p.version;
    answer.router_time = Some(p.clock);
    answer.list_entries = Some(p.list_entries as u64);
    Ok(())
}

/// Body of `POST /api/v1/devices/{name}/provision` (optional: a bare POST provisions).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Provision {
    /// Only report what would change; change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// What `provision` did to a plug, item by item.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProvisionReport {
    pub name: DeviceName,
    #[serde(rename = "type")]
    pub kind: String,
    pub dry_run: bool,
    /// Whether the plug answered with the stored password; when not, `error` says why
    /// and nothing was changed.
    pub reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeviceProblem>,
    /// Each setting of the fail-safe: `unchanged`, `changed` (`old` -> `new`),
    /// `would_change` (dry run) or `failed` (`why`).
    pub items: Vec<Item>,
    /// Every item is in place now (a dry run: was already).
    pub complete: bool,
}

/// Write a plug's fail-safe into it (or, with `dry_run`, say what would change).
async fn provision_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    configured: Option<axum::Extension<std::sync::Arc<ProvisionSettings>>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ProvisionReport>, ApiError> {
    let name = path_name(&name)?;
    let options: Provision = optional_body(body)?;
    let record = record(&state, &name)?;
    let kind = &record.device.kind;
    if !provision::provisionable(kind) {
        let why = match kind {
            DeviceKind::Mikrotik { .. } => "a mikrotik router is set up with mikrotik-setup",
            _ => "an MQTT action has nothing to provision",
        };
        return Err(ApiError::invalid(
            "device_not_provisionable",
            format!("device {name} is not a plug: {why}"),
        ));
    }
    let mut report = ProvisionReport {
        name: name.clone(),
        kind: kind.type_name().to_owned(),
        dry_run: options.dry_run,
        reached: true,
        error: None,
        items: Vec::new(),
        complete: false,
    };
    // From `[consoles]` (`venued serve` adds them); the documented defaults otherwise.
    let settings = configured.map(|e| (*e.0).clone()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + provision::PROVISION_BUDGET;
    let outcome = match Plug::new(kind, record.password.as_deref(), DEVICE_TIMEOUT) {
        Ok(plug) => provision::provision(&plug, kind, &settings, options.dry_run, deadline).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(items) => {
            report.complete = items.iter().all(|i| i.outcome == Outcome::Unchanged)
                || (!options.dry_run
                    && items
                        .iter()
                        .all(|i| matches!(i.outcome, Outcome::Unchanged | Outcome::Changed)));
            report.items = items;
        }
        Err(e) => {
            report.reached = false;
            report.error = Some(DeviceProblem::of(&e));
        }
    }
    let changed: Vec<&str> = report
        .items
        .iter()
        .filter(|i| i.outcome == Outcome::Changed)
        .map(|i| i.item.as_str())
        .collect();
    if !changed.is_empty() {
        // The plug is the record of its settings; the log says who changed them.
        tracing::info!(device = %name, actor = ?caller.0, ?changed, "provisioned a plug's fail-safe");
    }
    Ok(Json(report))
}

async fn enforcement(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Enforcement>, ApiError> {
    let id = super::api::parse_station_id(&id)?;
    let snapshot = state.engine.snapshot();
    if !snapshot.state.stations.contains_key(&id) {
        return Err(ApiError::not_found(
            "station_not_found",
            format!("station {id} does not exist"),
        ));
    }
    snapshot
        .state
        .enforcement
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(
                "enforcement_not_set",
                format!("station {id} has no enforcement devices"),
            )
        })
}

async fn set_enforcement(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Enforcement>,
) -> Result<Json<Enforcement>, ApiError> {
    put_enforcement(&state, caller, key, &id, Some(body.clone())).await?;
    Ok(Json(body))
}

async fn clear_enforcement(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    put_enforcement(&state, caller, key, &id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_enforcement(
    state: &AppState,
    caller: Caller,
    key: IdempotencyKey,
    station: &str,
    enforcement: Option<Enforcement>,
) -> Result<(), ApiError> {
    let station = super::api::parse_station_id(station)?;
    let command = Command::SetEnforcement {
        station,
        enforcement,
    };
    state
        .engine
        .execute(Request::new(command, caller.0).with_key(key.0))
        .await?;
    Ok(())
}
