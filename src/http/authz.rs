//! Which permission each route needs: the one place the network API is authorised.
//! A route missing here is refused (deny by default).

use crate::domain::account::Permission;
use axum::http::Method;

pub fn required(method: &Method, route: &str) -> Option<Permission> {
    use Permission::*;
    let m = method.as_str();
    Some(match (m, route) {
        (
            "GET",
            "/api/v1/stations"
            | "/api/v1/stations/{id}"
            | "/api/v1/sessions"
            | "/api/v1/sessions/{id}"
            | "/api/v1/clock",
        ) => ReadFloor,
        ("POST", "/api/v1/stations") | ("DELETE", "/api/v1/stations/{id}") => ManageStations,
        (
            "POST",
            "/api/v1/sessions"
            | "/api/v1/sessions/{id}/extend"
            | "/api/v1/sessions/{id}/pause"
            | "/api/v1/sessions/{id}/resume"
            | "/api/v1/sessions/{id}/transfer"
            | "/api/v1/sessions/{id}/stop",
        ) => RunSessions,
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
