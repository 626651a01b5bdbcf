//! Payload round trips, the refusals agents' input gets, forward compatibility, and a
//! self-check of the golden files in `tests/fixtures/protocol/` (the value-by-value golden
//! test is `tests/it/protocol.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::domain::ids::{SessionId, StationId};
use crate::domain::station::StationKind;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn in_session() -> StationState {
    StationState {
        v: PROTOCOL_VERSION,
        station: StationId::parse("pc-01").unwrap(),
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
            warnings: vec![Warning {
                at: ts("2026-11-23T15:55:00Z"),
                lead_s: 300,
            }],
        }),
        message: Some("Your food is ready".to_owned()),
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let compact = encode(value);
    assert_eq!(&decode::<T>(&compact).unwrap(), value);
    let pretty = serde_json::to_vec_pretty(value).unwrap();
    assert_eq!(&decode::<T>(&pretty).unwrap(), value);
}

fn refused<T: DeserializeOwned + Debug>(json: &str) -> DecodeError {
    match decode::<T>(json.as_bytes()) {
        Ok(v) => panic!("{json} was accepted as {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_payload_type_round_trips() {
    round_trip(&in_session());
    round_trip(&StationState {
        status: StationStatus::Free,
        lock: true,
        session: None,
        message: None,
        ..in_session()
    });
    for action in [
        CommandAction::Lock,
        CommandAction::Unlock,
        CommandAction::Message {
            text: "hi".to_owned(),
        },
        CommandAction::Logout,
        CommandAction::Shutdown,
        CommandAction::Restart,
    ] {
        round_trip(&AgentCommand {
            id: "c-000042".to_owned(),
            issued_at: ts("2026-11-23T15:00:00Z"),
            action,
        });
    }
    round_trip(&CommandAck {
        id: "c-1".to_owned(),
        ok: false,
        error: Some("no".to_owned()),
    });
    round_trip(&AgentStatus {
        online: true,
        version: Some("0.1.0".to_owned()),
        user: Some("player".to_owned()),
        idle_s: Some(3),
        locked: Some(false),
        clock_offset_ms: Some(-850),
        at: Some(ts("2026-11-23T15:00:01.250Z")),
    });
    for kind in [
        RequestKind::MemberLogin {
            member: "M-1001".to_owned(),
            pin: "4821".to_owned(),
        },
        RequestKind::ExtendFromWallet { minutes: 60 },
        RequestKind::CallStaff { note: None },
        RequestKind::CallStaff {
            note: Some("headset".to_owned()),
        },
    ] {
        round_trip(&StationRequest {
            id: "r-000007".to_owned(),
            kind,
        });
    }
    round_trip(&RequestResponse {
        id: "r-000007".to_owned(),
        ok: false,
        error: Some(ProtocolError::new(ProtocolError::BUSY, "try again")),
    });
    round_trip(&Announcement {
        id: "a-1".to_owned(),
        text: "Closing soon".to_owned(),
        at: ts("2026-11-23T15:00:00Z"),
        until: None,
    });
    round_trip(&ControllerStatus {
        online: true,
        version: "0.1.0".to_owned(),
        protocol: PROTOCOL_VERSION,
        started_at: None,
    });
}

#[test]
fn flattened_payloads_put_the_tag_beside_the_id() {
    let cmd = AgentCommand {
        id: "c-000042".to_owned(),
        issued_at: ts("2026-11-23T15:00:00Z"),
        action: CommandAction::Message {
            text: "Your food is ready".to_owned(),
        },
    };
    assert_eq!(
        String::from_utf8(encode(&cmd)).unwrap(),
        r#"{"id":"c-000042","issued_at":"2026-11-23T15:00:00Z","type":"message","text":"Your food is ready"}"#
    );
    let req = StationRequest {
        id: "r-000007".to_owned(),
        kind: RequestKind::ExtendFromWallet { minutes: 60 },
    };
    assert_eq!(
        String::from_utf8(encode(&req)).unwrap(),
        r#"{"id":"r-000007","type":"extend_from_wallet","minutes":60}"#
    );
    let staff = StationRequest {
        id: "r-8".to_owned(),
        kind: RequestKind::CallStaff { note: None },
    };
    assert_eq!(
        String::from_utf8(encode(&staff)).unwrap(),
        r#"{"id":"r-8","type":"call_staff"}"#
    );
}

#[test]
fn none_fields_are_left_out_and_the_will_is_just_offline() {
    assert_eq!(encode(&AgentStatus::will()), br#"{"online":false}"#);
    assert_eq!(
        decode::<AgentStatus>(br#"{"online":false}"#).unwrap(),
        AgentStatus::will()
    );
    let ack = CommandAck {
        id: "c-1".to_owned(),
        ok: true,
        error: None,
    };
    assert_eq!(encode(&ack), br#"{"id":"c-1","ok":true}"#);
}

#[test]
fn lock_follows_the_status() {
    assert!(StationStatus::Free.locks());
    assert!(StationStatus::Paused.locks());
    assert!(!StationStatus::InSession.locks());
    assert!(!StationStatus::Grace.locks());
    assert_eq!(StationStatus::InSession.to_string(), "in_session");
}

#[test]
fn malformed_json_is_refused_with_its_position() {
    // A fault inside a value names the field it was in.
    let e = refused::<CommandAck>(r#"{"id":"c-1","ok":tru"#);
    assert_eq!(e.path(), Some("ok"), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("invalid payload at `ok`: "), "{msg}");
    assert!(msg.contains("line 1 column"), "{msg}");

    let e = refused::<CommandAck>("{\"id\" \"c-1\"}");
    assert_eq!(e.path(), Some("."), "{e}");
    assert!(
        e.to_string().starts_with("invalid payload: expected `:`"),
        "{e}"
    );

    for bad in ["", "   ", "null", "[]", "\"ok\"", "{", "\u{feff}{}"] {
        refused::<CommandAck>(bad);
    }
    let e = refused::<CommandAck>(r#"{"id":"c-1","ok":true} {"id":"c-2","ok":true}"#);
    assert!(e.to_string().contains("trailing characters"), "{e}");
    let e = refused::<CommandAck>(r#"{"id":"c-1","ok":true,"id":"c-2"}"#);
    assert!(e.to_string().contains("duplicate field `id`"), "{e}");
}

#[test]
fn non_utf8_is_refused() {
    let e = decode::<CommandAck>(b"{\"id\":\"\xff\xfe\",\"ok\":true}").unwrap_err();
    assert!(matches!(e, DecodeError::Invalid { .. }), "{e}");
}

#[test]
fn unknown_fields_from_agents_are_refused_and_named() {
    let e = refused::<CommandAck>(r#"{"id":"c-1","ok":true,"extra":1}"#);
    assert!(e.to_string().contains("unknown field `extra`"), "{e}");

    let e = refused::<AgentStatus>(r#"{"online":true,"cpu":93}"#);
    assert!(e.to_string().contains("unknown field `cpu`"), "{e}");

    for json in [
        r#"{"id":"r-1","type":"member_login","member":"M-1","pin":"1","admin":true}"#,
        r#"{"id":"r-1","type":"extend_from_wallet","minutes":60,"price":0}"#,
        r#"{"id":"r-1","type":"call_staff","urgent":true}"#,
    ] {
        let e = refused::<StationRequest>(json);
        assert!(e.to_string().contains("unknown field"), "{json}: {e}");
    }
}

#[test]
fn station_requests_need_a_known_type_and_their_fields() {
    let e = refused::<StationRequest>(r#"{"id":"r-1","type":"free_time","minutes":60}"#);
    assert!(e.to_string().contains("unknown variant `free_time`"), "{e}");
    let e = refused::<StationRequest>(r#"{"id":"r-1","minutes":60}"#);
    assert!(e.to_string().contains("missing field `type`"), "{e}");
    let e = refused::<StationRequest>(r#"{"type":"extend_from_wallet","minutes":60}"#);
    assert!(e.to_string().contains("missing field `id`"), "{e}");
    let e = refused::<StationRequest>(r#"{"id":"r-1","type":"extend_from_wallet"}"#);
    assert!(e.to_string().contains("missing field `minutes`"), "{e}");
    let e = refused::<StationRequest>(r#"{"id":"r-1","type":"extend_from_wallet","minutes":-5}"#);
    assert!(e.to_string().contains("invalid value"), "{e}");
    // A note is optional.
    assert_eq!(
        decode::<StationRequest>(br#"{"id":"r-1","type":"call_staff"}"#).unwrap(),
        StationRequest {
            id: "r-1".to_owned(),
            kind: RequestKind::CallStaff { note: None }
        }
    );
}

#[test]
fn wrong_types_are_refused_with_the_json_path() {
    let e = refused::<CommandAck>(r#"{"id":"c-1","ok":"yes"}"#);
    assert_eq!(e.path(), Some("ok"));
    assert!(
        e.to_string()
            .starts_with("invalid payload at `ok`: invalid type"),
        "{e}"
    );

    let e = refused::<AgentStatus>(r#"{"online":true,"idle_s":-1}"#);
    assert_eq!(e.path(), Some("idle_s"), "{e}");

    let mut state = serde_json::to_value(in_session()).unwrap();
    state["session"]["ends_at"] = "tomorrow".into();
    let e = refused::<StationState>(&state.to_string());
    assert_eq!(e.path(), Some("session.ends_at"), "{e}");

    let mut state = serde_json::to_value(in_session()).unwrap();
    state["session"]["warnings"][0]["lead_s"] = "300".into();
    let e = refused::<StationState>(&state.to_string());
    assert_eq!(e.path(), Some("session.warnings[0].lead_s"), "{e}");

    let mut state = serde_json::to_value(in_session()).unwrap();
    state["station"] = "PC 01".into();
    let e = refused::<StationState>(&state.to_string());
    assert_eq!(e.path(), Some("station"), "{e}");
    assert!(e.to_string().contains("may only contain lowercase"), "{e}");

    let mut state = serde_json::to_value(in_session()).unwrap();
    state["status"] = "maintenance".into();
    let e = refused::<StationState>(&state.to_string());
    assert_eq!(e.path(), Some("status"), "{e}");

    let e = refused::<StationState>(r#"{"v":1}"#);
    assert!(e.to_string().contains("missing field"), "{e}");
}

#[test]
fn oversize_payloads_are_refused_before_parsing() {
    let ack = br#"{"id":"c-1","ok":true}"#;
    let mut at_limit = ack.to_vec();
    at_limit.resize(MAX_PAYLOAD, b' ');
    assert!(decode::<CommandAck>(&at_limit).is_ok());

    let mut over = ack.to_vec();
    over.resize(MAX_PAYLOAD + 1, b' ');
    let e = decode::<CommandAck>(&over).unwrap_err();
    assert!(
        matches!(e, DecodeError::TooLarge { size } if size == MAX_PAYLOAD + 1),
        "{e}"
    );
    assert_eq!(e.path(), None);
    assert_eq!(
        e.to_string(),
        "payload is 16385 bytes, more than the 16384 bytes allowed"
    );
}

#[test]
fn a_newer_controllers_extra_fields_are_ignored() {
    let mut state = serde_json::to_value(in_session()).unwrap();
    state["zone"] = "upstairs".into();
    state["tariff"] = serde_json::json!({"name": "evening", "per_hour": 400});
    state["session"]["member"] = "M-1001".into();
    state["session"]["warnings"][0]["sound"] = "chime".into();
    assert_eq!(
        decode::<StationState>(state.to_string().as_bytes()).unwrap(),
        in_session()
    );

    let cmd = br#"{"id":"c-9","issued_at":"2026-11-23T15:00:00Z","type":"message","text":"hi","style":"banner","priority":2}"#;
    assert_eq!(
        decode::<AgentCommand>(cmd).unwrap().action,
        CommandAction::Message {
            text: "hi".to_owned()
        }
    );
    let cmd = br#"{"id":"c-9","issued_at":"2026-11-23T15:00:00Z","type":"lock","reason":"staff"}"#;
    assert_eq!(
        decode::<AgentCommand>(cmd).unwrap().action,
        CommandAction::Lock
    );
    let resp = br#"{"id":"r-1","ok":false,"error":{"code":"busy","message":"later","retry_after_s":5},"trace":"x"}"#;
    assert_eq!(
        decode::<RequestResponse>(resp).unwrap().error.unwrap().code,
        ProtocolError::BUSY
    );
    let status = br#"{"online":true,"version":"0.2.0","protocol":1,"build":"abc"}"#;
    assert!(decode::<ControllerStatus>(status).unwrap().online);
    let ann = br#"{"id":"a-1","text":"hi","at":"2026-11-23T15:00:00Z","level":"info"}"#;
    assert_eq!(decode::<Announcement>(ann).unwrap().until, None);
}

#[test]
fn a_command_of_an_unknown_type_is_refused_by_the_typed_decoder() {
    // Documented in docs/protocol.md: the agent reads `id` from the raw JSON and answers
    // not_supported.
    let e = refused::<AgentCommand>(
        r#"{"id":"c-9","issued_at":"2026-11-23T15:00:00Z","type":"screenshot"}"#,
    );
    assert!(
        e.to_string().contains("unknown variant `screenshot`"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// The golden files, checked without knowing their values: each must decode as the type
// its name says and serialise back to exactly the same bytes.
// ---------------------------------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol")
}

fn reserialises_exactly<T: Serialize + DeserializeOwned>(text: &str) -> Result<String, String> {
    let value: T = decode(text.as_bytes()).map_err(|e| e.to_string())?;
    let mut again = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
    again.push('\n');
    Ok(again)
}

#[test]
fn golden_files_decode_and_reserialise_byte_for_byte() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 22, "only {} golden files", files.len());
    for file in files {
        let name = file.file_stem().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let again = if name.starts_with("station_state_") {
            let state: StationState = decode(text.as_bytes()).unwrap();
            assert_eq!(state.v, PROTOCOL_VERSION, "{name}");
            assert_eq!(state.lock, state.status.locks(), "{name}");
            assert!(name.ends_with(&state.status.to_string()), "{name}");
            reserialises_exactly::<StationState>(&text)
        } else if name.starts_with("agent_command_") {
            reserialises_exactly::<AgentCommand>(&text)
        } else if name.starts_with("command_ack_") {
            reserialises_exactly::<CommandAck>(&text)
        } else if name.starts_with("agent_status_") {
            reserialises_exactly::<AgentStatus>(&text)
        } else if name.starts_with("station_request_") {
            reserialises_exactly::<StationRequest>(&text)
        } else if name.starts_with("request_response_") {
            reserialises_exactly::<RequestResponse>(&text)
        } else if name.starts_with("announcement") {
            reserialises_exactly::<Announcement>(&text)
        } else if name.starts_with("controller_status_") {
            reserialises_exactly::<ControllerStatus>(&text)
        } else {
            panic!("{name}.json: no payload type for this name");
        };
        assert_eq!(again.as_deref(), Ok(text.as_str()), "{name}.json");
    }
}
