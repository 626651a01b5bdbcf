//! Which permission each route needs: the one place the network API is authorised.
//! A route missing here is refused (deny by default).

use crate::domain::account::Permission;
use axum::http::Method;

/// Routes the network listeners serve without credentials, outside the guard (see
/// `network_router`): login and first-run setup, the probes, and the OpenAPI document.
/// The document is public on purpose: it holds no venue data, only the shape of the
/// API (already in docs/api.md), and a client needs it before it can log in (where login
/// is, which credentials the API takes). The OpenAPI document and its test read this list.
pub const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/setup"),
    // A PC's agent spends its single-use enrollment code; the code is the credential.
    ("POST", "/api/v1/enroll"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", super::openapi::PATH),
];

pub fn required(method: &Method, route: &str) -> Option<Permission> {
    use Permission::*;
    // HEAD is a GET without the body (axum answers it with the GET handler).
    let m = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    Some(match (m, route) {
        (
            "GET",
            "/api/v1/stations"
            | "/api/v1/stations/{id}"
            | "/api/v1/sessions"
            | "/api/v1/sessions/{id}"
            | "/api/v1/clock"
            | "/api/v1/zones",
        ) => ReadFloor,
        ("POST", "/api/v1/stations") | ("DELETE", "/api/v1/stations/{id}") => ManageStations,
        // MQTT accounts are the credentials of stations and their devices.
        ("GET" | "POST", "/api/v1/mqtt/accounts")
        | ("DELETE", "/api/v1/mqtt/accounts/{name}")
        | ("POST", "/api/v1/mqtt/accounts/{name}/rotate")
        | ("POST", "/api/v1/stations/{id}/enrollment") => ManageStations,
        // Devices carry the venue's hardware addresses and passwords; enforcement decides
        // whether a console can be cut off: both are station management.
        ("GET" | "POST", "/api/v1/devices")
        | ("GET" | "DELETE", "/api/v1/devices/{name}")
        // Reads a device with its stored password: station management, like the device.
        | ("POST", "/api/v1/devices/{name}/test")
        // Changes a plug's fail-safe settings and the venue router's firewall: as much
        // station management as the rest.
        | ("POST", "/api/v1/devices/{name}/provision")
        | ("POST", "/api/v1/devices/{name}/mikrotik-setup")
        | ("GET" | "PUT" | "DELETE", "/api/v1/stations/{id}/enforcement") => ManageStations,
        (
            "POST",
            "/api/v1/sessions"
            | "/api/v1/sessions/{id}/extend"
            | "/api/v1/sessions/{id}/pause"
            | "/api/v1/sessions/{id}/resume"
            | "/api/v1/sessions/{id}/transfer"
            | "/api/v1/sessions/{id}/stop",
        ) => RunSessions,
        // Floor staff lock, message and log off PCs as part of running sessions.
        ("POST", "/api/v1/stations/{id}/commands") => RunSessions,
        ("GET", "/api/v1/events" | "/api/v1/stream") => ReadEvents,
        ("GET", "/api/v1/audit/verify") => VerifyAudit,
        ("GET" | "POST", "/api/v1/users") => ManageUsers,
        ("GET" | "POST", "/api/v1/tokens") | ("DELETE", "/api/v1/tokens/{id}") => OwnTokens,
        ("POST", "/api/v1/auth/logout") => OwnTokens,
        ("POST", "/api/v1/clock/confirm") => ConfirmClock,
        ("GET", "/metrics") => ReadMetrics,
        _ => return None,
    })
}

/// The methods `route` is authorised for (for `Allow` when another one is used).
pub fn methods(route: &str) -> Vec<&'static str> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .filter(|m| Method::from_bytes(m.as_bytes()).is_ok_and(|m| required(&m, route).is_some()))
        .collect()
}
