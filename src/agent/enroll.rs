//! `venued agent enroll`: a PC fetches its MQTT credentials and the box CA with the
//! single-use code staff gave it.
//!
//! Before the agent has the CA it trusts nothing, so the code carries the first 64 bits of
//! the CA's fingerprint: the TLS handshake is accepted only if the controller presents a
//! CA with that fingerprint and its certificate chains to it. The host name is not
//! checked: the box often has no DNS name and its certificate cannot list every LAN
//! address, and a CA private to this one box already says who it is.
//!
//! Without `--controller` the agent finds the box by mDNS (src/discovery.rs): the
//! advertisement whose CA prefix matches the code gives the address, and the same pinned
//! handshake decides whether to trust it.

use crate::protocol::enrollment::{
    EnrollRequest, EnrollResponse, EnrollmentCode, fingerprint_has_prefix, fingerprint_sha256,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What `venued agent run` reads: written 0600 beside `ca.pem`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCredentials {
    pub station: String,
    pub controller_host: String,
    pub mqtt_tls_ports: Vec<u16>,
    pub username: String,
    pub password: String,
    pub ca_fingerprint: String,
}

/// Where the agent keeps its files unless told otherwise.
#[cfg(unix)]
pub fn default_dir() -> PathBuf {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return PathBuf::from("/etc/venued-agent");
    }
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("venued-agent"),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".config/venued-agent"))
            .unwrap_or_else(|| PathBuf::from("venued-agent")),
    }
}

/// Where the agent keeps its files unless told otherwise: beside the service, readable
/// only by administrators.
#[cfg(windows)]
pub fn default_dir() -> PathBuf {
    std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("venued")
        .join("agent")
}

/// `--discover-timeout`: bare seconds (`5`) or a duration (`10s`, `1500ms`, `PT5S`).
pub fn parse_discover_timeout(text: &str) -> Result<std::time::Duration, String> {
    let parsed = match text.trim().parse::<u64>() {
        Ok(secs) => Ok(jiff::SignedDuration::from_secs(secs.min(3600) as i64)),
        Err(_) => text.trim().parse::<jiff::SignedDuration>(),
    };
    let d = parsed.map_err(|_| format!("{text:?} is not a duration like 5s or 1500ms"))?;
    let (lo, hi) = (
        jiff::SignedDuration::from_secs(1),
        jiff::SignedDuration::from_mins(2),
    );
    if d < lo || d > hi {
        return Err(format!("must be between 1s and 2m (got {text})"));
    }
    std::time::Duration::try_from(d).map_err(|e| e.to_string())
}

/// `https://host[:port]` -> (host, port); the port defaults to 8443.
fn parse_controller(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        format!("--controller {url:?}: expected https://<box address>[:port], e.g. https://192.168.1.10:8443")
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("--controller {url:?}: unclosed [ in an IPv6 address"))?;
        (host.to_owned(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("--controller {url:?}: {p:?} is not a port"))?,
        None => 8443,
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("--controller {url:?}: no host"));
    }
    Ok((host, port))
}

/// Enroll with the controller at `controller` (`https://host[:port]`), or, without one,
/// the controller mDNS finds within `discover_timeout` whose CA matches the code.
pub async fn enroll(
    controller: Option<&str>,
    code: &str,
    dir: &Path,
    discover_timeout: Duration,
) -> Result<AgentCredentials, String> {
    let code = EnrollmentCode::parse(code).map_err(|e| e.to_string())?;
    let targets = match controller {
        Some(url) => vec![parse_controller(url)?],
        None => discover(&code, discover_timeout).await?,
    };
    let mut config = pinned_client(&code.ca_prefix)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let (tcp, host, port) = connect(&targets).await?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            format!("TLS with the controller failed: {e} (is this the box that issued the code?)")
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let body = serde_json::to_vec(&EnrollRequest {
        code: code.to_string(),
    })
    .map_err(|e| e.to_string())?;
    let request = hyper::Request::post("/api/v1/enroll")
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the controller did not answer: {e}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(format!("enrollment refused ({status}): {detail}"));
    }
    let answer: EnrollResponse = serde_json::from_slice(&bytes)
        .map_err(|e| format!("unexpected answer from the controller: {e}"))?;
    // The CA handed over must be the one the handshake was pinned to.
    let ca_der = rustls_pki_types::CertificateDer::pem_slice_iter(answer.ca_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or("the controller sent no CA certificate")?;
    if !code.matches_ca(&fingerprint_sha256(&ca_der)) {
        return Err("the CA the controller sent does not match the code".into());
    }
    let creds = AgentCredentials {
        station: answer.station.to_string(),
        controller_host: host,
        mqtt_tls_ports: answer.mqtt_tls_ports,
        username: answer.username,
        password: answer.password,
        ca_fingerprint: answer.ca_fingerprint,
    };
    save(dir, &creds, &answer.ca_pem)?;
    Ok(creds)
}

use rustls_pki_types::pem::PemObject;

/// The addresses of the controller that issued `code`, found by mDNS. `venued agent
/// enroll` is run by a person at the PC, so progress goes to stderr.
async fn discover(code: &EnrollmentCode, timeout: Duration) -> Result<Vec<(String, u16)>, String> {
    eprintln!(
        "looking for the controller on this network (mDNS {}, up to {})...",
        crate::discovery::SERVICE_TYPE,
        crate::domain::time::exact(
            jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX)
        )
    );
    let found = crate::discovery::browse(&code.ca_prefix, timeout, &mut |line| {
        eprintln!("{line}");
    })
    .await?;
    let targets = found.targets();
    let shown: Vec<String> = targets.iter().map(ToString::to_string).collect();
    eprintln!("found controller {:?} at {}", found.name, shown.join(", "));
    Ok(targets
        .into_iter()
        .map(|a| (a.ip().to_string(), a.port()))
        .collect())
}

/// Dial each address in turn; the first that answers is used. One address typed by hand
/// gets 10 s; several found by mDNS get 3 s each, so a dead one does not stall the rest.
async fn connect(
    targets: &[(String, u16)],
) -> Result<(tokio::net::TcpStream, String, u16), String> {
    let wait = if targets.len() > 1 { 3 } else { 10 };
    let mut failures = Vec::new();
    for (host, port) in targets {
        let dial = tokio::net::TcpStream::connect((host.as_str(), *port));
        match tokio::time::timeout(Duration::from_secs(wait), dial).await {
            Ok(Ok(tcp)) => return Ok((tcp, host.clone(), *port)),
            Ok(Err(e)) => {
                failures.push(format!("cannot reach the controller at {host}:{port}: {e}"))
            }
            Err(_) => failures.push(format!("{host}:{port} did not answer within {wait} s")),
        }
    }
    if failures.is_empty() {
        return Err("no address to reach the controller at".into());
    }
    Err(failures.join("; "))
}

/// Write `agent.json` (0600) and `ca.pem` into a 0700 directory.
#[cfg(unix)]
fn save(dir: &Path, creds: &AgentCredentials, ca_pem: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
    let json = serde_json::to_vec_pretty(creds).map_err(|e| e.to_string())?;
    for (name, bytes) in [
        ("agent.json", json.as_slice()),
        ("ca.pem", ca_pem.as_bytes()),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::io::Write::write_all(&mut f, bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Windows: ProgramData is writable by administrators only once the installer has set
/// its ACL (issue 6 ships that with the service); the files are written plainly here.
#[cfg(windows)]
fn save(dir: &Path, creds: &AgentCredentials, ca_pem: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let json = serde_json::to_vec_pretty(creds).map_err(|e| e.to_string())?;
    for (name, bytes) in [
        ("agent.json", json.as_slice()),
        ("ca.pem", ca_pem.as_bytes()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A TLS client that trusts only a server presenting a CA whose SHA-256 fingerprint starts
/// with `ca_prefix` (hex; the code's 16 digits at enrollment, all 64 afterwards), and a
/// certificate that CA signed.
pub fn pinned_client(ca_prefix: &str) -> Result<rustls::ClientConfig, String> {
    let verifier = Arc::new(PinnedCa {
        prefix: ca_prefix.to_owned(),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
    });
    Ok(
        rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// Accepts a server whose chain holds the pinned CA and whose certificate that CA signed,
/// whatever name was dialled.
#[derive(Debug)]
struct PinnedCa {
    /// Hex digits the CA's fingerprint must start with.
    prefix: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedCa {
    fn pins(&self, cert: &[u8]) -> bool {
        fingerprint_has_prefix(&fingerprint_sha256(cert), &self.prefix)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.iter().find(|c| self.pins(c)).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        )?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        match webpki.verify_server_cert(end_entity, &[], server_name, ocsp, now) {
            Ok(v) => Ok(v),
            // Signed by the pinned CA but not for this address: see the module comment.
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            })) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_controller, parse_discover_timeout};
    use std::time::Duration;

    #[test]
    fn discover_timeouts() {
        assert_eq!(parse_discover_timeout("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_discover_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(
            parse_discover_timeout("1500ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_discover_timeout("PT2M"), Ok(Duration::from_secs(120)));
        for bad in ["0", "500ms", "3m", "99999999999", "-5s", "soon", ""] {
            assert!(parse_discover_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn controller_urls() {
        assert_eq!(
            parse_controller("https://192.168.1.10:8443"),
            Ok(("192.168.1.10".into(), 8443))
        );
        assert_eq!(
            parse_controller("https://box.lan/"),
            Ok(("box.lan".into(), 8443))
        );
        assert_eq!(
            parse_controller("https://[::1]:9443"),
            Ok(("::1".into(), 9443))
        );
        assert!(parse_controller("http://box.lan").is_err());
        assert!(parse_controller("https://box.lan:http").is_err());
        assert!(parse_controller("https://").is_err());
    }
}
