//! Bad input gets a clear error with a stable code and changes nothing.

use crate::support::*;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use jiff::SignedDuration;
use serde_json::{Value, json};
use tower::ServiceExt;
use venued::domain::{Actor, Command, SessionId};
use venued::engine::{Engine, EngineConfig, EngineError};
use venued::http::Caller;

/// Everything observable about the store, to prove a refusal changed nothing.
fn fingerprint(engine: &Engine) -> (usize, String) {
    let events = engine.store().unwrap().events(0, 100_000).unwrap();
    let snap = engine.snapshot();
    (events.len(), format!("{:?}", snap.state))
}

async fn refused(engine: &Engine, cmd: Command, code: &str) {
    let before = fingerprint(engine);
    let err = exec(engine, cmd.clone()).await.unwrap_err();
    assert_eq!(err.code(), code, "{cmd:?}: {err}");
    assert!(!err.to_string().is_empty());
    assert_eq!(fingerprint(engine), before, "{cmd:?} changed the store");
}

#[tokio::test]
async fn refused_commands_name_the_problem_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1", "pc-2", "pc-3"]).await;
    let s1 = start_session(&engine, "pc-1", 1800).await;
    let s2 = start_session(&engine, "pc-2", 1800).await;
    let d = SignedDuration::from_secs;

    for bad in [d(0), d(-300), SignedDuration::from_millis(500)] {
        refused(
            &engine,
            Command::StartSession {
                station: station("pc-3"),
                duration: Some(bad),
            },
            "invalid_duration",
        )
        .await;
        refused(
            &engine,
            Command::ExtendSession {
                session: s1,
                by: bad,
            },
            "invalid_duration",
        )
        .await;
    }
    refused(
        &engine,
        Command::StartSession {
            station: station("pc-3"),
            duration: Some(SignedDuration::from_hours(25)),
        },
        "duration_too_long",
    )
    .await;
    refused(
        &engine,
        Command::ExtendSession {
            session: s1,
            by: SignedDuration::from_hours(24),
        },
        "duration_too_long",
    )
    .await;
    refused(
        &engine,
        Command::StartSession {
            station: station("pc-9"),
            duration: Some(d(60)),
        },
        "station_not_found",
    )
    .await;
    refused(
        &engine,
        Command::StartSession {
            station: station("pc-1"),
            duration: Some(d(60)),
        },
        "station_busy",
    )
    .await;
    refused(
        &engine,
        Command::TransferSession {
            session: s1,
            to: station("pc-2"),
        },
        "station_busy",
    )
    .await;
    refused(
        &engine,
        Command::TransferSession {
            session: s1,
            to: station("pc-1"),
        },
        "same_station",
    )
    .await;
    refused(
        &engine,
        Command::TransferSession {
            session: s1,
            to: station("pc-9"),
        },
        "station_not_found",
    )
    .await;
    refused(
        &engine,
        Command::RemoveStation {
            id: station("pc-1"),
        },
        "station_busy",
    )
    .await;
    refused(
        &engine,
        Command::ResumeSession { session: s1 },
        "session_wrong_phase",
    )
    .await;
    refused(
        &engine,
        Command::ExtendSession {
            session: SessionId(99),
            by: d(60),
        },
        "session_not_found",
    )
    .await;
    refused(
        &engine,
        Command::AddStation {
            id: station("pc-1"),
            name: "dup".into(),
            kind: venued::domain::StationKind::Pc,
            zone: None,
        },
        "station_exists",
    )
    .await;
    refused(
        &engine,
        Command::AddStation {
            id: station("pc-4"),
            name: "  ".into(),
            kind: venued::domain::StationKind::Pc,
            zone: None,
        },
        "invalid_field",
    )
    .await;
    refused(
        &engine,
        Command::AddStation {
            id: station("pc-4"),
            name: "x".repeat(65),
            kind: venued::domain::StationKind::Pc,
            zone: None,
        },
        "invalid_field",
    )
    .await;
    refused(
        &engine,
        Command::StopSession {
            session: s2,
            reason: Some("x".repeat(501)),
        },
        "invalid_field",
    )
    .await;

    exec(
        &engine,
        Command::StopSession {
            session: s2,
            reason: None,
        },
    )
    .await
    .unwrap();
    refused(
        &engine,
        Command::StopSession {
            session: s2,
            reason: None,
        },
        "session_ended",
    )
    .await;
    refused(
        &engine,
        Command::ExtendSession {
            session: s2,
            by: d(60),
        },
        "session_ended",
    )
    .await;

    let open = exec(
        &engine,
        Command::StartSession {
            station: station("pc-3"),
            duration: None,
        },
    )
    .await
    .unwrap();
    let venued::domain::EventKind::Session { session, .. } = &open.events[0].body.kind else {
        panic!()
    };
    refused(
        &engine,
        Command::ExtendSession {
            session: session.id,
            by: d(60),
        },
        "session_open_ended",
    )
    .await;
    engine.shutdown().await;
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_reuse_for_another_request() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    let req = |cmd: Command, key: &str| {
        venued::engine::Request::new(cmd, Actor::Local { uid: None }).with_key(Some(key.to_owned()))
    };
    let start = Command::StartSession {
        station: station("pc-1"),
        duration: Some(SignedDuration::from_mins(30)),
    };
    let first = engine.execute(req(start.clone(), "k-1")).await.unwrap();
    let again = engine.execute(req(start.clone(), "k-1")).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.events, again.events);
    let before = fingerprint(&engine);
    let other = Command::StartSession {
        station: station("pc-1"),
        duration: Some(SignedDuration::from_mins(60)),
    };
    let err = engine.execute(req(other, "k-1")).await.unwrap_err();
    assert!(matches!(err, EngineError::KeyReused(_)), "{err}");
    // The key is bound to its caller: someone else reusing it is refused, not answered
    // with the first caller's reply.
    let other_caller = venued::engine::Request::new(
        start.clone(),
        Actor::User {
            name: "mallory".into(),
        },
    )
    .with_key(Some("k-1".to_owned()));
    let err = engine.execute(other_caller).await.unwrap_err();
    assert!(matches!(err, EngineError::KeyReused(_)), "{err}");
    for bad in ["", "has space", &"k".repeat(129), "naïve"] {
        let err = engine.execute(req(start.clone(), bad)).await.unwrap_err();
        assert_eq!(err.code(), "invalid_idempotency_key", "{bad:?}");
    }
    assert_eq!(fingerprint(&engine), before);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy_at_once_and_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let config = EngineConfig {
        queue_capacity: 1,
        max_batch: 1,
        ..EngineConfig::default()
    };
    let engine = start_engine(dir.path(), &clock, config);
    let ids: Vec<String> = (0..300).map(|i| format!("pc-{i}")).collect();
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let engine = engine.clone();
            tokio::spawn(async move {
                exec(
                    &engine,
                    Command::AddStation {
                        id: station(&id),
                        name: id.clone(),
                        kind: venued::domain::StationKind::Pc,
                        zone: None,
                    },
                )
                .await
            })
        })
        .collect();
    let all = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
    .await
    .expect("a full queue must never hang a caller");
    let busy = all
        .iter()
        .filter(|r| matches!(r, Err(EngineError::Busy)))
        .count();
    let ok = all.iter().filter(|r| r.is_ok()).count();
    assert_eq!(busy + ok, 300, "only success or busy expected");
    assert!(
        busy > 0,
        "300 concurrent commands into a queue of 1 never saw busy"
    );
    assert_eq!(
        engine.snapshot().state.stations.len(),
        ok,
        "a busy answer must not apply"
    );
    engine.shutdown().await;
}

// ---- the HTTP API (the same router the control socket serves) ----

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Body,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(body).unwrap();
    req.extensions_mut()
        .insert(Caller(Actor::Local { uid: None }));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ctype,
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// method, path, body, headers, expected status, expected code
type Case = (
    &'static str,
    &'static str,
    Body,
    Vec<(&'static str, &'static str)>,
    StatusCode,
    &'static str,
);

#[tokio::test]
async fn the_api_answers_bad_requests_with_problem_json_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    let app = venued::http::router(engine.clone());
    let before = fingerprint(&engine);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/sessions",
            Body::from("{\"station\": "),
            vec![JSON],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"pc-1","duration":"30m","price":5}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"pc-1","duration":30}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"pc-1","duration":"soon"}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"PC/1","duration":"30m"}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"pc-1"}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"pc-1","duration":"30m"}).to_string()),
            vec![],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(vec![b' '; venued::http::MAX_BODY + 1]),
            vec![JSON],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"pc-1","duration":"-5m"}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_duration",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Body::from(json!({"station":"pc-1","duration":"30m"}).to_string()),
            vec![JSON, ("idempotency-key", "has space")],
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        ),
        (
            "POST",
            "/api/v1/sessions/S-x/stop",
            Body::empty(),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_session_id",
        ),
        (
            "POST",
            "/api/v1/sessions/7/stop",
            Body::from("{\"why\":1}"),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/sessions/7/stop",
            Body::empty(),
            vec![],
            StatusCode::NOT_FOUND,
            "session_not_found",
        ),
        (
            "POST",
            "/api/v1/sessions/7/stop",
            Body::from(vec![b' '; venued::http::MAX_BODY + 1]),
            vec![JSON],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "POST",
            "/api/v1/clock/confirm",
            Body::from(json!({"now": "0904-01-01T00:00:00Z"}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "GET",
            "/api/v1/stations/NOPE",
            Body::empty(),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_station_id",
        ),
        (
            "GET",
            "/api/v1/stations/pc-9",
            Body::empty(),
            vec![],
            StatusCode::NOT_FOUND,
            "station_not_found",
        ),
        (
            "GET",
            "/api/v1/events?limit=5000",
            Body::empty(),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
        ),
        (
            "POST",
            "/api/v1/users",
            Body::from(
                json!({"name":"a b","role":"staff","password":"long enough pw"}).to_string(),
            ),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "POST",
            "/api/v1/users",
            Body::from(json!({"name":"kim","role":"root","password":"long enough pw"}).to_string()),
            vec![JSON],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (method, path, body, headers, status, code) in cases {
        let (got, problem, ctype) = call(&app, method, path, body, &headers).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {problem}"
        );
        assert_eq!(ctype, "application/problem+json", "{method} {path}");
        assert!(!problem["detail"].as_str().unwrap_or("").is_empty());
    }
    assert_eq!(
        fingerprint(&engine),
        before,
        "a refused request changed the store"
    );

    // Without an identity (a transport that forgot authentication) nothing is served.
    let req = Request::builder()
        .uri("/api/v1/stations")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "reads are open on the socket router"
    );
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/stations")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"id":"pc-2","name":"x","kind":"pc"}).to_string(),
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fingerprint(&engine), before);
    engine.shutdown().await;
}

/// A body that never arrives (a slow or stalled client).
struct Stalled;

impl futures_core::Stream for Stalled {
    type Item = Result<hyper::body::Bytes, std::io::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_never_finishes_is_abandoned_with_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let before = fingerprint(&engine);
    let mut req = Request::builder()
        .method("POST")
        .uri("/api/v1/stations")
        .header("content-type", "application/json")
        .body(Body::from_stream(Stalled))
        .unwrap();
    req.extensions_mut()
        .insert(Caller(Actor::Local { uid: None }));
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "timeout");
    assert_eq!(fingerprint(&engine), before);
    engine.shutdown().await;
}
