//! The plug's script runtime for the tests: QuickJS with the firmware's host objects
//! (`Timer`, `Shelly.call`, `MQTT.subscribe`, `print`) bridged to a Gen2 fake, on a
//! virtual clock.

use rquickjs::function::{Opt, Rest};
use rquickjs::{CaughtError, Coerced, Context, Ctx, Exception, Function, Object, Persistent};
use rquickjs::{Runtime, Value};
use serde_json::{Value as Json, json};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use venued::fakes::shelly::{Gen2Config, MqttConfig, ShellyGen2};

pub const DEADMAN: &str = include_str!("../../../firmware/shelly/deadman.js");
/// The name `venued device provision` installs the script under.
const SCRIPT_NAME: &str = "venued-deadman";

/// Firmware limits the host objects enforce (firmware/README.md).
const MAX_TIMERS: usize = 5;
const MAX_CALLS_IN_FLIGHT: usize = 5;
const MAX_SUBSCRIPTIONS: usize = 10;
/// Callbacks run after one event before the harness calls it a storm.
const MAX_CALLBACKS_PER_EVENT: usize = 1000;

/// The script's defaults (its header): grace and check period.
pub const GRACE_S: f64 = 120.0;
pub const CHECK_S: f64 = 5.0;

type Callback = Persistent<Function<'static>>;
type Userdata = Option<Persistent<Value<'static>>>;

struct PendingTimer {
    handle: u32,
    due_ms: u64,
    period_ms: u64,
    repeat: bool,
    cb: Callback,
    ud: Userdata,
}

struct Reply {
    cb: Option<Callback>,
    result: Json,
    code: i64,
    message: String,
    ud: Userdata,
}

pub struct Subscription {
    pub filter: String,
    cb: Callback,
    ud: Userdata,
}

/// What the plug's script runtime holds for one script.
#[derive(Default)]
pub struct Host {
    now_ms: u64,
    next_handle: u32,
    timers: Vec<PendingTimer>,
    replies: VecDeque<Reply>,
    pub subscriptions: Vec<Subscription>,
    /// Every `Shelly.call`, in order.
    pub calls: Vec<(String, Json)>,
    max_in_flight: usize,
    max_timers: usize,
    prints: Vec<String>,
    /// Exceptions that escaped into the runtime: on a plug, the script stops.
    errors: Vec<String>,
}

impl Host {
    fn clear(&mut self) {
        self.timers.clear();
        self.replies.clear();
        self.subscriptions.clear();
    }
}

/// A Gen2 fake with the dead-man script installed and running.
pub struct Plug {
    pub fake: Rc<ShellyGen2>,
    pub host: Rc<RefCell<Host>>,
    ctx: Context,
    _rt: Runtime,
}

impl Drop for Plug {
    fn drop(&mut self) {
        // Persistent handles must go before the runtime is freed.
        self.host.borrow_mut().clear();
    }
}

fn throw(ctx: &Ctx<'_>, msg: &str) -> rquickjs::Error {
    Exception::throw_message(ctx, msg)
}

fn to_json<'js>(ctx: &Ctx<'js>, v: Option<Value<'js>>) -> rquickjs::Result<Json> {
    let Some(v) = v.filter(|v| !v.is_undefined()) else {
        return Ok(Json::Null);
    };
    let s = ctx
        .json_stringify(v)?
        .map(|s| s.to_string())
        .transpose()?
        .unwrap_or_else(|| "null".into());
    serde_json::from_str(&s).map_err(|e| throw(ctx, &format!("params are not JSON: {e}")))
}

fn save_ud<'js>(ctx: &Ctx<'js>, ud: Opt<Value<'js>>) -> Userdata {
    ud.0.map(|v| Persistent::save(ctx, v))
}

fn restore_ud<'js>(ctx: &Ctx<'js>, ud: Userdata) -> rquickjs::Result<Value<'js>> {
    match ud {
        Some(p) => p.restore(ctx),
        None => Ok(Value::new_undefined(ctx.clone())),
    }
}

/// MQTT topic filter match with `+` and `#`.
fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn install_globals<'js>(
    ctx: &Ctx<'js>,
    host: &Rc<RefCell<Host>>,
    fake: &Rc<ShellyGen2>,
) -> rquickjs::Result<()> {
    let g = ctx.globals();

    let timer = Object::new(ctx.clone())?;
    let h = host.clone();
    timer.set(
        "set",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, ms: f64, repeat: bool, cb: Function<'js>, ud: Opt<Value<'js>>| {
                let mut host = h.borrow_mut();
                if host.timers.len() >= MAX_TIMERS {
                    return Err(throw(&ctx, "Too many timers"));
                }
                let period_ms = if ms.is_finite() && ms >= 1.0 {
                    ms as u64
                } else {
                    1
                };
                host.next_handle += 1;
                let handle = host.next_handle;
                let due_ms = host.now_ms + period_ms;
                host.timers.push(PendingTimer {
                    handle,
                    due_ms,
                    period_ms,
                    repeat,
                    cb: Persistent::save(&ctx, cb),
                    ud: save_ud(&ctx, ud),
                });
                host.max_timers = host.max_timers.max(host.timers.len());
                Ok(handle)
            },
        )?,
    )?;
    let h = host.clone();
    timer.set(
        "clear",
        Function::new(ctx.clone(), move |handle: u32| {
            let mut host = h.borrow_mut();
            let before = host.timers.len();
            host.timers.retain(|t| t.handle != handle);
            before != host.timers.len()
        })?,
    )?;
    g.set("Timer", timer)?;

    let shelly = Object::new(ctx.clone())?;
    let (h, f) = (host.clone(), fake.clone());
    shelly.set(
        "call",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  method: String,
                  params: Opt<Value<'js>>,
                  cb: Opt<Function<'js>>,
                  ud: Opt<Value<'js>>| {
                let params = to_json(&ctx, params.0)?;
                let mut host = h.borrow_mut();
                if host.replies.len() >= MAX_CALLS_IN_FLIGHT {
                    return Err(throw(&ctx, "Too many calls in progress"));
                }
                host.calls.push((method.clone(), params.clone()));
                let (result, code, message) = match f.call(&method, params) {
                    Ok(r) => (r, 0, String::new()),
                    Err(e) => (Json::Null, e.code, e.message),
                };
                host.replies.push_back(Reply {
                    cb: cb.0.map(|c| Persistent::save(&ctx, c)),
                    result,
                    code,
                    message,
                    ud: save_ud(&ctx, ud),
                });
                host.max_in_flight = host.max_in_flight.max(host.replies.len());
                Ok(())
            },
        )?,
    )?;
    g.set("Shelly", shelly)?;

    let mqtt = Object::new(ctx.clone())?;
    let h = host.clone();
    mqtt.set(
        "subscribe",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, filter: String, cb: Function<'js>, ud: Opt<Value<'js>>| {
                let mut host = h.borrow_mut();
                if host.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                    return Err(throw(&ctx, "Too many subscriptions"));
                }
                host.subscriptions.push(Subscription {
                    filter,
                    cb: Persistent::save(&ctx, cb),
                    ud: save_ud(&ctx, ud),
                });
                Ok(())
            },
        )?,
    )?;
    g.set("MQTT", mqtt)?;

    let h = host.clone();
    g.set(
        "print",
        Function::new(ctx.clone(), move |args: Rest<Coerced<String>>| {
            let line: Vec<String> = args.0.into_iter().map(|a| a.0).collect();
            h.borrow_mut().prints.push(line.join(" "));
        })?,
    )?;
    Ok(())
}

impl Plug {
    /// A Plus Plug S whose MQTT is configured (its broker is unreachable: the controller
    /// is gone), with the script installed as provisioning does and running.
    pub async fn start(kvs_grace: Option<Json>) -> Self {
        Self::start_with(kvs_grace, true).await
    }

    pub async fn start_with(kvs_grace: Option<Json>, mqtt: bool) -> Self {
        let mut cfg = Gen2Config::new("AABBCC00D00D");
        if mqtt {
            // A port nobody listens on: MQTT enabled, broker down.
            let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = dead.local_addr().unwrap();
            drop(dead);
            cfg.mqtt = Some(MqttConfig::new(addr, "plug", "secret"));
        }
        let fake = Rc::new(ShellyGen2::start(cfg).await.unwrap());
        if let Some(v) = kvs_grace {
            fake.call("KVS.Set", json!({"key": "venued.deadman_s", "value": v}))
                .unwrap();
        }
        let id = fake
            .call("Script.Create", json!({"name": SCRIPT_NAME}))
            .unwrap()["id"]
            .clone();
        // Chunked as provisioning uploads it (PutCode with append).
        for (i, chunk) in DEADMAN.as_bytes().chunks(1024).enumerate() {
            let code = std::str::from_utf8(chunk).unwrap();
            fake.call(
                "Script.PutCode",
                json!({"id": id, "code": code, "append": i > 0}),
            )
            .unwrap();
        }
        fake.call(
            "Script.SetConfig",
            json!({"id": id, "config": {"enable": true}}),
        )
        .unwrap();
        fake.call("Script.Start", json!({"id": id})).unwrap();
        let code = fake
            .scripts()
            .into_iter()
            .find(|s| s.name == SCRIPT_NAME && s.running)
            .expect("script stored and running")
            .code;
        assert_eq!(code, DEADMAN, "the fake stores the script as uploaded");

        let rt = Runtime::new().unwrap();
        let ctx = Context::full(&rt).unwrap();
        let host = Rc::new(RefCell::new(Host::default()));
        ctx.with(|c| install_globals(&c, &host, &fake)).unwrap();
        let plug = Self {
            fake,
            host,
            ctx,
            _rt: rt,
        };
        plug.ctx.with(|c| {
            let r: rquickjs::Result<()> = c.eval(code);
            plug.record(&c, r);
        });
        plug.drain();
        plug
    }

    fn record<T>(&self, ctx: &Ctx<'_>, r: rquickjs::Result<T>) {
        if let Err(e) = r {
            let msg = CaughtError::from_error(ctx, e).to_string();
            self.host.borrow_mut().errors.push(msg);
        }
    }

    /// Run the `Shelly.call` callbacks that are due, as the firmware's event loop does.
    fn drain(&self) {
        for _ in 0..MAX_CALLBACKS_PER_EVENT {
            let Some(reply) = self.host.borrow_mut().replies.pop_front() else {
                return;
            };
            let Some(cb) = reply.cb else { continue };
            self.ctx.with(|c| {
                let r = (|| {
                    let cb = cb.restore(&c)?;
                    let result = c.json_parse(reply.result.to_string())?;
                    let ud = restore_ud(&c, reply.ud)?;
                    cb.call::<_, ()>((result, reply.code, reply.message, ud))
                })();
                self.record(&c, r);
            });
        }
        panic!("more than {MAX_CALLBACKS_PER_EVENT} callbacks after one event");
    }

    /// Let `secs` of plug time pass, firing each timer when it is due.
    pub fn advance(&self, secs: f64) {
        let target = self.host.borrow().now_ms + (secs * 1000.0).round() as u64;
        loop {
            let due = {
                let mut host = self.host.borrow_mut();
                let Some(i) = (0..host.timers.len())
                    .filter(|&i| host.timers[i].due_ms <= target)
                    .min_by_key(|&i| (host.timers[i].due_ms, host.timers[i].handle))
                else {
                    break;
                };
                host.now_ms = host.timers[i].due_ms;
                let t = &mut host.timers[i];
                let fired = (t.cb.clone(), t.ud.clone());
                if t.repeat {
                    t.due_ms += t.period_ms;
                } else {
                    host.timers.remove(i);
                }
                fired
            };
            self.ctx.with(|c| {
                let r = (|| {
                    let cb = due.0.restore(&c)?;
                    let ud = restore_ud(&c, due.1)?;
                    cb.call::<_, ()>((ud,))
                })();
                self.record(&c, r);
            });
            self.drain();
        }
        self.host.borrow_mut().now_ms = target;
    }

    /// Deliver an MQTT message to the script's matching subscriptions.
    pub fn publish(&self, topic: &str, payload: &str) {
        let subs: Vec<(Callback, Userdata)> = self
            .host
            .borrow()
            .subscriptions
            .iter()
            .filter(|s| topic_matches(&s.filter, topic))
            .map(|s| (s.cb.clone(), s.ud.clone()))
            .collect();
        for (cb, ud) in subs {
            self.ctx.with(|c| {
                let r = (|| {
                    let cb = cb.restore(&c)?;
                    let ud = restore_ud(&c, ud)?;
                    cb.call::<_, ()>((topic, payload, ud))
                })();
                self.record(&c, r);
            });
            self.drain();
        }
    }

    pub fn heartbeat_topic(&self) -> String {
        format!("{}/venued/heartbeat", self.fake.topic_prefix())
    }

    pub fn heartbeat(&self, payload: &str) {
        self.publish(&self.heartbeat_topic(), payload);
    }

    pub fn on(&self) -> bool {
        self.fake.relay_on()
    }

    /// The controller switches the station on (not through the script).
    pub fn switch_on(&self) {
        self.fake
            .call("Switch.Set", json!({"id": 0, "on": true}))
            .unwrap();
    }

    pub fn count_calls(&self, method: &str) -> usize {
        let host = self.host.borrow();
        host.calls.iter().filter(|(m, _)| m == method).count()
    }

    pub fn tripped(&self) -> Option<Json> {
        let v = self
            .fake
            .call("KVS.Get", json!({"key": "venued.deadman_tripped"}))
            .ok()?;
        serde_json::from_str(v["value"].as_str()?).ok()
    }

    pub fn prints(&self) -> Vec<String> {
        self.host.borrow().prints.clone()
    }

    /// The script is alive and kept within the firmware's resource limits, and the
    /// tighter ones its header promises.
    pub fn assert_healthy(&self) {
        let host = self.host.borrow();
        assert!(host.errors.is_empty(), "script died: {:?}", host.errors);
        assert!(
            host.max_in_flight <= 1,
            "calls in flight: {}",
            host.max_in_flight
        );
        assert!(host.max_timers <= 1, "timers: {}", host.max_timers);
        assert!(host.subscriptions.len() <= 1);
    }
}
