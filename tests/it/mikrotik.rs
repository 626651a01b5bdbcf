//! The MikroTik driver (`venued::devices::mikrotik`) against the RouterOS network fake
//! (`venued::fakes::mikrotik`), through its library API and through a real daemon with
//! the CLI (`venued device add --type mikrotik`, `venued device mikrotik-setup`).
//!
//! The fake counts every REST add and remove per address, so "exactly once" is checked
//! on the router's side, with failures injected between the driver and it: answers that
//! fail after the change was made, failures that made nothing, dropped connections, and
//! a router slower than the driver's timeout.

use crate::support::*;
use serde_json::Value;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use venued::devices::DeviceError;
use venued::devices::mikrotik::{BlockOutcome, Mikrotik as Driver, UnblockOutcome};
use venued::domain::device::DeviceKind;
use venued::fakes::mikrotik::{ConnState, Fault, Mikrotik as Fake, MikrotikConfig, Verdict};

const LIST: &str = "venue-blocked";
const PASSWORD: &str = "venued-test";

/// The SHA-256 fingerprint of the fake's certificate, as an operator would copy it.
fn fingerprint_of(fake: &Fake) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(fake.cert_pem().as_bytes()).unwrap();
    venued::devices::mikrotik::fingerprint(der.as_ref())
}

fn kind(fake: &Fake, fingerprint: Option<String>) -> DeviceKind {
    DeviceKind::Mikrotik {
        url: format!("https://{}", fake.https_addr()),
        user: "admin".into(),
        list: LIST.into(),
        tls_fingerprint: fingerprint,
    }
}

fn driver(fake: &Fake, timeout: Duration) -> Driver {
    Driver::new(&kind(fake, Some(fingerprint_of(fake))), Some(PASSWORD))
        .unwrap()
        .with_timeout(timeout)
}

fn listed(fake: &Fake, ip: IpAddr) -> usize {
    fake.address_list(LIST)
        .iter()
        .filter(|e| e.address == ip.to_string())
        .count()
}

#[tokio::test]
async fn blocks_and_unblocks_exactly_once_despite_failed_answers_and_timeouts() {
    let fake = Fake::start(MikrotikConfig::default()).await.unwrap();
    // A patient driver for everything but the first call under the Slow fault, which an
    // impatient one makes (a short timeout everywhere could fire on a loaded test host).
    let d = driver(&fake, Duration::from_secs(5));
    let impatient = driver(&fake, Duration::from_millis(300));
    let slow = Fault::Slow(Duration::from_secs(2));
    let fail = |status, applied| Fault::FailNext {
        count: 1,
        status,
        applied,
    };
    // (fault, whether the change it hits takes effect anyway). Each case gets its own
    // address, so the fake's counters speak of that case alone.
    let cases = [
        (fail(Some(400), true), true),
        (fail(None, true), true),
        (fail(Some(400), false), false),
        (fail(None, false), false),
        (fail(Some(500), false), false),
        (slow, false),
    ];
    for (n, (fault, applied)) in cases.into_iter().enumerate() {
        let ip: IpAddr = format!("192.168.50.{}", 21 + n).parse().unwrap();
        let at = format!("case {n} ({fault:?})");

        fake.set_fault(fault);
        let first_try = if fault == slow { &impatient } else { &d };
        let first = first_try.block(ip, "venued st07").await;
        if applied {
            // The add failed but took effect: a re-read shows it, so it is done.
            assert_eq!(first.unwrap(), BlockOutcome::Added, "{at}");
        } else {
            let e = first.unwrap_err();
            if fault == slow {
                assert!(matches!(e, DeviceError::Timeout(..)), "{at}: {e:?}");
            }
            assert_eq!(listed(&fake, ip), 0, "{at}: nothing was added");
            fake.set_fault(Fault::None);
            assert_eq!(
                d.block(ip, "venued st07").await.unwrap(),
                BlockOutcome::Added,
                "{at}"
            );
        }
        assert_eq!(
            fake.fault(),
            Fault::None,
            "{at}: the injected failure was used"
        );
        assert_eq!(listed(&fake, ip), 1, "{at}");
        assert!(d.is_blocked(ip).await.unwrap(), "{at}");
        // Again: read first, never a second add.
        assert_eq!(
            d.block(ip, "venued st07").await.unwrap(),
            BlockOutcome::AlreadyBlocked,
            "{at}"
        );
        assert_eq!(
            fake.added(LIST, &ip.to_string()),
            1,
            "{at}: added exactly once"
        );
        let comment = fake
            .address_list(LIST)
            .into_iter()
            .find(|e| e.address == ip.to_string())
            .and_then(|e| e.comment);
        assert_eq!(comment.as_deref(), Some("venued st07"), "{at}");

        fake.set_fault(fault);
        let first = first_try.unblock(ip).await;
        if applied {
            assert_eq!(first.unwrap(), UnblockOutcome::Removed(1), "{at}");
        } else {
            assert!(first.is_err(), "{at}: {first:?}");
            assert_eq!(listed(&fake, ip), 1, "{at}: nothing was removed");
            fake.set_fault(Fault::None);
            assert_eq!(
                d.unblock(ip).await.unwrap(),
                UnblockOutcome::Removed(1),
                "{at}"
            );
        }
        assert_eq!(listed(&fake, ip), 0, "{at}");
        assert!(!d.is_blocked(ip).await.unwrap(), "{at}");
        assert_eq!(
            d.unblock(ip).await.unwrap(),
            UnblockOutcome::NotBlocked,
            "{at}"
        );
        assert_eq!(
            fake.removed(LIST, &ip.to_string()),
            1,
            "{at}: removed exactly once"
        );
        assert_eq!(fake.added(LIST, &ip.to_string()), 1, "{at}");
    }
    // A PUT only after a read that found nothing; a second one only after a failure that
    // made nothing.
    let puts = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT /rest/ip/firewall/address-list"))
        .count();
    assert_eq!(
        puts,
        1 + 1 + 2 + 2 + 2 + 1,
        "one PUT per case, two where the first failed unapplied, none that timed out reading"
    );
    fake.stop().await;
}

#[tokio::test]
async fn duplicates_disabled_entries_and_ipv6() {
    let fake = Fake::start(MikrotikConfig::default()).await.unwrap();
    let d = driver(&fake, Duration::from_secs(5));
    // An entry the configuration came with, twice (imported configurations can hold
    // duplicates): already blocked; unblock removes both.
    let ip: IpAddr = "192.168.50.40".parse().unwrap();
    fake.seed_address(LIST, "192.168.50.40", "imported");
    fake.seed_address(LIST, "192.168.50.40", "imported again");
    assert_eq!(
        d.block(ip, "venued").await.unwrap(),
        BlockOutcome::AlreadyBlocked
    );
    assert_eq!(d.unblock(ip).await.unwrap(), UnblockOutcome::Removed(2));
    assert_eq!(listed(&fake, ip), 0);
    // An address that is only a prefix of another is not it.
    fake.seed_address(LIST, "192.168.50.4", "");
    assert!(!d.is_blocked(ip).await.unwrap());

    // A disabled entry is not a block: it is enabled, not added again.
    let id = fake.seed_address(LIST, "192.168.50.41", "");
    let ip: IpAddr = "192.168.50.41".parse().unwrap();
    let path = format!("/rest/ip/firewall/address-list/{id}");
    assert_eq!(
        rest(&fake, "PATCH", &path, Some(r#"{"disabled":"true"}"#)).await,
        200
    );
    assert!(!d.is_blocked(ip).await.unwrap());
    assert_eq!(d.block(ip, "venued").await.unwrap(), BlockOutcome::Enabled);
    assert!(d.is_blocked(ip).await.unwrap());
    assert_eq!(fake.added(LIST, "192.168.50.41"), 0);

    // IPv6 goes to /ipv6/firewall/address-list, kept as addr/128 there.
    let v6: IpAddr = "2001:db8::21".parse().unwrap();
    assert_eq!(
        d.block(v6, "venued st09").await.unwrap(),
        BlockOutcome::Added
    );
    assert_eq!(
        d.block(v6, "venued st09").await.unwrap(),
        BlockOutcome::AlreadyBlocked
    );
    assert!(d.is_blocked(v6).await.unwrap());
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("PUT /rest/ipv6/firewall/address-list"))
    );
    assert_eq!(d.unblock(v6).await.unwrap(), UnblockOutcome::Removed(1));
    assert!(!d.is_blocked(v6).await.unwrap());
    fake.stop().await;
}

/// A raw REST request, as an operator's tool would send it (the fake has no setter for
/// what the test needs): the status.
async fn rest(fake: &Fake, method: &str, path: &str, body: Option<&str>) -> u16 {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let tls = venued::devices::http::tls_pinned(&fingerprint_of(fake)).unwrap();
    let addr = fake.https_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let auth = venued::devices::mikrotik::base64(format!("admin:{PASSWORD}").as_bytes());
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Basic {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(hyper::body::Bytes::from(
            body.unwrap_or_default().to_owned(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn credentials_and_certificates_are_checked_before_anything_is_sent() {
    let fake = Fake::start(MikrotikConfig::default()).await.unwrap();
    let real = fingerprint_of(&fake);
    let ip: IpAddr = "192.168.50.21".parse().unwrap();

    // No fingerprint: nothing is sent; the error names the one the router presented.
    let unpinned = Driver::new(&kind(&fake, None), Some(PASSWORD)).unwrap();
    match unpinned.block(ip, "x").await {
        Err(DeviceError::Config(m)) => {
            assert!(m.contains(&real), "{m}");
            assert!(m.contains("--tls-fingerprint"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(unpinned.presented_fingerprint().await.unwrap(), real);

    // A wrong fingerprint: refused, naming both.
    let wrong = "00".repeat(32);
    let pinned_wrong = Driver::new(&kind(&fake, Some(wrong)), Some(PASSWORD)).unwrap();
    match pinned_wrong.setup(false).await {
        Err(DeviceError::Config(m)) => {
            assert!(m.contains("fingerprint mismatch"), "{m}");
            assert!(m.contains(&real), "{m}");
            assert!(m.contains(&"00:".repeat(31)), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        fake.requests().is_empty(),
        "no request reached an unverified router"
    );

    // The fingerprint in lowercase without colons is the same pin.
    let plain: String = real
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_lowercase();
    let d = Driver::new(&kind(&fake, Some(plain)), Some(PASSWORD)).unwrap();
    assert!(!d.is_blocked(ip).await.unwrap());

    // A wrong password.
    let bad = Driver::new(&kind(&fake, Some(real.clone())), Some("guess")).unwrap();
    assert!(matches!(
        bad.block(ip, "x").await,
        Err(DeviceError::Auth(_))
    ));
    assert!(matches!(bad.clock().await, Err(DeviceError::Auth(_))));
    assert_eq!(listed(&fake, ip), 0);

    // Nobody listening.
    let port = free_port();
    let gone = DeviceKind::Mikrotik {
        url: format!("https://127.0.0.1:{port}"),
        user: "admin".into(),
        list: LIST.into(),
        tls_fingerprint: Some(real),
    };
    let gone = Driver::new(&gone, Some(PASSWORD)).unwrap();
    assert!(matches!(
        gone.is_blocked(ip).await,
        Err(DeviceError::Unreachable(_))
    ));
    fake.stop().await;
}

#[tokio::test]
async fn the_router_clock_is_read_as_utc() {
    // The router follows a manual clock (18:00:00Z) in Berlin (UTC+2 in June), 50 hours
    // behind.
    let clock = trusted_clock();
    let fake = Fake::start(MikrotikConfig {
        clock: Arc::new(clock.clone()),
        ..MikrotikConfig::default()
    })
    .await
    .unwrap();
    let d = driver(&fake, Duration::from_secs(5));
    assert_eq!(d.clock().await.unwrap(), t0());
    fake.set_clock_offset(jiff::SignedDuration::from_hours(-50));
    assert_eq!(
        d.clock().await.unwrap(),
        t0() - jiff::SignedDuration::from_hours(50)
    );
    fake.stop().await;

    let fake = Fake::start(MikrotikConfig {
        clock: Arc::new(clock),
        time_zone: "America/New_York".into(),
        ..MikrotikConfig::default()
    })
    .await
    .unwrap();
    fake.set_clock_offset(jiff::SignedDuration::from_mins(90));
    let d = driver(&fake, Duration::from_secs(5));
    assert_eq!(
        d.clock().await.unwrap(),
        t0() + jiff::SignedDuration::from_mins(90)
    );
    fake.stop().await;
}

// ---- through a daemon and the CLI --------------------------------------------------------

/// `venued ARGS` against the daemon's data dir, off the async runtime (the fake router
/// answers the daemon from this runtime meanwhile).
async fn cli(dir: &std::path::Path, args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        venued(&dir, &args)
    })
    .await
    .unwrap()
}

async fn add_router(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    fingerprint: Option<&str>,
) -> Output {
    let mut args = vec![
        "device".to_owned(),
        "add".to_owned(),
        name.to_owned(),
        "--type".to_owned(),
        "mikrotik".to_owned(),
        "--url".to_owned(),
        url.to_owned(),
        "--user".to_owned(),
        "admin".to_owned(),
        "--password-stdin".to_owned(),
    ];
    if let Some(fp) = fingerprint {
        args.extend(["--tls-fingerprint".to_owned(), fp.to_owned()]);
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .env("VENUED_DATA_DIR", &dir)
            .env_remove("VENUED_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn refused(out: &Output, code: &str) -> String {
    assert!(!out.status.success(), "accepted: {}", stdout(out));
    let err = stderr(out);
    assert!(err.contains(code), "wanted {code}, got: {err}");
    err
}

/// The forward chain's comments, in order.
fn forward(fake: &Fake) -> Vec<String> {
    fake.filter_rules()
        .into_iter()
        .filter(|r| r.chain == "forward")
        .map(|r| r.comment.unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_through_the_cli_makes_blocking_cut_new_and_fasttracked_traffic() {
    let fake = Fake::start(MikrotikConfig::default()).await.unwrap();
    let fp = fingerprint_of(&fake);
    let url = format!("https://{}", fake.https_addr());
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let data = dir.path();

    let console: IpAddr = "192.168.50.21".parse().unwrap();
    let other_console: IpAddr = "192.168.50.22".parse().unwrap();
    let laptop: IpAddr = "192.168.50.99".parse().unwrap();
    let server: IpAddr = "203.0.113.7".parse().unwrap();
    fake.seed_address("venue-consoles", "192.168.50.21", "PS5 7");
    fake.seed_address("venue-consoles", "192.168.50.22", "PS5 8");
    // A game session that FastTrack took over before any rule existed.
    let game = fake.add_connection("192.168.50.21:3074", "203.0.113.7:3074", "udp");
    assert_eq!(fake.connection_verdict(&game), Some(Verdict::Accept));
    assert_eq!(fake.connection_verdict(&game), Some(Verdict::Fasttracked));

    ok(&add_router(data, "router", &url, Some(&fp)).await);

    // The plan on a default router: all four missing, nothing changed.
    let plan = ok(&cli(data, &["device", "mikrotik-setup", "router"]).await);
    assert_eq!(plan.matches("missing").count(), 4 + 1, "{plan}");
    assert!(plan.contains("run again with --apply"), "{plan}");
    let before = forward(&fake);
    let report = json(&cli(data, &["device", "mikrotik-setup", "router", "--json"]).await);
    let states: Vec<&str> = report["before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["missing"; 4]);
    assert_eq!(report["complete"], false);
    assert_eq!(forward(&fake), before, "a check changes nothing");

    // Apply: created above FastTrack, in order.
    let applied = ok(&cli(data, &["device", "mikrotik-setup", "router", "--apply"]).await);
    assert_eq!(applied.matches("created").count(), 4 + 1, "{applied}");
    assert!(applied.contains("all 4 are in place"), "{applied}");
    let chain = forward(&fake);
    assert_eq!(chain[0], "special dummy rule to show fasttrack counters");
    assert_eq!(
        chain[1..5],
        [
            "venued:block-out",
            "venued:block-in",
            "venued:consoles-out",
            "venued:consoles-in"
        ]
    );
    assert!(
        chain
            .iter()
            .position(|c| c == "defconf: fasttrack")
            .unwrap()
            > 4
    );
    let rules = fake.filter_rules();
    let rule = |comment: &str| {
        rules
            .iter()
            .find(|r| r.comment.as_deref() == Some(comment))
            .unwrap()
    };
    assert_eq!(rule("venued:block-in").get("dst-address-list"), Some(LIST));
    assert_eq!(
        rule("venued:consoles-out").get("src-address-list"),
        Some("venue-consoles")
    );
    assert_eq!(
        rule("venued:consoles-in").get("connection-state"),
        Some("established,related")
    );

    // Again: nothing created, nothing sent but reads.
    let again = json(
        &cli(
            data,
            &["device", "mikrotik-setup", "router", "--apply", "--json"],
        )
        .await,
    );
    assert_eq!(again["created"], serde_json::json!([]));
    assert_eq!(again["complete"], true);
    assert!(
        again["after"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "present")
    );
    let filter_puts = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT /rest/ip/firewall/filter"))
        .count();
    assert_eq!(filter_puts, 4);
    assert_eq!(forward(&fake), chain);

    // Consoles now stay off FastTrack; other hosts do not change.
    let lan_game = fake.add_connection("192.168.50.22:3074", "203.0.113.7:3074", "udp");
    for _ in 0..3 {
        assert_eq!(fake.connection_verdict(&lan_game), Some(Verdict::Accept));
    }
    let browsing = fake.add_connection("192.168.50.99:50000", "203.0.113.7:443", "tcp");
    fake.connection_verdict(&browsing);
    assert_eq!(
        fake.connection_verdict(&browsing),
        Some(Verdict::Fasttracked)
    );

    // Block the console through the library driver: new traffic both ways is dropped at
    // once; the FastTracked session carries on until its connection is removed.
    let d = driver(&fake, Duration::from_secs(5));
    assert_eq!(
        d.block(console, "venued ps5-07").await.unwrap(),
        BlockOutcome::Added
    );
    assert_eq!(
        fake.forward_verdict(console, server, "udp", ConnState::New),
        Verdict::Drop
    );
    assert_eq!(
        fake.forward_verdict(server, console, "udp", ConnState::Established),
        Verdict::Drop
    );
    assert_eq!(fake.connection_verdict(&game), Some(Verdict::Fasttracked));
    assert_eq!(d.clear_connections(console).await.unwrap(), 1);
    assert_eq!(fake.connection_verdict(&game), None);
    assert_eq!(d.clear_connections(console).await.unwrap(), 0);
    assert_eq!(
        fake.forward_verdict(console, server, "udp", ConnState::Established),
        Verdict::Drop
    );
    // The others are untouched.
    assert_eq!(fake.connection_verdict(&lan_game), Some(Verdict::Accept));
    assert_eq!(
        fake.connection_verdict(&browsing),
        Some(Verdict::Fasttracked)
    );
    assert_eq!(
        fake.forward_verdict(other_console, server, "udp", ConnState::New),
        Verdict::Accept
    );
    assert_eq!(
        fake.forward_verdict(laptop, server, "tcp", ConnState::New),
        Verdict::Accept
    );

    // Unblocked: the console's traffic flows again.
    assert_eq!(
        d.unblock(console).await.unwrap(),
        UnblockOutcome::Removed(1)
    );
    assert_eq!(
        fake.forward_verdict(console, server, "udp", ConnState::New),
        Verdict::Accept
    );
    assert_eq!(fake.added(LIST, "192.168.50.21"), 1);
    assert_eq!(fake.removed(LIST, "192.168.50.21"), 1);

    // What the API answers when it cannot do its job.
    ok(&add_router(data, "unpinned", &url, None).await);
    let err = refused(
        &cli(data, &["device", "mikrotik-setup", "unpinned"]).await,
        "device_error",
    );
    assert!(
        err.contains(&fp),
        "the error names the fingerprint to pin: {err}"
    );
    let nobody = format!("https://127.0.0.1:{}", free_port());
    ok(&add_router(data, "gone", &nobody, Some(&fp)).await);
    refused(
        &cli(data, &["device", "mikrotik-setup", "gone"]).await,
        "device_unreachable",
    );
    refused(
        &cli(data, &["device", "mikrotik-setup", "nosuch"]).await,
        "device_not_found",
    );
    ok(&cli(
        data,
        &[
            "device", "add", "plug-1", "--type", "tasmota", "--host", "10.0.0.3",
        ],
    )
    .await);
    refused(
        &cli(data, &["device", "mikrotik-setup", "plug-1"]).await,
        "wrong_device_kind",
    );
    fake.set_fault(Fault::FailNext {
        count: 4,
        status: Some(400),
        applied: false,
    });
    // Rules already there: a check and an apply send no change, so the fault stays armed.
    ok(&cli(data, &["device", "mikrotik-setup", "router", "--apply"]).await);
    assert!(matches!(fake.fault(), Fault::FailNext { count: 4, .. }));
    fake.set_fault(Fault::None);

    daemon.kill();
    fake.stop().await;
}

#[tokio::test]
async fn setup_survives_failed_answers_and_completes_a_partial_setup() {
    let fake = Fake::start(MikrotikConfig::default()).await.unwrap();
    let d = driver(&fake, Duration::from_secs(5));
    // The first rule's add fails but takes effect: the setup carries on and completes.
    fake.set_fault(Fault::FailNext {
        count: 1,
        status: Some(400),
        applied: true,
    });
    let r = d.setup(true).await.unwrap();
    assert!(r.complete, "{r:?}");
    assert_eq!(r.created.len(), 4);
    fake.set_fault(Fault::FailNext {
        count: 1,
        status: None,
        applied: false,
    });
    // Already complete: no change is sent, the fault is not used.
    assert!(d.setup(true).await.unwrap().created.is_empty());
    assert_ne!(fake.fault(), Fault::None);
    fake.set_fault(Fault::None);
    let chain = forward(&fake);
    for comment in [
        "venued:block-out",
        "venued:block-in",
        "venued:consoles-out",
        "venued:consoles-in",
    ] {
        assert_eq!(
            chain.iter().filter(|c| *c == comment).count(),
            1,
            "{comment}: {chain:?}"
        );
    }
    fake.stop().await;

    // A router where an operator removed rule 3: only it is created, in its place.
    let fake = Fake::start(MikrotikConfig::default()).await.unwrap();
    let d = driver(&fake, Duration::from_secs(5));
    d.setup(true).await.unwrap();
    let third = fake
        .filter_rules()
        .into_iter()
        .find(|r| r.comment.as_deref() == Some("venued:consoles-out"))
        .unwrap()
        .id;
    let path = format!("/rest/ip/firewall/filter/{third}");
    assert_eq!(rest(&fake, "DELETE", &path, None).await, 204);
    fake.set_fault(Fault::FailNext {
        count: 1,
        status: None,
        applied: false,
    });
    // The insert fails unapplied: an error, nothing half-done.
    assert!(d.setup(true).await.is_err());
    let report = d.setup(true).await.unwrap();
    assert_eq!(report.created, ["venued:consoles-out"]);
    assert!(report.complete);
    assert_eq!(
        forward(&fake)[1..5],
        [
            "venued:block-out",
            "venued:block-in",
            "venued:consoles-out",
            "venued:consoles-in"
        ]
    );
    fake.stop().await;
}
