//! `/api/v1/mqtt/accounts`: who may connect to the embedded broker.
//!
//! Secrets are random, shown once, and stored as SHA-256 only. Revoking an account or
//! rotating its secret closes its open connections at once.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller, IdempotencyKey};
use crate::auth::{random_hex, sha256_hex};
use crate::domain::Command;
use crate::domain::mqtt::{MqttAccount, MqttScope, home_assistant_rules};
use crate::engine::Request;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/mqtt/accounts", get(list).post(create))
        .route("/api/v1/mqtt/accounts/{name}", delete(revoke))
        .route("/api/v1/mqtt/accounts/{name}/rotate", post(rotate))
}

/// Credentials for one MQTT account, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct MqttCredentials {
    /// The MQTT user name, e.g. `agent:pc-01`.
    pub username: String,
    /// The secret (MQTT password). Not stored by the box: keep it now.
    pub password: String,
}

/// A new secret and the hash that travels beside the command.
pub fn new_secret() -> (String, String) {
    let secret = random_hex(16);
    let hash = sha256_hex(&secret);
    (secret, hash)
}

/// Body of `POST /api/v1/mqtt/accounts`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAccount {
    /// `device:<name>` or `integration:<name>`; the name is 1-32 of a-z 0-9 - _.
    name: String,
    /// For devices: the topic roots the device owns, e.g. `["shellies/plug-3"]`.
    #[serde(default)]
    topics: Vec<String>,
    /// For integrations: explicit rules, or use `preset`.
    #[serde(default)]
    #[schemars(with = "Vec<RuleBody>")]
    rules: Vec<crate::domain::acl::Rule>,
    /// For integrations: `home_assistant` reads venue topics and owns `homeassistant/#`.
    #[serde(default)]
    preset: Option<Preset>,
}

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct RuleBody {
    /// An MQTT topic filter.
    filter: String,
    /// `read` (subscribe), `write` (publish) or `read_write`.
    access: String,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Preset {
    HomeAssistant,
}

/// An account with its secret, answered once at creation or rotation.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedAccount {
    #[serde(flatten)]
    pub account: MqttAccount,
    pub credentials: MqttCredentials,
}

fn scope_of(body: &NewAccount) -> Result<MqttScope, ApiError> {
    let kind = body.name.split_once(':').map(|(k, _)| k).unwrap_or("");
    match kind {
        "device" => {
            if !body.rules.is_empty() || body.preset.is_some() {
                return Err(ApiError::invalid(
                    "invalid_body",
                    "device accounts take `topics`, not `rules` or `preset`",
                ));
            }
            Ok(MqttScope::Device {
                topics: body.topics.clone(),
            })
        }
        "integration" => {
            if !body.topics.is_empty() {
                return Err(ApiError::invalid(
                    "invalid_body",
                    "integration accounts take `rules` or `preset`, not `topics`",
                ));
            }
            let rules = match (body.preset, body.rules.is_empty()) {
                (Some(Preset::HomeAssistant), true) => home_assistant_rules(),
                (None, false) => body.rules.clone(),
                (Some(_), false) => {
                    return Err(ApiError::invalid(
                        "invalid_body",
                        "give `rules` or `preset`, not both",
                    ));
                }
                (None, true) => {
                    return Err(ApiError::invalid(
                        "invalid_body",
                        "an integration account needs `rules` or `preset`",
                    ));
                }
            };
            Ok(MqttScope::Integration { rules })
        }
        "agent" => Err(ApiError::invalid(
            "invalid_field",
            "agent accounts are made with their PC station; rotate agent:<station> to get a secret",
        )),
        _ => Err(ApiError::invalid(
            "invalid_field",
            "invalid name: must be device:<name> or integration:<name>",
        )),
    }
}

async fn list(State(state): State<AppState>) -> Json<Vec<MqttAccount>> {
    Json(
        state
            .engine
            .snapshot()
            .state
            .mqtt
            .values()
            .cloned()
            .collect(),
    )
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<CreatedAccount>), ApiError> {
    let scope = scope_of(&body)?;
    let (secret, hash) = new_secret();
    let mut request = Request::new(
        Command::CreateMqttAccount {
            name: body.name.clone(),
            scope,
        },
        caller.0,
    )
    .with_key(key.0);
    request.secret = Some(hash);
    let reply = state.engine.execute(request).await?;
    answer_with_secret(&state, reply.replayed, &body.name, secret).map(|a| (StatusCode::CREATED, a))
}

async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(name): Path<String>,
) -> Result<Json<CreatedAccount>, ApiError> {
    let (secret, hash) = new_secret();
    let mut request =
        Request::new(Command::RotateMqttSecret { name: name.clone() }, caller.0).with_key(key.0);
    request.secret = Some(hash);
    let reply = state.engine.execute(request).await?;
    answer_with_secret(&state, reply.replayed, &name, secret)
}

fn answer_with_secret(
    state: &AppState,
    replayed: bool,
    name: &str,
    secret: String,
) -> Result<Json<CreatedAccount>, ApiError> {
    if replayed {
        // The first answer's secret was shown once and is not stored.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "secret_already_issued",
            "this idempotency key already issued a secret; it was shown once (rotate again)",
        ));
    }
    let account = state
        .engine
        .snapshot()
        .state
        .mqtt
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("mqtt_account_not_found", "account vanished"))?;
    Ok(Json(CreatedAccount {
        account,
        credentials: MqttCredentials {
            username: name.to_owned(),
            password: secret,
        },
    }))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .execute(Request::new(Command::RevokeMqttAccount { name }, caller.0).with_key(key.0))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
