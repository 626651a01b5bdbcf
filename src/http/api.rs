//! `/api/v1` handlers. Each mutating handler turns its body into one domain command,
//! sends it to the engine and renders what the engine committed.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller, IdempotencyKey};
use crate::domain::time::serde_dur;
use crate::domain::{
    Command, EventKind, Role, Session, SessionId, Station, StationId, StationKind,
};
use crate::engine::{ClockStatus, Reply, Request, Snapshot};
use crate::store::{Event, VerifyReport};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/stations", get(list_stations).post(add_station))
        .route(
            "/api/v1/stations/{id}",
            get(get_station).delete(remove_station),
        )
        .route("/api/v1/sessions", get(list_sessions).post(start_session))
        .route("/api/v1/sessions/{id}", get(get_session))
        .route("/api/v1/sessions/{id}/extend", post(extend_session))
        .route("/api/v1/sessions/{id}/pause", post(pause_session))
        .route("/api/v1/sessions/{id}/resume", post(resume_session))
        .route("/api/v1/sessions/{id}/transfer", post(transfer_session))
        .route("/api/v1/sessions/{id}/stop", post(stop_session))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/audit/verify", get(verify))
        .route("/api/v1/clock", get(clock_status))
        .route("/api/v1/clock/confirm", post(confirm_clock))
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/zones", get(list_zones))
}

pub fn ops_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}

// ---- views ----

/// A session as clients see it: the stored state plus what it means now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: Session,
    /// Absolute deadline while running; clients count down to it, never from a length.
    pub ends_at: Option<Timestamp>,
    /// Time left to play (fixed sessions; `0s` once ended); `null` when open-ended.
    #[serde(with = "serde_dur::opt")]
    #[schemars(with = "Option<SignedDuration>")]
    pub remaining: Option<SignedDuration>,
    /// Time played so far; paused and grace time are not counted.
    #[serde(with = "serde_dur::req")]
    #[schemars(with = "SignedDuration")]
    pub used: SignedDuration,
    pub server_time: Timestamp,
}

impl SessionView {
    fn new(session: Session, now: Timestamp) -> Self {
        Self {
            ends_at: session.ends_at(),
            remaining: session.remaining(now),
            used: session.used(now),
            server_time: now,
            session,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct StationView {
    #[serde(flatten)]
    pub station: Station,
    pub session: Option<SessionView>,
}

/// The result of a command: what it produced and the events it wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[schemars(rename = "{T}Result")]
pub struct CommandResult<T> {
    #[serde(flatten)]
    pub result: T,
    pub events: Vec<Event>,
    pub replayed: bool,
}

/// A station with its session, both from the same snapshot and instant.
fn station_view(snap: &Snapshot, now: Timestamp, station: &Station) -> StationView {
    StationView {
        station: station.clone(),
        session: snap
            .state
            .session_on(&station.id)
            .map(|s| SessionView::new(s.clone(), now)),
    }
}

// ---- helpers ----

async fn run(
    state: &AppState,
    caller: Caller,
    key: IdempotencyKey,
    command: Command,
) -> Result<Reply, ApiError> {
    let request = Request::new(command, caller.0).with_key(key.0);
    Ok(state.engine.execute(request).await?)
}

/// The session as written by the last session event of a reply.
fn session_result(
    reply: Reply,
    now: Timestamp,
) -> Result<Json<CommandResult<SessionView>>, ApiError> {
    let session = reply
        .events
        .iter()
        .rev()
        .find_map(|e| match &e.body.kind {
            EventKind::Session { session, .. } => Some(session.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the command produced no session event",
            )
        })?;
    Ok(Json(CommandResult {
        result: SessionView::new(session, now),
        events: reply.events,
        replayed: reply.replayed,
    }))
}

/// Run a command on one session (`{id}` from the path) and render the session after it.
async fn session_action(
    state: &AppState,
    caller: Caller,
    key: IdempotencyKey,
    id: &str,
    command: impl FnOnce(SessionId) -> Command,
) -> Result<Json<CommandResult<SessionView>>, ApiError> {
    let session = parse_session_id(id)?;
    let reply = run(state, caller, key, command(session)).await?;
    session_result(reply, state.engine.now())
}

/// Run a blocking store read off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "read task failed",
            )
        })?
        .map_err(ApiError::from)
}

fn parse_session_id(raw: &str) -> Result<SessionId, ApiError> {
    raw.parse().map_err(|e: crate::domain::ids::IdError| {
        ApiError::invalid("invalid_session_id", e.to_string())
    })
}

pub(super) fn parse_station_id(raw: &str) -> Result<StationId, ApiError> {
    StationId::parse(raw).map_err(|e| ApiError::invalid("invalid_station_id", e.to_string()))
}

// ---- stations ----

async fn list_stations(State(state): State<AppState>) -> Json<Vec<StationView>> {
    let snap = state.engine.snapshot();
    let now = state.engine.now();
    Json(
        snap.state
            .stations
            .values()
            .map(|s| station_view(&snap, now, s))
            .collect(),
    )
}

async fn get_station(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StationView>, ApiError> {
    let id = parse_station_id(&id)?;
    let snap = state.engine.snapshot();
    let station = snap.state.stations.get(&id).ok_or_else(|| {
        ApiError::not_found("station_not_found", format!("station {id} does not exist"))
    })?;
    Ok(Json(station_view(&snap, state.engine.now(), station)))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddStation {
    id: StationId,
    /// Display name, 1-64 characters.
    #[schemars(length(min = 1, max = 64))]
    name: String,
    kind: StationKind,
    /// The zone (room, area) the station is in, 1-64 characters.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    zone: Option<String>,
}

/// A new station; a PC's agent credentials come with it, once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct AddedStation {
    #[serde(flatten)]
    pub station: StationView,
    /// For a PC: its agent's MQTT credentials, shown once (absent on an idempotent
    /// replay; rotate `agent:<id>` for a new secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<super::mqtt_accounts::MqttCredentials>,
}

async fn add_station(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<AddStation>,
) -> Result<(StatusCode, Json<CommandResult<AddedStation>>), ApiError> {
    let is_pc = body.kind == StationKind::Pc;
    let (secret, hash) = super::mqtt_accounts::new_secret();
    let mut request = Request::new(
        Command::AddStation {
            id: body.id.clone(),
            name: body.name,
            kind: body.kind,
            zone: body.zone,
        },
        caller.0,
    )
    .with_key(key.0);
    request.secret = is_pc.then_some(hash);
    let reply = state.engine.execute(request).await?;
    let station = reply
        .events
        .iter()
        .find_map(|e| match &e.body.kind {
            EventKind::StationAdded { station } => Some(station.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no station event",
            )
        })?;
    let agent = (is_pc && !reply.replayed).then(|| super::mqtt_accounts::MqttCredentials {
        username: crate::domain::mqtt::agent_account(&station.id),
        password: secret,
    });
    Ok((
        StatusCode::CREATED,
        Json(CommandResult {
            result: AddedStation {
                station: station_view(&state.engine.snapshot(), state.engine.now(), &station),
                agent,
            },
            events: reply.events,
            replayed: reply.replayed,
        }),
    ))
}

async fn remove_station(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<Reply>, ApiError> {
    let id = parse_station_id(&id)?;
    Ok(Json(
        run(&state, caller, key, Command::RemoveStation { id }).await?,
    ))
}

// ---- sessions ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListSessions {
    /// `station=pc-01`: only that station's session.
    #[serde(default)]
    #[schemars(with = "Option<StationId>")]
    station: Option<String>,
}

async fn list_sessions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListSessions>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let snap = state.engine.snapshot();
    let now = state.engine.now();
    let filter = q.station.as_deref().map(parse_station_id).transpose()?;
    Ok(Json(
        snap.state
            .sessions
            .values()
            .filter(|s| filter.as_ref().is_none_or(|f| *f == s.station))
            .map(|s| SessionView::new(s.clone(), now))
            .collect(),
    ))
}

async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let id = parse_session_id(&id)?;
    let now = state.engine.now();
    if let Some(s) = state.engine.snapshot().state.sessions.get(&id) {
        return Ok(Json(SessionView::new(s.clone(), now)));
    }
    let store = state.engine.store()?;
    let session = blocking(move || store.session(id)).await?;
    session
        .map(|s| Json(SessionView::new(s, now)))
        .ok_or_else(|| {
            ApiError::not_found("session_not_found", format!("session {id} does not exist"))
        })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartSession {
    station: StationId,
    /// e.g. "30m", "1h 30m"; omit with `open: true` for an open-ended session.
    #[serde(default)]
    duration: Option<SignedDuration>,
    /// `true` for an open-ended (postpaid) session, without `duration`.
    #[serde(default)]
    open: bool,
}

async fn start_session(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<StartSession>,
) -> Result<(StatusCode, Json<CommandResult<SessionView>>), ApiError> {
    let duration = match (body.duration, body.open) {
        (Some(d), false) => Some(d),
        (None, true) => None,
        (None, false) => {
            return Err(ApiError::invalid(
                "invalid_body",
                "give a `duration` (e.g. \"30m\") or `open: true` for an open-ended session",
            ));
        }
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "invalid_body",
                "an open-ended session has no `duration`",
            ));
        }
    };
    let reply = run(
        &state,
        caller,
        key,
        Command::StartSession {
            station: body.station,
            duration,
        },
    )
    .await?;
    let created = if reply.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((created, session_result(reply, state.engine.now())?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Extend {
    /// Time to add, e.g. "15m".
    by: SignedDuration,
}

async fn extend_session(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Extend>,
) -> Result<Json<CommandResult<SessionView>>, ApiError> {
    session_action(&state, caller, key, &id, |session| Command::ExtendSession {
        session,
        by: body.by,
    })
    .await
}

async fn pause_session(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<CommandResult<SessionView>>, ApiError> {
    session_action(&state, caller, key, &id, |session| Command::PauseSession {
        session,
    })
    .await
}

async fn resume_session(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<Json<CommandResult<SessionView>>, ApiError> {
    session_action(&state, caller, key, &id, |session| Command::ResumeSession {
        session,
    })
    .await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Transfer {
    /// A free station to move the session to.
    to: StationId,
}

async fn transfer_session(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Transfer>,
) -> Result<Json<CommandResult<SessionView>>, ApiError> {
    session_action(&state, caller, key, &id, |session| {
        Command::TransferSession {
            session,
            to: body.to,
        }
    })
    .await
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Stop {
    /// Why it was stopped, recorded in the event (at most 500 characters).
    #[serde(default)]
    #[schemars(length(max = 500))]
    reason: Option<String>,
}

async fn stop_session(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<CommandResult<SessionView>>, ApiError> {
    let body = body.map_err(|r| {
        ApiError::new(
            r.status(),
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "invalid_body"
            },
            r.body_text(),
        )
    })?;
    // The body is optional: a bare POST stops without a reason.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Stop>(&body)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    ApiError::invalid("invalid_body", e.to_string())
                }
                _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
            })?
            .reason
    };
    session_action(&state, caller, key, &id, |session| Command::StopSession {
        session,
        reason,
    })
    .await
}

// ---- events and audit ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Only events with a greater `seq`; pass the previous page's `next`.
    #[serde(default)]
    after: u64,
    /// Page size, 1-1000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// Only events of this type (`session`, `station_added`, `login_failed`, ...).
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// Only events about this station.
    #[serde(default)]
    #[schemars(with = "Option<StationId>")]
    station: Option<String>,
    /// Only events about this session (`12` or `S-12`).
    #[serde(default)]
    #[schemars(pattern(r"^([Ss]-)?[0-9]{1,19}$"))]
    session: Option<String>,
}

/// How many events one filtered page may look through before answering.
const MAX_EVENT_SCAN: usize = 10_000;

fn event_matches(
    e: &Event,
    kind: Option<&str>,
    station: Option<&StationId>,
    session: Option<SessionId>,
) -> bool {
    let type_ok = kind.is_none_or(|k| {
        serde_json::to_value(&e.body.kind)
            .ok()
            .is_some_and(|v| v["type"] == k)
    });
    let (ev_station, ev_session) = match &e.body.kind {
        EventKind::Session { session, .. } => (Some(&session.station), Some(session.id)),
        EventKind::StationAdded { station } => (Some(&station.id), None),
        EventKind::StationRemoved { station } => (Some(station), None),
        _ => (None, None),
    };
    let transferred_from = match &e.body.kind {
        EventKind::Session {
            change: crate::domain::SessionChange::Transferred { from },
            ..
        } => Some(from),
        _ => None,
    };
    let station_ok = station.is_none_or(|s| ev_station == Some(s) || transferred_from == Some(s));
    let session_ok = session.is_none_or(|s| ev_session == Some(s));
    type_ok && station_ok && session_ok
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as `after` to get the next page.
    pub next: u64,
}

pub const MAX_EVENT_PAGE: usize = 1000;

async fn list_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_EVENT_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let station = q.station.as_deref().map(parse_station_id).transpose()?;
    let session = q.session.as_deref().map(parse_session_id).transpose()?;
    let kind = q.kind;
    let store = state.engine.store()?;
    let (events, next) = blocking(move || {
        store.scan_events(q.after, limit, MAX_EVENT_SCAN, |e| {
            event_matches(e, kind.as_deref(), station.as_ref(), session)
        })
    })
    .await?;
    Ok(Json(EventPage { events, next }))
}

async fn verify(State(state): State<AppState>) -> Result<Json<VerifyReport>, ApiError> {
    let store = state.engine.store()?;
    let report = blocking(move || store.verify()).await?;
    Ok(Json(report))
}

// ---- clock ----

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClockView {
    /// The time sessions are counted in.
    pub venue_time: Timestamp,
    #[serde(flatten)]
    pub status: ClockStatus,
}

async fn clock_status(State(state): State<AppState>) -> Json<ClockView> {
    Json(ClockView {
        venue_time: state.engine.now(),
        status: state.engine.snapshot().clock.clone(),
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Confirm {
    /// The true time, as read from a trusted watch or phone.
    now: Timestamp,
}

async fn confirm_clock(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<Confirm>,
) -> Result<Json<Reply>, ApiError> {
    Ok(Json(
        run(&state, caller, key, Command::ConfirmClock { now: body.now }).await?,
    ))
}

// ---- users ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddUser {
    /// 1-64 ASCII letters, digits, `.`, `_`, `-` and `@`.
    #[schemars(pattern(r"^[A-Za-z0-9._@-]{1,64}$"))]
    name: String,
    role: Role,
    /// 10-1024 characters; stored only as an argon2id hash.
    #[schemars(length(min = 10, max = 1024))]
    password: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
}

async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<UserView>>, ApiError> {
    let store = state.engine.store()?;
    let users = blocking(move || store.users()).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| UserView {
                name: u.name,
                role: u.role,
                created_at: u.created_at,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ZoneView {
    pub zone: String,
    pub stations: Vec<StationId>,
}

/// Zones are named on stations; this lists them with their stations.
async fn list_zones(State(state): State<AppState>) -> Json<Vec<ZoneView>> {
    let snap = state.engine.snapshot();
    let mut zones: std::collections::BTreeMap<String, Vec<StationId>> = Default::default();
    for s in snap.state.stations.values() {
        if let Some(z) = &s.zone {
            zones.entry(z.clone()).or_default().push(s.id.clone());
        }
    }
    Json(
        zones
            .into_iter()
            .map(|(zone, stations)| ZoneView { zone, stations })
            .collect(),
    )
}

pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 1024;

/// Check a new staff password's length and hash it (argon2id, off the async workers).
pub(super) async fn hash_new_password(password: String) -> Result<String, ApiError> {
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(ApiError::invalid(
            "weak_password",
            format!("password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "hash task failed",
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
}

async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<AddUser>,
) -> Result<(StatusCode, Json<Reply>), ApiError> {
    let hash = hash_new_password(body.password).await?;
    let mut request = Request::new(
        Command::AddUser {
            name: body.name,
            role: body.role,
        },
        caller.0,
    )
    .with_key(key.0);
    request.secret = Some(hash);
    let reply = state.engine.execute(request).await?;
    Ok((StatusCode::CREATED, Json(reply)))
}

// ---- ops ----

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Readiness {
    pub ready: bool,
    pub store: bool,
    pub clock: ClockStatus,
    pub stations: usize,
    pub active_sessions: usize,
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let snap = state.engine.snapshot();
    let store_ok = state.engine.sync().await.is_ok();
    let body = Readiness {
        ready: store_ok,
        store: store_ok,
        clock: snap.clock.clone(),
        stations: snap.state.stations.len(),
        active_sessions: snap.state.sessions.len(),
    };
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
