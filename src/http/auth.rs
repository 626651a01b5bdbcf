//! Authentication for the network API: bearer tokens for scripts, login cookies with a
//! CSRF header for browsers, and a login limiter per account and per address.
//!
//! Tokens are 256-bit random secrets stored only as SHA-256; passwords are argon2id.
//! Login sessions live in memory: a restart logs staff out, which is acceptable on a
//! venue box and keeps every request from writing to the store.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller, IdempotencyKey};
use crate::auth::{random_hex, same, sha256_hex};
use crate::domain::account::Role;
use crate::domain::{Actor, Command};
use crate::engine::Request;
use axum::extract::{FromRequestParts, MatchedPath, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SESSION_COOKIE: &str = "venued_session";
/// Failure records kept before stale ones are swept.
const MAX_TRACKED: usize = 10_000;
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// A login cookie unused this long is forgotten.
    pub idle_timeout: Duration,
    /// Failed logins (per account, and per address) before a lockout.
    pub max_failures: u32,
    /// How long the failures are remembered and the lockout lasts.
    pub lockout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

/// The role granted to the caller of a network request.
#[derive(Clone, Copy, Debug)]
pub struct Grant(pub Role);

#[derive(Clone, Debug, Default)]
pub struct Auth {
    inner: Arc<AuthInner>,
}

#[derive(Debug, Default)]
struct AuthInner {
    config: AuthConfig,
    /// The one-time setup token and its file, while no account exists.
    setup: Mutex<Option<(String, std::path::PathBuf)>>,
    /// Login sessions by the SHA-256 of their cookie value.
    sessions: Mutex<HashMap<String, WebSession>>,
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug)]
struct WebSession {
    user: String,
    role: Role,
    csrf: String,
    last_seen: Instant,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

impl Auth {
    pub fn new(config: AuthConfig) -> Self {
        Self {
            inner: Arc::new(AuthInner {
                config,
                ..AuthInner::default()
            }),
        }
    }

    /// Offer first-run setup: reuse the token in `file` or create one (mode 0600).
    /// Returns the token to print.
    pub fn enable_setup(&self, file: &std::path::Path) -> std::io::Result<String> {
        let token = match std::fs::read_to_string(file) {
            Ok(t) if t.trim().len() == 32 => t.trim().to_owned(),
            _ => {
                let t = random_hex(16);
                write_private(file, &t)?;
                t
            }
        };
        *Self::lock(&self.inner.setup) = Some((token.clone(), file.to_path_buf()));
        Ok(token)
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds until `key` may try again, if it is locked out.
    fn locked_for(&self, key: &str) -> Option<u64> {
        let cfg = &self.inner.config;
        let mut failures = Self::lock(&self.inner.failures);
        let f = failures.get(key)?;
        let age = f.since.elapsed();
        if age >= cfg.lockout {
            failures.remove(key);
            return None;
        }
        (f.count >= cfg.max_failures).then(|| (cfg.lockout - age).as_secs().max(1))
    }

    fn fail(&self, key: String) {
        let lockout = self.inner.config.lockout;
        let mut failures = Self::lock(&self.inner.failures);
        // Spraying random names must not grow this without bound.
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| f.since.elapsed() < lockout);
        }
        let f = failures.entry(key).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        f.count += 1;
    }

    fn clear(&self, key: &str) {
        Self::lock(&self.inner.failures).remove(key);
    }
}

fn unauthorized(code: &'static str, detail: &str) -> ApiError {
    crate::http::metrics_hook::auth_failure(code);
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
}

/// The peer address, when the transport knows it.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// Authenticate and authorise one network request (a route layer: the route is known).
pub async fn guard(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: Next,
) -> Result<Response, ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let Some(permission) = super::authz::required(req.method(), &route) else {
        // A route that answers other methods: this one is not allowed (405, as on the
        // socket), not forbidden. A route no permission covers stays refused.
        let allowed = super::authz::methods(&route).join(", ");
        if !allowed.is_empty() {
            let mut resp = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{route} answers {allowed}"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&allowed) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return Ok(resp);
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no permission is defined for this route",
        ));
    };
    let (name, role) = identify(&state, req.method(), req.headers()).await?;
    if !role.allows(permission) {
        crate::http::metrics_hook::auth_failure("forbidden");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {role} may not {}", permission.as_str()),
        ));
    }
    req.extensions_mut().insert(Caller(Actor::User { name }));
    req.extensions_mut().insert(Grant(role));
    Ok(next.run(req).await)
}

async fn identify(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(String, Role), ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthorized("bad_authorization", "use `Authorization: Bearer <token>`")
            })?;
        return bearer(state, token.trim()).await;
    }
    if let Some(cookie) = cookie(headers, SESSION_COOKIE) {
        let auth = &state.auth.inner;
        let mut sessions = Auth::lock(&auth.sessions);
        let key = sha256_hex(&cookie);
        let Some(session) = sessions.get_mut(&key) else {
            return Err(unauthorized("session_expired", "log in again"));
        };
        if session.last_seen.elapsed() > auth.config.idle_timeout {
            sessions.remove(&key);
            return Err(unauthorized(
                "session_expired",
                "logged out after inactivity; log in again",
            ));
        }
        let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if unsafe_method {
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            match sent {
                Some(t) if same(t, &session.csrf) => {}
                Some(_) => {
                    crate::http::metrics_hook::auth_failure("csrf");
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "csrf_mismatch",
                        "the X-CSRF-Token header does not match this login",
                    ));
                }
                None => {
                    crate::http::metrics_hook::auth_failure("csrf");
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "csrf_missing",
                        "a cookie-authenticated change needs the X-CSRF-Token header from the login answer",
                    ));
                }
            }
        }
        session.last_seen = Instant::now();
        return Ok((session.user.clone(), session.role));
    }
    Err(unauthorized(
        "unauthenticated",
        "log in, or send `Authorization: Bearer <token>`",
    ))
}

async fn bearer(state: &AppState, token: &str) -> Result<(String, Role), ApiError> {
    let store = state.engine.store()?;
    let hash = sha256_hex(token);
    let record = super::api::blocking(move || store.token_by_hash(&hash))
        .await?
        .ok_or_else(|| unauthorized("bad_token", "unknown token"))?;
    if record.revoked {
        return Err(unauthorized("token_revoked", "this token was revoked"));
    }
    if record.expires_at.is_some_and(|t| t <= state.engine.now()) {
        return Err(unauthorized("token_expired", "this token has expired"));
    }
    // The owner must still exist; the token never exceeds its own role.
    if !state
        .engine
        .snapshot()
        .state
        .users
        .contains_key(&record.user)
    {
        return Err(unauthorized(
            "bad_token",
            "the token's user no longer exists",
        ));
    }
    Ok((record.user, record.role))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

// ---- login ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    name: String,
    password: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginAnswer {
    pub name: String,
    pub role: Role,
    /// Send back as `X-CSRF-Token` on every change made with the login cookie.
    pub csrf_token: String,
}

/// An argon2id hash to verify against when the account does not exist, so the answer
/// takes as long as for a real account (no user enumeration by timing).
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| crate::auth::hash_password(&random_hex(16)).unwrap_or_default())
        .clone()
}

async fn login(
    State(state): State<AppState>,
    PeerAddr(peer): PeerAddr,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let from = peer.map_or_else(|| "local".to_owned(), |p| p.ip().to_string());
    let keys = [format!("user:{}", body.name), format!("addr:{from}")];
    if let Some(wait) = keys.iter().filter_map(|k| state.auth.locked_for(k)).max() {
        crate::http::metrics_hook::auth_failure("locked_out");
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed logins; try again in {wait} s"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    let store = state.engine.store()?;
    let name = body.name.clone();
    let user = super::api::blocking(move || store.user(&name)).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = body.password;
    let verified = tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(dummy_hash);
        crate::auth::verify_password(&password, &hash)
    })
    .await
    .unwrap_or(false);
    let record = |failure: Option<&str>| Command::RecordLogin {
        name: body.name.clone(),
        from: from.clone(),
        failure: failure.map(str::to_owned),
    };
    let Some(user) = user.filter(|_| verified) else {
        for k in keys {
            state.auth.fail(k);
        }
        let _ = state
            .engine
            .execute(Request::new(record(Some("bad credentials")), Actor::System))
            .await;
        return Err(unauthorized("bad_credentials", "wrong name or password"));
    };
    state.auth.clear(&keys[0]);
    let _ = state
        .engine
        .execute(Request::new(
            record(None),
            Actor::User {
                name: user.name.clone(),
            },
        ))
        .await;
    let cookie_value = random_hex(32);
    let csrf = random_hex(32);
    let mut sessions = Auth::lock(&state.auth.inner.sessions);
    let idle = state.auth.inner.config.idle_timeout;
    sessions.retain(|_, s| s.last_seen.elapsed() <= idle);
    sessions.insert(
        sha256_hex(&cookie_value),
        WebSession {
            user: user.name.clone(),
            role: user.role,
            csrf: csrf.clone(),
            last_seen: Instant::now(),
        },
    );
    drop(sessions);
    let secure = if state.https { "; Secure" } else { "" };
    let set_cookie =
        format!("{SESSION_COOKIE}={cookie_value}; HttpOnly; SameSite=Strict; Path=/{secure}");
    let mut resp = Json(LoginAnswer {
        name: user.name,
        role: user.role,
        csrf_token: csrf,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        Auth::lock(&state.auth.inner.sessions).remove(&sha256_hex(&c));
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("venued_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

// ---- first-run setup ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Setup {
    /// The one-time setup token, printed at first start and kept in the data directory.
    token: String,
    /// The owner's account name.
    #[schemars(pattern(r"^[A-Za-z0-9._@-]{1,64}$"))]
    name: String,
    /// 10-1024 characters.
    #[schemars(length(min = 10, max = 1024))]
    password: String,
}

/// Create the owner with the one-time setup token; works once, only while no account
/// exists, and is rate-limited like a login.
async fn setup(
    State(state): State<AppState>,
    PeerAddr(peer): PeerAddr,
    ApiJson(body): ApiJson<Setup>,
) -> Result<(StatusCode, Json<crate::engine::Reply>), ApiError> {
    let from = peer.map_or_else(|| "local".to_owned(), |p| p.ip().to_string());
    let key = format!("setup:{from}");
    if let Some(wait) = state.auth.locked_for(&key) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("try again in {wait} s"),
        ));
    }
    let expected = Auth::lock(&state.auth.inner.setup).clone();
    let Some((token, file)) = expected.filter(|_| state.engine.snapshot().state.users.is_empty())
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_set_up",
            "an account exists; log in instead",
        ));
    };
    if !same(body.token.trim(), &token) {
        state.auth.fail(key);
        return Err(unauthorized(
            "bad_credentials",
            "wrong setup token (see the setup-token file in the data directory)",
        ));
    }
    let hash = super::api::hash_new_password(body.password).await?;
    let mut request = Request::new(
        Command::AddUser {
            name: body.name,
            role: Role::Owner,
        },
        Actor::System,
    );
    request.secret = Some(hash);
    let reply = state.engine.execute(request).await?;
    // Used once: forget it and remove the file.
    *Auth::lock(&state.auth.inner.setup) = None;
    if let Err(e) = std::fs::remove_file(&file) {
        tracing::warn!(file = %file.display(), error = %e, "could not remove the used setup token");
    }
    tracing::info!("first-run setup done: owner account created");
    Ok((StatusCode::CREATED, Json(reply)))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

// ---- tokens ----

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
    /// Defaults to the owner's role; never more.
    #[serde(default)]
    role: Option<Role>,
    /// e.g. "30d" is not accepted (days vary); use "720h".
    #[serde(default)]
    expires_in: Option<SignedDuration>,
    /// Only on the control socket: whose token it is.
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub user: String,
    pub role: Role,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// The secret, shown once. Send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// Whose tokens the caller may manage: their own, or (control socket) anyone's.
fn owner_scope(caller: &Caller) -> Option<&str> {
    match &caller.0 {
        Actor::User { name } => Some(name),
        _ => None,
    }
}

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    grant: Option<axum::Extension<Grant>>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let user = match (owner_scope(&caller), body.user) {
        (Some(me), None) => me.to_owned(),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_body",
                "`user` may only be given on the control socket",
            ));
        }
        (None, Some(u)) => u,
        (None, None) => {
            return Err(ApiError::invalid(
                "invalid_body",
                "give the `user` the token is for",
            ));
        }
    };
    let users = state.engine.snapshot().state.users.clone();
    let owner_role = grant
        .map(|g| g.0.0)
        .or_else(|| users.get(&user).copied())
        .ok_or_else(|| {
            ApiError::not_found("user_not_found", format!("user {user:?} does not exist"))
        })?;
    let role = body.role.unwrap_or(owner_role);
    if body.expires_in.is_some_and(|d| !d.is_positive()) {
        return Err(ApiError::invalid(
            "invalid_duration",
            "expires_in must be positive",
        ));
    }
    let expires_at = body
        .expires_in
        .map(|d| crate::domain::time::add(state.engine.now(), d));
    let id = random_hex(4);
    let secret = format!("vdt_{id}_{}", random_hex(32));
    let mut request = Request::new(
        Command::CreateToken {
            id: id.clone(),
            name: body.name.clone(),
            user: user.clone(),
            role,
            expires_at,
        },
        caller.0,
    )
    .with_key(key.0);
    request.secret = Some(sha256_hex(&secret));
    let reply = state.engine.execute(request).await?;
    if reply.replayed {
        // The secret of the first answer was shown once and is not stored.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "token_already_created",
            "this idempotency key already created a token; its secret was shown once",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            view: TokenView {
                id,
                name: body.name.trim().to_owned(),
                user,
                role,
                expires_at,
                revoked: false,
            },
            token: secret,
        }),
    ))
}

async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Json<Vec<TokenView>> {
    let scope = owner_scope(&caller).map(str::to_owned);
    let snap = state.engine.snapshot();
    Json(
        snap.state
            .tokens
            .iter()
            .filter(|(_, t)| scope.as_ref().is_none_or(|me| *me == t.user))
            .map(|(id, t)| TokenView {
                id: id.clone(),
                name: t.name.clone(),
                user: t.user.clone(),
                role: t.role,
                expires_at: t.expires_at,
                revoked: t.revoked,
            })
            .collect(),
    )
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let visible = state
        .engine
        .snapshot()
        .state
        .tokens
        .get(&id)
        .is_some_and(|t| owner_scope(&caller).is_none_or(|me| me == t.user));
    if !visible {
        // Someone else's token is as good as unknown.
        return Err(ApiError::not_found(
            "token_not_found",
            format!("token {id:?} does not exist"),
        ));
    }
    state
        .engine
        .execute(Request::new(Command::RevokeToken { id }, caller.0).with_key(key.0))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Routes every transport has (the socket too): tokens.
pub fn token_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
}

/// Login: the one API route reachable without credentials.
pub fn login_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/setup", post(setup))
}

pub fn logout_routes() -> Router<AppState> {
    Router::new().route("/api/v1/auth/logout", post(logout))
}

/// Headers on every network response: no inline script, no framing, no sniffing, no
/// referrer; HSTS on HTTPS. CORS stays closed: no Access-Control-* headers are sent.
pub async fn security_headers(https: bool, req: axum::extract::Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}
