//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the API, generated from the
//! code, on the control socket and (without credentials) on the network listeners.
//!
//! What keeps it from drifting from the code:
//!
//! - Every request and response body is the JSON Schema of the Rust type the handler
//!   reads or writes, derived by `schemars` from the same serde attributes: request types
//!   under serde's deserialize rules (`deny_unknown_fields` is `additionalProperties:
//!   false`, `default` fields are optional), response types under its serialize rules
//!   (a field is required unless it is skipped when empty).
//! - The operations are [`ROUTES`], one table. `tests/it/openapi.rs` probes both routers
//!   with every method on every path of the table and on every path passed to `.route(`
//!   anywhere in `src/http`, and fails when a router serves an operation the table lacks
//!   or the table lists one that is not served, or served on the wrong listener.
//! - Who may call an operation is read from `authz` (the guard's own table) when the
//!   document is built, and the same test checks it against the network router.
//!
//! Durations travel as strings such as `"30m"` (see `domain::time::serde_dur`); every
//! `jiff::SignedDuration` schema is replaced by the `Duration` component, which says so.

use super::AppState;
use super::authz;
use crate::domain::StationId;
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema, json_schema};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

pub fn routes() -> Router<AppState> {
    // A literal, like every `.route(` path: the drift test reads them from the source.
    Router::new().route("/api/v1/openapi.json", get(serve))
}

async fn serve() -> Response {
    // Built once: the document is a function of the code alone.
    static DOC: LazyLock<Bytes> =
        LazyLock::new(|| Bytes::from(serde_json::to_vec(&document()).unwrap_or_default()));
    ([(header::CONTENT_TYPE, "application/json")], DOC.clone()).into_response()
}

// ---- the table ----

/// A schema from the generator (a `$ref` for named types).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The type's own schema, not a reference to it (query strings: one parameter per field).
fn inline<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    T::json_schema(g)
}

/// Which listeners serve an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The control socket and the network listeners.
    Everywhere,
    /// Only the network listeners (login and the like: the socket needs no login).
    Network,
}

/// A path parameter.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: SchemaFn,
    pub example: &'static str,
}

/// A JSON request body.
#[derive(Debug)]
pub struct Body {
    pub schema: SchemaFn,
    /// False when the body may be left out (`stop`).
    pub required: bool,
    /// A request body that is accepted (the tests send it).
    pub example: &'static str,
}

#[derive(Debug)]
pub enum Content {
    Json(SchemaFn),
    /// Not JSON: a media type and what it holds.
    Text(&'static str, &'static str),
    Empty,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
}

/// One operation of the API.
#[derive(Debug)]
pub struct RouteDoc {
    pub method: &'static str,
    /// The route template, exactly as passed to `Router::route`.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub served: Served,
    pub path_params: &'static [Param],
    /// The query-string type; each of its fields is a parameter.
    pub query: Option<SchemaFn>,
    pub body: Option<Body>,
    pub answers: &'static [Answer],
    /// Reads the `Idempotency-Key` header and runs one engine command.
    pub idempotent: bool,
    /// Problem codes of this operation, besides those every operation of its kind has
    /// (authentication, body, query, idempotency); each is looked up in [`CODES`].
    pub errors: &'static [&'static str],
}

impl RouteDoc {
    /// Reachable on the network listeners without credentials (see `authz::PUBLIC`).
    pub fn public(&self) -> bool {
        authz::PUBLIC.contains(&(self.method, self.path))
    }
}

mod json {
    //! Shapes that are not a Rust type of their own.
    use super::*;

    pub fn session_id(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A session number, `12` or `S-12`.",
            "pattern": "^([Ss]-)?[0-9]{1,19}$",
            "examples": ["S-1"]
        })
    }

    pub fn token_id(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A token's public id (the part after `vdt_` of its secret).",
            "pattern": "^[0-9a-f]{8}$",
            "examples": ["1f2e3d4c"]
        })
    }

    pub fn mqtt_account(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An MQTT account: `agent:`, `device:` or `integration:` and a name.",
            "pattern": "^(agent|device|integration):[a-z0-9][a-z0-9_-]{0,31}$",
            "examples": ["device:plug-3"]
        })
    }

    pub fn document(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "This document (OpenAPI 3.1)."
        })
    }
}

use super::api::{
    AddStation, AddUser, AddedStation, ClockView, CommandResult, Confirm, EventPage, EventsQuery,
    Extend, ListSessions, Readiness, SessionView, StartSession, StationView, Stop, Transfer,
    UserView, ZoneView,
};
use super::auth::{CreatedToken, Login, LoginAnswer, NewToken, Setup, TokenView};
use super::devices::{
    DeviceTest, MikrotikSetup, MikrotikSetupAnswer, NewDevice, Provision, ProvisionReport,
};
use super::enrollment::CreatedEnrollment;
use super::mqtt_accounts::{CreatedAccount, NewAccount};
use super::station_commands::{SendCommand, SentCommand};
use super::stream::StreamQuery;
use crate::domain::device::{Device, DeviceName, Enforcement};
use crate::domain::mqtt::MqttAccount;
use crate::engine::Reply;
use crate::protocol::enrollment::{EnrollRequest, EnrollResponse};
use crate::store::VerifyReport;

const STATION_ID: &[Param] = &[Param {
    name: "id",
    description: "The station's id.",
    schema: schema::<StationId>,
    example: "pc-01",
}];
const SESSION_ID: &[Param] = &[Param {
    name: "id",
    description: "The session, `12` or `S-12`.",
    schema: json::session_id,
    example: "S-1",
}];
const MQTT_ACCOUNT: &[Param] = &[Param {
    name: "name",
    description: "The account's user name.",
    schema: json::mqtt_account,
    example: "device:plug-3",
}];
const DEVICE_NAME: &[Param] = &[Param {
    name: "name",
    description: "The device's name.",
    schema: schema::<DeviceName>,
    example: "plug-07",
}];
const ROUTER_NAME: &[Param] = &[Param {
    name: "name",
    description: "The MikroTik router's device name.",
    schema: schema::<DeviceName>,
    example: "router",
}];
/// A device to test: the example is the router, so the documented example reaches one.
const TESTED_DEVICE: &[Param] = &[Param {
    name: "name",
    description: "The device's name (a plug or a router).",
    schema: schema::<DeviceName>,
    example: "router",
}];
const TOKEN_ID: &[Param] = &[Param {
    name: "id",
    description: "The token's public id.",
    schema: json::token_id,
    example: "1f2e3d4c",
}];

const fn ok(status: u16, description: &'static str, content: Content) -> Answer {
    Answer {
        status,
        description,
        content,
    }
}

const SESSION_RESULT: &[Answer] = &[ok(
    200,
    "The session after the command, and the events it wrote.",
    Content::Json(schema::<CommandResult<SessionView>>),
)];
const REPLY: &[Answer] = &[ok(
    200,
    "The events the command wrote.",
    Content::Json(schema::<Reply>),
)];
const SESSION_ERRORS: &[&str] = &[
    "invalid_session_id",
    "session_not_found",
    "session_ended",
    "session_wrong_phase",
];

/// A route that is not a command: no body, no key, no errors of its own.
const fn read(
    path: &'static str,
    operation_id: &'static str,
    tag: &'static str,
    summary: &'static str,
    answers: &'static [Answer],
) -> RouteDoc {
    RouteDoc {
        method: "GET",
        path,
        operation_id,
        tag,
        summary,
        description: "",
        served: Served::Everywhere,
        path_params: &[],
        query: None,
        body: None,
        answers,
        idempotent: false,
        errors: &[],
    }
}

/// Every operation the routers serve. Keep in step with the `.route(` calls: the drift
/// test in `tests/it/openapi.rs` fails otherwise.
pub const ROUTES: &[RouteDoc] = &[
    // ---- stations ----
    read(
        "/api/v1/stations",
        "listStations",
        "stations",
        "List stations, each with its current session",
        &[ok(
            200,
            "Every station, by id.",
            Content::Json(schema::<Vec<StationView>>),
        )],
    ),
    RouteDoc {
        method: "POST",
        description: "`id` appears in URLs and MQTT topics, hence its alphabet.",
        body: Some(Body {
            schema: schema::<AddStation>,
            required: true,
            example: r#"{"id": "pc-01", "name": "PC 01", "kind": "pc", "zone": "arena"}"#,
        }),
        answers: &[ok(
            201,
            "The station and the events that added it; for a PC, its agent's MQTT \
             credentials (shown once).",
            Content::Json(schema::<CommandResult<AddedStation>>),
        )],
        idempotent: true,
        errors: &["station_exists", "invalid_field"],
        ..read(
            "/api/v1/stations",
            "addStation",
            "stations",
            "Add a station",
            &[],
        )
    },
    RouteDoc {
        path_params: STATION_ID,
        errors: &["invalid_station_id", "station_not_found"],
        ..read(
            "/api/v1/stations/{id}",
            "getStation",
            "stations",
            "One station, with its current session",
            &[ok(
                200,
                "The station.",
                Content::Json(schema::<StationView>),
            )],
        )
    },
    RouteDoc {
        method: "DELETE",
        path_params: STATION_ID,
        idempotent: true,
        errors: &["invalid_station_id", "station_not_found", "station_busy"],
        ..read(
            "/api/v1/stations/{id}",
            "removeStation",
            "stations",
            "Remove a station that has no session",
            REPLY,
        )
    },
    RouteDoc {
        method: "POST",
        description: "Recorded, then delivered to the PC's agent over MQTT and resent until \
                      acknowledged (`mqtt.command-retry`, `mqtt.command-attempts`). The \
                      outcome arrives as a `station_command_acked` or \
                      `station_command_failed` event with the same id. `unlock` needs a \
                      session on the station.",
        path_params: STATION_ID,
        body: Some(Body {
            schema: schema::<SendCommand>,
            required: true,
            example: r#"{"type": "message", "text": "Your pizza is ready at the bar"}"#,
        }),
        answers: &[ok(
            202,
            "Accepted: recorded and being delivered.",
            Content::Json(schema::<SentCommand>),
        )],
        idempotent: true,
        errors: &["invalid_station_id", "station_not_found", "invalid_field"],
        ..read(
            "/api/v1/stations/{id}/commands",
            "sendStationCommand",
            "stations",
            "Send a command to a PC's agent",
            &[],
        )
    },
    RouteDoc {
        method: "POST",
        description: "A single-use code, valid for 15 minutes, that the PC's agent spends \
                      with `venued agent enroll` to get its MQTT credentials and the box CA. \
                      The code carries the first 64 bits of the CA fingerprint, so the agent \
                      can check it talks to this box before it has the CA. Needs TLS.",
        path_params: STATION_ID,
        answers: &[ok(
            201,
            "The code (shown once).",
            Content::Json(schema::<CreatedEnrollment>),
        )],
        idempotent: true,
        errors: &[
            "invalid_station_id",
            "station_not_found",
            "invalid_field",
            "mqtt_account_revoked",
            "tls_unavailable",
            "secret_already_issued",
        ],
        ..read(
            "/api/v1/stations/{id}/enrollment",
            "createEnrollment",
            "stations",
            "Issue an enrollment code for a PC's agent",
            &[],
        )
    },
    // ---- sessions ----
    RouteDoc {
        query: Some(inline::<ListSessions>),
        errors: &["invalid_station_id"],
        ..read(
            "/api/v1/sessions",
            "listSessions",
            "sessions",
            "List active sessions",
            &[ok(
                200,
                "Sessions not ended (running, paused or in grace).",
                Content::Json(schema::<Vec<SessionView>>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "Give `duration`, or `open: true` (and no duration) for an open-ended \
                      (postpaid) session. A session holds at most `sessions.max-duration` \
                      (default 24 h) of bought time, extensions included.",
        body: Some(Body {
            schema: schema::<StartSession>,
            required: true,
            example: r#"{"station": "pc-01", "duration": "30m"}"#,
        }),
        answers: &[
            ok(
                201,
                "The session started, and the events the command wrote.",
                Content::Json(schema::<CommandResult<SessionView>>),
            ),
            ok(
                200,
                "A retry with the same `Idempotency-Key`: the first answer, `replayed: true`.",
                Content::Json(schema::<CommandResult<SessionView>>),
            ),
        ],
        idempotent: true,
        errors: &[
            "station_not_found",
            "station_busy",
            "invalid_duration",
            "duration_too_long",
        ],
        ..read(
            "/api/v1/sessions",
            "startSession",
            "sessions",
            "Start a session",
            &[],
        )
    },
    RouteDoc {
        path_params: SESSION_ID,
        errors: &["invalid_session_id", "session_not_found"],
        ..read(
            "/api/v1/sessions/{id}",
            "getSession",
            "sessions",
            "One session, active or ended",
            &[ok(
                200,
                "The session.",
                Content::Json(schema::<SessionView>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "From grace, the customer plays the extension from now.",
        path_params: SESSION_ID,
        body: Some(Body {
            schema: schema::<Extend>,
            required: true,
            example: r#"{"by": "15m"}"#,
        }),
        idempotent: true,
        errors: &[
            "invalid_session_id",
            "session_not_found",
            "session_ended",
            "session_wrong_phase",
            "session_open_ended",
            "invalid_duration",
            "duration_too_long",
        ],
        ..read(
            "/api/v1/sessions/{id}/extend",
            "extendSession",
            "sessions",
            "Add time to a session",
            SESSION_RESULT,
        )
    },
    RouteDoc {
        method: "POST",
        description: "The remaining time is kept and not counted until it resumes.",
        path_params: SESSION_ID,
        idempotent: true,
        errors: SESSION_ERRORS,
        ..read(
            "/api/v1/sessions/{id}/pause",
            "pauseSession",
            "sessions",
            "Pause a running session",
            SESSION_RESULT,
        )
    },
    RouteDoc {
        method: "POST",
        description: "The new deadline is now plus the remaining time.",
        path_params: SESSION_ID,
        idempotent: true,
        errors: SESSION_ERRORS,
        ..read(
            "/api/v1/sessions/{id}/resume",
            "resumeSession",
            "sessions",
            "Resume a paused session",
            SESSION_RESULT,
        )
    },
    RouteDoc {
        method: "POST",
        path_params: SESSION_ID,
        body: Some(Body {
            schema: schema::<Transfer>,
            required: true,
            example: r#"{"to": "pc-02"}"#,
        }),
        idempotent: true,
        errors: &[
            "invalid_session_id",
            "session_not_found",
            "session_ended",
            "session_wrong_phase",
            "station_not_found",
            "station_busy",
            "same_station",
        ],
        ..read(
            "/api/v1/sessions/{id}/transfer",
            "transferSession",
            "sessions",
            "Move a session to a free station, keeping its time",
            SESSION_RESULT,
        )
    },
    RouteDoc {
        method: "POST",
        description: "The body is optional: a bare POST stops without a reason.",
        path_params: SESSION_ID,
        body: Some(Body {
            schema: schema::<Stop>,
            required: false,
            example: r#"{"reason": "customer left early"}"#,
        }),
        idempotent: true,
        errors: &[
            "invalid_session_id",
            "session_not_found",
            "session_ended",
            "invalid_field",
        ],
        ..read(
            "/api/v1/sessions/{id}/stop",
            "stopSession",
            "sessions",
            "End a session",
            SESSION_RESULT,
        )
    },
    // ---- events and audit ----
    RouteDoc {
        description: "A filtered page looks through at most 10,000 events: it may come back \
                      short or empty while `next` moves on, so keep paging until `next` stops \
                      changing.",
        query: Some(inline::<EventsQuery>),
        errors: &["invalid_query", "invalid_station_id", "invalid_session_id"],
        ..read(
            "/api/v1/events",
            "listEvents",
            "events",
            "A page of the event log, in sequence order",
            &[ok(200, "One page.", Content::Json(schema::<EventPage>))],
        )
    },
    read(
        "/api/v1/audit/verify",
        "verifyAudit",
        "events",
        "Walk the hash chain and the sealed segments",
        &[ok(
            200,
            "The chain's extent, and its first broken link if any.",
            Content::Json(schema::<VerifyReport>),
        )],
    ),
    RouteDoc {
        description: "Server-Sent Events: `id` is the event's `seq`, `event` its `type`, \
                      `data` the event JSON as `GET /api/v1/events` returns it. Resume with \
                      `Last-Event-ID` (or `?after=`). At most 64 streams are open at once.",
        query: Some(inline::<StreamQuery>),
        errors: &["invalid_last_event_id", "invalid_query", "too_many_streams"],
        ..read(
            "/api/v1/stream",
            "streamEvents",
            "events",
            "Every committed event, live",
            &[ok(
                200,
                "An endless stream; a `: keep-alive` comment after 15 s of silence.",
                Content::Text(
                    "text/event-stream",
                    "Server-Sent Events, one per log event.",
                ),
            )],
        )
    },
    // ---- clock ----
    read(
        "/api/v1/clock",
        "getClock",
        "clock",
        "The venue clock and who vouches for it",
        &[ok(
            200,
            "The venue clock.",
            Content::Json(schema::<ClockView>),
        )],
    ),
    RouteDoc {
        method: "POST",
        description: "The venue clock moves to `now`; running sessions shift with it and keep \
                      their remaining time (`clock_corrected` and `shifted` events).",
        body: Some(Body {
            schema: schema::<Confirm>,
            required: true,
            example: r#"{"now": "2026-06-01T18:00:00Z"}"#,
        }),
        idempotent: true,
        ..read(
            "/api/v1/clock/confirm",
            "confirmClock",
            "clock",
            "Confirm the true time",
            REPLY,
        )
    },
    // ---- users and zones ----
    read(
        "/api/v1/users",
        "listUsers",
        "users",
        "List accounts (never their hashes)",
        &[ok(
            200,
            "Every account.",
            Content::Json(schema::<Vec<UserView>>),
        )],
    ),
    RouteDoc {
        method: "POST",
        body: Some(Body {
            schema: schema::<AddUser>,
            required: true,
            example: r#"{"name": "kim", "role": "staff", "password": "correct horse battery"}"#,
        }),
        answers: &[ok(
            201,
            "The event that added the account.",
            Content::Json(schema::<Reply>),
        )],
        idempotent: true,
        errors: &["weak_password", "invalid_field", "user_exists"],
        ..read(
            "/api/v1/users",
            "addUser",
            "users",
            "Create an account",
            &[],
        )
    },
    read(
        "/api/v1/zones",
        "listZones",
        "stations",
        "The zones named on stations, each with its stations",
        &[ok(
            200,
            "Every zone.",
            Content::Json(schema::<Vec<ZoneView>>),
        )],
    ),
    // ---- tokens ----
    RouteDoc {
        description: "Your own tokens; on the control socket, everyone's.",
        ..read(
            "/api/v1/tokens",
            "listTokens",
            "tokens",
            "List API tokens (never their secrets)",
            &[ok(
                200,
                "The tokens.",
                Content::Json(schema::<Vec<TokenView>>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "For yourself on the network listeners; on the control socket, give \
                      `user`. The secret is shown once and stored only as SHA-256.",
        body: Some(Body {
            schema: schema::<NewToken>,
            required: true,
            example: r#"{"name": "till", "expires_in": "720h"}"#,
        }),
        answers: &[ok(
            201,
            "The token, with its secret.",
            Content::Json(schema::<CreatedToken>),
        )],
        idempotent: true,
        errors: &[
            "user_not_found",
            "invalid_duration",
            "invalid_field",
            "token_exceeds_user",
            "token_already_created",
        ],
        ..read(
            "/api/v1/tokens",
            "createToken",
            "tokens",
            "Create an API token",
            &[],
        )
    },
    RouteDoc {
        method: "DELETE",
        path_params: TOKEN_ID,
        answers: &[ok(204, "Revoked.", Content::Empty)],
        idempotent: true,
        errors: &["token_not_found", "token_revoked"],
        ..read(
            "/api/v1/tokens/{id}",
            "revokeToken",
            "tokens",
            "Revoke a token at once",
            &[],
        )
    },
    // ---- MQTT accounts ----
    RouteDoc {
        description: "Agents (one per PC station, made with it), devices and integrations. \
                      Secrets are never returned here.",
        ..read(
            "/api/v1/mqtt/accounts",
            "listMqttAccounts",
            "mqtt",
            "List MQTT accounts",
            &[ok(
                200,
                "Every account, revoked ones included.",
                Content::Json(schema::<Vec<MqttAccount>>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "A device owns its topic roots (`topics`); an integration gets `rules` \
                      or the `home_assistant` preset and may never publish under \
                      `venued/v1/`. The secret is shown once and stored only as SHA-256.",
        body: Some(Body {
            schema: schema::<NewAccount>,
            required: true,
            example: r#"{"name": "device:plug-3", "topics": ["shellies/plug-3"]}"#,
        }),
        answers: &[ok(
            201,
            "The account, with its credentials.",
            Content::Json(schema::<CreatedAccount>),
        )],
        idempotent: true,
        errors: &[
            "invalid_field",
            "invalid_body",
            "mqtt_account_exists",
            "secret_already_issued",
        ],
        ..read(
            "/api/v1/mqtt/accounts",
            "createMqttAccount",
            "mqtt",
            "Create a device or integration MQTT account",
            &[],
        )
    },
    RouteDoc {
        method: "POST",
        description: "The old secret stops working at once and the account's open \
                      connections are closed. For an agent this is how a PC is re-enrolled.",
        path_params: MQTT_ACCOUNT,
        answers: &[ok(
            200,
            "The account, with its new credentials.",
            Content::Json(schema::<CreatedAccount>),
        )],
        idempotent: true,
        errors: &[
            "mqtt_account_not_found",
            "mqtt_account_revoked",
            "secret_already_issued",
        ],
        ..read(
            "/api/v1/mqtt/accounts/{name}/rotate",
            "rotateMqttSecret",
            "mqtt",
            "Issue a new secret for an MQTT account",
            &[],
        )
    },
    RouteDoc {
        method: "DELETE",
        path_params: MQTT_ACCOUNT,
        answers: &[ok(
            204,
            "Revoked; its connections are closed.",
            Content::Empty,
        )],
        idempotent: true,
        errors: &["mqtt_account_not_found", "mqtt_account_revoked"],
        ..read(
            "/api/v1/mqtt/accounts/{name}",
            "revokeMqttAccount",
            "mqtt",
            "Revoke an MQTT account at once",
            &[],
        )
    },
    // ---- devices and console enforcement ----
    RouteDoc {
        description: "Plugs, routers and MQTT actions. Passwords are never returned, only \
                      `has_password`.",
        ..read(
            "/api/v1/devices",
            "listDevices",
            "devices",
            "List devices",
            &[ok(
                200,
                "Every device.",
                Content::Json(schema::<Vec<Device>>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "`device.type` is `shelly_gen1`, `shelly_gen2`, `tasmota`, `mikrotik` \
                      or `mqtt_action`. Programs to run (`command`) are defined only in the \
                      configuration file, never here. The password is stored on the box and \
                      never shown again.",
        body: Some(Body {
            schema: schema::<NewDevice>,
            required: true,
            example: r#"{"name": "plug-07", "device": {"type": "shelly_gen2", "host": "192.168.1.57", "mqtt_prefix": "shellyplusplugs-aabbccddeeff"}, "password": "plug password"}"#,
        }),
        answers: &[ok(201, "The device.", Content::Json(schema::<Device>))],
        idempotent: true,
        errors: &["invalid_field", "invalid_body", "device_exists"],
        ..read(
            "/api/v1/devices",
            "addDevice",
            "devices",
            "Add a device",
            &[],
        )
    },
    RouteDoc {
        path_params: DEVICE_NAME,
        errors: &["invalid_device_name", "device_not_found"],
        ..read(
            "/api/v1/devices/{name}",
            "getDevice",
            "devices",
            "One device",
            &[ok(200, "The device.", Content::Json(schema::<Device>))],
        )
    },
    RouteDoc {
        method: "DELETE",
        path_params: DEVICE_NAME,
        answers: &[ok(204, "Removed.", Content::Empty)],
        idempotent: true,
        errors: &["invalid_device_name", "device_not_found", "device_in_use"],
        ..read(
            "/api/v1/devices/{name}",
            "removeDevice",
            "devices",
            "Remove a device no station uses",
            &[],
        )
    },
    RouteDoc {
        method: "POST",
        description: "Checks the four forward-chain rules that make blocking a console work \
                      (`venued:block-out`, `venued:block-in` on the device's `list`; \
                      `venued:consoles-out`, `venued:consoles-in` on `venue-consoles`), found \
                      by comment: each is `present`, `missing`, `misplaced` (below \
                      `fasttrack-connection` or out of order) or `different`. With \
                      `apply: true` the missing ones are inserted above the first rule that \
                      is not dynamic and read back; misplaced and different ones are left \
                      to the operator. The body is optional (a bare POST checks). Talks to \
                      the router (each REST call times out after 5 s, the whole call after \
                      25 s). Repeating it is safe without an `Idempotency-Key`: rules are \
                      looked up before any is added, so a second apply creates nothing. \
                      Nothing is written to the event log. A router that cannot be reached \
                      or refuses venued is not an error of venued: the answer is `200` with \
                      `reached: false`, empty rule lists and `error.code` \
                      `device_unreachable` or `device_error`.",
        path_params: ROUTER_NAME,
        body: Some(Body {
            schema: schema::<MikrotikSetup>,
            required: false,
            example: r#"{"apply": false}"#,
        }),
        errors: &[
            "invalid_device_name",
            "device_not_found",
            "wrong_device_kind",
        ],
        ..read(
            "/api/v1/devices/{name}/mikrotik-setup",
            "mikrotikSetup",
            "devices",
            "Check or install a MikroTik router's console-blocking rules",
            &[ok(
                200,
                "Whether the router was reached; each rule before and after, and what was \
                 created.",
                Content::Json(schema::<MikrotikSetupAnswer>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "Reaches the device with its stored address and password and reads \
                      what it says, changing nothing: a plug's model, firmware, relay, draw \
                      and whether its login is on; a router's board, RouterOS version, clock \
                      and how many entries its address list holds. Each device call times \
                      out after 5 s. A device that cannot be reached or refuses the stored \
                      password is not an error of venued: the answer is `200` with \
                      `reached: false` and `error.code` `device_unreachable` or \
                      `device_error`. An MQTT action is not testable (it would have to be \
                      run). Takes no body.",
        path_params: TESTED_DEVICE,
        errors: &[
            "invalid_device_name",
            "device_not_found",
            "device_not_testable",
        ],
        ..read(
            "/api/v1/devices/{name}/test",
            "testDevice",
            "devices",
            "Reach a device and read what it says",
            &[ok(
                200,
                "Whether the device was reached, and what it said.",
                Content::Json(schema::<DeviceTest>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "Writes a plug's own fail-safe into it (docs/devices.md): Tasmota \
                      `PowerOnState 0`, `TelePeriod`, `PowerDelta1` and the `RuleTimer1` \
                      dead-man rule, enabled; Shelly Gen2 `initial_state: off`, `auto_off` \
                      and the dead-man script `venued-deadman` (uploaded, enabled at boot, \
                      running) with its grace in KVS; Shelly Gen1 `default_state: off` and \
                      `auto_off`. Each item is read first and written only when it differs, \
                      then read back, and reported `unchanged`, `changed` (`old`, `new`), \
                      `would_change` (with `dry_run: true`, which changes nothing) or \
                      `failed` (`why`). The body is optional (a bare POST provisions). Each \
                      device call times out after 5 s, the whole call after 25 s. \
                      Repeating it is safe without an `Idempotency-Key`: a second run \
                      changes nothing. A plug that cannot be reached or refuses the stored \
                      password: `200` with `reached: false` and `error`, nothing changed. \
                      Routers (`mikrotik-setup`) and MQTT actions are not provisionable.",
        path_params: DEVICE_NAME,
        body: Some(Body {
            schema: schema::<Provision>,
            required: false,
            example: r#"{"dry_run": true}"#,
        }),
        errors: &[
            "invalid_device_name",
            "device_not_found",
            "device_not_provisionable",
        ],
        ..read(
            "/api/v1/devices/{name}/provision",
            "provisionDevice",
            "devices",
            "Write a plug's fail-safe into it",
            &[ok(
                200,
                "Whether the plug was reached, and each item of its fail-safe.",
                Content::Json(schema::<ProvisionReport>),
            )],
        )
    },
    RouteDoc {
        path_params: STATION_ID,
        errors: &[
            "invalid_station_id",
            "station_not_found",
            "enforcement_not_set",
        ],
        ..read(
            "/api/v1/stations/{id}/enforcement",
            "getEnforcement",
            "devices",
            "How a station is enforced",
            &[ok(
                200,
                "Its plug, network block, standby action and ladder timing.",
                Content::Json(schema::<Enforcement>),
            )],
        )
    },
    RouteDoc {
        method: "PUT",
        description: "Every device named must exist and fit its role: `plug` a Shelly or \
                      Tasmota plug, `network.router` a MikroTik router, `standby` an MQTT \
                      action. Ladder delays are milliseconds after the end of paid time; \
                      unset ones keep their defaults, and the relay is never cut unless \
                      `ladder.allow_cut` is true.",
        path_params: STATION_ID,
        body: Some(Body {
            schema: schema::<Enforcement>,
            required: true,
            example: r#"{"plug": "plug-07", "ladder": {"standby_after_ms": 30000, "standby_below_w": 15}}"#,
        }),
        answers: &[ok(
            200,
            "The enforcement as set.",
            Content::Json(schema::<Enforcement>),
        )],
        idempotent: true,
        errors: &[
            "invalid_station_id",
            "station_not_found",
            "invalid_field",
            "invalid_body",
            "device_not_found",
            "wrong_device_kind",
        ],
        ..read(
            "/api/v1/stations/{id}/enforcement",
            "setEnforcement",
            "devices",
            "Set how a station is enforced",
            &[],
        )
    },
    RouteDoc {
        method: "DELETE",
        path_params: STATION_ID,
        answers: &[ok(204, "Cleared.", Content::Empty)],
        idempotent: true,
        errors: &["invalid_station_id", "station_not_found"],
        ..read(
            "/api/v1/stations/{id}/enforcement",
            "clearEnforcement",
            "devices",
            "Stop enforcing a station with devices",
            &[],
        )
    },
    // ---- login (network listeners only) ----
    RouteDoc {
        method: "POST",
        description: "Sets the `venued_session` cookie (HttpOnly, SameSite=Strict). Changes \
                      made with it must carry `X-CSRF-Token: <csrf_token>`. After 5 failures \
                      for an account or from an address, `429` for 15 minutes.",
        served: Served::Network,
        body: Some(Body {
            schema: schema::<Login>,
            required: true,
            example: r#"{"name": "kim", "password": "correct horse battery"}"#,
        }),
        errors: &["bad_credentials", "too_many_attempts", "storage_failed"],
        ..read(
            "/api/v1/auth/login",
            "login",
            "auth",
            "Log in (browsers)",
            &[ok(
                200,
                "Logged in; the cookie is in `Set-Cookie`.",
                Content::Json(schema::<LoginAnswer>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "No login: the single-use code is the credential. Issues a new secret \
                      for the station's agent account (any older one stops working).",
        served: Served::Network,
        body: Some(Body {
            schema: schema::<EnrollRequest>,
            required: true,
            example: r#"{"code": "K7QFM-2XDRA-3F9A-1C44-B07E-55D2"}"#,
        }),
        errors: &[
            "invalid_field",
            "enrollment_not_found",
            "enrollment_used",
            "enrollment_expired",
            "tls_unavailable",
        ],
        ..read(
            "/api/v1/enroll",
            "enroll",
            "auth",
            "Enroll a PC's agent with a code",
            &[ok(
                200,
                "The agent's MQTT credentials and the CA to pin.",
                Content::Json(schema::<EnrollResponse>),
            )],
        )
    },
    RouteDoc {
        method: "POST",
        served: Served::Network,
        ..read(
            "/api/v1/auth/logout",
            "logout",
            "auth",
            "Log out (ends the cookie's login)",
            &[ok(
                204,
                "Logged out; the cookie is cleared.",
                Content::Empty,
            )],
        )
    },
    RouteDoc {
        method: "POST",
        description: "First-run setup: creates the owner account with the one-time setup \
                      token (printed at first start and kept in the data directory). Works \
                      once, only while no account exists.",
        served: Served::Network,
        body: Some(Body {
            schema: schema::<Setup>,
            required: true,
            example: r#"{"token": "0123456789abcdef0123456789abcdef", "name": "owner", "password": "correct horse battery"}"#,
        }),
        answers: &[ok(
            201,
            "The event that added the owner.",
            Content::Json(schema::<Reply>),
        )],
        errors: &[
            "already_set_up",
            "bad_credentials",
            "too_many_attempts",
            "weak_password",
            "invalid_field",
            "user_exists",
            "busy",
            "shutting_down",
            "storage_failed",
            "disk_full",
        ],
        ..read(
            "/api/v1/setup",
            "setup",
            "auth",
            "Create the owner account",
            &[],
        )
    },
    // ---- operations ----
    read(
        "/healthz",
        "healthz",
        "ops",
        "Liveness: the process runs",
        &[ok(200, "Alive.", Content::Text("text/plain", "`ok`"))],
    ),
    read(
        "/readyz",
        "readyz",
        "ops",
        "Readiness: the writer completed a round trip through the store",
        &[
            ok(200, "Ready.", Content::Json(schema::<Readiness>)),
            ok(503, "Not ready (yet).", Content::Json(schema::<Readiness>)),
        ],
    ),
    read(
        "/metrics",
        "metrics",
        "ops",
        "Prometheus metrics",
        &[ok(
            200,
            "The text exposition format 0.0.4.",
            Content::Text(
                "text/plain",
                "Prometheus text format 0.0.4; see docs/api.md for every metric.",
            ),
        )],
    ),
    read(
        PATH,
        "openapi",
        "ops",
        "This document",
        &[ok(
            200,
            "The OpenAPI 3.1 document.",
            Content::Json(json::document),
        )],
    ),
];

/// Every problem code an operation may name, with its status. Shared codes (the
/// authentication layer, malformed queries) are listed with their status in the groups
/// below, as some codes have another status there (`token_revoked`, `invalid_query`).
pub const CODES: &[(&str, u16)] = &[
    ("invalid_json", 400),
    ("invalid_idempotency_key", 400),
    ("invalid_last_event_id", 400),
    ("bad_credentials", 401),
    ("station_not_found", 404),
    ("session_not_found", 404),
    ("user_not_found", 404),
    ("token_not_found", 404),
    ("mqtt_account_not_found", 404),
    ("enrollment_not_found", 404),
    ("invalid_device_name", 422),
    ("device_not_found", 404),
    ("enforcement_not_set", 404),
    ("device_exists", 409),
    ("device_in_use", 409),
    ("wrong_device_kind", 422),
    ("device_not_testable", 422),
    ("device_not_provisionable", 422),
    ("station_exists", 409),
    ("station_busy", 409),
    ("session_ended", 409),
    ("session_wrong_phase", 409),
    ("session_open_ended", 409),
    ("same_station", 409),
    ("user_exists", 409),
    ("idempotency_key_reused", 409),
    ("token_revoked", 409),
    ("token_already_created", 409),
    ("already_set_up", 409),
    ("mqtt_account_exists", 409),
    ("mqtt_account_revoked", 409),
    ("secret_already_issued", 409),
    ("enrollment_used", 409),
    ("enrollment_expired", 409),
    ("tls_unavailable", 409),
    ("body_too_large", 413),
    ("unsupported_media_type", 415),
    ("invalid_body", 422),
    ("invalid_duration", 422),
    ("duration_too_long", 422),
    ("invalid_field", 422),
    ("invalid_station_id", 422),
    ("invalid_session_id", 422),
    ("invalid_query", 422),
    ("weak_password", 422),
    ("token_exceeds_user", 422),
    ("too_many_attempts", 429),
    ("busy", 503),
    ("shutting_down", 503),
    ("storage_failed", 503),
    ("too_many_streams", 503),
    ("disk_full", 507),
];

/// Refusals of the network guard, on every operation that needs credentials.
const AUTH_ERRORS: &[(&str, u16)] = &[
    ("unauthenticated", 401),
    ("bad_authorization", 401),
    ("bad_token", 401),
    ("token_revoked", 401),
    ("token_expired", 401),
    ("session_expired", 401),
    ("forbidden", 403),
    ("storage_failed", 503),
];
/// The guard's refusals of a change made with a login cookie.
const CSRF_ERRORS: &[(&str, u16)] = &[("csrf_missing", 403), ("csrf_mismatch", 403)];
const BODY_ERRORS: &[(&str, u16)] = &[
    ("invalid_json", 400),
    ("invalid_body", 422),
    ("body_too_large", 413),
    ("unsupported_media_type", 415),
];
/// A query string that does not parse, or names an unknown parameter.
const QUERY_ERRORS: &[(&str, u16)] = &[("invalid_query", 400)];
const COMMAND_ERRORS: &[(&str, u16)] = &[
    ("invalid_idempotency_key", 400),
    ("idempotency_key_reused", 409),
    ("busy", 503),
    ("shutting_down", 503),
    ("storage_failed", 503),
    ("disk_full", 507),
];

/// The status of a problem code named in [`RouteDoc::errors`].
pub fn status_of(code: &str) -> Option<u16> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, s)| *s)
}

/// Every (code, status) an operation documents.
pub fn errors_of(route: &RouteDoc) -> BTreeSet<(u16, &'static str)> {
    let mut out = BTreeSet::new();
    let mut add = |group: &[(&'static str, u16)]| {
        out.extend(group.iter().map(|(c, s)| (*s, *c)));
    };
    if !route.public() {
        add(AUTH_ERRORS);
        if route.method != "GET" {
            add(CSRF_ERRORS);
        }
    }
    // `stop` reads its optional body itself: no content-type check, no size rejection
    // of its own beyond the router's limit.
    if let Some(body) = &route.body {
        if body.required {
            add(BODY_ERRORS);
        } else {
            add(&BODY_ERRORS[..2]);
        }
    }
    if route.query.is_some() && route.path != "/api/v1/stream" {
        add(QUERY_ERRORS);
    }
    if route.idempotent {
        add(COMMAND_ERRORS);
    }
    if route.path != "/api/v1/stream" {
        // `REQUEST_TIMEOUT`; the live stream is exempt.
        add(&[("timeout", 503)]);
    }
    for code in route.errors {
        // An unknown code is caught by the tests; document it as a 400 meanwhile.
        out.insert((status_of(code).unwrap_or(400), code));
    }
    out
}

// ---- the document ----

const PROBLEM_REF: &str = "#/components/schemas/Problem";
const DURATION_REF: &str = "#/components/schemas/Duration";

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    // Requests are described as serde reads them, answers as serde writes them.
    let mut requests = settings().for_deserialize().into_generator();
    let mut answers = settings().for_serialize().into_generator();
    let problem = answers.subschema_for::<super::Problem>();

    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    // Request-side pieces, kept apart until the component names are settled.
    let mut request_parts: Vec<(&str, &str, &str, Value)> = Vec::new();
    for route in ROUTES {
        let (op, request_side) = operation(route, &mut requests, &mut answers);
        paths
            .entry(route.path)
            .or_default()
            .insert(route.method.to_ascii_lowercase(), op);
        request_parts.push((route.path, route.method, route.operation_id, request_side));
    }

    // Both generators may define a type of the same name; if the two contracts describe
    // it differently, the request side's copy is renamed `<Name>Input`.
    let mut request_defs = requests.take_definitions(true);
    let mut schemas = answers.take_definitions(true);
    let renamed: Vec<String> = request_defs
        .iter()
        .filter(|(name, def)| schemas.get(*name).is_some_and(|d| d != *def))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &renamed {
        if let Some(def) = request_defs.remove(name) {
            request_defs.insert(format!("{name}Input"), def);
        }
    }
    let rename = |v: &mut Value| {
        for name in &renamed {
            rewrite_ref(
                v,
                &format!("#/components/schemas/{name}"),
                &format!("#/components/schemas/{name}Input"),
            );
        }
    };
    for def in request_defs.values_mut() {
        rename(def);
    }
    schemas.extend(request_defs);
    for (path, method, _, mut request_side) in request_parts {
        rename(&mut request_side);
        if let Some(op) = paths
            .get_mut(path)
            .and_then(|p| p.get_mut(&method.to_ascii_lowercase()))
            .and_then(Value::as_object_mut)
            && let Some(side) = request_side.as_object_mut()
        {
            op.append(side);
        }
    }
    schemas.insert("Duration".into(), duration_schema());
    debug_assert_eq!(problem.get("$ref"), Some(&json!(PROBLEM_REF)));

    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "venued",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "The edge controller of a gaming venue: stations, timed sessions, audit log.",
            "description": INFO,
            "license": {"name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "This box (HTTP or HTTPS), or its control socket."}],
        "tags": [
            {"name": "stations", "description": "The PCs and consoles time is sold on, and their zones."},
            {"name": "sessions", "description": "Timed sessions and every lifecycle action."},
            {"name": "events", "description": "The hash-chained event log, its audit and its live stream."},
            {"name": "clock", "description": "The venue clock and its confirmation by staff."},
            {"name": "users", "description": "Staff accounts."},
            {"name": "tokens", "description": "Bearer tokens for scripts."},
            {"name": "mqtt", "description": "Accounts of the embedded MQTT broker (agents, devices, integrations)."},
            {"name": "auth", "description": "Browser login and first-run setup (network listeners only)."},
            {"name": "ops", "description": "Probes, metrics and this document."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": false,
                    "description": "A retry with the same key and the same request gets the first answer \
                                    (`replayed: true`) and changes nothing; the same key with another \
                                    request is `409 idempotency_key_reused`. Keys are kept in the store.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"},
                    "example": "till-7-sale-42",
                },
                "LastEventId": {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": false,
                    "description": "Resume after this event `seq` (browsers send it when they reconnect).",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"},
                },
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (`vdt_…`), from `POST /api/v1/tokens` or `venued token create`.",
                },
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": super::auth::SESSION_COOKIE,
                    "description": "The login cookie set by `POST /api/v1/auth/login`; forgotten after 30 minutes unused.",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRF-Token",
                    "description": "The `csrf_token` of the login answer; every change made with the login cookie carries it.",
                },
            },
        },
    });
    use_duration_component(&mut doc);
    doc
}

const INFO: &str = "The JSON API of venued. It is served on the control socket \
(`<data-dir>/venued.sock`), where the socket's file permissions stand in for a login and no \
role applies, and on the network listeners, where every operation needs a bearer token or a \
login cookie (with `X-CSRF-Token` on changes) and the permission named in its \
`x-permission`, except those whose `security` is empty.\n\n\
Bodies are JSON, at most 64 KiB; unknown fields are errors. Durations are strings (`\"30m\"`, \
`\"1h 30m\"`); instants are RFC 3339 in UTC. Errors are `application/problem+json` with a \
stable `code`; a refused request changes nothing. See docs/api.md.";

/// One operation object, and its request side (parameters, request body) apart.
fn operation(
    route: &RouteDoc,
    requests: &mut SchemaGenerator,
    answers: &mut SchemaGenerator,
) -> (Value, Value) {
    let mut params = Vec::new();
    for p in route.path_params {
        params.push(json!({
            "name": p.name,
            "in": "path",
            "required": true,
            "description": p.description,
            "schema": (p.schema)(requests),
            "example": p.example,
        }));
    }
    if let Some(query) = route.query {
        params.extend(query_params(&Value::from(query(requests))));
    }
    if route.path == "/api/v1/stream" {
        params.push(json!({"$ref": "#/components/parameters/LastEventId"}));
    }
    if route.idempotent {
        params.push(json!({"$ref": "#/components/parameters/IdempotencyKey"}));
    }
    let mut request_side = Map::new();
    if !params.is_empty() {
        request_side.insert("parameters".into(), Value::Array(params));
    }
    if let Some(body) = &route.body {
        let example: Value = serde_json::from_str(body.example).unwrap_or(Value::Null);
        request_side.insert(
            "requestBody".into(),
            json!({
                "required": body.required,
                "content": {"application/json": {
                    "schema": (body.schema)(requests),
                    "example": example,
                }},
            }),
        );
    }

    let mut responses = Map::new();
    for a in route.answers {
        let mut r = json!({"description": a.description});
        match &a.content {
            Content::Json(s) => {
                r["content"] = json!({"application/json": {"schema": s(answers)}});
            }
            Content::Text(media, what) => {
                r["content"] =
                    json!({media.to_string(): {"schema": {"type": "string", "description": what}}});
            }
            Content::Empty => {}
        }
        if route.path == "/api/v1/auth/login" {
            r["headers"] = json!({"Set-Cookie": {
                "description": "`venued_session=…; HttpOnly; SameSite=Strict; Path=/` (`Secure` on HTTPS).",
                "schema": {"type": "string"},
            }});
        }
        responses.insert(a.status.to_string(), r);
    }
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for (status, code) in errors_of(route) {
        by_status.entry(status).or_default().push(code);
    }
    for (status, codes) in by_status {
        let list = codes
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = json!({
            "description": format!("Refused: {list}."),
            "content": {"application/problem+json": {"schema": {"allOf": [
                {"$ref": PROBLEM_REF},
                {"type": "object", "properties": {
                    "status": {"const": status},
                    "code": {"enum": codes},
                }},
            ]}}},
        });
        if status == 503 || status == 429 {
            r["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 0},
            }});
        }
        match responses.get_mut(&status.to_string()) {
            // A status that is also an answer (`/readyz` 503): both bodies, by media type.
            Some(answer) => {
                let text = format!(
                    "{} Or {}",
                    answer["description"].as_str().unwrap_or_default(),
                    r["description"].as_str().unwrap_or_default()
                );
                answer["description"] = json!(text);
                if let (Some(content), Some(problem)) = (
                    answer
                        .as_object_mut()
                        .map(|a| a.entry("content").or_insert_with(|| json!({}))),
                    r["content"].get("application/problem+json"),
                ) {
                    content["application/problem+json"] = problem.clone();
                }
            }
            None => {
                responses.insert(status.to_string(), r);
            }
        }
    }

    let permission = authz::required(&method(route.method), route.path);
    let mut description = route.description.to_owned();
    let mut op = json!({
        "operationId": route.operation_id,
        "tags": [route.tag],
        "summary": route.summary,
        "responses": responses,
    });
    let security = if route.public() {
        json!([])
    } else if route.method == "GET" {
        json!([{"bearer": []}, {"cookie": []}])
    } else {
        json!([{"bearer": []}, {"cookie": [], "csrf": []}])
    };
    op["security"] = security;
    if let Some(p) = permission {
        op["x-permission"] = json!(p.as_str());
        push_line(
            &mut description,
            &format!(
                "On the network listeners this needs the `{}` permission.",
                p.as_str()
            ),
        );
    } else if route.public() {
        push_line(
            &mut description,
            "On the network listeners this needs no credentials.",
        );
    }
    if route.served == Served::Network {
        push_line(
            &mut description,
            "Only on the network listeners, not on the control socket.",
        );
    }
    if route.idempotent {
        push_line(
            &mut description,
            "Retry safely with the same `Idempotency-Key`.",
        );
    }
    if !description.is_empty() {
        op["description"] = json!(description);
    }
    (op, Value::Object(request_side))
}

fn push_line(text: &mut String, line: &str) {
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(line);
}

fn method(m: &str) -> axum::http::Method {
    axum::http::Method::from_bytes(m.as_bytes()).unwrap_or(axum::http::Method::GET)
}

/// One query parameter per property of an object schema.
fn query_params(object: &Value) -> Vec<Value> {
    let required: BTreeSet<&str> = object["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    for (name, prop) in object["properties"].as_object().into_iter().flatten() {
        let mut prop = prop.clone();
        let description = prop
            .as_object_mut()
            .and_then(|p| p.remove("description"))
            .unwrap_or(Value::Null);
        // A query parameter is absent rather than null.
        if prop.get("default") == Some(&Value::Null)
            && let Some(p) = prop.as_object_mut()
        {
            p.remove("default");
        }
        if let Some(types) = prop.get_mut("type").and_then(Value::as_array_mut) {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                prop["type"] = types[0].clone();
            }
        }
        if let Some(any) = prop.get("anyOf").and_then(Value::as_array) {
            let rest: Vec<Value> = any
                .iter()
                .filter(|s| s.get("type") != Some(&json!("null")))
                .cloned()
                .collect();
            if rest.len() == 1 {
                prop = rest[0].clone();
            }
        }
        let mut p = json!({
            "name": name,
            "in": "query",
            "required": required.contains(name.as_str()),
            "schema": prop,
        });
        if !description.is_null() {
            p["description"] = description;
        }
        out.push(p);
    }
    out
}

fn rewrite_ref(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::Object(map) => {
            if map.get("$ref").and_then(Value::as_str) == Some(from) {
                map.insert("$ref".into(), json!(to));
            }
            map.values_mut().for_each(|v| rewrite_ref(v, from, to));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_ref(v, from, to)),
        _ => {}
    }
}

/// How durations travel. jiff's own schema says ISO 8601 (`format: duration`); ours
/// are `"30m"`, `"1h 30m"` on the way out and either form on the way in.
fn duration_schema() -> Value {
    json!({
        "type": "string",
        "description": "A duration: `\"30m\"`, `\"1h 30m\"`, `\"45s\"`, or ISO 8601 `\"PT30M\"`. \
                        Answers use the short form, in whole seconds, with a `-` when negative.",
        "pattern": DURATION_PATTERN,
        "examples": ["30m", "1h 30m", "45s", "PT30M"],
    })
}

/// The forms documented for durations: the short form answers use, and ISO 8601.
/// Hours are unbounded: a clock correction across years prints millions of them.
pub const DURATION_PATTERN: &str = concat!(
    "^(-?[0-9]+h( [0-9]{1,2}m)?( [0-9]{1,2}s)?",
    "|-?[0-9]{1,2}m( [0-9]{1,2}s)?",
    "|-?[0-9]{1,2}s",
    "|PT([0-9]+H)?([0-9]+M)?[0-9]+S",
    "|PT([0-9]+H)?[0-9]+M",
    "|PT[0-9]+H)$"
);

/// Replace every jiff duration schema (`format: duration`) with the `Duration`
/// component, keeping a field's own description and nullability.
fn use_duration_component(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("format").and_then(Value::as_str) == Some("duration") {
                let nullable = map
                    .get("type")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|t| t == "null"));
                map.remove("format");
                map.remove("type");
                if nullable {
                    map.insert(
                        "anyOf".into(),
                        json!([{"$ref": DURATION_REF}, {"type": "null"}]),
                    );
                } else {
                    map.insert("$ref".into(), json!(DURATION_REF));
                }
            } else {
                map.values_mut().for_each(use_duration_component);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(use_duration_component),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_code_has_a_status_and_paths_are_unique() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            for code in r.errors {
                assert!(status_of(code).is_some(), "{code} is not in CODES");
            }
        }
    }
}
