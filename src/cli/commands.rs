//! The admin subcommands. Each one is a call to the JSON API (see `client`).

use super::client::{Client, ClientError};
use crate::config::Config;
use crate::domain::enforcement::ActionOutcome;
use crate::domain::time::human;
use crate::domain::{Phase, SessionId, StationKind};
use crate::http::api_types::{
    AddedStation, ClockView, CommandResult, EventPage, SentCommand, SessionView, StationView,
};
use crate::store::VerifyReport;
use clap::{Args, Subcommand};
use hyper::Method;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a configuration file; names the file, line, key and reason on error.
    Check { file: PathBuf },
    /// Print the embedded defaults as a TOML file.
    Defaults,
}

#[derive(Debug, Args)]
pub struct Mutating {
    /// Idempotency key: retrying with the same key never applies the command twice.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StationCmd {
    /// Add a station.
    Add {
        /// Short id used in URLs and MQTT topics: lowercase letters, digits, - and _.
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_kind)]
        kind: StationKind,
        #[arg(long)]
        zone: Option<String>,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// List stations and their sessions.
    List {
        #[command(flatten)]
        o: Output,
    },
    /// Remove a station that has no session.
    Remove {
        id: String,
        #[command(flatten)]
        m: Mutating,
    },
    /// Issue a single-use enrollment code for a PC's agent (valid 15 minutes).
    Enroll {
        id: String,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// Set (or --show, --clear) how a console station is enforced: its plug, network
    /// block, standby action and the ladder's timing.
    Enforce(super::devices::EnforceArgs),
    /// Send a command to a PC's agent; it is resent until the agent acknowledges it.
    Send {
        id: String,
        #[arg(value_parser = ["lock", "unlock", "message", "logout", "shutdown", "restart"])]
        action: String,
        /// The text of a `message`.
        #[arg(long)]
        text: Option<String>,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
}

/// TARGET is a station id (`pc-01`: its current session) or a session id (`S-12`).
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// Start a session on a station: `session start pc-01 30m`, or `--open` for postpaid.
    Start {
        station: String,
        /// Length, e.g. 30m, 1h, 1h 30m.
        duration: Option<String>,
        /// Open-ended: runs until stopped.
        #[arg(long, conflicts_with = "duration")]
        open: bool,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// Add time: `session extend pc-01 15m`.
    Extend {
        target: String,
        by: String,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// Pause: the remaining time is kept and does not run.
    Pause {
        target: String,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    Resume {
        target: String,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// Move a session to another (free) station, keeping its time.
    Transfer {
        target: String,
        to: String,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    Stop {
        target: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        m: Mutating,
        #[command(flatten)]
        o: Output,
    },
    /// Show one session.
    Show {
        target: String,
        #[command(flatten)]
        o: Output,
    },
    /// List active sessions.
    List {
        #[command(flatten)]
        o: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a staff account. Without --password-stdin a password is generated and
    /// printed once.
    Add {
        name: String,
        #[arg(long)]
        role: crate::domain::Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        m: Mutating,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a bearer token for a user; the secret is printed once.
    Create {
        /// What the token is for, e.g. "till" or "home-assistant".
        name: String,
        #[arg(long)]
        user: String,
        /// At most the user's own role (default: the user's role).
        #[arg(long)]
        role: Option<crate::domain::Role>,
        /// Lifetime, e.g. 720h; without it the token lasts until revoked.
        #[arg(long)]
        expires_in: Option<String>,
        #[command(flatten)]
        m: Mutating,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        o: Output,
    },
    /// Revoke a token at once.
    Revoke {
        id: String,
        #[command(flatten)]
        m: Mutating,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Walk the hash chain; names the first broken link. Exit 1 if broken.
    Verify {
        #[command(flatten)]
        o: Output,
    },
    /// Print events.
    Log {
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        o: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClockCmd {
    /// Venue time and whether anything vouches for it.
    Status {
        #[command(flatten)]
        o: Output,
    },
    /// Confirm the true time as staff (default: this machine's clock).
    Confirm {
        /// RFC 3339 instant, e.g. 2026-11-23T18:00:00Z.
        #[arg(long)]
        time: Option<Timestamp>,
        #[command(flatten)]
        m: Mutating,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// Print the CA fingerprint (what agents pin), the certificate paths, and the server
    /// certificate's names and expiry. Creates the box identity if it does not exist yet.
    Show,
}

fn parse_kind(s: &str) -> Result<StationKind, String> {
    match s {
        "pc" => Ok(StationKind::Pc),
        "console" => Ok(StationKind::Console),
        _ => Err(format!("{s:?} is not a station kind (pc or console)")),
    }
}

pub fn config(cmd: &ConfigCmd) -> ExitCode {
    match cmd {
        ConfigCmd::Check { file } => match Config::load(file) {
            Ok(_) => {
                if let Some(warning) = crate::config::permission_warning(file) {
                    eprintln!("warning: {warning}");
                }
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ConfigCmd::Defaults => match toml::to_string_pretty(&Config::default()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `venued tls`: reads (and at first use creates) `<data dir>/tls/`; no controller needed.
pub fn tls(cmd: &TlsCmd, config: &Config) -> ExitCode {
    match cmd {
        TlsCmd::Show => {
            let names = crate::tls::SubjectNames::default();
            let shown = crate::tls::load_or_create(&config.data.dir, &names)
                .and_then(|id| Ok((crate::tls::describe(&id)?, id.ca_created)));
            match shown {
                Ok((text, created)) => {
                    if created {
                        eprintln!(
                            "created the box CA and server certificate in {}",
                            config.data.dir.join("tls").display()
                        );
                    }
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

pub async fn run(cmd: super::Cmd, config: Config) -> ExitCode {
    let client = match Client::connect(&config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tz = TimeZone::get(&config.venue.timezone).unwrap_or(TimeZone::UTC);
    let result = dispatch(&client, cmd, &tz).await;
    client.close().await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(
    client: &Client,
    cmd: super::Cmd,
    tz: &TimeZone,
) -> Result<ExitCode, ClientError> {
    use super::Cmd;
    match cmd {
        Cmd::Serve | Cmd::Config(_) | Cmd::Tls(_) => Ok(ExitCode::SUCCESS),
        #[cfg(feature = "agent")]
        Cmd::Agent(_) => Ok(ExitCode::SUCCESS),
        Cmd::Station(cmd) => station(client, cmd, tz).await,
        Cmd::Session(cmd) => session(client, cmd, tz).await,
        Cmd::User(cmd) => user(client, cmd).await,
        Cmd::Token(cmd) => token(client, cmd).await,
        Cmd::Mqtt(cmd) => super::mqtt::run(client, cmd).await,
        Cmd::Device(cmd) => super::devices::run(client, cmd).await,
        Cmd::Audit(cmd) => audit(client, cmd, tz).await,
        Cmd::Clock(cmd) => clock(client, cmd, tz).await,
    }
}

pub fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

fn local(ts: Timestamp, tz: &TimeZone) -> String {
    ts.to_zoned(tz.clone()).strftime("%H:%M:%S").to_string()
}

fn describe(v: &SessionView, tz: &TimeZone) -> String {
    let s = &v.session;
    let state = match &s.phase {
        Phase::Running { .. } => match (v.ends_at, v.remaining) {
            (Some(end), Some(left)) => {
                format!("running, ends {} ({} left)", local(end, tz), human(left))
            }
            _ => format!("running open-ended ({} played)", human(v.used)),
        },
        Phase::Paused { .. } => match v.remaining {
            Some(left) => format!("paused ({} left)", human(left)),
            None => format!("paused ({} played)", human(v.used)),
        },
        Phase::Grace { until, .. } => format!("time up, grace until {}", local(*until, tz)),
        Phase::Ended { reason, .. } => {
            format!("ended ({reason:?}, {} played)", human(v.used)).to_lowercase()
        }
    };
    format!("{} on {}: {state}", s.id, s.station,)
}

/// TARGET: `S-12` is a session; anything else is a station whose session is meant.
async fn resolve(client: &Client, target: &str) -> Result<SessionId, ClientError> {
    if target.starts_with("S-") || target.starts_with("s-") {
        return target
            .parse()
            .map_err(|e: crate::domain::ids::IdError| ClientError::Api {
                status: hyper::StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_session_id".into(),
                detail: e.to_string(),
            });
    }
    let station: StationView = client
        .call(
            Method::GET,
            &format!("/api/v1/stations/{}", encode(target)),
            None,
            None,
        )
        .await?;
    station
        .session
        .map(|s| s.session.id)
        .ok_or_else(|| ClientError::Api {
            status: hyper::StatusCode::CONFLICT,
            code: "no_session".into(),
            detail: format!("station {target} has no session"),
        })
}

/// Path segments come from the command line; keep them inside their segment.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn station(client: &Client, cmd: StationCmd, tz: &TimeZone) -> Result<ExitCode, ClientError> {
    match cmd {
        StationCmd::Add {
            id,
            name,
            kind,
            zone,
            m,
            o,
        } => {
            let body = json!({ "id": id, "name": name, "kind": kind, "zone": zone });
            let r: CommandResult<AddedStation> = client
                .call(
                    Method::POST,
                    "/api/v1/stations",
                    Some(&body),
                    m.idempotency_key.as_deref(),
                )
                .await?;
            if o.json {
                print_json(&r);
            } else {
                let s = &r.result.station.station;
                println!("station {} added ({:?}, {:?})", s.id, s.name, s.kind);
                if let Some(agent) = &r.result.agent {
                    println!("agent MQTT credentials (shown once; TLS port 8883):");
                    println!("  username: {}", agent.username);
                    println!("  password: {}", agent.password);
                }
            }
        }
        StationCmd::Enroll { id, m, o } => {
            let r: Value = client
                .call(
                    Method::POST,
                    &format!("/api/v1/stations/{}/enrollment", encode(&id)),
                    None,
                    m.idempotency_key.as_deref(),
                )
                .await?;
            if o.json {
                print_json(&r);
            } else {
                let code = r["code"].as_str().unwrap_or("");
                println!("enrollment code for {id}: {code}");
                println!(
                    "valid until {} and once; on the PC run:",
                    r["expires_at"].as_str().unwrap_or("?")
                );
                println!(
                    "  venued agent enroll --controller https://<this box>:8443 --code {code}"
                );
            }
        }
        StationCmd::Enforce(args) => return super::devices::enforce(client, args).await,
        StationCmd::Send {
            id,
            action,
            text,
            m,
            o,
        } => {
            let body = match text {
                Some(text) => json!({ "type": action, "text": text }),
                None => json!({ "type": action }),
            };
            let r: SentCommand = client
                .call(
                    Method::POST,
                    &format!("/api/v1/stations/{}/commands", encode(&id)),
                    Some(&body),
                    m.idempotency_key.as_deref(),
                )
                .await?;
            if o.json {
                print_json(&r);
            } else {
                println!(
                    "{action} for {} accepted as {}; `venued audit log` shows when the agent acknowledges it",
                    r.station, r.id
                );
            }
        }
        StationCmd::List { o } => {
            let list: Vec<StationView> = client
                .call(Method::GET, "/api/v1/stations", None, None)
                .await?;
            if o.json {
                print_json(&list);
            } else if list.is_empty() {
                println!("no stations yet: venued station add pc-01 --name \"PC 01\" --kind pc");
            } else {
                for s in &list {
                    let what = s
                        .session
                        .as_ref()
                        .map_or_else(|| "free".to_owned(), |v| describe(v, tz));
                    let kind = match s.station.kind {
                        StationKind::Pc => "pc",
                        StationKind::Console => "console",
                    };
                    println!(
                        "{:<12} {:<8} {:<20} {}",
                        s.station.id, kind, s.station.name, what
                    );
                }
            }
        }
        StationCmd::Remove { id, m } => {
            let _: Value = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/stations/{}", encode(&id)),
                    None,
                    m.idempotency_key.as_deref(),
                )
                .await?;
            println!("station {id} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn session(client: &Client, cmd: SessionCmd, tz: &TimeZone) -> Result<ExitCode, ClientError> {
    let (path, body, key, json_out) = match cmd {
        SessionCmd::Start {
            station,
            duration,
            open,
            m,
            o,
        } => {
            let body = match (duration, open) {
                (Some(d), _) => json!({ "station": station, "duration": d }),
                (None, true) => json!({ "station": station, "open": true }),
                (None, false) => {
                    return Err(ClientError::Api {
                        status: hyper::StatusCode::UNPROCESSABLE_ENTITY,
                        code: "invalid_body".into(),
                        detail: "give a duration (e.g. 30m) or --open".into(),
                    });
                }
            };
            (
                "/api/v1/sessions".to_owned(),
                Some(body),
                m.idempotency_key,
                o.json,
            )
        }
        SessionCmd::Extend { target, by, m, o } => {
            let id = resolve(client, &target).await?;
            (
                format!("/api/v1/sessions/{}/extend", id.0),
                Some(json!({ "by": by })),
                m.idempotency_key,
                o.json,
            )
        }
        SessionCmd::Pause { target, m, o } => {
            let id = resolve(client, &target).await?;
            (
                format!("/api/v1/sessions/{}/pause", id.0),
                None,
                m.idempotency_key,
                o.json,
            )
        }
        SessionCmd::Resume { target, m, o } => {
            let id = resolve(client, &target).await?;
            (
                format!("/api/v1/sessions/{}/resume", id.0),
                None,
                m.idempotency_key,
                o.json,
            )
        }
        SessionCmd::Transfer { target, to, m, o } => {
            let id = resolve(client, &target).await?;
            (
                format!("/api/v1/sessions/{}/transfer", id.0),
                Some(json!({ "to": to })),
                m.idempotency_key,
                o.json,
            )
        }
        SessionCmd::Stop {
            target,
            reason,
            m,
            o,
        } => {
            let id = resolve(client, &target).await?;
            (
                format!("/api/v1/sessions/{}/stop", id.0),
                Some(json!({ "reason": reason })),
                m.idempotency_key,
                o.json,
            )
        }
        SessionCmd::Show { target, o } => {
            let id = resolve(client, &target).await?;
            let v: SessionView = client
                .call(
                    Method::GET,
                    &format!("/api/v1/sessions/{}", id.0),
                    None,
                    None,
                )
                .await?;
            if o.json {
                print_json(&v);
            } else {
                println!("{}", describe(&v, tz));
            }
            return Ok(ExitCode::SUCCESS);
        }
        SessionCmd::List { o } => {
            let list: Vec<SessionView> = client
                .call(Method::GET, "/api/v1/sessions", None, None)
                .await?;
            if o.json {
                print_json(&list);
            } else if list.is_empty() {
                println!("no active sessions");
            } else {
                for v in &list {
                    println!("{}", describe(v, tz));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let r: CommandResult<SessionView> = client
        .call(Method::POST, &path, body.as_ref(), key.as_deref())
        .await?;
    if json_out {
        print_json(&r);
    } else {
        let replay = if r.replayed {
            " (already done: same idempotency key)"
        } else {
            ""
        };
        println!("{}{replay}", describe(&r.result, tz));
    }
    Ok(ExitCode::SUCCESS)
}

async fn user(client: &Client, cmd: UserCmd) -> Result<ExitCode, ClientError> {
    let UserCmd::Add {
        name,
        role,
        password_stdin,
        m,
    } = cmd;
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            ClientError::Transport(format!("cannot read the password from stdin: {e}"))
        })?;
        (line.trim_end_matches(['\r', '\n']).to_owned(), false)
    } else {
        (generate_password(), true)
    };
    let body = json!({ "name": name, "role": role, "password": password });
    let _: Value = client
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&body),
            m.idempotency_key.as_deref(),
        )
        .await?;
    println!("user {name} ({role}) created");
    if generated {
        println!("password: {password}");
        if std::io::stdout().is_terminal() {
            println!("(shown once; store it in the venue's password manager)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token(client: &Client, cmd: TokenCmd) -> Result<ExitCode, ClientError> {
    match cmd {
        TokenCmd::Create {
            name,
            user,
            role,
            expires_in,
            m,
        } => {
            let body =
                json!({ "name": name, "user": user, "role": role, "expires_in": expires_in });
            let v: Value = client
                .call(
                    Method::POST,
                    "/api/v1/tokens",
                    Some(&body),
                    m.idempotency_key.as_deref(),
                )
                .await?;
            println!(
                "token {} for {} ({}) created",
                v["id"].as_str().unwrap_or("?"),
                user,
                v["role"].as_str().unwrap_or("?")
            );
            println!("secret: {}", v["token"].as_str().unwrap_or(""));
            println!("(shown once; send it as `Authorization: Bearer <secret>`)");
        }
        TokenCmd::List { o } => {
            let list: Value = client
                .call(Method::GET, "/api/v1/tokens", None, None)
                .await?;
            if o.json {
                print_json(&list);
            } else {
                for t in list.as_array().into_iter().flatten() {
                    let state = if t["revoked"] == true {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<10} {:<20} {:<12} {:<8} {:<8} expires {}",
                        t["id"].as_str().unwrap_or(""),
                        t["name"].as_str().unwrap_or(""),
                        t["user"].as_str().unwrap_or(""),
                        t["role"].as_str().unwrap_or(""),
                        state,
                        t["expires_at"].as_str().unwrap_or("never")
                    );
                }
            }
        }
        TokenCmd::Revoke { id, m } => {
            let _: Value = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/tokens/{}", encode(&id)),
                    None,
                    m.idempotency_key.as_deref(),
                )
                .await?;
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn generate_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

async fn audit(client: &Client, cmd: AuditCmd, tz: &TimeZone) -> Result<ExitCode, ClientError> {
    match cmd {
        AuditCmd::Verify { o } => {
            let r: VerifyReport = client
                .call(Method::GET, "/api/v1/audit/verify", None, None)
                .await?;
            if o.json {
                print_json(&r);
            }
            match &r.broken {
                None => {
                    if !o.json {
                        println!(
                            "chain OK: {} events ({}..{}), {} sealed segments, head {}",
                            r.events,
                            r.first_seq.unwrap_or(0),
                            r.last_seq.unwrap_or(0),
                            r.seals,
                            r.head.get(..16).unwrap_or(&r.head)
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(b) => {
                    let what = if b.seal { "seal" } else { "event" };
                    eprintln!("chain BROKEN at {what} {}: {}", b.seq, b.reason);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCmd::Log { after, limit, o } => {
            let page: EventPage = client
                .call(
                    Method::GET,
                    &format!("/api/v1/events?after={after}&limit={limit}"),
                    None,
                    None,
                )
                .await?;
            if o.json {
                print_json(&page);
            } else {
                for e in &page.events {
                    let kind = event_label(&e.body.kind);
                    println!(
                        "{:>6} {} {:<40} {}",
                        e.seq,
                        local(e.body.at, tz),
                        kind,
                        e.body.actor
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn clock(client: &Client, cmd: ClockCmd, tz: &TimeZone) -> Result<ExitCode, ClientError> {
    match cmd {
        ClockCmd::Status { o } => {
            let v: ClockView = client
                .call(Method::GET, "/api/v1/clock", None, None)
                .await?;
            if o.json {
                print_json(&v);
            } else {
                let trust = v.status.trusted.map_or(
                    "NOT trusted (counting from the last checkpoint)".to_owned(),
                    |s| format!("trusted ({s:?})"),
                );
                println!(
                    "venue time {} ({}), {trust}",
                    v.venue_time,
                    local(v.venue_time, tz)
                );
            }
        }
        ClockCmd::Confirm { time, m } => {
            use crate::clock::Clock;
            let now = time.unwrap_or_else(|| {
                crate::clock::SystemClock::new(crate::clock::TrustMode::Always).wall()
            });
            let _: Value = client
                .call(
                    Method::POST,
                    "/api/v1/clock/confirm",
                    Some(&json!({ "now": now })),
                    m.idempotency_key.as_deref(),
                )
                .await?;
            println!("venue clock confirmed at {now}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `session.extended S-3 pc-01`, `station_added pc-02`: one line per event for humans.
fn event_label(kind: &crate::domain::EventKind) -> String {
    use crate::domain::EventKind;
    match kind {
        EventKind::Session { change, session } => {
            let change = serde_json::to_value(change)
                .ok()
                .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            format!("session.{change} {} {}", session.id, session.station)
        }
        EventKind::StationAdded { station } => format!("station_added {}", station.id),
        EventKind::StationRemoved { station } => format!("station_removed {station}"),
        EventKind::UserAdded { name, role } => format!("user_added {name} ({role})"),
        EventKind::ClockBooted { trusted, shift, .. } => {
            format!("clock_booted trusted={trusted:?} shift={}", human(*shift))
        }
        EventKind::ClockCorrected {
            source, correction, ..
        } => {
            format!(
                "clock_corrected by {source:?} offset={}",
                human(correction.offset)
            )
        }
        EventKind::ClockJumpIgnored { offset, .. } => {
            format!("clock_jump_ignored offset={}", human(*offset))
        }
        EventKind::TokenCreated { id, user, role, .. } => {
            format!("token_created {id} for {user} ({role})")
        }
        EventKind::TokenRevoked { id, user } => format!("token_revoked {id} of {user}"),
        EventKind::LoggedIn { name, from } => format!("logged_in {name} from {from}"),
        EventKind::LoginFailed { name, from, reason } => {
            format!("login_failed {name:?} from {from}: {reason}")
        }
        EventKind::MqttAccountCreated { name, .. } => format!("mqtt_account_created {name}"),
        EventKind::EnrollmentCreated { station, id, .. } => {
            format!("enrollment_created {id} for {station}")
        }
        EventKind::AgentEnrolled { station, id } => format!("agent_enrolled {station} with {id}"),
        EventKind::StationCommandSent { station, id, .. } => {
            format!("station_command_sent {id} to {station}")
        }
        EventKind::StationCommandAcked {
            station, id, ok, ..
        } => format!("station_command_acked {id} by {station} ok={ok}"),
        EventKind::StationCommandFailed {
            station,
            id,
            attempts,
        } => format!("station_command_failed {id} to {station} after {attempts} attempts"),
        EventKind::MqttSecretIssued { name } => format!("mqtt_secret_issued {name}"),
        EventKind::MqttAccountRevoked { name } => format!("mqtt_account_revoked {name}"),
        EventKind::DeviceAdded { name, kind, .. } => {
            format!("device_added {name} ({})", kind.type_name())
        }
        EventKind::DeviceRemoved { name } => format!("device_removed {name}"),
        EventKind::EnforcementSet {
            station,
            enforcement,
        } => match enforcement {
            Some(_) => format!("enforcement_set {station}"),
            None => format!("enforcement_cleared {station}"),
        },
        EventKind::DeviceActed {
            station,
            device,
            action,
            outcome,
        } => match outcome {
            ActionOutcome::Done => format!("device_acted {action} on {device} for {station}"),
            ActionOutcome::Confirmed { watts } => {
                format!("device_acted {action} on {device} for {station}: confirmed at {watts} W")
            }
            ActionOutcome::Failed { error, .. } => {
                format!("device_acted {action} on {device} for {station}: failed: {error}")
            }
        },
        EventKind::EnforcementAlert {
            station,
            alert,
            detail,
            response,
            ..
        } => format!("alert {alert} at {station}: {detail} (response: {response:?})"),
        EventKind::PowerSampled { samples } => {
            format!("power_sampled {} stations", samples.len())
        }
    }
}
