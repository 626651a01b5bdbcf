//! `venued device provision`: write a plug's own fail-safe into it, so that the plug ends
//! free play by itself when the controller is gone and a mains blip never re-energises a
//! station (docs/devices.md, "Fail-safe on the plug").
//!
//! Every item is read first and written only when it differs, then read back: a second
//! run changes nothing, and a dry run reads only. Each item reports `unchanged`,
//! `changed` (old → new), `would_change` (dry run) or `failed` (why); a failed item does
//! not stop the others, as each one left in place is a fail-safe more. The first read
//! failing means the plug was not reached at all: [`provision`] returns that error.
//!
//! - Tasmota: the commands of [`failsafe::tasmota`] (`PowerOnState 0`, `TelePeriod`,
//!   `PowerDelta1`, the `RuleTimer1` dead-man rule and its enabling); each command's
//!   answer is the value the plug kept, compared with what was asked.
//! - Shelly Gen2: `Switch.SetConfig` `initial_state: "off"` and `auto_off` after
//!   [`ProvisionSettings::auto_off_ms`] (the last line if everything else fails); the
//!   grace in KVS `venued.deadman_s`; the dead-man script `firmware/shelly/deadman.js`
//!   as script `venued-deadman`, uploaded in chunks, enabled at boot and running.
//! - Shelly Gen1 (no scripts): `default_state=off` and `auto_off`.
//!
//! Nothing secret is read or reported: passwords stay in the plug driver.

use super::DeviceError;
use super::failsafe;
use super::plug::Plug;
use crate::domain::device::DeviceKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// The Shelly dead-man script, as uploaded.
pub const DEADMAN_JS: &str = include_str!("../../firmware/shelly/deadman.js");
/// The name the script is found by on the plug.
pub const SCRIPT_NAME: &str = "venued-deadman";
/// The KVS key the script reads its grace (whole seconds) from at start.
pub const GRACE_KEY: &str = "venued.deadman_s";
/// Bytes of code per `Script.PutCode`: firmware buffers a whole RPC request in RAM, and
/// Shelly's own upload tool (shelly-script-examples, `put_script.py`) sends 1024 at a
/// time; larger requests are refused on smaller devices.
pub const PUTCODE_CHUNK: usize = 1024;
/// The longest `auto_off` delay venued writes: a day.
const MAX_AUTO_OFF: Duration = Duration::from_secs(86_400);

/// The timings written into plugs. There is no `[devices]` section in the configuration
/// yet, so the defaults below are what venued provisions; they are documented in
/// docs/devices.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionSettings {
    /// How long a plug keeps power after the controller's last heartbeat before its
    /// dead-man cuts it (Tasmota `RuleTimer1`, the Shelly script's grace). Whole seconds,
    /// 10 s to 65535 s. Default 120 s; the controller beats every third of it.
    pub deadman_grace_ms: u64,
    /// Shelly `auto_off`: the longest a relay stays on after any switch-on, whatever
    /// happens (the fallback if both the controller and the script are gone). Must be
    /// longer than any session sold. Whole seconds, at most a day. Default 12 h.
    pub auto_off_ms: u64,
    /// Tasmota `PowerDelta1`: a change of this many watts sends a reading at once.
    /// Default 5 W.
    pub power_delta_w: u32,
}

impl Default for ProvisionSettings {
    fn default() -> Self {
        Self {
            deadman_grace_ms: 120_000,
            auto_off_ms: 12 * 3_600_000,
            power_delta_w: 5,
        }
    }
}

impl From<&crate::config::ConsolesConfig> for ProvisionSettings {
    fn from(c: &crate::config::ConsolesConfig) -> Self {
        let ms = |d: jiff::SignedDuration| u64::try_from(d.as_millis()).unwrap_or(0);
        Self {
            deadman_grace_ms: ms(c.deadman_grace),
            auto_off_ms: ms(c.auto_off),
            power_delta_w: c.power_delta_w,
        }
    }
}

impl ProvisionSettings {
    /// The grace in whole seconds, within what `RuleTimer` and the script accept.
    pub fn grace_s(&self) -> u64 {
        Duration::from_millis(self.deadman_grace_ms)
            .clamp(failsafe::MIN_GRACE, failsafe::MAX_GRACE)
            .as_secs()
    }

    /// `auto_off` in whole seconds, 1 s to a day.
    pub fn auto_off_s(&self) -> u64 {
        Duration::from_millis(self.auto_off_ms)
            .clamp(Duration::from_secs(1), MAX_AUTO_OFF)
            .as_secs()
    }
}

/// What became of one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already as venued wants it.
    Unchanged,
    /// Written and read back as wanted.
    Changed,
    /// Dry run: would be written.
    WouldChange,
    /// Could not be read, written or verified (`why`).
    Failed,
}

/// One setting of the fail-safe and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Item {
    /// What it is, e.g. `PowerOnState`, `switch initial_state`, `script venued-deadman`.
    pub item: String,
    pub outcome: Outcome,
    /// The value found (for people; absent when it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The value venued wants.
    pub new: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Item {
    fn unchanged(item: &str, value: String) -> Self {
        Self {
            item: item.to_owned(),
            outcome: Outcome::Unchanged,
            old: Some(value.clone()),
            new: value,
            why: None,
        }
    }

    fn pending(item: &str, old: Option<String>, new: String) -> Self {
        Self {
            item: item.to_owned(),
            outcome: Outcome::WouldChange,
            old,
            new,
            why: None,
        }
    }

    fn failed(item: &str, old: Option<String>, new: String, why: impl Into<String>) -> Self {
        Self {
            item: item.to_owned(),
            outcome: Outcome::Failed,
            old,
            new,
            why: Some(why.into()),
        }
    }

    /// A pending item after its write: changed, or failed with `why`.
    fn settle(mut self, result: Result<(), String>) -> Self {
        match result {
            Ok(()) => self.outcome = Outcome::Changed,
            Err(why) => {
                self.outcome = Outcome::Failed;
                self.why = Some(why);
            }
        }
        self
    }
}

/// Settle written items against the read-back `back`: each is done when `kept` reads
/// from it what was asked, failed otherwise (or when the write or read failed).
fn settle_all(
    pending: Vec<Item>,
    back: &Result<Value, DeviceError>,
    kept: impl Fn(&Item, &Value) -> String,
) -> impl Iterator<Item = Item> {
    pending.into_iter().map(move |item| {
        let result = match back {
            Ok(v) => {
                let now = kept(&item, v);
                if now == item.new {
                    Ok(())
                } else {
                    Err(format!("asked for {}, the plug kept {now}", item.new))
                }
            }
            Err(e) => Err(e.to_string()),
        };
        item.settle(result)
    })
}

/// Whether the device's kind can be provisioned here (plugs only).
pub fn provisionable(kind: &DeviceKind) -> bool {
    kind.is_plug()
}

/// Provision `plug` (of `kind`) with `settings`; with `dry_run`, only read. Each device
/// call is bounded by the plug's own timeout, and nothing new starts after `deadline`
/// (the items left are reported failed). Err when the plug could not be reached at all.
pub async fn provision(
    plug: &Plug,
    kind: &DeviceKind,
    settings: &ProvisionSettings,
    dry_run: bool,
    deadline: Instant,
) -> Result<Vec<Item>, DeviceError> {
    let p = Provisioner {
        plug,
        dry_run,
        deadline,
    };
    match kind {
        DeviceKind::Tasmota { .. } => p.tasmota(settings).await,
        DeviceKind::ShellyGen2 { .. } => p.gen2(settings).await,
        DeviceKind::ShellyGen1 { .. } => p.gen1(settings).await,
        other => Err(DeviceError::Config(format!(
            "a {} device has no plug fail-safe to provision",
            other.type_name()
        ))),
    }
}

struct Provisioner<'a> {
    plug: &'a Plug,
    dry_run: bool,
    deadline: Instant,
}

impl Provisioner<'_> {
    /// A device call within the overall deadline.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, DeviceError>>,
    ) -> Result<T, DeviceError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.out_of_time());
        }
        tokio::time::timeout(left, call)
            .await
            .map_err(|_| self.out_of_time())?
    }

    fn out_of_time(&self) -> DeviceError {
        DeviceError::Timeout(
            format!("{} (provisioning as a whole)", self.plug.authority()),
            PROVISION_BUDGET,
        )
    }

    async fn tasmota_cmd(&self, line: &str) -> Result<Value, DeviceError> {
        self.bounded(self.plug.tasmota_command(line)).await
    }

    async fn rpc(&self, method: &str, params: Value) -> Result<Value, DeviceError> {
        self.bounded(self.plug.gen2_call(method, &params)).await
    }

    async fn gen1_get(&self, path: &str) -> Result<Value, DeviceError> {
        self.bounded(self.plug.gen1_get(path)).await
    }

    // ---- Tasmota ------------------------------------------------------------------------

    async fn tasmota(&self, s: &ProvisionSettings) -> Result<Vec<Item>, DeviceError> {
        let grace = Duration::from_secs(s.grace_s());
        let mut items = Vec::new();
        for (n, (command, want)) in failsafe::tasmota(grace, s.power_delta_w)
            .into_iter()
            .enumerate()
        {
            let setting = TasmotaSetting::of(&command, &want);
            let label = setting.label(&command);
            let shown = setting.shown(&want);
            let old = match self.tasmota_cmd(&command).await {
                Ok(v) => setting.read(&v, &command),
                // Not even the first read: the plug was not reached.
                Err(e) if n == 0 => return Err(e),
                Err(e) => Err(e.to_string()),
            };
            let old = match old {
                Ok(old) => old,
                Err(why) => {
                    items.push(Item::failed(&label, None, shown, format!("reading: {why}")));
                    continue;
                }
            };
            if setting.same(&old, &shown) {
                items.push(Item::unchanged(&label, old));
                continue;
            }
            let item = Item::pending(&label, Some(old), shown.clone());
            if self.dry_run {
                items.push(item);
                continue;
            }
            // The answer to a command is the value the plug kept: the read-back.
            let result = match self.tasmota_cmd(&format!("{command} {want}")).await {
                Ok(v) => match setting.read(&v, &command) {
                    Ok(kept) if setting.same(&kept, &shown) => Ok(()),
                    Ok(kept) => Err(format!("asked for {shown}, the plug kept {kept}")),
                    Err(why) => Err(why),
                },
                Err(e) => Err(e.to_string()),
            };
            items.push(item.settle(result));
        }
        Ok(items)
    }

    // ---- Shelly Gen2 ------------------------------------------------------------------

    async fn gen2(&self, s: &ProvisionSettings) -> Result<Vec<Item>, DeviceError> {
        let mut items = Vec::new();
        // The first read: failing, the plug was not reached.
        let config = self.rpc("Switch.GetConfig", json!({"id": 0})).await?;
        self.gen2_switch(&config, s, &mut items).await;
        let grace_changed = self.gen2_grace(s, &mut items).await;
        self.gen2_script(grace_changed, &mut items).await;
        Ok(items)
    }

    /// `initial_state: off` and `auto_off`, in one `Switch.SetConfig`, read back.
    async fn gen2_switch(&self, config: &Value, s: &ProvisionSettings, items: &mut Vec<Item>) {
        const INITIAL: &str = "switch initial_state";
        const AUTO_OFF: &str = "switch auto_off";
        let want_initial = "off".to_owned();
        let want_auto = auto_off_text(Some(s.auto_off_s() as f64));
        let initial = |c: &Value| {
            c.get("initial_state")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        let auto = |c: &Value| {
            let on = c.get("auto_off").and_then(Value::as_bool) == Some(true);
            auto_off_text(
                on.then(|| c.get("auto_off_delay").and_then(Value::as_f64))
                    .flatten(),
            )
        };
        let mut change = serde_json::Map::new();
        let mut pending = Vec::new();
        for (label, old, want) in [
            (INITIAL, initial(config), want_initial),
            (AUTO_OFF, auto(config), want_auto),
        ] {
            if old == want {
                items.push(Item::unchanged(label, old));
                continue;
            }
            if label == INITIAL {
                change.insert("initial_state".into(), json!("off"));
            } else {
                change.insert("auto_off".into(), json!(true));
                change.insert("auto_off_delay".into(), json!(s.auto_off_s()));
            }
            pending.push(Item::pending(label, Some(old), want));
        }
        if self.dry_run || pending.is_empty() {
            items.extend(pending);
            return;
        }
        let written = self
            .rpc(
                "Switch.SetConfig",
                json!({"id": 0, "config": Value::Object(change)}),
            )
            .await;
        let back = match written {
            Ok(_) => self.rpc("Switch.GetConfig", json!({"id": 0})).await,
            Err(e) => Err(e),
        };
        items.extend(settle_all(pending, &back, |item, c| {
            if item.item == INITIAL {
                initial(c)
            } else {
                auto(c)
            }
        }));
    }

    /// The script's grace in KVS; whether it was written (a running script must restart
    /// to read it).
    async fn gen2_grace(&self, s: &ProvisionSettings, items: &mut Vec<Item>) -> bool {
        let label = format!("kvs {GRACE_KEY}");
        let want = s.grace_s();
        let shown = format!("{want} s");
        let old = match self.rpc("KVS.Get", json!({"key": GRACE_KEY})).await {
            Ok(v) => Some(v.get("value").map_or_else(
                || "?".to_owned(),
                |v| match kvs_seconds(v) {
                    Some(n) => format!("{n} s"),
                    None => v.to_string(),
                },
            )),
            // A missing key is an RPC error (-105, not found).
            Err(DeviceError::Refused { .. }) => None,
            Err(e) => {
                items.push(Item::failed(&label, None, shown, format!("reading: {e}")));
                return false;
            }
        };
        if old.as_deref() == Some(shown.as_str()) {
            items.push(Item::unchanged(&label, shown));
            return false;
        }
        let item = Item::pending(&label, Some(old.unwrap_or_else(|| "absent".into())), shown);
        if self.dry_run {
            items.push(item);
            return false;
        }
        let result = match self
            .rpc("KVS.Set", json!({"key": GRACE_KEY, "value": want}))
            .await
        {
            Ok(_) => match self.rpc("KVS.Get", json!({"key": GRACE_KEY})).await {
                Ok(v) if v.get("value").and_then(kvs_seconds) == Some(want) => Ok(()),
                Ok(v) => Err(format!(
                    "read back {}",
                    v.get("value").unwrap_or(&Value::Null)
                )),
                Err(e) => Err(format!("reading back: {e}")),
            },
            Err(e) => Err(e.to_string()),
        };
        let ok = result.is_ok();
        items.push(item.settle(result));
        ok
    }

    /// The dead-man script: present with our code, enabled at boot, running.
    async fn gen2_script(&self, grace_changed: bool, items: &mut Vec<Item>) {
        let code_label = format!("script {SCRIPT_NAME} code");
        let enable_label = format!("script {SCRIPT_NAME} enabled at boot");
        let run_label = format!("script {SCRIPT_NAME} running");
        let want_code = code_text(DEADMAN_JS.len());
        let found = match self.rpc("Script.List", json!({})).await {
            Ok(v) => find_script(&v),
            Err(e) => {
                let why = format!("listing scripts: {e}");
                for (l, w) in [
                    (&code_label, want_code),
                    (&enable_label, "yes".into()),
                    (&run_label, "yes".into()),
                ] {
                    items.push(Item::failed(l, None, w, why.clone()));
                }
                return;
            }
        };
        // The code on the plug, when there is a script.
        let code = match &found {
            Some(s) => match self.read_code(s.id).await {
                Ok(c) => Some(c),
                Err(e) => {
                    items.push(Item::failed(
                        &code_label,
                        None,
                        want_code,
                        format!("reading the code: {e}"),
                    ));
                    return;
                }
            },
            None => None,
        };
        let old_code = match (&found, &code) {
            (Some(_), Some(c)) if c == DEADMAN_JS => None,
            (Some(_), Some(c)) => Some(format!("different, {}", code_text(c.len()))),
            _ => Some("absent".to_owned()),
        };
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let old_enable = found.as_ref().map_or("no".into(), |s| yes_no(s.enable));
        let was_running = found.as_ref().is_some_and(|s| s.running);
        // A running script reads its grace and code at start only.
        let restart = was_running && (grace_changed || old_code.is_some());
        let code_item = match old_code {
            None => Item::unchanged(&code_label, want_code),
            Some(old) => Item::pending(&code_label, Some(old), want_code),
        };
        let enable_item = if old_enable == "yes" {
            Item::unchanged(&enable_label, old_enable)
        } else {
            Item::pending(&enable_label, Some(old_enable), "yes".into())
        };
        let run_item = match (was_running, restart) {
            (true, false) => Item::unchanged(&run_label, "yes".into()),
            (true, true) => Item::pending(
                &run_label,
                Some("yes, with the old code or grace".into()),
                "yes (restarted)".into(),
            ),
            (false, _) => Item::pending(&run_label, Some("no".into()), "yes".into()),
        };
        if self.dry_run {
            items.extend([code_item, enable_item, run_item]);
            return;
        }
        let write = self
            .write_script(found.as_ref(), &code_item, &enable_item, &run_item, restart)
            .await;
        let (id, errors) = match write {
            Ok(id) => (Some(id), Default::default()),
            Err((id, errors)) => (id, errors),
        };
        // Read back: List for enable and running, GetStatus for errors, GetCode for code.
        let verified = match id {
            Some(id) => self.verify_script(id).await,
            None => Err("the script could not be created".to_owned()),
        };
        for (item, step) in [
            (code_item, Step::Code),
            (enable_item, Step::Enable),
            (run_item, Step::Run),
        ] {
            if item.outcome == Outcome::Unchanged && verified.is_ok() {
                items.push(item);
                continue;
            }
            let result = match (errors.get(&step), &verified) {
                (Some(why), _) => Err(why.clone()),
                (None, Err(why)) => Err(why.clone()),
                (None, Ok(state)) => state.check(step),
            };
            let item = if item.outcome == Outcome::Unchanged {
                // It was right and is no longer: report it.
                Item::pending(&item.item, item.old, item.new)
            } else {
                item
            };
            items.push(item.settle(result));
        }
    }

    /// Create (if absent), upload (if different), enable (if not), start (if not running,
    /// or restart): the script's id, or the id (if known) and why each step failed.
    #[allow(clippy::type_complexity)]
    async fn write_script(
        &self,
        found: Option<&Script>,
        code: &Item,
        enable: &Item,
        run: &Item,
        restart: bool,
    ) -> Result<u64, (Option<u64>, std::collections::BTreeMap<Step, String>)> {
        let mut errors = std::collections::BTreeMap::new();
        let id = match found {
            Some(s) => s.id,
            None => match self
                .rpc("Script.Create", json!({"name": SCRIPT_NAME}))
                .await
            {
                Ok(v) => match v.get("id").and_then(Value::as_u64) {
                    Some(id) => id,
                    None => {
                        errors.insert(Step::Code, format!("Script.Create answered {v}"));
                        return Err((None, errors));
                    }
                },
                Err(e) => {
                    errors.insert(Step::Code, format!("creating the script: {e}"));
                    return Err((None, errors));
                }
            },
        };
        if restart {
            // Firmware refuses new code for a running script; it restarts below.
            if let Err(e) = self.rpc("Script.Stop", json!({"id": id})).await {
                errors.insert(Step::Run, format!("stopping it to restart: {e}"));
            }
        }
        if code.outcome != Outcome::Unchanged
            && let Err(e) = self.upload(id).await
        {
            errors.insert(Step::Code, e.to_string());
        }
        if enable.outcome != Outcome::Unchanged
            && let Err(e) = self
                .rpc(
                    "Script.SetConfig",
                    json!({"id": id, "config": {"enable": true}}),
                )
                .await
        {
            errors.insert(Step::Enable, e.to_string());
        }
        if run.outcome != Outcome::Unchanged && !errors.contains_key(&Step::Code) {
            if let Err(e) = self.rpc("Script.Start", json!({"id": id})).await {
                errors.entry(Step::Run).or_insert_with(|| e.to_string());
            }
        } else if run.outcome != Outcome::Unchanged {
            errors.insert(Step::Run, "not started: its code is not in place".into());
        }
        if errors.is_empty() {
            Ok(id)
        } else {
            Err((Some(id), errors))
        }
    }

    /// `Script.PutCode` in chunks of [`PUTCODE_CHUNK`] bytes: the first replaces, the
    /// others append.
    async fn upload(&self, id: u64) -> Result<(), DeviceError> {
        for (n, chunk) in chunks(DEADMAN_JS, PUTCODE_CHUNK).into_iter().enumerate() {
            self.rpc(
                "Script.PutCode",
                json!({"id": id, "code": chunk, "append": n > 0}),
            )
            .await?;
        }
        Ok(())
    }

    /// The whole code of script `id` (`Script.GetCode` answers a piece and what is left).
    async fn read_code(&self, id: u64) -> Result<String, DeviceError> {
        let mut code = String::new();
        // Bounded: a plug that keeps saying "more" cannot keep us here.
        for _ in 0..64 {
            let v = self
                .rpc(
                    "Script.GetCode",
                    json!({"id": id, "offset": code.len(), "len": PUTCODE_CHUNK}),
                )
                .await?;
            let data = v.get("data").and_then(Value::as_str).unwrap_or("");
            code.push_str(data);
            let left = v.get("left").and_then(Value::as_u64).unwrap_or(0);
            if left == 0 || data.is_empty() {
                return Ok(code);
            }
        }
        Err(DeviceError::Malformed(
            self.plug.authority(),
            "Script.GetCode never reached the end of the code".into(),
        ))
    }

    async fn verify_script(&self, id: u64) -> Result<ScriptState, String> {
        let list = self
            .rpc("Script.List", json!({}))
            .await
            .map_err(|e| format!("reading back: {e}"))?;
        let Some(s) = find_script(&list).filter(|s| s.id == id) else {
            return Err(format!(
                "script {SCRIPT_NAME} is not on the plug after the upload"
            ));
        };
        let status = self
            .rpc("Script.GetStatus", json!({"id": id}))
            .await
            .map_err(|e| format!("reading back: {e}"))?;
        let errors: Vec<String> = status
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        let code = self
            .read_code(id)
            .await
            .map_err(|e| format!("reading the code back: {e}"))?;
        Ok(ScriptState {
            code_ok: code == DEADMAN_JS,
            enable: s.enable,
            running: s.running && status.get("running").and_then(Value::as_bool) == Some(true),
            errors,
        })
    }

    // ---- Shelly Gen1 ------------------------------------------------------------------

    async fn gen1(&self, s: &ProvisionSettings) -> Result<Vec<Item>, DeviceError> {
        const DEFAULT: &str = "relay default_state";
        const AUTO_OFF: &str = "relay auto_off";
        let relay = self.gen1_get("/settings/relay/0").await?;
        let default_state = |r: &Value| {
            r.get("default_state")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        let auto = |r: &Value| {
            auto_off_text(
                r.get("auto_off")
                    .and_then(Value::as_f64)
                    .filter(|d| *d > 0.0),
            )
        };
        let want_auto = auto_off_text(Some(s.auto_off_s() as f64));
        let mut items = Vec::new();
        let mut query = Vec::new();
        let mut pending = Vec::new();
        for (label, old, want) in [
            (DEFAULT, default_state(&relay), "off".to_owned()),
            (AUTO_OFF, auto(&relay), want_auto),
        ] {
            if old == want {
                items.push(Item::unchanged(label, old));
                continue;
            }
            query.push(if label == DEFAULT {
                "default_state=off".to_owned()
            } else {
                format!("auto_off={}", s.auto_off_s())
            });
            pending.push(Item::pending(label, Some(old), want));
        }
        if self.dry_run || pending.is_empty() {
            items.extend(pending);
            return Ok(items);
        }
        // The answer is the relay's settings as kept: the read-back.
        let back = self
            .gen1_get(&format!("/settings/relay/0?{}", query.join("&")))
            .await;
        items.extend(settle_all(pending, &back, |item, r| {
            if item.item == DEFAULT {
                default_state(r)
            } else {
                auto(r)
            }
        }));
        Ok(items)
    }
}

/// How long a whole provisioning may take: under the API's own request timeout, so the
/// caller gets the report rather than a bare timeout.
pub const PROVISION_BUDGET: Duration = Duration::from_secs(25);

/// A step of the script's provisioning, for its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Code,
    Enable,
    Run,
}

/// The script as read back.
struct ScriptState {
    code_ok: bool,
    enable: bool,
    running: bool,
    errors: Vec<String>,
}

impl ScriptState {
    fn check(&self, step: Step) -> Result<(), String> {
        let (ok, what) = match step {
            Step::Code => (self.code_ok, "the code read back differs from the upload"),
            Step::Enable => (self.enable, "the plug did not keep enable: true"),
            Step::Run => (self.running, "the script is not running"),
        };
        if !ok {
            return Err(what.to_owned());
        }
        if step == Step::Run && !self.errors.is_empty() {
            return Err(format!(
                "the script reports errors: {}",
                self.errors.join(", ")
            ));
        }
        Ok(())
    }
}

/// A script as `Script.List` shows it.
#[derive(Debug)]
struct Script {
    id: u64,
    enable: bool,
    running: bool,
}

/// Ours, by name, in a `Script.List` answer.
fn find_script(list: &Value) -> Option<Script> {
    list.get("scripts")?
        .as_array()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(SCRIPT_NAME))
        .and_then(|s| {
            Some(Script {
                id: s.get("id")?.as_u64()?,
                enable: s.get("enable").and_then(Value::as_bool) == Some(true),
                running: s.get("running").and_then(Value::as_bool) == Some(true),
            })
        })
}

fn code_text(len: usize) -> String {
    format!("{len} bytes")
}

/// `auto_off` for people: `off`, or `on after N s`.
fn auto_off_text(delay_s: Option<f64>) -> String {
    match delay_s {
        Some(d) => format!("on after {} s", d.round()),
        None => "off".to_owned(),
    }
}

/// A grace stored in KVS: a whole number, or a string of digits (as the script reads).
fn kvs_seconds(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// `text` in pieces of at most `max` bytes, cut on character boundaries.
pub fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

/// A Tasmota setting of the fail-safe, by how its answer reads.
enum TasmotaSetting {
    /// `{"PowerOnState":0}` and the like: the value under the command's name.
    Scalar,
    /// `Rule1 <text>`: the rule set's `Rules`.
    RuleText,
    /// `Rule1 1`: the rule set's `State`.
    RuleState,
}

impl TasmotaSetting {
    fn of(command: &str, want: &str) -> Self {
        if command.to_ascii_lowercase().starts_with("rule") {
            if want == "1" || want == "0" {
                Self::RuleState
            } else {
                Self::RuleText
            }
        } else {
            Self::Scalar
        }
    }

    fn label(&self, command: &str) -> String {
        match self {
            Self::Scalar => command.to_owned(),
            Self::RuleText => format!("{command} text"),
            Self::RuleState => format!("{command} enabled"),
        }
    }

    /// The wanted value as the answer shows it.
    fn shown(&self, want: &str) -> String {
        match self {
            Self::RuleState if want == "1" => "ON".into(),
            Self::RuleState => "OFF".into(),
            _ => want.to_owned(),
        }
    }

    /// The value in a command's answer.
    fn read(&self, answer: &Value, command: &str) -> Result<String, String> {
        let value =
            field(answer, command).ok_or_else(|| format!("no {command} in the answer {answer}"))?;
        let inner = match self {
            Self::Scalar => value,
            Self::RuleText => field(value, "Rules").ok_or("no Rules in the rule set")?,
            Self::RuleState => field(value, "State").ok_or("no State in the rule set")?,
        };
        Ok(match inner {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// Whether a read value is the wanted one: rule texts compare without case and
    /// extra spaces (the firmware reads them so).
    fn same(&self, read: &str, want: &str) -> bool {
        match self {
            Self::RuleText => normalize_rule(read) == normalize_rule(want),
            _ => read.eq_ignore_ascii_case(want),
        }
    }
}

fn normalize_rule(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// `key` in a JSON object, matched without case (firmware versions differ).
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).or_else(|| {
        v.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunks_cut_on_characters_and_rejoin() {
        let text = "aé€".repeat(500);
        let parts = chunks(&text, 1024);
        assert!(parts.iter().all(|p| p.len() <= 1024));
        assert_eq!(parts.concat(), text);
        assert_eq!(chunks("", 1024), Vec::<&str>::new());
        assert_eq!(chunks(DEADMAN_JS, PUTCODE_CHUNK).concat(), DEADMAN_JS);
    }

    #[test]
    fn settings_are_clamped_to_what_devices_take() {
        let s = ProvisionSettings::default();
        assert_eq!((s.grace_s(), s.auto_off_s()), (120, 43_200));
        let odd = ProvisionSettings {
            deadman_grace_ms: 1,
            auto_off_ms: u64::MAX,
            power_delta_w: 0,
        };
        assert_eq!((odd.grace_s(), odd.auto_off_s()), (10, 86_400));
    }

    #[test]
    fn tasmota_answers_read_as_the_firmware_writes_them() {
        let rule = json!({"Rule1": {"State": "OFF", "Once": "OFF", "Rules": "ON a DO b ENDON"}});
        let text = TasmotaSetting::of("Rule1", "ON a DO b ENDON");
        assert_eq!(text.read(&rule, "Rule1").unwrap(), "ON a DO b ENDON");
        assert!(text.same("on  a do B endon", "ON a DO b ENDON"));
        let state = TasmotaSetting::of("Rule1", "1");
        assert_eq!(state.read(&rule, "Rule1").unwrap(), "OFF");
        assert_eq!(state.shown("1"), "ON");
        let scalar = TasmotaSetting::of("PowerOnState", "0");
        assert_eq!(
            scalar
                .read(&json!({"PowerOnState": 3}), "PowerOnState")
                .unwrap(),
            "3"
        );
        assert_eq!(
            scalar
                .read(&json!({"powerdelta1": 105}), "PowerDelta1")
                .unwrap(),
            "105"
        );
        assert!(scalar.read(&json!({"Other": 1}), "PowerOnState").is_err());
    }

    #[test]
    fn the_script_is_found_by_name() {
        let list = json!({"scripts": [
            {"id": 1, "name": "other", "enable": true, "running": true},
            {"id": 3, "name": SCRIPT_NAME, "enable": false, "running": true},
        ]});
        let s = find_script(&list).unwrap();
        assert_eq!((s.id, s.enable, s.running), (3, false, true));
        assert!(find_script(&json!({"scripts": []})).is_none());
        assert!(find_script(&json!({})).is_none());
        assert_eq!(kvs_seconds(&json!("120")), Some(120));
        assert_eq!(kvs_seconds(&json!(120)), Some(120));
        assert_eq!(kvs_seconds(&json!("x")), None);
        assert_eq!(auto_off_text(Some(43_200.0)), "on after 43200 s");
    }
}
