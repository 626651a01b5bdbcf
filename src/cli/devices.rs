//! `venued device` and `venued station enforce`: the plugs, routers and MQTT actions venued
//! drives, and how a console station is enforced with them.

use super::client::{Client, ClientError};
use super::commands::{Mutating, Output, encode, print_json};
use crate::devices::mikrotik::{RuleState, SetupReport};
use crate::devices::provision::Outcome;
use crate::domain::device::{Device, DeviceKind, Enforcement};
use crate::http::devices::{DeviceProblem, DeviceTest, MikrotikSetupAnswer, ProvisionReport};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};
use std::io::BufRead;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// List devices (never their passwords).
    List {
        #[command(flatten)]
        o: Output,
    },
    /// Add a plug, a router or an MQTT action.
    Add(Box<AddDevice>),
    /// Remove a device that no station uses.
    Remove {
        name: String,
        #[command(flatten)]
        m: Mutating,
    },
    /// Reach a device with its stored address and password and show what it says (a
    /// plug's model, firmware, relay and draw; a router's clock and address list);
    /// changes nothing. Exits non-zero when the device cannot be reached.
    Test {
        name: String,
        #[command(flatten)]
        o: Output,
    },
    /// Write a plug's own fail-safe into it (power-on state off, auto-off, the dead-man
    /// rule or script) and report each item; safe to repeat. Exits non-zero when the
    /// plug cannot be reached or an item failed.
    Provision {
        name: String,
        /// Only show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        o: Output,
    },
    /// Check a MikroTik router's console-blocking firewall rules; --apply creates the
    /// missing ones (above FastTrack, in order). Safe to repeat.
    MikrotikSetup {
        /// The router's device name.
        name: String,
        /// Create the missing rules (without it, only report).
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        o: Output,
    },
}

/// `venued device add`.
#[derive(Debug, Args)]
pub struct AddDevice {
    /// 1-40 of a-z 0-9 - _, e.g. plug-07.
    pub name: String,
    #[arg(long = "type", value_parser = ["shelly_gen1", "shelly_gen2", "tasmota", "mikrotik", "mqtt_action"])]
    pub kind: String,
    /// Plugs: the web address, host or host:port.
    #[arg(long)]
    pub host: Option<String>,
    /// Shelly Gen1: its MQTT id (shellyplug-s-AABBCC).
    #[arg(long)]
    pub mqtt_id: Option<String>,
    /// Shelly Gen2: its MQTT topic prefix (its device id by default on the plug).
    #[arg(long)]
    pub mqtt_prefix: Option<String>,
    /// Tasmota: its MQTT topic (tasmota_AABBCC); MQTT action: the topic to publish.
    #[arg(long)]
    pub topic: Option<String>,
    /// MikroTik: https://<router>[:port].
    #[arg(long)]
    pub url: Option<String>,
    /// MikroTik: the RouterOS user.
    #[arg(long)]
    pub user: Option<String>,
    /// MikroTik: the address list venued owns (default venue-blocked).
    #[arg(long)]
    pub list: Option<String>,
    /// MikroTik: SHA-256 fingerprint of the router's certificate.
    #[arg(long)]
    pub tls_fingerprint: Option<String>,
    /// MQTT action: the payload to publish.
    #[arg(long)]
    pub payload: Option<String>,
    /// MQTT action: publish retained.
    #[arg(long)]
    pub retain: bool,
    /// Read the device's password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub m: Mutating,
    #[command(flatten)]
    pub o: Output,
}

/// `venued station enforce ID ...`: the devices and ladder of a console station.
#[derive(Debug, Args)]
pub struct EnforceArgs {
    pub id: String,
    /// The plug that powers the console.
    #[arg(long)]
    pub plug: Option<String>,
    /// The MikroTik router that blocks the console's network (with --address).
    #[arg(long, requires = "address")]
    pub router: Option<String>,
    /// The console's IP address on the venue network.
    #[arg(long, requires = "router")]
    pub address: Option<String>,
    /// The MQTT action that puts the console into standby.
    #[arg(long)]
    pub standby: Option<String>,
    /// A program from the config's [consoles.commands] run as the standby action.
    #[arg(long)]
    pub standby_command: Option<String>,
    /// Network block this many ms after the end of paid time.
    #[arg(long)]
    pub block_after_ms: Option<u64>,
    /// The standby action this many ms after the end.
    #[arg(long)]
    pub standby_after_ms: Option<u64>,
    /// How long a power reading below --standby-below-w may take to confirm standby.
    #[arg(long)]
    pub standby_confirm_ms: Option<u64>,
    /// Below this draw (watts) the console counts as in standby.
    #[arg(long)]
    pub standby_below_w: Option<u32>,
    /// Cut the relay this many ms after the end (only with --allow-cut).
    #[arg(long)]
    pub cut_after_ms: Option<u64>,
    /// Allow cutting the plug's relay when standby is not confirmed.
    #[arg(long)]
    pub allow_cut: bool,
    /// Show the station's enforcement instead of setting it.
    #[arg(long, conflicts_with_all = ["plug", "router", "standby", "clear"])]
    pub show: bool,
    /// Stop enforcing the station with devices.
    #[arg(long, conflicts_with_all = ["plug", "router", "standby"])]
    pub clear: bool,
    #[command(flatten)]
    pub m: Mutating,
    #[command(flatten)]
    pub o: Output,
}

fn read_password() -> Result<String, ClientError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Transport(format!("cannot read the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub async fn run(client: &Client, cmd: DeviceCmd) -> Result<ExitCode, ClientError> {
    match cmd {
        DeviceCmd::List { o } => {
            let list: Vec<Device> = client
                .call(Method::GET, "/api/v1/devices", None, None)
                .await?;
            if o.json {
                print_json(&list);
            } else if list.is_empty() {
                println!("no devices yet: `venued device add --help`");
            } else {
                for d in &list {
                    println!(
                        "{:<24} {:<12} {}",
                        d.name,
                        d.kind.type_name(),
                        describe(&d.kind)
                    );
                }
            }
        }
        DeviceCmd::Add(add) => {
            let AddDevice {
                name,
                kind,
                host,
                mqtt_id,
                mqtt_prefix,
                topic,
                url,
                user,
                list,
                tls_fingerprint,
                payload,
                retain,
                password_stdin,
                m,
                o,
            } = *add;
            // Fields go to the API as given; it names what is missing or wrong.
            let mut device = json!({ "type": kind });
            let fields = [
                ("host", host),
                ("mqtt_id", mqtt_id),
                ("mqtt_prefix", mqtt_prefix),
                ("topic", topic),
                ("url", url),
                ("user", user),
                ("list", list),
                ("tls_fingerprint", tls_fingerprint),
                ("payload", payload),
            ];
            for (key, value) in fields {
                if let Some(v) = value {
                    device[key] = json!(v);
                }
            }
            if retain {
                device["retain"] = json!(true);
            }
            let mut body = json!({ "name": name, "device": device });
            if password_stdin {
                body["password"] = json!(read_password()?);
            }
            let added: Device = client
                .call(
                    Method::POST,
                    "/api/v1/devices",
                    Some(&body),
                    m.idempotency_key.as_deref(),
                )
                .await?;
            if o.json {
                print_json(&added);
            } else {
                println!(
                    "device {} added ({}, {}{})",
                    added.name,
                    added.kind.type_name(),
                    describe(&added.kind),
                    if added.has_password {
                        ", password stored"
                    } else {
                        ""
                    }
                );
            }
        }
        DeviceCmd::Remove { name, m } => {
            let _: Value = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/devices/{}", encode(&name)),
                    None,
                    m.idempotency_key.as_deref(),
                )
                .await?;
            println!("device {name} removed");
        }
        DeviceCmd::Test { name, o } => {
            let t: DeviceTest = client
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/test", encode(&name)),
                    None,
                    None,
                )
                .await?;
            if o.json {
                print_json(&t);
            }
            if let Some(e) = &t.error {
                return Ok(not_reached(&t.name.to_string(), e));
            }
            if !o.json {
                println!("device {} ({}): {}", t.name, t.kind, t.summary);
            }
        }
        DeviceCmd::Provision { name, dry_run, o } => {
            let r: ProvisionReport = client
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/provision", encode(&name)),
                    Some(&json!({ "dry_run": dry_run })),
                    None,
                )
                .await?;
            if o.json {
                print_json(&r);
            }
            if let Some(e) = &r.error {
                return Ok(not_reached(&r.name.to_string(), e));
            }
            if !o.json {
                print_provision(&r);
            }
            if r.items.iter().any(|i| i.outcome == Outcome::Failed) {
                return Ok(ExitCode::FAILURE);
            }
        }
        DeviceCmd::MikrotikSetup { name, apply, o } => {
            let answer: MikrotikSetupAnswer = client
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/mikrotik-setup", encode(&name)),
                    Some(&json!({ "apply": apply })),
                    None,
                )
                .await?;
            if o.json {
                print_json(&answer);
            }
            if let Some(e) = &answer.error {
                return Ok(not_reached(&name, e));
            }
            let report = &answer.report;
            if !o.json {
                print_setup(&name, report);
            }
            // An apply that could not complete the setup fails, so scripts notice; a
            // check only reports.
            if apply && !report.complete {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A device that could not be used: its problem on stderr (with the code, for scripts),
/// and a failure exit.
fn not_reached(name: &str, e: &DeviceProblem) -> ExitCode {
    eprintln!(
        "venued: device {name} not reached: {} ({})",
        e.message, e.code
    );
    ExitCode::FAILURE
}

/// One line per item: `unchanged`, `old -> new`, `would change old -> new`, or why it
/// failed; then the verdict.
fn print_provision(r: &ProvisionReport) {
    println!(
        "device {} ({}){}",
        r.name,
        r.kind,
        if r.dry_run {
            ": dry run, nothing changed"
        } else {
            ""
        }
    );
    let width = r.items.iter().map(|i| i.item.len()).max().unwrap_or(0);
    for i in &r.items {
        let old = i.old.as_deref().unwrap_or("?");
        let what = match i.outcome {
            Outcome::Unchanged => format!("unchanged ({})", i.new),
            Outcome::Changed => format!("changed ({old} -> {})", i.new),
            Outcome::WouldChange => format!("would change ({old} -> {})", i.new),
            Outcome::Failed => {
                format!("failed ({})", i.why.as_deref().unwrap_or("no reason given"))
            }
        };
        println!("  {:<width$}  {what}", i.item);
    }
    let count = |o: Outcome| r.items.iter().filter(|i| i.outcome == o).count();
    let (failed, pending) = (count(Outcome::Failed), count(Outcome::WouldChange));
    if failed > 0 {
        println!("{failed} item(s) failed: the fail-safe is incomplete; fix and run again");
    } else if pending > 0 {
        println!("{pending} item(s) would change: run without --dry-run to apply");
    } else if count(Outcome::Changed) > 0 {
        println!("the fail-safe is in place");
    } else {
        println!("the fail-safe was already in place; nothing to do");
    }
}

fn state_name(s: RuleState) -> &'static str {
    match s {
        RuleState::Present => "present",
        RuleState::Missing => "missing",
        RuleState::Misplaced => "misplaced",
        RuleState::Different => "different",
    }
}

/// One line per rule (what it was, what became of it), then what to do next.
fn print_setup(name: &str, r: &SetupReport) {
    println!(
        "router {name}: forward-chain rules that block list {} (must sit above {}, in this order)",
        r.list,
        r.fasttrack.as_deref().map_or_else(
            || "FastTrack; none found".to_owned(),
            |id| format!("the fasttrack-connection rule {id}")
        )
    );
    for (i, before) in r.before.iter().enumerate() {
        let after = r.after.get(i).unwrap_or(before);
        let state = if r.created.contains(&before.comment) {
            format!(
                "missing -> created{}",
                after
                    .id
                    .as_deref()
                    .map(|id| format!(" ({id})"))
                    .unwrap_or_default()
            )
        } else if after.state != before.state {
            format!(
                "{} -> {}",
                state_name(before.state),
                state_name(after.state)
            )
        } else {
            state_name(after.state).to_owned()
        };
        println!(
            "  {}. {:<20} {:<28} {}",
            i + 1,
            before.comment,
            state,
            before.rule
        );
        if let Some(problem) = &after.problem {
            println!("       {problem}");
        }
    }
    let count = |s: RuleState| r.after.iter().filter(|c| c.state == s).count();
    let (missing, wrong) = (
        count(RuleState::Missing),
        count(RuleState::Misplaced) + count(RuleState::Different),
    );
    if r.complete {
        if r.created.is_empty() {
            println!("all 4 rules are in place; nothing to do");
        } else {
            println!(
                "created {} rule(s); all 4 are in place: a blocked console is cut on its next packet",
                r.created.len()
            );
        }
        return;
    }
    if missing > 0 && !r.applied {
        println!("{missing} missing: run again with --apply to create them");
    }
    if wrong > 0 {
        println!(
            "{wrong} rule(s) misplaced or different: fix them on the router (venued never \
             moves or changes existing rules), then check again"
        );
    }
}

fn describe(kind: &DeviceKind) -> String {
    match kind {
        DeviceKind::ShellyGen1 { host, mqtt_id } => match mqtt_id {
            Some(id) => format!("{host}, MQTT shellies/{id}"),
            None => format!("{host}, HTTP only"),
        },
        DeviceKind::ShellyGen2 { host, mqtt_prefix } => match mqtt_prefix {
            Some(p) => format!("{host}, MQTT {p}"),
            None => format!("{host}, HTTP only"),
        },
        DeviceKind::Tasmota { host, topic } => match topic {
            Some(t) => format!("{host}, MQTT {t}"),
            None => format!("{host}, HTTP only"),
        },
        DeviceKind::Mikrotik {
            url, user, list, ..
        } => format!("{url} as {user}, list {list}"),
        DeviceKind::MqttAction { topic, .. } => format!("publishes on {topic}"),
    }
}

pub async fn enforce(client: &Client, a: EnforceArgs) -> Result<ExitCode, ClientError> {
    let path = format!("/api/v1/stations/{}/enforcement", encode(&a.id));
    if a.show {
        let e: Enforcement = client.call(Method::GET, &path, None, None).await?;
        if a.o.json {
            print_json(&e);
        } else {
            print_enforcement(&a.id, &e);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.clear {
        let _: Value = client
            .call(Method::DELETE, &path, None, a.m.idempotency_key.as_deref())
            .await?;
        println!("station {} is no longer enforced with devices", a.id);
        return Ok(ExitCode::SUCCESS);
    }
    let mut ladder = json!({});
    let steps = [
        ("block_after_ms", a.block_after_ms),
        ("standby_after_ms", a.standby_after_ms),
        ("standby_confirm_ms", a.standby_confirm_ms),
        ("cut_after_ms", a.cut_after_ms),
    ];
    for (key, value) in steps {
        if let Some(ms) = value {
            ladder[key] = json!(ms);
        }
    }
    if let Some(w) = a.standby_below_w {
        ladder["standby_below_w"] = json!(w);
    }
    ladder["allow_cut"] = json!(a.allow_cut);
    let mut body = json!({ "ladder": ladder });
    if let Some(plug) = a.plug {
        body["plug"] = json!(plug);
    }
    if let (Some(router), Some(address)) = (a.router, a.address) {
        body["network"] = json!({ "router": router, "address": address });
    }
    if let Some(standby) = a.standby {
        body["standby"] = json!(standby);
    }
    if let Some(command) = a.standby_command {
        body["standby_command"] = json!(command);
    }
    let e: Enforcement = client
        .call(
            Method::PUT,
            &path,
            Some(&body),
            a.m.idempotency_key.as_deref(),
        )
        .await?;
    if a.o.json {
        print_json(&e);
    } else {
        print_enforcement(&a.id, &e);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_enforcement(station: &str, e: &Enforcement) {
    let none = || "-".to_owned();
    println!("station {station}");
    println!(
        "  plug:     {}",
        e.plug.as_ref().map_or_else(none, ToString::to_string)
    );
    println!(
        "  network:  {}",
        e.network
            .as_ref()
            .map_or_else(none, |n| format!("{} on {}", n.address, n.router))
    );
    println!(
        "  standby:  {}",
        e.standby.as_ref().map_or_else(none, ToString::to_string)
    );
    if let Some(command) = &e.standby_command {
        println!("  standby command: {command} (from [consoles.commands])");
    }
    let l = &e.ladder;
    println!(
        "  ladder:   block +{} ms, standby +{} ms (confirm within {} ms, below {} W), relay cut {}",
        l.block_after_ms,
        l.standby_after_ms,
        l.standby_confirm_ms,
        l.standby_below_w,
        if l.allow_cut {
            format!("+{} ms", l.cut_after_ms)
        } else {
            "never (not allowed)".to_owned()
        }
    );
}
