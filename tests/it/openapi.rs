//! The OpenAPI document (`GET /api/v1/openapi.json`): well formed, complete, and in step
//! with the routers, the guard and the handlers it describes.

use crate::support::*;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use tower::ServiceExt;
use venued::domain::account::Permission;
use venued::domain::{Actor, Command, Role};
use venued::engine::{Engine, EngineConfig};
use venued::http::Caller;
use venued::http::auth::{Auth, AuthConfig};
use venued::http::openapi::{self, ROUTES, Served};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

/// One request. The body is read only when it is not an event stream (which never ends).
async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
    socket: bool,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if socket {
        req = req.extension(Caller(Actor::Local { uid: None }));
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
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("text/event-stream") {
        return Answer {
            status,
            content_type,
            body: Value::Null,
        };
    }
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn add_user(engine: &Engine, name: &str, role: Role) {
    let mut req = venued::engine::Request::new(
        Command::AddUser {
            name: name.into(),
            role,
        },
        Actor::Local { uid: None },
    );
    req.secret = Some(venued::auth::hash_password("a long password").unwrap());
    engine.execute(req).await.unwrap();
}

/// A bearer token for `user` (who has `role`), as the API creates them.
async fn bearer(engine: &Engine, user: &str, role: Role) -> String {
    let id = format!("t-{user}");
    let secret = format!("vdt_{id}_secret");
    let mut req = venued::engine::Request::new(
        Command::CreateToken {
            id,
            name: "test".into(),
            user: user.into(),
            role,
            expires_at: None,
        },
        Actor::Local { uid: None },
    );
    req.secret = Some(sha256_hex(&secret));
    engine.execute(req).await.unwrap();
    format!("Bearer {secret}")
}

/// The document as the control socket serves it.
async fn document() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let a = call(
        &venued::http::router(engine.clone()),
        "GET",
        openapi::PATH,
        None,
        &[],
        true,
    )
    .await;
    engine.shutdown().await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "application/json");
    a.body
}

/// (method, path) -> operation object.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.insert((method.to_uppercase(), path.clone()), op.clone());
        }
    }
    out
}

/// Resolve a `$ref` or a `#/...` pointer in the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// An operation's parameters, references resolved.
fn parameters(doc: &Value, op: &Value) -> Vec<Value> {
    op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["$ref"].as_str() {
            Some(r) => resolve(doc, r).unwrap().clone(),
            None => p.clone(),
        })
        .collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_every_operation_of_the_table() {
    let doc = document().await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let ops = operations(&doc);
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(
        ops.keys().cloned().collect::<BTreeSet<_>>(),
        table,
        "the document's operations are the table's"
    );
    let mut ids = BTreeSet::new();
    for r in ROUTES {
        let op = &ops[&(r.method.to_owned(), r.path.to_owned())];
        assert_eq!(op["operationId"], r.operation_id);
        assert!(ids.insert(r.operation_id), "{} twice", r.operation_id);
        assert!(op["summary"].is_string(), "{}: no summary", r.operation_id);
        let responses = op["responses"].as_object().unwrap();
        for a in r.answers {
            assert!(
                responses.contains_key(&a.status.to_string()),
                "{}: {} undocumented",
                r.operation_id,
                a.status
            );
        }
        // Every error is problem+json naming its codes.
        for (status, resp) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let problem = &resp["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    problem["allOf"][0]["$ref"], "#/components/schemas/Problem",
                    "{} {status}",
                    r.operation_id
                );
                assert!(
                    !problem["allOf"][1]["properties"]["code"]["enum"]
                        .as_array()
                        .unwrap()
                        .is_empty()
                );
            }
        }
        // Security: public routes none; the others a token or a login cookie (with the
        // CSRF header on changes), and the permission the guard checks.
        let security = op["security"].as_array().unwrap();
        if r.public() {
            assert!(security.is_empty(), "{}", r.operation_id);
            assert!(op.get("x-permission").is_none(), "{}", r.operation_id);
        } else {
            let schemes: BTreeSet<String> = security
                .iter()
                .flat_map(|s| s.as_object().unwrap().keys().cloned())
                .collect();
            let mut want = BTreeSet::from(["bearer".to_owned(), "cookie".to_owned()]);
            if r.method != "GET" {
                want.insert("csrf".to_owned());
            }
            assert_eq!(schemes, want, "{}", r.operation_id);
            let p = op["x-permission"].as_str().unwrap_or_else(|| {
                panic!(
                    "{}: needs credentials but authz names no permission for it",
                    r.operation_id
                )
            });
            assert!(Permission::ALL.iter().any(|q| q.as_str() == p), "{p}");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["in"], "cookie");
    assert_eq!(schemes["cookie"]["name"], "venued_session");
    assert_eq!(schemes["csrf"]["name"], "X-CSRF-Token");
}

#[tokio::test]
async fn every_ref_resolves_and_every_path_parameter_is_declared() {
    let doc = document().await;
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "suspiciously few $refs: {}", all.len());
    for r in &all {
        assert!(r.starts_with("#/components/"), "{r} is not local");
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }
    // Every component schema is used.
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let r = format!("#/components/schemas/{name}");
        assert!(all.contains(&r.as_str()), "{name} is never referenced");
    }

    for ((method, path), op) in operations(&doc) {
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let params = parameters(&doc, &op);
        let declared: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{method} {path}: {p}");
                assert!(p["schema"].is_object(), "{method} {path}: {p}");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(declared, in_template, "{method} {path}: path parameters");
        let mut seen = BTreeSet::new();
        for p in &params {
            assert!(
                seen.insert((p["in"].to_string(), p["name"].to_string())),
                "{method} {path}: {p} twice"
            );
        }
    }

    // The query parameters the handlers read.
    let query = |method: &str, path: &str| -> BTreeSet<String> {
        let ops = operations(&doc);
        parameters(&doc, &ops[&(method.to_owned(), path.to_owned())])
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        query("GET", "/api/v1/events"),
        set(&["after", "limit", "type", "station", "session"])
    );
    assert_eq!(query("GET", "/api/v1/sessions"), set(&["station"]));
    assert_eq!(query("GET", "/api/v1/stream"), set(&["after"]));
}

/// Every `.route("…", …)` path in src/http. A route registered with anything but a
/// literal would hide from this test, so that is an error.
fn route_literals() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices(".route(") {
            let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
            if text[line_start..i].trim_start().starts_with("//") {
                continue;
            }
            let rest = text[i + ".route(".len()..].trim_start();
            let literal = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(p, _)| p.to_owned());
            match literal {
                Some(p) => {
                    out.insert(p);
                }
                None => panic!(
                    "{}: a `.route(` whose path is not a string literal: {:?}",
                    path.display(),
                    &rest[..rest.len().min(40)]
                ),
            }
        }
    }
    out
}

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "x1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// What a router serves among `paths` × [`METHODS`]: anything but a 405 or the
/// router's own 404 (an empty body; handlers' 404s are problem+json).
async fn served(
    app: &axum::Router,
    paths: &BTreeSet<String>,
    headers: &[(&str, &str)],
    socket: bool,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for path in paths {
        for method in METHODS {
            let a = call(app, method, &concrete(path), None, headers, socket).await;
            let unmatched = a.status == StatusCode::METHOD_NOT_ALLOWED
                || (a.status == StatusCode::NOT_FOUND
                    && !a.content_type.starts_with("application/problem+json"));
            if !unmatched {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

/// The drift test: the table lists exactly what each router serves.
#[tokio::test]
async fn the_route_table_is_exactly_what_the_routers_serve() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    add_user(&engine, "owner", Role::Owner).await;
    let auth = bearer(&engine, "owner", Role::Owner).await;

    let literals = route_literals();
    assert!(literals.contains("/api/v1/stations") && literals.contains("/healthz"));
    let mut paths: BTreeSet<String> = ROUTES.iter().map(|r| r.path.to_owned()).collect();
    paths.extend(literals.iter().cloned());

    let socket = served(&venued::http::router(engine.clone()), &paths, &[], true).await;
    let network = served(
        &venued::http::network_router(engine.clone(), Auth::default(), false),
        &paths,
        &[("authorization", &auth)],
        false,
    )
    .await;
    let table = |on_socket: bool| -> BTreeSet<(String, String)> {
        ROUTES
            .iter()
            .filter(|r| !on_socket || r.served == Served::Everywhere)
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect()
    };
    let diff = |what: &str, served: &BTreeSet<_>, table: &BTreeSet<_>| {
        let missing: Vec<_> = served.difference(table).collect();
        let extra: Vec<_> = table.difference(served).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{what}: served but not in openapi::ROUTES: {missing:?}; \
             in ROUTES but not served: {extra:?}"
        );
    };
    diff("control socket", &socket, &table(true));
    diff("network listeners", &network, &table(false));

    // Paths registered in src/http that neither API router serves: the CA download page,
    // which `venued serve` adds beside the network router when it runs HTTPS.
    let elsewhere: BTreeSet<&str> = literals
        .iter()
        .map(String::as_str)
        .filter(|p| !network.iter().any(|(_, q)| q == p))
        .collect();
    assert_eq!(elsewhere, BTreeSet::from(["/ca", "/ca.pem"]));
    engine.shutdown().await;
}

/// The guard agrees with the document: public operations need nothing, the others a
/// credential, and a role without the documented permission is refused.
#[tokio::test]
async fn the_network_guard_enforces_the_documented_security() {
    let doc = document().await;
    let ops = operations(&doc);
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let mut tokens = BTreeMap::new();
    for role in Role::ALL {
        add_user(&engine, role.as_str(), role).await;
        tokens.insert(role, bearer(&engine, role.as_str(), role).await);
    }
    let app = venued::http::network_router(engine.clone(), Auth::default(), false);
    for r in ROUTES {
        let path = concrete(r.path);
        let a = call(&app, r.method, &path, None, &[], false).await;
        if r.public() {
            assert_ne!(a.status, StatusCode::UNAUTHORIZED, "{} {path}", r.method);
            continue;
        }
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{} {path}",
            r.method
        );
        let documented = ops[&(r.method.to_owned(), r.path.to_owned())]["x-permission"]
            .as_str()
            .unwrap();
        let permission = *Permission::ALL
            .iter()
            .find(|p| p.as_str() == documented)
            .unwrap();
        for role in Role::ALL {
            let a = call(
                &app,
                r.method,
                &path,
                None,
                &[("authorization", &tokens[&role])],
                false,
            )
            .await;
            if role.allows(permission) {
                assert!(
                    a.status != StatusCode::UNAUTHORIZED && a.status != StatusCode::FORBIDDEN,
                    "{role} {} {path}: {} {}",
                    r.method,
                    a.status,
                    a.body
                );
            } else {
                assert_eq!(
                    (a.status, a.body["code"].as_str()),
                    (StatusCode::FORBIDDEN, Some("forbidden")),
                    "{role} {} {path}",
                    r.method
                );
            }
        }
    }
    // A method a route does not answer is 405 with `Allow`, as on the socket, not a
    // "forbidden"; HEAD is authorised as the GET it is.
    let staff = [("authorization", tokens[&Role::Staff].as_str())];
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method("PUT")
                .uri("/api/v1/stations")
                .header(staff[0].0, staff[0].1)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST");
    let a = call(&app, "HEAD", "/api/v1/stations", None, &staff, false).await;
    assert_eq!(a.status, StatusCode::OK);
    engine.shutdown().await;
}

/// Operations documented with `Idempotency-Key` read it (a malformed one is refused
/// before anything else); the other changes do not claim it.
#[tokio::test]
async fn every_mutating_operation_documents_the_idempotency_key_it_reads() {
    let doc = document().await;
    let ops = operations(&doc);
    // Changes without a key, and why: login and logout touch only in-memory login state
    // and are safe to repeat; setup and enroll work once (the code is spent) and are
    // refused after; mikrotikSetup changes only the router, looking its rules up before
    // it adds any, so a repeat adds nothing; provisionDevice likewise reads each plug
    // setting before it writes one; testDevice only reads the device.
    let keyless = [
        "login",
        "logout",
        "setup",
        "enroll",
        "mikrotikSetup",
        "provisionDevice",
        "testDevice",
    ];
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    add_user(&engine, "owner", Role::Owner).await;
    let auth = bearer(&engine, "owner", Role::Owner).await;
    let socket = venued::http::router(engine.clone());
    let network = venued::http::network_router(engine.clone(), Auth::default(), false);
    // Obsolete text (a byte above 0x7f) is a valid header value but not a valid key.
    let bad_key = hyper::header::HeaderValue::from_bytes(b"key\xff").unwrap();
    for r in ROUTES.iter().filter(|r| r.method != "GET") {
        let op = &ops[&(r.method.to_owned(), r.path.to_owned())];
        let documented = parameters(&doc, op)
            .iter()
            .any(|p| p["in"] == "header" && p["name"] == "Idempotency-Key");
        assert_eq!(documented, r.idempotent, "{}", r.operation_id);
        assert_eq!(
            documented,
            !keyless.contains(&r.operation_id),
            "{}: a change documents Idempotency-Key unless it is listed as keyless",
            r.operation_id
        );
        let (app, on_socket) = match r.served {
            Served::Everywhere => (&socket, true),
            Served::Network => (&network, false),
        };
        let mut req = Request::builder()
            .method(r.method)
            .uri(concrete(r.path))
            .header("idempotency-key", bad_key.clone())
            .header("authorization", &auth);
        if on_socket {
            req = req.extension(Caller(Actor::Local { uid: None }));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes())
                .unwrap_or(Value::Null);
        let refused =
            status == StatusCode::BAD_REQUEST && body["code"] == "invalid_idempotency_key";
        assert_eq!(
            refused, documented,
            "{}: {status} {body} (documented: {documented})",
            r.operation_id
        );
    }
    engine.shutdown().await;
}

/// Every operation, called as its documentation shows (its path parameter examples and
/// request body example), answers one of its documented success statuses.
#[tokio::test]
async fn requests_built_from_the_documented_examples_are_accepted() {
    let doc = document().await;
    let ops = operations(&doc);
    let by_id: BTreeMap<&str, &venued::http::openapi::RouteDoc> =
        ROUTES.iter().map(|r| (r.operation_id, r)).collect();
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let auth = Auth::new(AuthConfig::default());
    let setup_token = auth.enable_setup(&dir.path().join("setup-token")).unwrap();
    let ca = venued::http::enrollment::BoxCa {
        pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".into(),
        fingerprint: "3F:9A:1C:44:B0:7E:55:D2".into(),
        mqtt_tls_ports: vec![8883],
    };
    let app = venued::http::network_router(engine.clone(), auth, false)
        .layer(axum::Extension(std::sync::Arc::new(ca)));
    // pc-02, for the transfer example to move to.
    add_stations(&engine, &["pc-02"]).await;
    // A router for the mikrotik-setup example (`router`): the RouterOS fake, pinned.
    let fake = venued::fakes::mikrotik::Mikrotik::start(Default::default())
        .await
        .unwrap();
    let fingerprint = {
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(fake.cert_pem().as_bytes()).unwrap();
        venued::devices::mikrotik::fingerprint(der.as_ref())
    };
    let mut router = venued::engine::Request::new(
        Command::AddDevice {
            name: venued::domain::device::DeviceName::parse("router").unwrap(),
            kind: venued::domain::device::DeviceKind::Mikrotik {
                url: format!("https://{}", fake.https_addr()),
                user: "admin".into(),
                list: "venue-blocked".into(),
                tls_fingerprint: Some(fingerprint),
            },
        },
        Actor::Local { uid: None },
    );
    router.secret = Some("venued-test".into());
    engine.execute(router).await.unwrap();

    // A story in which every example makes sense, in order.
    let story = [
        "openapi",
        "healthz",
        "readyz",
        "setup",
        "listStations",
        "addStation",
        "getStation",
        "sendStationCommand",
        "createEnrollment",
        "enroll",
        "listZones",
        "startSession",
        "listSessions",
        "getSession",
        "extendSession",
        "pauseSession",
        "resumeSession",
        "transferSession",
        "stopSession",
        "listDevices",
        "addDevice",
        "getDevice",
        "mikrotikSetup",
        "testDevice",
        "provisionDevice",
        "setEnforcement",
        "getEnforcement",
        "clearEnforcement",
        "removeDevice",
        "removeStation",
        "listEvents",
        "streamEvents",
        "verifyAudit",
        "getClock",
        "confirmClock",
        "addUser",
        "listUsers",
        "createToken",
        "listTokens",
        "revokeToken",
        "createMqttAccount",
        "listMqttAccounts",
        "rotateMqttSecret",
        "revokeMqttAccount",
        "metrics",
        "login",
        "logout",
    ];
    assert_eq!(
        story.iter().copied().collect::<BTreeSet<_>>(),
        by_id.keys().copied().collect::<BTreeSet<_>>(),
        "the story calls every operation once"
    );
    let mut owner = String::new();
    let mut created_token = String::new();
    let mut enrollment_code = String::new();
    for id in story {
        let r = by_id[id];
        let op = &ops[&(r.method.to_owned(), r.path.to_owned())];
        let mut path = r.path.to_owned();
        for p in parameters(&doc, op).iter().filter(|p| p["in"] == "path") {
            let name = p["name"].as_str().unwrap();
            let value = match id {
                // A token's id is chosen by the API: use the one the story created.
                "revokeToken" => created_token.clone(),
                _ => p["example"].as_str().unwrap().to_owned(),
            };
            path = path.replace(&format!("{{{name}}}"), &value);
        }
        let mut body = op["requestBody"]["content"]["application/json"]["example"].clone();
        if id == "setup" {
            // The one value no document can know.
            body["token"] = json!(setup_token);
        }
        if id == "enroll" {
            // Single use: the code the story just issued.
            body["code"] = json!(enrollment_code);
        }
        let body = (!body.is_null()).then_some(body);
        let headers: Vec<(&str, &str)> = if r.public() || owner.is_empty() {
            vec![]
        } else {
            vec![("authorization", owner.as_str())]
        };
        let a = call(&app, r.method, &path, body.as_ref(), &headers, false).await;
        let documented: Vec<u16> = r.answers.iter().map(|a| a.status).collect();
        assert!(
            documented.contains(&a.status.as_u16()) && a.status.is_success(),
            "{id}: {} {path} with {body:?}: {} {}",
            r.method,
            a.status,
            a.body
        );
        match id {
            "setup" => owner = bearer(&engine, "owner", Role::Owner).await,
            "createToken" => created_token = a.body["id"].as_str().unwrap().to_owned(),
            "createEnrollment" => {
                enrollment_code = a.body["code"].as_str().unwrap().to_owned();
            }
            _ => {}
        }
    }
    engine.shutdown().await;
    fake.stop().await;
}

/// The document's patterns accept its own examples, and durations as the API prints them.
#[tokio::test]
async fn patterns_accept_the_examples_and_printed_durations() {
    use regex_automata::meta::Regex;
    let doc = document().await;
    fn check(v: &Value, at: &str) {
        match v {
            Value::Object(m) => {
                if let Some(pattern) = m.get("pattern").and_then(Value::as_str) {
                    let re = Regex::new(pattern).unwrap_or_else(|e| panic!("{at}: {e}"));
                    let examples = m
                        .get("examples")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .chain(m.get("example").cloned());
                    for ex in examples {
                        let ex = ex.as_str().unwrap();
                        assert!(re.is_match(ex), "{at}: {ex:?} does not match {pattern}");
                    }
                }
                for (k, v) in m {
                    check(v, &format!("{at}/{k}"));
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    check(v, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    check(&doc, "#");
    // Path parameter examples sit beside their schema.
    for ((method, path), op) in operations(&doc) {
        for p in parameters(&doc, &op) {
            let schema = match p["schema"]["$ref"].as_str() {
                Some(r) => resolve(&doc, r).unwrap().clone(),
                None => p["schema"].clone(),
            };
            if let (Some(pattern), Some(ex)) = (schema["pattern"].as_str(), p["example"].as_str()) {
                assert!(
                    Regex::new(pattern).unwrap().is_match(ex),
                    "{method} {path}: {ex:?} does not match {pattern}"
                );
            }
        }
    }
    let duration = Regex::new(openapi::DURATION_PATTERN).unwrap();
    assert_eq!(
        doc["components"]["schemas"]["Duration"]["pattern"],
        openapi::DURATION_PATTERN
    );
    for secs in [
        0,
        1,
        45,
        59,
        60,
        61,
        90,
        1800,
        3599,
        3600,
        3661,
        5400,
        86_400,
        90_061,
        -30,
        -3661,
        -35_396_294_454, // a clock confirmed to the year 904
    ] {
        let printed = venued::domain::time::human(jiff::SignedDuration::from_secs(secs));
        assert!(
            duration.is_match(&printed),
            "{printed:?} ({secs} s) is not matched by the Duration pattern"
        );
        assert_eq!(
            printed.parse::<jiff::SignedDuration>().unwrap(),
            jiff::SignedDuration::from_secs(secs)
        );
    }
    for ex in ["30m", "1h 30m", "45s", "PT30M", "PT1H30M", "720h"] {
        assert!(duration.is_match(ex), "{ex}");
        ex.parse::<jiff::SignedDuration>().unwrap();
    }
    // No jiff ISO-8601 duration format is left for a client to trust.
    assert!(!doc.to_string().contains("\"format\":\"duration\""));
}

/// The problem codes in docs/api.md are documented here with the same status.
#[tokio::test]
async fn the_codes_of_docs_api_md_are_in_the_document() {
    let doc = document().await;
    let mut documented: BTreeSet<(u16, String)> = BTreeSet::new();
    for op in operations(&doc).values() {
        for (status, resp) in op["responses"].as_object().unwrap() {
            let codes = &resp["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"]
                ["code"]["enum"];
            for c in codes.as_array().into_iter().flatten() {
                documented.insert((status.parse().unwrap(), c.as_str().unwrap().to_owned()));
            }
        }
    }
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let mut checked = 0;
    for line in md.lines() {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(status) = cells.first().and_then(|s| s.parse::<u16>().ok()) else {
            continue;
        };
        let codes = cells[1].split('`').skip(1).step_by(2);
        for code in codes.filter(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')) {
            assert!(
                documented.contains(&(status, code.to_owned())),
                "docs/api.md: {status} {code} is not in the OpenAPI document"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "read only {checked} codes from docs/api.md");
}
