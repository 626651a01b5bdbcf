//! Enrolling a PC's agent: staff ask for a code (`POST /api/v1/stations/{id}/enrollment`),
//! the agent spends it once (`POST /api/v1/enroll`, no login) and gets its MQTT
//! credentials and the box CA.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller, IdempotencyKey};
use crate::auth::{random_hex, sha256_hex};
use crate::domain::{Actor, Command, DomainError, StationId};
use crate::engine::{EngineError, Request};
use crate::protocol::enrollment::{EnrollRequest, EnrollResponse, EnrollmentCode};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How long a code lasts: enough to walk to the PC and type it.
pub const CODE_LIFETIME: SignedDuration = SignedDuration::from_mins(15);

/// The box identity an enrollment hands out, known once TLS is set up.
#[derive(Debug, Clone)]
pub struct BoxCa {
    pub pem: String,
    pub fingerprint: String,
    pub mqtt_tls_ports: Vec<u16>,
}

/// Staff side (behind login or the control socket).
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/stations/{id}/enrollment", post(create))
}

/// Agent side: no login, the code is the credential.
pub fn enroll_routes() -> Router<AppState> {
    Router::new().route("/api/v1/enroll", post(enroll))
}

/// A new enrollment code, shown once.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedEnrollment {
    pub id: String,
    pub station: StationId,
    /// Type it at the PC: `venued agent enroll --controller https://<box>:8443 --code <code>`.
    pub code: String,
    pub expires_at: Timestamp,
    pub ca_fingerprint: String,
}

fn no_tls() -> ApiError {
    // Not a server fault: this controller is configured without TLS.
    ApiError::new(
        StatusCode::CONFLICT,
        "tls_unavailable",
        "enrollment needs the running controller with TLS (tls.https-listen or mqtt.tls-listen)",
    )
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ca: Option<Extension<Arc<BoxCa>>>,
    Path(station): Path<String>,
) -> Result<(StatusCode, Json<CreatedEnrollment>), ApiError> {
    let Some(Extension(ca)) = ca else {
        return Err(no_tls());
    };
    let station = super::api::parse_station_id(&station)?;
    let code = EnrollmentCode::generate(&ca.fingerprint);
    let id = format!("e-{}", random_hex(4));
    let expires_at = crate::domain::time::add(state.engine.now(), CODE_LIFETIME);
    let mut request = Request::new(
        Command::CreateEnrollment {
            station: station.clone(),
            id: id.clone(),
            expires_at,
        },
        caller.0,
    )
    .with_key(key.0);
    request.secret = Some(sha256_hex(&code.secret));
    let reply = state.engine.execute(request).await?;
    if reply.replayed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "secret_already_issued",
            "this idempotency key already issued a code; it was shown once (ask for a new one)",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollment {
            id,
            station,
            code: code.to_string(),
            expires_at,
            ca_fingerprint: ca.fingerprint.clone(),
        }),
    ))
}

async fn enroll(
    State(state): State<AppState>,
    ca: Option<Extension<Arc<BoxCa>>>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let Some(Extension(ca)) = ca else {
        return Err(no_tls());
    };
    let code = EnrollmentCode::parse(&body.code)
        .map_err(|e| ApiError::invalid("invalid_field", e.to_string()))?;
    if !code.matches_ca(&ca.fingerprint) {
        // The code was made by another box: say so rather than "not found".
        return Err(ApiError::invalid(
            "invalid_field",
            "this code was issued by another controller (its CA fingerprint differs)",
        ));
    }
    let store = state.engine.store()?;
    let hash = sha256_hex(&code.secret);
    let record = super::api::blocking(move || store.enrollment_by_hash(&hash))
        .await?
        .ok_or(EngineError::from(DomainError::UnknownEnrollment))?;
    if record.used {
        return Err(EngineError::from(DomainError::EnrollmentUsed).into());
    }
    let password = random_hex(16);
    let mut request = Request::new(
        Command::Enroll {
            id: record.id.clone(),
        },
        Actor::Mqtt {
            account: crate::domain::mqtt::agent_account(&record.station),
        },
    );
    request.secret = Some(sha256_hex(&password));
    state.engine.execute(request).await?;
    tracing::info!(station = %record.station, enrollment = record.id, "agent enrolled");
    Ok(Json(EnrollResponse {
        username: crate::domain::mqtt::agent_account(&record.station),
        station: record.station,
        password,
        ca_pem: ca.pem.clone(),
        ca_fingerprint: ca.fingerprint.clone(),
        mqtt_tls_ports: ca.mqtt_tls_ports.clone(),
    }))
}
