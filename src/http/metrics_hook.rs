//! Counters the auth layer bumps; `/metrics` exposes them. Reasons are a fixed set so
//! the label's cardinality stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};

pub const REASONS: [&str; 10] = [
    "unauthenticated",
    "bad_authorization",
    "bad_token",
    "token_revoked",
    "token_expired",
    "session_expired",
    "bad_credentials",
    "locked_out",
    "csrf",
    "forbidden",
];

static COUNTS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

pub fn auth_failure(reason: &str) {
    let i = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
}

/// (reason, count) for every reason, zeros included.
pub fn auth_failures() -> Vec<(&'static str, u64)> {
    REASONS
        .iter()
        .zip(COUNTS.iter())
        .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
        .collect()
}
