//! The network API: authentication, the role matrix (checked against
//! docs/permissions.md), login with CSRF, brute-force lockout and security headers.

use crate::support::*;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use venued::domain::account::Permission;
use venued::domain::{Actor, Command, Role};
use venued::engine::{Engine, EngineConfig};
use venued::http::auth::{Auth, AuthConfig};

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn add_user(engine: &Engine, name: &str, role: Role, password: &str) {
    let mut req = venued::engine::Request::new(
        Command::AddUser {
            name: name.into(),
            role,
        },
        Actor::Local { uid: None },
    );
    req.secret = Some(venued::auth::hash_password(password).unwrap());
    engine.execute(req).await.unwrap();
}

/// A bearer token for `user`, created through the engine as the API does.
async fn token(
    engine: &Engine,
    user: &str,
    role: Role,
    expires_at: Option<jiff::Timestamp>,
) -> (String, String) {
    let id = format!("t{}", rand_id());
    let secret = format!("vdt_{id}_secret-for-{user}");
    let mut req = venued::engine::Request::new(
        Command::CreateToken {
            id: id.clone(),
            name: "test".into(),
            user: user.into(),
            role,
            expires_at,
        },
        Actor::Local { uid: None },
    );
    req.secret = Some(sha256_hex(&secret));
    engine.execute(req).await.unwrap();
    (id, secret)
}

fn rand_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

struct Answer {
    status: StatusCode,
    body: Value,
    headers: hyper::HeaderMap,
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    }
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

#[test]
fn the_permission_doc_matches_the_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/permissions.md"))
        .unwrap();
    let roles = [Role::Owner, Role::Manager, Role::Staff, Role::Auditor];
    let mut seen = Vec::new();
    for line in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| permission"))
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(p) = Permission::ALL.iter().find(|p| p.as_str() == cells[0]) else {
            panic!(
                "docs/permissions.md names an unknown permission {:?}",
                cells[0]
            );
        };
        for (i, role) in roles.iter().enumerate() {
            let doc_says = match cells[2 + i] {
                "yes" => true,
                "no" => false,
                other => panic!("cell {other:?} for {} / {role}", cells[0]),
            };
            assert_eq!(
                role.allows(*p),
                doc_says,
                "{} for {role}: code and doc disagree",
                cells[0]
            );
        }
        seen.push(*p);
    }
    for p in Permission::ALL {
        assert!(
            seen.contains(&p),
            "{} is missing from docs/permissions.md",
            p.as_str()
        );
    }
}

#[tokio::test]
async fn every_role_reaches_exactly_what_its_permissions_allow() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    let app = venued::http::network_router(engine.clone(), Auth::default(), false);
    let cases: Vec<(&str, &str, Option<Value>, Permission)> = vec![
        ("GET", "/api/v1/stations", None, Permission::ReadFloor),
        ("GET", "/api/v1/stations/pc-1", None, Permission::ReadFloor),
        ("GET", "/api/v1/sessions", None, Permission::ReadFloor),
        ("GET", "/api/v1/clock", None, Permission::ReadFloor),
        (
            "POST",
            "/api/v1/stations",
            Some(json!({"id": "x", "name": "X", "kind": "pc"})),
            Permission::ManageStations,
        ),
        (
            "DELETE",
            "/api/v1/stations/nope",
            None,
            Permission::ManageStations,
        ),
        (
            "POST",
            "/api/v1/sessions",
            Some(json!({"station": "nope", "duration": "30m"})),
            Permission::RunSessions,
        ),
        (
            "POST",
            "/api/v1/sessions/99/stop",
            None,
            Permission::RunSessions,
        ),
        (
            "POST",
            "/api/v1/sessions/99/extend",
            Some(json!({"by": "5m"})),
            Permission::RunSessions,
        ),
        ("GET", "/api/v1/events", None, Permission::ReadEvents),
        ("GET", "/api/v1/audit/verify", None, Permission::VerifyAudit),
        (
            "POST",
            "/api/v1/users",
            Some(json!({"name": "a b", "role": "staff", "password": "long enough pw"})),
            Permission::ManageUsers,
        ),
        ("GET", "/api/v1/tokens", None, Permission::OwnTokens),
        (
            "POST",
            "/api/v1/clock/confirm",
            Some(json!({"now": "2026-06-01T18:00:00Z"})),
            Permission::ConfirmClock,
        ),
    ];
    let mut checked = 0;
    for role in Role::ALL {
        let name = format!("{role}-user");
        add_user(&engine, &name, role, "a long password").await;
        let (_, secret) = token(&engine, &name, role, None).await;
        let auth = bearer(&secret);
        for (method, path, body, permission) in &cases {
            let a = call(
                &app,
                method,
                path,
                body.clone(),
                &[("authorization", &auth)],
            )
            .await;
            if role.allows(*permission) {
                assert!(
                    a.status != StatusCode::UNAUTHORIZED && a.status != StatusCode::FORBIDDEN,
                    "{role} {method} {path}: {} {}",
                    a.status,
                    a.body
                );
            } else {
                assert_eq!(
                    (a.status, a.body["code"].as_str()),
                    (StatusCode::FORBIDDEN, Some("forbidden")),
                    "{role} {method} {path}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * cases.len());
    engine.shutdown().await;
}

#[tokio::test]
async fn missing_wrong_revoked_and_expired_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_user(&engine, "kim", Role::Staff, "a long password").await;
    let app = venued::http::network_router(engine.clone(), Auth::default(), false);
    let before = venued::http::metrics_hook::auth_failures();
    let code = |a: &Answer| (a.status, a.body["code"].as_str().map(str::to_owned));
    let un = StatusCode::UNAUTHORIZED;

    let a = call(&app, "GET", "/api/v1/stations", None, &[]).await;
    assert_eq!(code(&a), (un, Some("unauthenticated".into())));
    let a = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("authorization", "Basic a2ltOnB3")],
    )
    .await;
    assert_eq!(code(&a), (un, Some("bad_authorization".into())));
    let a = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("authorization", "Bearer vdt_nope")],
    )
    .await;
    assert_eq!(code(&a), (un, Some("bad_token".into())));

    let (id, secret) = token(&engine, "kim", Role::Staff, None).await;
    let ok = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("authorization", &bearer(&secret))],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    engine
        .execute(venued::engine::Request::new(
            Command::RevokeToken { id },
            Actor::Local { uid: None },
        ))
        .await
        .unwrap();
    let a = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("authorization", &bearer(&secret))],
    )
    .await;
    assert_eq!(code(&a), (un, Some("token_revoked".into())));

    let soon = engine.now() + jiff::SignedDuration::from_mins(10);
    let (_, short) = token(&engine, "kim", Role::Staff, Some(soon)).await;
    assert_eq!(
        call(
            &app,
            "GET",
            "/api/v1/stations",
            None,
            &[("authorization", &bearer(&short))]
        )
        .await
        .status,
        StatusCode::OK
    );
    clock.advance(std::time::Duration::from_secs(601));
    engine.sync().await.unwrap();
    let a = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("authorization", &bearer(&short))],
    )
    .await;
    assert_eq!(code(&a), (un, Some("token_expired".into())));

    // A token never exceeds its owner.
    let mut req = venued::engine::Request::new(
        Command::CreateToken {
            id: "boss".into(),
            name: "x".into(),
            user: "kim".into(),
            role: Role::Manager,
            expires_at: None,
        },
        Actor::Local { uid: None },
    );
    req.secret = Some(sha256_hex("whatever"));
    assert_eq!(
        engine.execute(req).await.unwrap_err().code(),
        "token_exceeds_user"
    );

    let after = venued::http::metrics_hook::auth_failures();
    let grew = |reason: &str| {
        let get = |v: &[(&str, u64)]| v.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n);
        get(&after) - get(&before)
    };
    // Other tests run in parallel and only add; these at least must have been counted.
    assert!(
        grew("unauthenticated") >= 1 && grew("token_revoked") >= 1 && grew("token_expired") >= 1
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn login_cookie_needs_its_csrf_header_for_changes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_user(&engine, "ana", Role::Manager, "correct horse battery").await;
    let app = venued::http::network_router(engine.clone(), Auth::default(), false);
    let login = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "ana", "password": "correct horse battery"})),
        &[],
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let set = login.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = login.body["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(login.body["role"], "manager");

    let read = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    let body = json!({"id": "pc-9", "name": "PC 9", "kind": "pc"});
    let a = call(
        &app,
        "POST",
        "/api/v1/stations",
        Some(body.clone()),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf_missing"))
    );
    let a = call(
        &app,
        "POST",
        "/api/v1/stations",
        Some(body.clone()),
        &[("cookie", &cookie), ("x-csrf-token", "0000")],
    )
    .await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf_mismatch"))
    );
    assert!(
        engine.snapshot().state.stations.is_empty(),
        "a refused change applied"
    );
    let a = call(
        &app,
        "POST",
        "/api/v1/stations",
        Some(body),
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // The event names the logged-in user as the actor.
    assert_eq!(
        a.body["events"][0]["actor"],
        json!({"kind": "user", "name": "ana"})
    );

    let out = call(
        &app,
        "POST",
        "/api/v1/auth/logout",
        None,
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let a = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_expired"))
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn brute_force_logins_are_locked_out_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_user(&engine, "ana", Role::Owner, "correct horse battery").await;
    let auth = Auth::new(AuthConfig {
        max_failures: 5,
        ..AuthConfig::default()
    });
    let app = venued::http::network_router(engine.clone(), auth, false);
    for i in 0..5 {
        let a = call(
            &app,
            "POST",
            "/api/v1/auth/login",
            Some(json!({"name": "ana", "password": format!("guess {i}")})),
            &[],
        )
        .await;
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("bad_credentials"))
        );
    }
    // Now even the right password waits: the account is locked.
    let a = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "ana", "password": "correct horse battery"})),
        &[],
    )
    .await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts"))
    );
    assert!(a.headers.contains_key("retry-after"));
    // An unknown account answers exactly like a wrong password.
    let a = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "nobody", "password": "x"})),
        &[],
    )
    .await;
    assert!(a.status == StatusCode::UNAUTHORIZED || a.status == StatusCode::TOO_MANY_REQUESTS);

    let failed = engine
        .store()
        .unwrap()
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(&e.body.kind, venued::domain::EventKind::LoginFailed { name, .. } if name == "ana"))
        .count();
    assert_eq!(failed, 5, "every failed login is an event");
    let a = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "ana", "password": 5})),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    engine.shutdown().await;
}

#[tokio::test]
async fn every_answer_carries_security_headers_and_no_cors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    let app = venued::http::network_router(engine.clone(), Auth::default(), true);
    for path in ["/healthz", "/api/v1/stations", "/nope"] {
        let a = call(
            &app,
            "GET",
            path,
            None,
            &[("origin", "https://evil.example")],
        )
        .await;
        let h = &a.headers;
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert!(
            !h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("unsafe-inline")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h.contains_key("strict-transport-security"), "HSTS on HTTPS");
        assert!(
            !h.contains_key("access-control-allow-origin"),
            "CORS must stay closed"
        );
    }
    engine.shutdown().await;
}

#[test]
fn the_daemon_serves_the_api_over_tcp_with_a_token_made_on_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _daemon = Daemon::start_with_http(dir.path(), &format!("127.0.0.1:{port}"));
    let d = dir.path();
    assert!(
        venued(d, &["user", "add", "kim", "--role", "staff"])
            .status
            .success()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut config = venued::config::Config::default();
        config.data.dir = d.to_path_buf();
        let client = venued::cli::Client::connect(&config).await.unwrap();
        let created: Value = client
            .call(
                hyper::Method::POST,
                "/api/v1/tokens",
                Some(&json!({"name": "till", "user": "kim"})),
                None,
            )
            .await
            .unwrap();
        let secret = created["token"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("vdt_"));
        let get = |auth: Option<String>| async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = Request::builder()
                .uri("/api/v1/stations")
                .header("host", "venued");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = tx
                .send_request(
                    req.body(http_body_util::Empty::<hyper::body::Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            resp.status()
        };
        assert_eq!(get(None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(get(Some(bearer(&secret))).await, StatusCode::OK);
    });
}

/// One HTTP/1.1 request to 127.0.0.1:`port`.
async fn tcp(
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "venued");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            b.to_string()
        }
        None => String::new(),
    };
    let resp = tx
        .send_request(
            req.body(http_body_util::Full::new(hyper::body::Bytes::from(bytes)))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn the_one_time_setup_token_creates_the_owner_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = Daemon::start_with_http(dir.path(), &format!("127.0.0.1:{port}"));
    let file = dir.path().join("setup-token");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&file).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let body =
            |t: &str| Some(json!({"token": t, "name": "boss", "password": "a long password"}));
        let (s, v) = tcp(
            port,
            "POST",
            "/api/v1/setup",
            body("0123456789abcdef0123456789abcdef"),
            &[],
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("bad_credentials"))
        );
        let (s, v) = tcp(
            port,
            "POST",
            "/api/v1/setup",
            Some(json!({"token": token, "name": "boss", "password": "short"})),
            &[],
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("weak_password"))
        );
        let (s, _) = tcp(port, "POST", "/api/v1/setup", body(&token), &[]).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(!file.exists(), "a used setup token is removed");
        let (s, v) = tcp(port, "POST", "/api/v1/setup", body(&token), &[]).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("already_set_up"))
        );
        let (s, v) = tcp(
            port,
            "POST",
            "/api/v1/auth/login",
            Some(json!({"name": "boss", "password": "a long password"})),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["role"], "owner");
    });
    drop(daemon);
    // With an account, a restart offers no setup token.
    let _daemon = Daemon::start_with_http(dir.path(), &format!("127.0.0.1:{port}"));
    assert!(!file.exists());
}

#[tokio::test]
async fn events_filter_by_type_station_and_session_and_page_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1", "pc-2"]).await;
    let s1 = start_session(&engine, "pc-1", 1800).await;
    let s2 = start_session(&engine, "pc-2", 1800).await;
    engine
        .execute(venued::engine::Request::new(
            Command::TransferSession {
                session: s1,
                to: venued::domain::StationId::parse("pc-9").unwrap_or_else(|_| unreachable!()),
            },
            Actor::Local { uid: None },
        ))
        .await
        .unwrap_err();
    add_user(&engine, "kim", Role::Staff, "a long password").await;
    let app = venued::http::router(engine.clone());
    let local = |path: &str| {
        let mut req = Request::builder().uri(path).body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(venued::http::Caller(Actor::Local { uid: None }));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
            )
        }
    };
    let seqs = |v: &Value| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let (_, all) = local("/api/v1/events?limit=1000").await;
    let n = all["events"].as_array().unwrap().len();
    let (_, sessions) = local("/api/v1/events?type=session").await;
    assert_eq!(sessions["events"].as_array().unwrap().len(), 2);
    let (_, pc2) = local("/api/v1/events?station=pc-2").await;
    assert!(
        pc2["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.to_string().contains("pc-2"))
    );
    assert_eq!(
        pc2["events"].as_array().unwrap().len(),
        2,
        "station added + session started"
    );
    let (_, one) = local(&format!("/api/v1/events?session={}", s2)).await;
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    // Paging: two at a time covers everything exactly once.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let (_, page) = local(&format!("/api/v1/events?after={after}&limit=2")).await;
        let got = seqs(&page);
        if got.is_empty() {
            break;
        }
        after = page["next"].as_u64().unwrap();
        paged.extend(got);
    }
    assert_eq!(paged, seqs(&all));
    assert_eq!(paged.len(), n);
    let (status, v) = local("/api/v1/events?station=PC/1").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_station_id"))
    );
    let (status, v) = local("/api/v1/events?colour=red").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query")),
        "unknown query parameters are refused"
    );

    let (_, users) = local("/api/v1/users").await;
    assert_eq!(
        users,
        json!([{"name": "kim", "role": "staff", "created_at": users[0]["created_at"]}])
    );
    assert!(
        !users.to_string().contains("argon2"),
        "no hashes in the user list"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn an_idle_login_expires_and_an_active_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_user(&engine, "ana", Role::Staff, "correct horse battery").await;
    let idle = std::time::Duration::from_millis(400);
    let auth = Auth::new(AuthConfig {
        idle_timeout: idle,
        ..AuthConfig::default()
    });
    let app = venued::http::network_router(engine.clone(), auth, false);
    let login = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "ana", "password": "correct horse battery"})),
        &[],
    )
    .await;
    let cookie = login.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // Used every 250 ms: stays logged in well past the idle limit.
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        assert_eq!(
            call(
                &app,
                "GET",
                "/api/v1/stations",
                None,
                &[("cookie", &cookie)]
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    tokio::time::sleep(idle + std::time::Duration::from_millis(200)).await;
    let a = call(
        &app,
        "GET",
        "/api/v1/stations",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_expired"))
    );
    engine.shutdown().await;
}
