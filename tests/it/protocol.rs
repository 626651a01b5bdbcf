//! Protocol v1 wire format, pinned by golden files: `tests/fixtures/protocol/<name>.json`
//! holds the canonical JSON of each payload (pretty-printed, two-space indent, trailing
//! newline). Agents in the field run older versions, so a change to one of these files is a
//! change to the contract in docs/protocol.md and must only ever add fields.
//!
//! After a deliberate change, rewrite the files instead of comparing them:
//!
//! ```sh
//! VENUED_BLESS=1 cargo test --test it protocol
//! ```
//!
//! then review the diff of `tests/fixtures/protocol/` (and docs/protocol.md, whose marked
//! examples must match the files) before committing.

use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use venued::domain::ids::{SessionId, StationId};
use venued::domain::station::StationKind;
use venued::protocol::{
    AgentCommand, AgentStatus, Announcement, CommandAck, CommandAction, ControllerStatus,
    PROTOCOL_VERSION, ProtocolError, RequestKind, RequestResponse, SessionState, StationRequest,
    StationState, StationStatus, Warning, decode,
};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol")
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn sid(s: &str) -> StationId {
    StationId::parse(s).unwrap()
}

fn blessing() -> bool {
    std::env::var("VENUED_BLESS").is_ok_and(|v| v == "1")
}

/// Compares (or, when blessing, writes) each golden file and collects every mismatch, so
/// one run reports them all.
struct Golden {
    bless: bool,
    names: BTreeSet<String>,
    failures: Vec<String>,
}

impl Golden {
    fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(&mut self, name: &str, value: T) {
        assert!(self.names.insert(name.to_owned()), "{name} listed twice");
        let path = fixtures_dir().join(format!("{name}.json"));
        let mut expected = serde_json::to_string_pretty(&value).unwrap();
        expected.push('\n');
        if self.bless {
            std::fs::create_dir_all(fixtures_dir()).unwrap();
            std::fs::write(&path, &expected).unwrap();
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                self.failures.push(format!(
                    "{}: {e} (run with VENUED_BLESS=1 to create it)",
                    path.display()
                ));
                return;
            }
        };
        if text != expected {
            self.failures.push(format!(
                "{}: differs from the serialisation of the value\n--- file\n{text}--- serialised\n{expected}",
                path.display()
            ));
        }
        match decode::<T>(text.as_bytes()) {
            Ok(parsed) if parsed == value => {}
            Ok(parsed) => self.failures.push(format!(
                "{}: parses to {parsed:?}, expected {value:?}",
                path.display()
            )),
            Err(e) => self
                .failures
                .push(format!("{}: does not parse: {e}", path.display())),
        }
    }
}

/// The canonical example of every payload, each command and request type, and a station
/// state in each status. docs/protocol.md shows these same examples.
fn goldens(g: &mut Golden) {
    g.check(
        "station_state_free",
        StationState {
            v: PROTOCOL_VERSION,
            station: sid("ps5-a"),
            name: "PS5 A".to_owned(),
            kind: StationKind::Console,
            seq: 1040,
            server_time: ts("2026-11-23T15:00:00Z"),
            status: StationStatus::Free,
            lock: true,
            session: None,
            message: None,
        },
    );
    g.check(
        "station_state_in_session",
        StationState {
            v: PROTOCOL_VERSION,
            station: sid("pc-01"),
            name: "PC 01".to_owned(),
            kind: StationKind::Pc,
            seq: 1042,
            server_time: ts("2026-11-23T15:00:00Z"),
            status: StationStatus::InSession,
            lock: false,
            session: Some(SessionState {
                id: SessionId(7),
                started_at: ts("2026-11-23T14:00:00Z"),
                ends_at: Some(ts("2026-11-23T16:00:00Z")),
                remaining_ms: None,
                grace_until: None,
                warnings: vec![
                    Warning {
                        at: ts("2026-11-23T15:45:00Z"),
                        lead_s: 900,
                    },
                    Warning {
                        at: ts("2026-11-23T15:55:00Z"),
                        lead_s: 300,
                    },
                    Warning {
                        at: ts("2026-11-23T15:59:00Z"),
                        lead_s: 60,
                    },
                ],
            }),
            message: None,
        },
    );
    g.check(
        "station_state_paused",
        StationState {
            v: PROTOCOL_VERSION,
            station: sid("pc-02"),
            name: "PC 02".to_owned(),
            kind: StationKind::Pc,
            seq: 1043,
            server_time: ts("2026-11-23T15:05:00Z"),
            status: StationStatus::Paused,
            lock: true,
            session: Some(SessionState {
                id: SessionId(8),
                started_at: ts("2026-11-23T14:30:00Z"),
                ends_at: None,
                remaining_ms: Some(2_700_000),
                grace_until: None,
                warnings: vec![],
            }),
            message: Some("Paused by staff, back in 10 minutes".to_owned()),
        },
    );
    g.check(
        "station_state_grace",
        StationState {
            v: PROTOCOL_VERSION,
            station: sid("pc-03"),
            name: "PC 03".to_owned(),
            kind: StationKind::Pc,
            seq: 1044,
            server_time: ts("2026-11-23T15:00:30Z"),
            status: StationStatus::Grace,
            lock: false,
            session: Some(SessionState {
                id: SessionId(5),
                started_at: ts("2026-11-23T13:00:00Z"),
                ends_at: Some(ts("2026-11-23T15:00:00Z")),
                remaining_ms: None,
                grace_until: Some(ts("2026-11-23T15:05:00Z")),
                warnings: vec![],
            }),
            message: None,
        },
    );

    let command = |id: &str, action| AgentCommand {
        id: id.to_owned(),
        issued_at: ts("2026-11-23T15:00:00Z"),
        action,
    };
    g.check(
        "agent_command_lock",
        command("c-000040", CommandAction::Lock),
    );
    g.check(
        "agent_command_unlock",
        command("c-000041", CommandAction::Unlock),
    );
    g.check(
        "agent_command_message",
        command(
            "c-000042",
            CommandAction::Message {
                text: "Your food is ready".to_owned(),
            },
        ),
    );
    g.check(
        "agent_command_logout",
        command("c-000043", CommandAction::Logout),
    );
    g.check(
        "agent_command_shutdown",
        command("c-000044", CommandAction::Shutdown),
    );
    g.check(
        "agent_command_restart",
        command("c-000045", CommandAction::Restart),
    );

    g.check(
        "command_ack_ok",
        CommandAck {
            id: "c-000042".to_owned(),
            ok: true,
            error: None,
        },
    );
    g.check(
        "command_ack_error",
        CommandAck {
            id: "c-000044".to_owned(),
            ok: false,
            error: Some("the agent service may not shut this PC down".to_owned()),
        },
    );

    g.check(
        "agent_status_online",
        AgentStatus {
            online: true,
            version: Some("0.1.0".to_owned()),
            user: Some("player".to_owned()),
            idle_s: Some(12),
            locked: Some(false),
            clock_offset_ms: Some(-850),
            at: Some(ts("2026-11-23T15:00:02Z")),
        },
    );
    g.check("agent_status_will", AgentStatus::will());

    g.check(
        "station_request_member_login",
        StationRequest {
            id: "r-000007".to_owned(),
            kind: RequestKind::MemberLogin {
                member: "M-1001".to_owned(),
                pin: "4821".to_owned(),
            },
        },
    );
    g.check(
        "station_request_extend_from_wallet",
        StationRequest {
            id: "r-000008".to_owned(),
            kind: RequestKind::ExtendFromWallet { minutes: 60 },
        },
    );
    g.check(
        "station_request_call_staff",
        StationRequest {
            id: "r-000009".to_owned(),
            kind: RequestKind::CallStaff {
                note: Some("Headset is broken".to_owned()),
            },
        },
    );

    g.check(
        "request_response_ok",
        RequestResponse {
            id: "r-000008".to_owned(),
            ok: true,
            error: None,
        },
    );
    g.check(
        "request_response_error",
        RequestResponse {
            id: "r-000007".to_owned(),
            ok: false,
            error: Some(ProtocolError::new(
                ProtocolError::UNAUTHORISED,
                "Member number or PIN is wrong",
            )),
        },
    );

    g.check(
        "announcement",
        Announcement {
            id: "a-000003".to_owned(),
            text: "The venue closes in 30 minutes".to_owned(),
            at: ts("2026-11-23T22:30:00Z"),
            until: Some(ts("2026-11-23T23:00:00Z")),
        },
    );

    g.check(
        "controller_status_online",
        ControllerStatus {
            online: true,
            version: "0.1.0".to_owned(),
            protocol: PROTOCOL_VERSION,
            started_at: Some(ts("2026-11-23T09:58:12Z")),
        },
    );
    g.check(
        "controller_status_offline",
        ControllerStatus {
            online: false,
            version: "0.1.0".to_owned(),
            protocol: PROTOCOL_VERSION,
            started_at: None,
        },
    );
}

#[test]
fn golden_files_match_the_payloads_exactly() {
    let mut g = Golden {
        bless: blessing(),
        names: BTreeSet::new(),
        failures: Vec::new(),
    };
    goldens(&mut g);

    // Every file in the folder belongs to an example above: no stale goldens.
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for stale in on_disk.difference(&g.names) {
        g.failures.push(format!(
            "tests/fixtures/protocol/{stale}.json: no example produces it"
        ));
    }

    assert!(
        g.failures.is_empty(),
        "{} golden file problem(s); if the change is deliberate, rerun with VENUED_BLESS=1:\n\n{}",
        g.failures.len(),
        g.failures.join("\n")
    );
}

#[test]
fn station_state_from_a_newer_controller_with_unknown_fields_still_parses() {
    let golden =
        std::fs::read_to_string(fixtures_dir().join("station_state_in_session.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&golden).unwrap();
    json["zone"] = "upstairs".into();
    json["tariff"] = serde_json::json!({"name": "evening", "per_hour_minor": 400});
    json["session"]["member"] = "M-1001".into();
    json["session"]["warnings"][1]["sound"] = "chime".into();

    let newer: StationState = decode(json.to_string().as_bytes()).unwrap();
    let known: StationState = decode(golden.as_bytes()).unwrap();
    assert_eq!(newer, known);
}

#[test]
fn agent_payloads_with_unknown_fields_are_refused() {
    for (file, field) in [
        ("command_ack_ok", "extra"),
        ("agent_status_online", "cpu_load"),
        ("station_request_extend_from_wallet", "price_minor"),
    ] {
        let text = std::fs::read_to_string(fixtures_dir().join(format!("{file}.json"))).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json[field] = 0.into();
        let bytes = json.to_string();
        let e = match file {
            "command_ack_ok" => decode::<CommandAck>(bytes.as_bytes()).unwrap_err(),
            "agent_status_online" => decode::<AgentStatus>(bytes.as_bytes()).unwrap_err(),
            _ => decode::<StationRequest>(bytes.as_bytes()).unwrap_err(),
        };
        assert!(
            e.to_string().contains(&format!("unknown field `{field}`")),
            "{file}: {e}"
        );
    }
}

/// docs/protocol.md marks its payload examples with `<!-- golden: NAME -->` just before
/// the fenced block; each must be exactly the golden file, so the contract cannot drift.
#[test]
fn protocol_doc_examples_are_the_golden_files() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let mut lines = doc.lines();
    let mut seen = 0;
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- golden: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next().map(str::trim_end),
            Some("```json"),
            "docs/protocol.md: the golden marker for {name} must be followed by ```json"
        );
        let mut block = String::new();
        for l in lines.by_ref() {
            if l.trim_end() == "```" {
                break;
            }
            block.push_str(l);
            block.push('\n');
        }
        let file = std::fs::read_to_string(fixtures_dir().join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("docs/protocol.md names golden {name}: {e}"));
        assert_eq!(block, file, "docs/protocol.md: example {name}");
        seen += 1;
    }
    assert!(
        seen >= 10,
        "docs/protocol.md marks only {seen} golden examples"
    );
}
