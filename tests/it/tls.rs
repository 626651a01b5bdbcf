//! Box identity (CA and server certificate), HTTPS with rustls/ring, operator
//! certificates and `venued tls show`. Network traffic stays on 127.0.0.1.

use crate::support::*;
use axum::Router;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use venued::tls::{self, BoxIdentity, SubjectNames, TlsError};

const HOST: Option<&str> = Some("venue-box");

fn identity(dir: &Path, names: &SubjectNames) -> BoxIdentity {
    tls::load_or_create_at(dir, names, HOST, t0()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(cas: &[&CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add((*ca).clone()).unwrap();
    }
    roots
}

fn client(roots: RootCertStore) -> Arc<ClientConfig> {
    client_with(roots, rustls::DEFAULT_VERSIONS)
}

fn client_with(
    roots: RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Whether `id`'s server certificate verifies for `name` against `ca` at `t0()`.
fn verifies(id: &BoxIdentity, ca: &CertificateDer<'static>, name: &str) -> bool {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(&[ca])), ring())
        .build()
        .unwrap();
    let chain = id.server_chain();
    let now = UnixTime::since_unix_epoch(Duration::from_secs(t0().as_second() as u64));
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            now,
        )
        .is_ok()
}

fn app() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn serve(config: Arc<rustls::ServerConfig>, app: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tls::serve_https(listener, config, app, async {
        let _ = stopped.await;
    }));
    Server { addr, stop, task }
}

/// One HTTPS GET over a fresh connection; the TLS error, if the handshake fails.
async fn https_get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
    path: &str,
) -> Result<(u16, String), std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, name)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

#[test]
fn first_start_creates_the_files_and_later_starts_reuse_them() {
    let tmp = tempfile::tempdir().unwrap();
    let first = identity(tmp.path(), &SubjectNames::default());
    let p = &first.paths;
    assert!(first.ca_created);
    assert!(first.server_issued.is_some());
    assert_eq!(p.dir, tmp.path().join("tls"));
    assert_eq!(mode(&p.dir), 0o700);
    assert_eq!(mode(&p.ca_key), 0o600);
    assert_eq!(mode(&p.server_key), 0o600);
    assert!(p.ca_cert.is_file() && p.server_cert.is_file());
    assert_eq!(read(&p.ca_cert), first.ca_cert_pem.as_bytes());
    assert_eq!(read(&p.server_cert), first.server_cert_pem.as_bytes());
    // No temporary files left behind.
    let stray: Vec<_> = std::fs::read_dir(&p.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    let ca = first.ca_info().unwrap();
    assert!(ca.is_ca);
    assert!(ca.subject.contains("venued CA "), "{}", ca.subject);
    assert!(ca.not_after.as_second() - t0().as_second() > 9 * 365 * 86_400);
    let server = first.server_info().unwrap();
    assert!(!server.is_ca);
    assert_eq!(server.issuer, ca.subject);
    assert!(server.not_after.as_second() - t0().as_second() <= 825 * 86_400);
    for name in ["localhost", "venue-box", "venue-box.local"] {
        assert!(server.names.dns.contains(&name.to_owned()), "{name}");
    }
    for ip in ["127.0.0.1", "::1"] {
        assert!(server.names.ips.contains(&ip.parse().unwrap()), "{ip}");
    }

    let (ca_bytes, server_bytes) = (read(&p.ca_cert), read(&p.server_cert));
    let (ca_key, server_key) = (read(&p.ca_key), read(&p.server_key));
    let second = identity(tmp.path(), &SubjectNames::default());
    assert!(!second.ca_created);
    assert_eq!(second.server_issued, None);
    assert_eq!(read(&p.ca_cert), ca_bytes);
    assert_eq!(read(&p.ca_key), ca_key);
    assert_eq!(read(&p.server_cert), server_bytes);
    assert_eq!(read(&p.server_key), server_key);
    assert_eq!(second.ca_fingerprint(), first.ca_fingerprint());
}

#[test]
fn a_new_name_reissues_the_server_cert_from_the_same_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let first = identity(tmp.path(), &SubjectNames::default());
    let ca_bytes = read(&first.paths.ca_cert);
    assert!(!verifies(&first, first.ca_der(), "box.venue.example"));

    let names = SubjectNames {
        dns: vec!["Box.Venue.Example".into()],
        ips: vec!["192.168.1.50".parse().unwrap()],
    };
    let second = identity(tmp.path(), &names);
    assert!(!second.ca_created);
    assert!(second.server_issued.is_some());
    assert_eq!(
        read(&second.paths.ca_cert),
        ca_bytes,
        "the CA never changes"
    );
    assert_ne!(second.server_cert_pem, first.server_cert_pem);
    let info = second.server_info().unwrap();
    assert!(info.names.dns.contains(&"box.venue.example".to_owned()));
    assert!(info.names.ips.contains(&"192.168.1.50".parse().unwrap()));
    for name in [
        "box.venue.example",
        "192.168.1.50",
        "localhost",
        "127.0.0.1",
    ] {
        assert!(verifies(&second, first.ca_der(), name), "{name}");
    }

    // The same names again: nothing to do. Fewer names (a subset): nothing to do either.
    assert_eq!(identity(tmp.path(), &names).server_issued, None);
    assert_eq!(
        identity(tmp.path(), &SubjectNames::default()).server_issued,
        None
    );
    assert_eq!(read(&second.paths.ca_cert), ca_bytes);
}

#[test]
fn a_server_cert_near_expiry_is_reissued_and_the_ca_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let names = SubjectNames::default();
    let first = identity(tmp.path(), &names);
    let ca_bytes = read(&first.paths.ca_cert);
    let expiry = first.server_info().unwrap().not_after;

    let just_before = expiry - jiff::SignedDuration::from_hours(24 * 31);
    let later = tls::load_or_create_at(tmp.path(), &names, HOST, just_before).unwrap();
    assert_eq!(later.server_issued, None);

    let within = expiry - jiff::SignedDuration::from_hours(24 * 29);
    let renewed = tls::load_or_create_at(tmp.path(), &names, HOST, within).unwrap();
    let reason = renewed.server_issued.clone().unwrap();
    assert!(reason.contains("expires"), "{reason}");
    assert!(renewed.server_info().unwrap().not_after > expiry);
    assert_eq!(read(&renewed.paths.ca_cert), ca_bytes);
    assert_eq!(renewed.ca_fingerprint(), first.ca_fingerprint());
}

#[test]
fn damaged_server_files_are_reissued_but_a_missing_ca_key_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let names = SubjectNames::default();
    let first = identity(tmp.path(), &names);
    let p = first.paths.clone();

    std::fs::write(&p.server_key, "not a key").unwrap();
    let again = identity(tmp.path(), &names);
    assert!(again.server_issued.is_some());
    assert_eq!(again.ca_fingerprint(), first.ca_fingerprint());

    // A key someone made world-readable goes back to 0600.
    std::fs::set_permissions(&p.ca_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    identity(tmp.path(), &names);
    assert_eq!(mode(&p.ca_key), 0o600);

    let ca_bytes = read(&p.ca_cert);
    std::fs::remove_file(&p.ca_key).unwrap();
    let err = tls::load_or_create_at(tmp.path(), &names, HOST, t0()).unwrap_err();
    assert!(matches!(err, TlsError::CaKeyMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&p.ca_key.display().to_string()), "{msg}");
    assert_eq!(read(&p.ca_cert), ca_bytes, "the CA is not replaced");
}

#[test]
fn concurrent_first_starts_agree_on_one_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let fingerprints: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| identity(&dir, &SubjectNames::default()).ca_fingerprint()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let on_disk = tls::fingerprint_sha256(
        &CertificateDer::from_pem_file(tmp.path().join("tls/ca.pem")).unwrap(),
    );
    assert!(
        fingerprints.iter().all(|f| *f == on_disk),
        "{fingerprints:?}"
    );
}

#[test]
fn refuses_to_write_into_another_users_data_dir() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to hand a directory to another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let err = tls::load_or_create_at(&data, &SubjectNames::default(), HOST, t0()).unwrap_err();
    assert!(matches!(err, TlsError::WrongOwner { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&data.display().to_string()),
        "{err}"
    );
    assert!(!data.join("tls").exists());
}

#[test]
fn names_are_normalised_and_checked() {
    let names = SubjectNames {
        dns: vec![
            "Box.Example.".into(),
            "10.0.0.7".into(),
            "box.example".into(),
        ],
        ips: vec!["::1".parse().unwrap()],
    }
    .with_defaults(Some("Venue-Box\n"))
    .unwrap();
    assert_eq!(
        names.dns,
        ["localhost", "venue-box", "venue-box.local", "box.example"]
    );
    let ips: Vec<IpAddr> = ["10.0.0.7", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(names.ips, ips);

    let bad = SubjectNames {
        dns: vec!["bad name".into()],
        ips: vec![],
    };
    let err = bad.with_defaults(None).unwrap_err();
    assert!(err.to_string().contains("\"bad name\""), "{err}");
    // An unusable hostname is left out rather than failing the start.
    let names = SubjectNames::default()
        .with_defaults(Some("(none)"))
        .unwrap();
    assert_eq!(names.dns, ["localhost"]);
}

#[test]
fn fingerprint_format() {
    let fp = tls::fingerprint_sha256(b"abc");
    assert_eq!(
        fp,
        "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
    );
}

#[tokio::test]
async fn https_round_trip_trusting_only_the_box_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity(tmp.path(), &SubjectNames::default());
    let server = serve(tls::server_config(&id).unwrap(), app()).await;
    let trusting = client(roots(&[id.ca_der()]));

    for name in ["localhost", "127.0.0.1", "::1", "venue-box"] {
        let (status, body) = https_get(server.addr, trusting.clone(), name, "/healthz")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((status, body.as_str()), (200, "ok"), "{name}");
    }

    // Older clients: TLS 1.2 works too.
    let tls12 = client_with(roots(&[id.ca_der()]), &[&rustls::version::TLS12]);
    let (status, _) = https_get(server.addr, tls12, "localhost", "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);

    // No trusted roots: the handshake fails on the unknown issuer.
    let err = https_get(
        server.addr,
        client(RootCertStore::empty()),
        "localhost",
        "/",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
    // A name the certificate does not carry is refused too.
    let err = https_get(server.addr, trusting.clone(), "elsewhere.example", "/")
        .await
        .unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{err:?}"
    );
    // Plain HTTP on the TLS port, and a client that goes quiet: neither stops the server.
    {
        use tokio::io::AsyncWriteExt;
        let mut plain = TcpStream::connect(server.addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let _silent = TcpStream::connect(server.addr).await.unwrap();
        let (status, _) = https_get(server.addr, trusting.clone(), "localhost", "/healthz")
            .await
            .unwrap();
        assert_eq!(status, 200);
    }

    server.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity(tmp.path(), &SubjectNames::default());
    let (entered_tx, mut entered) = mpsc::channel::<()>(1);
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let app = app().route(
        "/slow",
        get(move || {
            let (entered_tx, gate) = (entered_tx.clone(), gate.clone());
            async move {
                let _ = entered_tx.send(()).await;
                gate.notified().await;
                "done"
            }
        }),
    );
    let server = serve(tls::server_config(&id).unwrap(), app).await;
    let trusting = client(roots(&[id.ca_der()]));
    let addr = server.addr;
    let in_flight = tokio::spawn(https_get(addr, trusting, "localhost", "/slow"));
    tokio::time::timeout(Duration::from_secs(5), entered.recv())
        .await
        .unwrap()
        .unwrap();

    let stopped_at = Instant::now();
    server.stop.send(()).unwrap();
    // The listener closes: new connections are refused while the request is still running.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after shutdown"
        );
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            // Queued in the backlog as the listener closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("unexpected connect error {e}"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(!in_flight.is_finished());

    release.notify_one();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "done"));
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Drained as soon as the request finished, not at the 10 s drain limit.
    assert!(stopped_at.elapsed() < Duration::from_secs(5));
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn shutdown_drops_connections_still_busy_after_the_drain_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity(tmp.path(), &SubjectNames::default());
    let (entered_tx, mut entered) = mpsc::channel::<()>(1);
    let app = app().route(
        "/stuck",
        get(move || {
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(()).await;
                std::future::pending::<&str>().await
            }
        }),
    );
    let server = serve(tls::server_config(&id).unwrap(), app).await;
    let trusting = client(roots(&[id.ca_der()]));
    let stuck = tokio::spawn(https_get(server.addr, trusting, "localhost", "/stuck"));
    entered.recv().await.unwrap();

    let stopped_at = Instant::now();
    server.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let took = stopped_at.elapsed();
    assert!(
        took >= tls::DRAIN_TIMEOUT - Duration::from_millis(100) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // The stuck request's connection was closed under it.
    assert!(stuck.await.unwrap().is_err());
}

/// An operator's CA and a server certificate for `localhost` signed by it.
fn operator_pair() -> (CertificateDer<'static>, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Operator Test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let chain = format!("{}{}", cert.pem(), ca_cert.pem());
    (ca_cert.der().clone(), chain, key.serialize_pem())
}

#[tokio::test]
async fn an_operator_certificate_replaces_the_generated_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut id = identity(tmp.path(), &SubjectNames::default());
    let box_ca = id.ca_der().clone();
    let (operator_ca, chain, key) = operator_pair();
    let (cert_file, key_file) = (tmp.path().join("op.pem"), tmp.path().join("op.key"));
    std::fs::write(&cert_file, &chain).unwrap();
    std::fs::write(&key_file, &key).unwrap();

    let op = tls::load_operator(&cert_file, &key_file).unwrap();
    assert_eq!(op.info().unwrap().names.dns, ["localhost"]);
    id.replace_server_cert(op);
    assert_eq!(id.server_cert_pem, chain);
    assert_eq!(id.server_info().unwrap().names.dns, ["localhost"]);
    assert_eq!(id.ca_der(), &box_ca, "the box CA stays for agents");

    let server = serve(tls::server_config(&id).unwrap(), app()).await;
    let (status, _) = https_get(
        server.addr,
        client(roots(&[&operator_ca])),
        "localhost",
        "/healthz",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let err = https_get(server.addr, client(roots(&[&box_ca])), "localhost", "/")
        .await
        .unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[test]
fn operator_certificate_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, chain, key) = operator_pair();
    let (_, _, other_key) = operator_pair();
    let cert_file = tmp.path().join("op.pem");
    let key_file = tmp.path().join("op.key");
    let wrong_key = tmp.path().join("wrong.key");
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&cert_file, &chain).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    std::fs::write(&wrong_key, &other_key).unwrap();
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let shown = |p: &Path| p.display().to_string();

    let err = tls::load_operator(&cert_file, &wrong_key).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&shown(&wrong_key)) && msg.contains(&shown(&cert_file)));
    assert!(msg.contains("does not match"), "{msg}");

    let msg = tls::load_operator(&garbage, &key_file)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&shown(&garbage)), "{msg}");
    assert!(msg.contains("no certificate"), "{msg}");

    let msg = tls::load_operator(&cert_file, &garbage)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&shown(&garbage)), "{msg}");
    assert!(msg.contains("no private key"), "{msg}");

    // A certificate given as the key, and a file that is not there.
    let msg = tls::load_operator(&cert_file, &cert_file)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no private key"), "{msg}");
    let missing = tmp.path().join("missing.pem");
    let msg = tls::load_operator(&missing, &key_file)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&shown(&missing)) && msg.contains("cannot read"),
        "{msg}"
    );

    let binary = tmp.path().join("binary.pem");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let msg = tls::load_operator(&binary, &key_file)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&shown(&binary)) && msg.contains("not a PEM"),
        "{msg}"
    );
}

#[test]
fn tls_show_prints_the_pinned_fingerprint_without_a_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let out = venued(tmp.path(), &["tls", "show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("created"), "{}", stderr(&out));
    let text = stdout(&out);

    let ca_pem = tmp.path().join("tls/ca.pem");
    let der = CertificateDer::from_pem_file(&ca_pem).unwrap();
    let fingerprint = tls::fingerprint_sha256(&der);
    assert!(
        text.contains(&format!("CA fingerprint (SHA-256): {fingerprint}")),
        "{text}"
    );
    assert!(text.contains(&ca_pem.display().to_string()), "{text}");
    assert!(
        text.contains(&tmp.path().join("tls/server.pem").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains("localhost, ") && text.contains("127.0.0.1, ::1"),
        "{text}"
    );
    assert!(text.contains("expires:"), "{text}");

    // Second run: the same CA, nothing created.
    let again = venued(tmp.path(), &["tls", "show"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stderr(&again).contains("created"), "{}", stderr(&again));
    assert!(stdout(&again).contains(&fingerprint));
}

/// Plain-HTTP GET; (status, headers, body).
async fn http_get(port: u16, path: &str) -> (u16, hyper::HeaderMap, String) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn the_daemon_serves_https_with_its_own_ca_and_offers_the_ca_for_download() {
    let dir = tempfile::tempdir().unwrap();
    let (http, https) = (free_port(), free_port());
    let mut child = std::process::Command::new(BIN)
        .arg("serve")
        .env("VENUED_DATA_DIR", dir.path())
        .env("VENUED_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("VENUED_HTTPS_LISTEN", format!("127.0.0.1:{https}"))
        .env("VENUED_MQTT_LISTEN", "127.0.0.1:0")
        .env("VENUED_MQTTS_LISTEN", "127.0.0.1:0")
        .env("VENUED_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", http)).await.is_err() {
            assert!(Instant::now() < deadline, "venued did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The CA is public: fetched over plain HTTP before anything trusts the box.
        let (status, headers, pem) = http_get(http, "/ca.pem").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/x-pem-file");
        let ca = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, _, page) = http_get(http, "/ca").await;
        let fingerprint = tls::fingerprint_sha256(&ca);
        assert!(
            page.contains(&fingerprint),
            "the trust page shows the fingerprint"
        );
        assert!(!page.contains("<script"), "no script on the trust page");

        let addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
        let (status, body) = https_get(addr, client(roots(&[&ca])), "localhost", "/healthz")
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, _) = https_get(addr, client(roots(&[&ca])), "127.0.0.1", "/api/v1/stations")
            .await
            .unwrap();
        assert_eq!(status, 401, "HTTPS serves the authenticated API");
        let untrusted = https_get(
            addr,
            client(RootCertStore::empty()),
            "localhost",
            "/healthz",
        )
        .await;
        assert!(untrusted.is_err(), "without the CA the handshake must fail");

        // `venued tls show` on the box prints the same fingerprint.
        let shown = venued(dir.path(), &["tls", "show"]);
        assert!(stdout(&shown).contains(&fingerprint), "{}", stdout(&shown));
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn plain_http_redirects_to_https_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (http, https) = (free_port(), free_port());
    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        format!("[http]\nlisten = [\"127.0.0.1:{http}\"]\n[tls]\nhttps-listen = [\"127.0.0.1:{https}\"]\nredirect-http = true\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("VENUED_DATA_DIR", dir.path().join("data"))
        .env("VENUED_MQTT_LISTEN", "127.0.0.1:0")
        .env("VENUED_MQTTS_LISTEN", "127.0.0.1:0")
        .env("VENUED_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", http)).await.is_err() {
            assert!(Instant::now() < deadline, "venued did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, headers, _) = http_get(http, "/api/v1/stations?x=1").await;
        assert_eq!(status, 308);
        assert_eq!(
            headers["location"],
            format!("https://127.0.0.1:{https}/api/v1/stations?x=1")
        );
        let (status, _, body) = http_get(http, "/healthz").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ok\n"),
            "probes stay on plain HTTP"
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}
