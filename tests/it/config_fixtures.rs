//! Configuration files as operators write them: the fixtures under `tests/config/`, the
//! shipped example `config/venued.toml`, and `venued config check` / `config defaults`.
//!
//! Every file in `tests/config/valid/` must load. Every file in `tests/config/invalid/`
//! starts with `# expect: <part of the message>` and optionally `# line: N`; it must be
//! refused with that message, naming the file (and the line), both by `Config::load` and
//! by the real binary.

use crate::support::{BIN, stderr, stdout, venued};
use jiff::SignedDuration;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use venued::clock::TrustMode;
use venued::config::{Config, LogFormat};
use venued::domain::timekeeping::OutagePolicy;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> PathBuf {
    manifest_dir().join("config/venued.toml")
}

fn fixture(kind: &str, name: &str) -> PathBuf {
    manifest_dir().join("tests/config").join(kind).join(name)
}

/// The `.toml` files in `tests/config/<kind>`, sorted; at least `min` of them.
fn fixtures(kind: &str, min: usize) -> Vec<PathBuf> {
    let dir = manifest_dir().join("tests/config").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "expected at least {min} fixtures in {}, found {}",
        dir.display(),
        files.len()
    );
    files
}

/// What an invalid fixture says about itself in its leading comment lines.
#[derive(Debug)]
struct Expectation {
    message: String,
    line: Option<usize>,
}

fn expectation(file: &Path) -> Expectation {
    let text = std::fs::read_to_string(file).unwrap();
    let mut message = None;
    let mut line = None;
    for header in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(m) = header.strip_prefix("# expect:") {
            message = Some(m.trim().to_owned());
        } else if let Some(n) = header.strip_prefix("# line:") {
            let n = n.trim();
            line = Some(n.parse().unwrap_or_else(|_| {
                panic!("{}: `# line: {n}` is not a line number", file.display())
            }));
        }
    }
    let message = message
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| panic!("{}: no `# expect: ...` header", file.display()));
    Expectation { message, line }
}

/// `venued config check FILE`, with no config or overrides inherited from the test run.
fn config_check(file: &Path) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    venued(scratch.path(), &["config", "check", file.to_str().unwrap()])
}

/// Fail with every problem at once rather than the first one.
fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_valid_fixture_loads() {
    let mut failures = Vec::new();
    for file in fixtures("valid", 4) {
        if let Err(e) = Config::load(&file) {
            failures.push(format!("{}: refused: {e}", file.display()));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn valid_fixtures_mean_what_they_say() {
    let empty = Config::load(&fixture("valid", "empty.toml")).unwrap();
    assert_eq!(empty, Config::default());

    let berlin = Config::load(&fixture("valid", "venue_berlin_consume.toml")).unwrap();
    assert_eq!(berlin.venue.timezone, "Europe/Berlin");
    assert_eq!(berlin.clock.outage_policy, OutagePolicy::Consume);
    assert_eq!(berlin.clock.trust, TrustMode::Always);
    assert_eq!(berlin.log.format, LogFormat::Json);
    assert_eq!(berlin.sessions.grace, SignedDuration::from_mins(2));
    assert_eq!(berlin.sessions.max_duration, SignedDuration::from_hours(12));
    assert_eq!(berlin.data.dir, PathBuf::from("/var/lib/venued"));
    // Keys the file leaves out keep their defaults.
    assert_eq!(berlin.engine, Config::default().engine);

    let iso = Config::load(&fixture("valid", "iso8601_durations.toml")).unwrap();
    assert_eq!(iso.sessions.grace, SignedDuration::from_secs(90));
    assert_eq!(
        iso.sessions.warnings,
        [SignedDuration::from_mins(10), SignedDuration::from_mins(2)]
    );
    assert_eq!(iso.sessions.max_duration, SignedDuration::from_hours(12));
    assert_eq!(
        iso.engine.checkpoint_interval,
        SignedDuration::from_secs(30)
    );
    assert_eq!(iso.clock.jump_threshold, SignedDuration::from_secs(5));

    let dual = Config::load(&fixture("valid", "dual_stack_listen.toml")).unwrap();
    let expected: Vec<SocketAddr> = vec![
        "[::1]:8080".parse().unwrap(),
        "127.0.0.1:8081".parse().unwrap(),
    ];
    assert_eq!(dual.http.listen, expected);

    let quiet = Config::load(&fixture("valid", "socket_only.toml")).unwrap();
    assert!(quiet.http.listen.is_empty());
    assert!(quiet.sessions.warnings.is_empty());

    let low = Config::load(&fixture("valid", "lower_bounds.toml")).unwrap();
    assert_eq!(low.sessions.grace, SignedDuration::ZERO);
    let high = Config::load(&fixture("valid", "upper_bounds.toml")).unwrap();
    assert_eq!(high.sessions.max_duration, SignedDuration::from_hours(168));
}

#[test]
fn every_invalid_fixture_is_refused_with_its_message_file_and_line() {
    let mut failures = Vec::new();
    for file in fixtures("invalid", 16) {
        let expect = expectation(&file);
        let e = match Config::load(&file) {
            Ok(_) => {
                failures.push(format!("{}: accepted", file.display()));
                continue;
            }
            Err(e) => e,
        };
        let shown = e.to_string();
        if !shown.contains(&expect.message) {
            failures.push(format!(
                "{}: message {shown:?} lacks {:?}",
                file.display(),
                expect.message
            ));
        }
        if e.file.as_deref() != Some(file.as_path()) {
            failures.push(format!("{}: error names file {:?}", file.display(), e.file));
        }
        let prefix = match expect.line {
            Some(line) => format!("{}:{line}: ", file.display()),
            None => format!("{}:", file.display()),
        };
        if !shown.starts_with(&prefix) {
            failures.push(format!(
                "{}: message {shown:?} does not start with {prefix:?}",
                file.display()
            ));
        }
        if expect.line.is_some() && e.line != expect.line {
            failures.push(format!(
                "{}: line {:?}, expected {:?}",
                file.display(),
                e.line,
                expect.line
            ));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn config_check_refuses_every_invalid_fixture_with_the_same_message() {
    let mut failures = Vec::new();
    for file in fixtures("invalid", 16) {
        let expected = match Config::load(&file) {
            Ok(_) => {
                failures.push(format!("{}: accepted by Config::load", file.display()));
                continue;
            }
            Err(e) => format!("error: {e}\n"),
        };
        let out = config_check(&file);
        if out.status.success() {
            failures.push(format!("{}: `config check` exited 0", file.display()));
        }
        if stderr(&out) != expected {
            failures.push(format!(
                "{}: stderr {:?}, expected {expected:?}",
                file.display(),
                stderr(&out)
            ));
        }
        if !stdout(&out).is_empty() {
            failures.push(format!("{}: stdout {:?}", file.display(), stdout(&out)));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn config_check_accepts_every_valid_fixture_and_the_example() {
    let mut failures = Vec::new();
    let mut files = fixtures("valid", 4);
    files.push(example());
    for file in files {
        let out = config_check(&file);
        let expected = format!("{}: OK\n", file.display());
        if !out.status.success() || stdout(&out) != expected {
            failures.push(format!(
                "{}: {:?}, stdout {:?}, stderr {:?}",
                file.display(),
                out.status,
                stdout(&out),
                stderr(&out)
            ));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn config_check_ignores_the_environment() {
    // Overrides that would each be an error if `config check` applied them: it checks
    // the file it is given, nothing else.
    let hostile = |file: &Path| {
        Command::new(BIN)
            .args(["config", "check"])
            .arg(file)
            .env("VENUED_CONFIG", fixture("invalid", "unknown_section.toml"))
            .env("VENUED_DATA_DIR", "")
            .env("VENUED_HTTP_LISTEN", "not-an-address")
            .env("VENUED_LOG", "venued=loud")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let valid = fixture("valid", "venue_berlin_consume.toml");
    let out = hostile(&valid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}: OK\n", valid.display()));

    let invalid = fixture("invalid", "grace_over_limit.toml");
    let out = hostile(&invalid);
    assert!(!out.status.success());
    let e = Config::load(&invalid).unwrap_err();
    assert_eq!(stderr(&out), format!("error: {e}\n"));
}

#[test]
fn example_config_equals_the_defaults() {
    let loaded = Config::load(&example()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded, Config::default());
}

/// `section -> [key]` of a TOML document whose top level holds only tables.
fn sections(text: &str, what: &str) -> Vec<(String, Vec<String>)> {
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    table
        .into_iter()
        .map(|(section, value)| {
            let keys = value
                .as_table()
                .unwrap_or_else(|| panic!("{what}: `{section}` is not a table"))
                .keys()
                .cloned()
                .collect();
            (section, keys)
        })
        .collect()
}

#[test]
fn example_config_sets_every_key_explicitly() {
    let defaults = toml::to_string(&Config::default()).unwrap();
    let text = std::fs::read_to_string(example()).unwrap();
    let in_example = sections(&text, "config/venued.toml");
    let mut missing = Vec::new();
    for (section, keys) in sections(&defaults, "defaults") {
        let present = in_example.iter().find(|(s, _)| *s == section);
        for key in keys {
            if !present.is_some_and(|(_, ks)| ks.contains(&key)) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/venued.toml does not set {missing:?}; add them with their default value"
    );
}

#[test]
fn example_config_comments_every_key() {
    let text = std::fs::read_to_string(example()).unwrap();
    let mut previous = "";
    let mut bare = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        let is_key = !line.is_empty() && !line.starts_with('#') && !line.starts_with('[');
        if is_key && !previous.starts_with('#') {
            bare.push(format!("line {}: {line}", i + 1));
        }
        previous = line;
    }
    assert!(
        bare.is_empty(),
        "keys in config/venued.toml without a comment above them: {bare:?}"
    );
}

#[test]
fn configuration_reference_documents_every_key() {
    let docs = std::fs::read_to_string(manifest_dir().join("docs/configuration.md")).unwrap();
    let defaults = toml::to_string(&Config::default()).unwrap();
    let mut missing = Vec::new();
    for (section, keys) in sections(&defaults, "defaults") {
        for key in keys {
            let name = format!("`{section}.{key}`");
            if !docs.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document {missing:?}"
    );
}

#[test]
fn config_defaults_output_parses_back_to_the_defaults() {
    let scratch = tempfile::tempdir().unwrap();
    let out = venued(scratch.path(), &["config", "defaults"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let parsed = Config::parse(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed, Config::default());
}

/// A bare word that is not a level would be read by `EnvFilter` as a target name, so
/// `level = "verbose"` would pass and then silence every log line.
#[test]
fn log_level_that_is_not_a_level_is_refused() {
    for level in ["verbose", "warning", "inf"] {
        let text = format!("[log]\nlevel = {level:?}\n");
        assert!(
            Config::parse(&text, None).is_err(),
            "level = {level:?} was accepted"
        );
    }
}
