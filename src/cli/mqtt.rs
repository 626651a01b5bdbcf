//! `venued mqtt`: accounts of the embedded broker.

use super::client::{Client, ClientError};
use super::commands::{Mutating, Output, encode, print_json};
use crate::domain::mqtt::{MqttAccount, MqttScope};
use crate::http::api_types::CreatedAccount;
use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum MqttCmd {
    /// List MQTT accounts (never their secrets).
    List {
        #[command(flatten)]
        o: Output,
    },
    /// Create a device or integration account; the secret is printed once.
    Add {
        /// `device:<name>` or `integration:<name>`.
        name: String,
        /// For a device: a topic root it owns (repeatable), e.g. shellies/plug-3.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// For an integration: FILTER=read|write|read_write (repeatable).
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// For an integration: a ready-made scope instead of rules.
        #[arg(long, value_parser = ["home_assistant"])]
        preset: Option<String>,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// Issue a new secret (the old one stops working, connections close). For a PC's
    /// agent: `venued mqtt rotate agent:pc-01`.
    Rotate {
        name: String,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// Revoke an account at once; its connections close.
    Revoke {
        name: String,
        #[command(flatten)]
        m: Mutating,
    },
}

pub async fn run(client: &Client, cmd: MqttCmd) -> Result<ExitCode, ClientError> {
    match cmd {
        MqttCmd::List { o } => {
            let list: Vec<MqttAccount> = client
                .call(Method::GET, "/api/v1/mqtt/accounts", None, None)
                .await?;
            if o.json {
                print_json(&list);
            } else if list.is_empty() {
                println!("no MQTT accounts yet: PC stations get theirs when added");
            } else {
                for a in &list {
                    let state = match (a.revoked, a.has_secret) {
                        (true, _) => "revoked",
                        (false, true) => "active",
                        (false, false) => "no secret (rotate to issue one)",
                    };
                    println!("{:<32} {:<12} {}", a.name, a.scope.kind(), state);
                }
            }
        }
        MqttCmd::Add {
            name,
            topics,
            rules,
            preset,
            m,
            o,
        } => {
            let rules = rules
                .iter()
                .map(|r| {
                    // A rule without `=` is sent as-is so the API names the problem.
                    let (filter, access) = r.rsplit_once('=').unwrap_or((r, ""));
                    json!({ "filter": filter, "access": access })
                })
                .collect::<Vec<Value>>();
            let mut body = json!({ "name": name });
            if !topics.is_empty() {
                body["topics"] = json!(topics);
            }
            if !rules.is_empty() {
                body["rules"] = json!(rules);
            }
            if let Some(p) = preset {
                body["preset"] = json!(p);
            }
            let created: CreatedAccount = client
                .call(
                    Method::POST,
                    "/api/v1/mqtt/accounts",
                    Some(&body),
                    m.idempotency_key.as_deref(),
                )
                .await?;
            show_secret(&created, "created", o.json);
        }
        MqttCmd::Rotate { name, m, o } => {
            let created: CreatedAccount = client
                .call(
                    Method::POST,
                    &format!("/api/v1/mqtt/accounts/{}/rotate", encode(&name)),
                    None,
                    m.idempotency_key.as_deref(),
                )
                .await?;
            show_secret(&created, "has a new secret", o.json);
        }
        MqttCmd::Revoke { name, m } => {
            let _: Value = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/mqtt/accounts/{}", encode(&name)),
                    None,
                    m.idempotency_key.as_deref(),
                )
                .await?;
            println!("MQTT account {name} revoked; its connections are closed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_secret(created: &CreatedAccount, what: &str, json: bool) {
    if json {
        print_json(created);
        return;
    }
    let transport = match created.account.scope {
        MqttScope::Agent { .. } => "TLS only (port 8883)",
        _ => "TLS (8883) or plain MQTT (1883)",
    };
    println!("MQTT account {} {what}", created.account.name);
    println!("  username: {}", created.credentials.username);
    println!("  password: {}", created.credentials.password);
    println!("(shown once; connect over {transport})");
}
