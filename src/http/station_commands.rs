//! `POST /api/v1/stations/{id}/commands`: lock, unlock, message, log off, shut down or
//! restart a PC through its agent.
//!
//! The command is recorded first (an event), then delivered over MQTT and resent until
//! the agent acknowledges it; the acknowledgement, or the give-up that marks the agent
//! unhealthy, is recorded too. So the answer here is 202: accepted, not yet done.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller, IdempotencyKey};
use crate::auth::{random_hex, sha256_hex};
use crate::domain::{Command, StationId};
use crate::engine::Request;
use crate::protocol::CommandAction;
use crate::store::Event;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/stations/{id}/commands", post(send))
}

/// Body: what the agent should do, tagged by `type`. A strict copy of
/// `protocol::CommandAction`: the wire type reads leniently (agents must accept fields a
/// newer controller adds), while the API refuses unknown fields.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum SendCommand {
    /// Lock the screen (the session, if any, keeps running).
    Lock,
    /// Unlock; only while the station has a session.
    Unlock,
    /// Show a message (1-500 characters) on the station's screen.
    Message {
        text: String,
    },
    /// Log the Windows/Linux user off.
    Logout,
    Shutdown,
    Restart,
}

impl From<SendCommand> for CommandAction {
    fn from(c: SendCommand) -> Self {
        match c {
            SendCommand::Lock => CommandAction::Lock,
            SendCommand::Unlock => CommandAction::Unlock,
            SendCommand::Message { text } => CommandAction::Message { text },
            SendCommand::Logout => CommandAction::Logout,
            SendCommand::Shutdown => CommandAction::Shutdown,
            SendCommand::Restart => CommandAction::Restart,
        }
    }
}

/// The accepted command, and the event that recorded it.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SentCommand {
    /// The command's id; its acknowledgement or failure events carry it.
    pub id: String,
    pub station: StationId,
    pub events: Vec<Event>,
    pub replayed: bool,
}

async fn send(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(station): Path<String>,
    ApiJson(body): ApiJson<SendCommand>,
) -> Result<(StatusCode, Json<SentCommand>), ApiError> {
    let station = super::api::parse_station_id(&station)?;
    // A retry with the same idempotency key must be the same command, id included.
    let id = match &key.0 {
        Some(k) => format!("c-{}", &sha256_hex(k)[..12]),
        None => format!("c-{}", random_hex(6)),
    };
    let reply = state
        .engine
        .execute(
            Request::new(
                Command::SendToStation {
                    station: station.clone(),
                    id,
                    action: body.into(),
                },
                caller.0,
            )
            .with_key(key.0),
        )
        .await?;
    // On a replay the id is the first request's, from its event.
    let id = reply
        .events
        .iter()
        .find_map(|e| match &e.body.kind {
            crate::domain::EventKind::StationCommandSent { id, .. } => Some(id.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Ok((
        StatusCode::ACCEPTED,
        Json(SentCommand {
            id,
            station,
            events: reply.events,
            replayed: reply.replayed,
        }),
    ))
}
