//! `/api/v1/devices` and `/api/v1/stations/{id}/enforcement`: the plugs, routers and MQTT
//! actions venued drives, and how each console station is enforced with them.
//!
//! A device's password is accepted here and never returned: answers say only whether one
//! is set.
//!
//! `POST /api/v1/devices/{name}/mikrotik-setup` is the one call here that talks to a
//! device: it checks (and installs) the router's console-blocking rules, so the operator
//! learns at setup time, not at the first blocked console, whether blocking works.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller, IdempotencyKey};
use crate::devices::DeviceError;
use crate::devices::mikrotik::{Mikrotik, SetupReport};
use crate::domain::Command;
use crate::domain::device::{Device, DeviceKind, DeviceName, Enforcement};
use crate::engine::Request;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list).post(add))
        .route("/api/v1/devices/{name}", get(one).delete(remove))
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

/// A device's failure as an answer: 502, as venued itself is fine and the device is not.
/// The message names the device's address and what it said.
fn device_problem(e: DeviceError) -> ApiError {
    let code = match e {
        DeviceError::Unreachable(_) | DeviceError::Timeout(..) => "device_unreachable",
        _ => "device_error",
    };
    ApiError::new(StatusCode::BAD_GATEWAY, code, e.to_string())
}

async fn mikrotik_setup(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<SetupReport>, ApiError> {
    let name = path_name(&name)?;
    let body = body.map_err(|r| {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(r.status(), code, r.body_text())
    })?;
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        MikrotikSetup::default()
    } else {
        serde_json::from_slice::<MikrotikSetup>(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::invalid("invalid_body", e.to_string()),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
        })?
    };
    // The snapshot holds no passwords: the store's device table does.
    let record = state
        .engine
        .store()?
        .device(name.as_str())?
        .ok_or_else(|| {
            ApiError::not_found("device_not_found", format!("device {name} does not exist"))
        })?;
    if !matches!(record.device.kind, DeviceKind::Mikrotik { .. }) {
        return Err(ApiError::invalid(
            "wrong_device_kind",
            format!(
                "device {name} is a {}, not a mikrotik router",
                record.device.kind.type_name()
            ),
        ));
    }
    let router = Mikrotik::from_record(&record).map_err(device_problem)?;
    let report = tokio::time::timeout(SETUP_BUDGET, router.setup(options.apply))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "device_unreachable",
                format!(
                    "router {name} did not finish the setup within {} s; it is safe to run \
                     it again",
                    SETUP_BUDGET.as_secs()
                ),
            )
        })?
        .map_err(device_problem)?;
    // The router is the record of what was created; the log says who asked.
    if !report.created.is_empty() {
        tracing::info!(device = %name, actor = ?caller.0, created = ?report.created,
            "mikrotik setup created firewall rules");
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
