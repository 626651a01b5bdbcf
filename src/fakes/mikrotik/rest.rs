//! RouterOS REST (`/rest/...`) over the [`Router`], without I/O: method, path, query and
//! body in; status and JSON out.
//!
//! Verbs as RouterOS 7 maps them: `GET` = print (a list, or `/<id>` one object; `?prop=v`
//! filters, `.proplist=a,b` picks properties), `PUT` = add (returns the new object),
//! `PATCH /<id>` = set (returns the changed object), `DELETE /<id>` = remove (204, empty),
//! `POST /<command>` = a console command (`print`, `add`, `set`, `remove`, `move`,
//! `enable`, `disable`). An unknown path is `400 no such command or directory (<word>)`.

use super::router::{Menu, Now, RosError, Router};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What to answer: the status and the JSON body (None for 204).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
        }
    }

    pub fn error(e: &RosError) -> Self {
        Self {
            status: e.status,
            body: Some(e.body()),
        }
    }
}

/// Commands a menu path may end in (a `GET` on them is `no such command`).
const COMMANDS: &[&str] = &[
    "print",
    "add",
    "set",
    "remove",
    "move",
    "enable",
    "disable",
    "unset",
    "find",
    "export",
    "reset-counters",
    "reset-counters-all",
    "comment",
];

/// Whether a request changes something (the requests `Fault::FailNext` counts).
pub fn mutates(method: &str, path: &str) -> bool {
    !matches!(method, "GET" | "HEAD") && !path.trim_end_matches('/').ends_with("/print")
}

/// Answer one request.
pub fn handle(
    router: &mut Router,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    now: Now,
) -> Reply {
    match dispatch(router, method, path, query, body, now) {
        Ok(r) => r,
        Err(e) => Reply::error(&e),
    }
}

#[derive(Clone, Copy)]
enum Target {
    Table(Menu),
    Clock,
    Resource,
}

/// Menus holding one object.
const SINGLES: [(&[&str], Target); 2] = [
    (&["system", "clock"], Target::Clock),
    (&["system", "resource"], Target::Resource),
];

fn no_such(word: &str) -> RosError {
    RosError::bad(format!("no such command or directory ({word})"))
}

/// Percent-decoding of a path segment or query part (`%2A1A` → `*1A`).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn dispatch(
    router: &mut Router,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    now: Now,
) -> Result<Reply, RosError> {
    let rest = path
        .strip_prefix("/rest")
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(RosError::not_found)?;
    if method == "HEAD" {
        return Err(RosError {
            status: 501,
            detail: None,
        });
    }
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (target, tail) = resolve(&segs)?;
    match target {
        Target::Clock | Target::Resource => match (method, tail) {
            ("GET", []) => Ok(Reply::ok(match target {
                Target::Clock => router.clock_json(now),
                _ => router.resource_json(now),
            })),
            (_, [word, ..]) if !COMMANDS.contains(word) => Err(no_such(word)),
            _ => Err(RosError::bad("no such command")),
        },
        Target::Table(menu) => table(router, menu, method, tail, query, body, now),
    }
}

fn resolve<'a>(segs: &'a [&'a str]) -> Result<(Target, &'a [&'a str]), RosError> {
    for menu in Menu::ALL {
        let p = menu.path();
        if segs.len() >= p.len() && segs[..p.len()] == *p {
            return Ok((Target::Table(menu), &segs[p.len()..]));
        }
    }
    for (p, target) in SINGLES {
        if segs.len() >= p.len() && segs[..p.len()] == *p {
            return Ok((target, &segs[p.len()..]));
        }
    }
    let known: Vec<&[&str]> = Menu::ALL
        .iter()
        .map(|m| m.path())
        .chain(SINGLES.iter().map(|(p, _)| *p))
        .collect();
    for k in 0..segs.len() {
        if !known.iter().any(|p| p.len() > k && p[..=k] == segs[..=k]) {
            return Err(no_such(segs[k]));
        }
    }
    // A directory such as /rest/ip/firewall.
    Err(RosError::bad("no such command"))
}

fn table(
    router: &mut Router,
    menu: Menu,
    method: &str,
    tail: &[&str],
    query: &str,
    body: &[u8],
    now: Now,
) -> Result<Reply, RosError> {
    match (method, tail) {
        ("GET", []) => {
            let (filter, proplist) = query_filter(query);
            Ok(Reply::ok(select(
                router.list(menu, now),
                &filter,
                proplist.as_deref(),
            )))
        }
        ("GET", [id]) if id.starts_with('*') => {
            let row = router.get(menu, id, now)?;
            let (_, proplist) = query_filter(query);
            Ok(Reply::ok(project(row, proplist.as_deref())))
        }
        ("PUT", []) => {
            let id = router.add(menu, strings(object(body)?)?, now)?;
            Ok(Reply::ok(project(router.get(menu, &id, now)?, None)))
        }
        ("PATCH", [id]) => {
            let mut props = strings(object(body)?)?;
            props.remove(".id");
            router.set(menu, id, props, now)?;
            Ok(Reply::ok(project(router.get(menu, id, now)?, None)))
        }
        ("DELETE", [id]) => {
            router.remove(menu, id, now)?;
            Ok(Reply {
                status: 204,
                body: None,
            })
        }
        ("POST", [cmd]) => command(router, menu, cmd, body, now),
        (_, [word, ..]) if !word.starts_with('*') && !COMMANDS.contains(word) => Err(no_such(word)),
        _ => Err(RosError::bad("no such command")),
    }
}

fn command(
    router: &mut Router,
    menu: Menu,
    cmd: &str,
    body: &[u8],
    now: Now,
) -> Result<Reply, RosError> {
    let args = object(body)?;
    let done = || Ok(Reply::ok(Value::Array(Vec::new())));
    match cmd {
        "print" => {
            let proplist = args.get(".proplist").map(text);
            let mut filter = Vec::new();
            if let Some(q) = args.get(".query") {
                let items = match q {
                    Value::Array(a) => a.iter().map(text).collect(),
                    other => vec![text(other)],
                };
                for item in items {
                    let Some((k, v)) = item.split_once('=') else {
                        return Err(RosError::bad(
                            "the fake's .query supports only name=value items",
                        ));
                    };
                    filter.push((k.to_owned(), v.to_owned()));
                }
            }
            Ok(Reply::ok(select(
                router.list(menu, now),
                &filter,
                proplist.as_deref(),
            )))
        }
        "add" => {
            let id = router.add(menu, strings(args)?, now)?;
            Ok(Reply::ok(serde_json::json!({ "ret": id })))
        }
        "set" | "enable" | "disable" => {
            let mut props = strings(args)?;
            let ids = take_ids(&mut props)?;
            if cmd != "set" {
                props = BTreeMap::from([("disabled".to_owned(), (cmd == "disable").to_string())]);
            }
            for id in &ids {
                router
                    .set(menu, id, props.clone(), now)
                    .map_err(no_such_item)?;
            }
            done()
        }
        "remove" => {
            let mut props = strings(args)?;
            let ids = take_ids(&mut props)?;
            for id in &ids {
                router.get(menu, id, now).map_err(no_such_item)?;
            }
            for id in &ids {
                router.remove(menu, id, now).map_err(no_such_item)?;
            }
            done()
        }
        "move" => {
            let mut props = strings(args)?;
            let ids = take_ids(&mut props)?;
            let dest = props.get("destination").filter(|d| !d.is_empty());
            router.move_rows(menu, &ids, dest.map(String::as_str))?;
            done()
        }
        other => Err(no_such(other)),
    }
}

/// In a console command a missing item is `no such item`, not 404.
fn no_such_item(e: RosError) -> RosError {
    if e.status == 404 {
        RosError::bad("no such item")
    } else {
        e
    }
}

/// `.id` or `numbers`, comma-separated.
fn take_ids(props: &mut BTreeMap<String, String>) -> Result<Vec<String>, RosError> {
    let ids = props
        .remove(".id")
        .or_else(|| props.remove("numbers"))
        .ok_or_else(|| RosError::bad("missing value(s) of argument(s) numbers"))?;
    Ok(ids
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A request body as a JSON object; an empty body is an empty object.
fn object(body: &[u8]) -> Result<Map<String, Value>, RosError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(RosError::bad("JSON parse error")),
    }
}

/// RouterOS takes numbers and booleans too and keeps them as text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(m: Map<String, Value>) -> Result<BTreeMap<String, String>, RosError> {
    m.into_iter()
        .map(|(k, v)| match v {
            Value::Object(_) => Err(RosError::bad(format!("invalid value for argument {k}"))),
            v => Ok((k, text(&v))),
        })
        .collect()
}

/// `list=x&.proplist=.id,address` → ([(list, x)], Some(".id,address")).
fn query_filter(query: &str) -> (Vec<(String, String)>, Option<String>) {
    let mut filter = Vec::new();
    let mut proplist = None;
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (decode(k), decode(v));
        if k == ".proplist" {
            proplist = Some(v);
        } else {
            filter.push((k, v));
        }
    }
    (filter, proplist)
}

fn project(row: BTreeMap<String, String>, proplist: Option<&str>) -> Value {
    let keep: Option<Vec<&str>> = proplist.map(|p| p.split(',').map(str::trim).collect());
    Value::Object(
        row.into_iter()
            .filter(|(k, _)| keep.as_ref().is_none_or(|keep| keep.contains(&k.as_str())))
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

fn select(
    rows: Vec<BTreeMap<String, String>>,
    filter: &[(String, String)],
    proplist: Option<&str>,
) -> Value {
    Value::Array(
        rows.into_iter()
            .filter(|r| filter.iter().all(|(k, v)| r.get(k) == Some(v)))
            .map(|r| project(r, proplist))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn now() -> Now {
        Now {
            mono: Duration::from_secs(10),
            wall: "2026-11-23T17:00:00Z".parse().unwrap(),
        }
    }

    fn call(r: &mut Router, method: &str, path: &str, body: Value) -> Reply {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        handle(r, method, path, query, &body, now())
    }

    #[test]
    fn address_list_over_rest() {
        let mut r = Router::new(true, "Europe/Berlin", now());
        let add = json!({"list":"venue-blocked","address":"192.168.50.21","comment":"venued st07"});
        let created = call(&mut r, "PUT", "/rest/ip/firewall/address-list", add.clone());
        assert_eq!(created.status, 200);
        let body = created.body.unwrap();
        let id = body[".id"].as_str().unwrap().to_owned();
        assert!(id.starts_with('*'));
        assert_eq!(body["list"], "venue-blocked");
        assert_eq!(body["disabled"], "false");
        assert!(body.as_object().unwrap().values().all(Value::is_string));
        assert_eq!(
            call(&mut r, "PUT", "/rest/ip/firewall/address-list", add),
            Reply {
                status: 400,
                body: Some(
                    json!({"error":400,"message":"Bad Request","detail":"failure: already have such entry"})
                )
            }
        );
        let got = call(
            &mut r,
            "GET",
            "/rest/ip/firewall/address-list?list=venue-blocked&comment=venued%20st07&.proplist=.id,address",
            Value::Null,
        );
        assert_eq!(
            got.body.unwrap(),
            json!([{".id": id, "address": "192.168.50.21"}])
        );
        let none = call(
            &mut r,
            "GET",
            "/rest/ip/firewall/address-list?list=other",
            Value::Null,
        );
        assert_eq!(none.body.unwrap(), json!([]));
        let patched = call(
            &mut r,
            "PATCH",
            &format!("/rest/ip/firewall/address-list/{id}"),
            json!({"disabled": true}),
        );
        assert_eq!(patched.body.unwrap()["disabled"], "true");
        let encoded = id.replace('*', "%2A");
        let gone = call(
            &mut r,
            "DELETE",
            &format!("/rest/ip/firewall/address-list/{encoded}"),
            Value::Null,
        );
        assert_eq!(
            gone,
            Reply {
                status: 204,
                body: None
            }
        );
        assert_eq!(
            call(
                &mut r,
                "DELETE",
                &format!("/rest/ip/firewall/address-list/{id}"),
                Value::Null
            ),
            Reply {
                status: 404,
                body: Some(json!({"error":404,"message":"Not Found"}))
            }
        );
        // The command forms.
        let ret = call(
            &mut r,
            "POST",
            "/rest/ip/firewall/address-list/add",
            json!({"list":"l","address":"10.0.0.1"}),
        );
        let id2 = ret.body.unwrap()["ret"].as_str().unwrap().to_owned();
        let printed = call(
            &mut r,
            "POST",
            "/rest/ip/firewall/address-list/print",
            json!({".proplist":[".id","list"], ".query":["address=10.0.0.1"]}),
        );
        assert_eq!(printed.body.unwrap(), json!([{".id": id2, "list": "l"}]));
        assert_eq!(
            call(
                &mut r,
                "POST",
                "/rest/ip/firewall/address-list/remove",
                json!({"numbers": id2})
            )
            .status,
            200
        );
        assert_eq!(
            call(
                &mut r,
                "POST",
                "/rest/ip/firewall/address-list/remove",
                json!({".id": id2})
            )
            .body
            .unwrap()["detail"],
            "no such item"
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        let mut r = Router::new(true, "UTC", now());
        let e = call(&mut r, "GET", "/rest/ip/firewall/nonexistent", Value::Null);
        assert_eq!(
            e.body.unwrap(),
            json!({"detail":"no such command or directory (nonexistent)","error":400,"message":"Bad Request"})
        );
        let e = call(&mut r, "GET", "/rest/bogus/x", Value::Null);
        assert_eq!(
            e.body.unwrap()["detail"],
            "no such command or directory (bogus)"
        );
        assert_eq!(
            call(&mut r, "GET", "/rest/ip/firewall/filter/print", Value::Null)
                .body
                .unwrap()["detail"],
            "no such command"
        );
        assert_eq!(
            call(&mut r, "HEAD", "/rest/system/clock", Value::Null).status,
            501
        );
        assert_eq!(call(&mut r, "GET", "/webfig", Value::Null).status, 404);
        assert_eq!(
            call(&mut r, "GET", "/rest/ip/firewall/filter/*999", Value::Null).status,
            404
        );
        let bad = handle(
            &mut r,
            "PUT",
            "/rest/ip/firewall/filter",
            "",
            b"{not json",
            now(),
        );
        assert_eq!(bad.status, 400);
        assert!(mutates("PUT", "/rest/ip/firewall/address-list"));
        assert!(mutates("POST", "/rest/ip/firewall/connection/remove"));
        assert!(!mutates("POST", "/rest/ip/firewall/address-list/print"));
        assert!(!mutates("GET", "/rest/ip/firewall/address-list"));
    }

    #[test]
    fn filter_rules_and_connections_over_rest() {
        let mut r = Router::new(true, "UTC", now());
        let first = call(
            &mut r,
            "GET",
            "/rest/ip/firewall/filter?chain=forward&dynamic=false&.proplist=.id",
            Value::Null,
        )
        .body
        .unwrap()[0][".id"]
            .as_str()
            .unwrap()
            .to_owned();
        let put = call(
            &mut r,
            "PUT",
            "/rest/ip/firewall/filter",
            json!({"chain":"forward","action":"drop","src-address-list":"venue-blocked","comment":"venued:block-out","place-before":first}),
        );
        let new_id = put.body.unwrap()[".id"].as_str().unwrap().to_owned();
        let list = call(
            &mut r,
            "GET",
            "/rest/ip/firewall/filter?chain=forward",
            Value::Null,
        )
        .body
        .unwrap();
        assert_eq!(list[0]["dynamic"], "true");
        assert_eq!(list[1][".id"], new_id.as_str());
        assert!(list[1].get("place-before").is_none());
        let moved = call(
            &mut r,
            "POST",
            "/rest/ip/firewall/filter/move",
            json!({".id": new_id}),
        );
        assert_eq!(moved.body.unwrap(), json!([]));
        let list = call(&mut r, "GET", "/rest/ip/firewall/filter", Value::Null)
            .body
            .unwrap();
        assert_eq!(
            list.as_array().unwrap().last().unwrap()[".id"],
            new_id.as_str()
        );

        let c = r.add_connection("192.168.50.21:3074", "203.0.113.7:3074", "udp", now());
        let conns = call(
            &mut r,
            "GET",
            "/rest/ip/firewall/connection?.proplist=.id,src-address,dst-address",
            Value::Null,
        );
        assert_eq!(
            conns.body.unwrap(),
            json!([{".id": c, "src-address": "192.168.50.21:3074", "dst-address": "203.0.113.7:3074"}])
        );
        assert_eq!(
            call(&mut r, "PUT", "/rest/ip/firewall/connection", json!({})).status,
            400
        );
        let removed = call(
            &mut r,
            "POST",
            "/rest/ip/firewall/connection/remove",
            json!({"numbers": c}),
        );
        assert_eq!(removed.status, 200);
        assert!(r.connections().is_empty());
    }

    #[test]
    fn system_menus() {
        let mut r = Router::new(false, "Europe/Berlin", now());
        let clock = call(&mut r, "GET", "/rest/system/clock", Value::Null)
            .body
            .unwrap();
        assert_eq!(clock["time"], "18:00:00");
        let res = call(&mut r, "GET", "/rest/system/resource", Value::Null)
            .body
            .unwrap();
        assert!(res["version"].as_str().unwrap().starts_with("7."));
        assert_eq!(
            call(&mut r, "GET", "/rest/system/clock/bogus", Value::Null)
                .body
                .unwrap()["detail"],
            "no such command or directory (bogus)"
        );
    }
}
