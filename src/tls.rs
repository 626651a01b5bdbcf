//! Box identity and HTTPS.
//!
//! At first start the box makes its own certificate authority and a server certificate
//! signed by it, in `<data dir>/tls/`. Staff devices trust the CA once (docs/tls.md);
//! agents pin its SHA-256 fingerprint at enrollment. The CA never changes after that:
//! the server certificate is re-issued from it when the names it must cover change or
//! when it nears expiry. An operator can supply a certificate and key of their own
//! ([`load_operator`]), which replaces the generated server certificate for HTTPS.
//!
//! Crypto is rustls with the *ring* provider only, passed explicitly: nothing here
//! relies on a process-wide default provider, and aws-lc is not in the build.

use crate::clock::{Clock, SystemClock, TrustMode};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// The CA's validity: about ten years. Agents pin it, so it should outlive the box.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// The server certificate's validity: just under the 825 days Apple platforms accept for
/// certificates from a user-installed CA (browsers set no shorter limit for such CAs).
pub const SERVER_VALIDITY_DAYS: i64 = 820;
/// A server certificate that expires within this many days is re-issued at load.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// A TLS handshake that takes longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight connections get to finish after shutdown is signalled.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send a request's headers within this time (slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The earliest clock reading at which the box will mint certificates: a board without a
/// real-time clock that boots in 1970 would otherwise make certificates nobody accepts.
const CLOCK_FLOOR: Timestamp = Timestamp::constant(1_735_689_600, 0); // 2025-01-01T00:00:00Z

const DAY_SECS: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{}: the private key does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error(
        "{}: missing, but the CA certificate {} exists; restore the key from a backup, \
         or remove {} to create a new CA (every agent and device must then trust it anew)",
        key.display(),
        cert.display(),
        cert.display()
    )]
    CaKeyMissing { cert: PathBuf, key: PathBuf },
    #[error("invalid name {name:?} for the server certificate: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot generate the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    #[error(
        "the system clock reads {now}, before {CLOCK_FLOOR}: set the time before the box \
         creates its certificates"
    )]
    ClockUnset { now: Timestamp },
    #[error(
        "{}: owned by uid {owner} but this runs as uid {uid}; files written now would not \
         be usable by the service: run as the owner (e.g. `sudo -u venued venued tls show`)",
        dir.display()
    )]
    WrongOwner { dir: PathBuf, owner: u32, uid: u32 },
}

/// The names a server certificate must be valid for. [`load_or_create`] always adds
/// `localhost`, `127.0.0.1`, `::1` and the box's hostname (from `/etc/hostname`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl SubjectNames {
    /// The requested names plus the defaults, lowercased, deduplicated and checked. A DNS
    /// entry that is an IP address is moved to `ips`. `hostname` is the box's name.
    pub fn with_defaults(&self, hostname: Option<&str>) -> Result<SubjectNames, TlsError> {
        let mut out = SubjectNames::default();
        let add_dns = |out: &mut SubjectNames, name: &str| -> Result<(), TlsError> {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if let Ok(ip) = name.parse::<IpAddr>() {
                if !out.ips.contains(&ip) {
                    out.ips.push(ip);
                }
                return Ok(());
            }
            check_dns_name(&name)?;
            if !out.dns.contains(&name) {
                out.dns.push(name);
            }
            Ok(())
        };
        add_dns(&mut out, "localhost")?;
        if let Some(host) = hostname.and_then(usable_hostname) {
            let local = (!host.contains('.')).then(|| format!("{host}.local"));
            add_dns(&mut out, &host)?;
            if let Some(local) = local {
                add_dns(&mut out, &local)?;
            }
        }
        for name in &self.dns {
            add_dns(&mut out, name)?;
        }
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .iter()
        .chain(&self.ips)
        {
            if !out.ips.contains(ip) {
                out.ips.push(*ip);
            }
        }
        Ok(out)
    }

    /// Whether a certificate for `have` is valid for every name here.
    fn covered_by(&self, have: &SubjectNames) -> bool {
        self.dns
            .iter()
            .all(|n| have.dns.iter().any(|h| h.eq_ignore_ascii_case(n)))
            && self.ips.iter().all(|ip| have.ips.contains(ip))
    }
}

/// The box's hostname from `/etc/hostname`, if readable and usable as a DNS name.
pub fn box_hostname() -> Option<String> {
    fs::read_to_string("/etc/hostname")
        .ok()
        .and_then(|s| usable_hostname(&s))
}

fn usable_hostname(raw: &str) -> Option<String> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    (name != "localhost" && check_dns_name(&name).is_ok() && name.parse::<IpAddr>().is_err())
        .then_some(name)
}

fn check_dns_name(name: &str) -> Result<(), TlsError> {
    let bad = |reason| {
        Err(TlsError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 253 {
        return bad("a DNS name has 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

/// Where the box identity lives: `<data dir>/tls/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsPaths {
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
        }
    }
}

/// Where the HTTPS certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCertSource {
    /// `server.pem`, issued by the box CA.
    Generated,
    /// Supplied by the operator (`[tls] cert-file`, `key-file`).
    Operator {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// The box CA and the certificate HTTPS serves. Private keys stay inside.
pub struct BoxIdentity {
    /// The CA certificate (what devices trust and agents pin), PEM.
    pub ca_cert_pem: String,
    /// The HTTPS server certificate (chain, for an operator's), PEM.
    pub server_cert_pem: String,
    pub paths: TlsPaths,
    pub source: ServerCertSource,
    /// This load created the CA (first start).
    pub ca_created: bool,
    /// This load issued a new server certificate, and why.
    pub server_issued: Option<String>,
    ca_der: CertificateDer<'static>,
    /// What the server sends: its certificate first, then the rest of the chain.
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl fmt::Debug for BoxIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxIdentity")
            .field("ca_fingerprint", &self.ca_fingerprint())
            .field("paths", &self.paths)
            .field("source", &self.source)
            .field("ca_created", &self.ca_created)
            .field("server_issued", &self.server_issued)
            .field("keys", &"[elided]")
            .finish()
    }
}

/// What a certificate says about itself, for `venued tls show` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub names: SubjectNames,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub is_ca: bool,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<CertInfo, String> {
        let cert = parse_x509(der)?;
        let names = cert_names(&cert)?;
        let time = |t: x509_parser::time::ASN1Time| {
            Timestamp::from_second(t.timestamp()).map_err(|e| e.to_string())
        };
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_before: time(cert.validity().not_before)?,
            not_after: time(cert.validity().not_after)?,
            is_ca: cert.is_ca(),
        })
    }

    /// The names as one line: DNS names, then addresses.
    pub fn names_line(&self) -> String {
        self.names
            .dns
            .iter()
            .cloned()
            .chain(self.names.ips.iter().map(IpAddr::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl BoxIdentity {
    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The SHA-256 fingerprint of the CA certificate: what agents pin.
    pub fn ca_fingerprint(&self) -> String {
        fingerprint_sha256(&self.ca_der)
    }

    /// The certificates HTTPS sends, server certificate first.
    pub fn server_chain(&self) -> &[CertificateDer<'static>] {
        &self.server_chain
    }

    pub fn ca_info(&self) -> Result<CertInfo, TlsError> {
        CertInfo::parse(&self.ca_der).map_err(|reason| TlsError::Invalid {
            path: self.paths.ca_cert.clone(),
            reason,
        })
    }

    pub fn server_info(&self) -> Result<CertInfo, TlsError> {
        let path = match &self.source {
            ServerCertSource::Generated => &self.paths.server_cert,
            ServerCertSource::Operator { cert_file, .. } => cert_file,
        };
        let leaf = self.server_chain.first().ok_or_else(|| TlsError::Invalid {
            path: path.clone(),
            reason: "no certificate".into(),
        })?;
        CertInfo::parse(leaf).map_err(|reason| TlsError::Invalid {
            path: path.clone(),
            reason,
        })
    }

    /// Serve the operator's certificate instead of the generated one. The box CA stays
    /// (agents and MQTT keep using it).
    pub fn replace_server_cert(&mut self, operator: OperatorCert) {
        self.server_cert_pem = operator.chain_pem;
        self.server_chain = operator.chain;
        self.server_key = operator.key;
        self.source = ServerCertSource::Operator {
            cert_file: operator.cert_file,
            key_file: operator.key_file,
        };
        self.server_issued = None;
    }
}

/// What agents pin: shared with them through the protocol module.
pub use crate::protocol::enrollment::fingerprint_sha256;

/// Load the box identity from `<data_dir>/tls/`, creating what is missing. See
/// [`load_or_create_at`]; this reads the system clock.
pub fn load_or_create(data_dir: &Path, names: &SubjectNames) -> Result<BoxIdentity, TlsError> {
    let now = SystemClock::new(TrustMode::Always).wall();
    load_or_create_at(data_dir, names, box_hostname().as_deref(), now)
}

/// Load the box identity, or create it at first start.
///
/// - No `ca.pem`: a new CA (ECDSA P-256, ten years) and a server certificate.
/// - `ca.pem` without `ca.key`: an error; the CA is never replaced behind the agents'
///   back.
/// - The server certificate is re-issued from the same CA when it is missing, unreadable,
///   not from this CA, does not cover `names` (plus the defaults, see
///   [`SubjectNames::with_defaults`]), or expires within [`RENEW_BEFORE_DAYS`] of `now`.
///
/// Files are written atomically; keys are mode 0600 and the directory 0700. Concurrent
/// callers (the daemon and `venued tls show`) are serialised by a lock on the directory.
pub fn load_or_create_at(
    data_dir: &Path,
    names: &SubjectNames,
    hostname: Option<&str>,
    now: Timestamp,
) -> Result<BoxIdentity, TlsError> {
    let names = names.with_defaults(hostname)?;
    let paths = TlsPaths::new(data_dir);
    make_private_dir(&paths.dir)?;
    let _lock = lock_dir(&paths.dir)?;

    let (ca_cert_pem, ca_der, ca_key, ca_created) = load_or_create_ca(&paths, now)?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).map_err(|_| TlsError::Invalid {
        path: paths.ca_cert.clone(),
        reason: "cannot use this certificate as an issuer".into(),
    })?;

    let reason = if ca_created {
        Some("new CA".to_owned())
    } else {
        server_cert_problem(&paths, &ca_der, &names, now)
    };
    let (server_cert_pem, server_der, server_key, issued) = match reason {
        None => {
            let (pem, der) = read_cert(&paths.server_cert)?;
            let key = read_key(&paths.server_key)?;
            (pem, der, key, None)
        }
        Some(reason) => {
            check_clock(now)?;
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
                TlsError::Generate {
                    what: "server key",
                    source,
                }
            })?;
            let cert = server_params(&names, now)?
                .signed_by(&key, &issuer)
                .map_err(|source| TlsError::Generate {
                    what: "server certificate",
                    source,
                })?;
            // Key first: a crash between the two renames leaves a mismatched pair, which
            // the next load re-issues.
            let key_pem = key.serialize_pem();
            write_atomic(&paths.server_key, key_pem.as_bytes(), 0o600)?;
            let pem = cert.pem();
            write_atomic(&paths.server_cert, pem.as_bytes(), 0o644)?;
            tracing::info!(
                path = %paths.server_cert.display(),
                %reason,
                "issued a server certificate from the box CA"
            );
            let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
            (pem, cert.der().clone(), key, Some(reason))
        }
    };
    restrict_key(&paths.server_key)?;

    Ok(BoxIdentity {
        ca_cert_pem,
        server_cert_pem,
        source: ServerCertSource::Generated,
        ca_created,
        server_issued: issued,
        // The CA goes along so a client can check the pinned fingerprint in the handshake.
        server_chain: vec![server_der, ca_der.clone()],
        ca_der,
        server_key,
        paths,
    })
}

type LoadedCa = (String, CertificateDer<'static>, KeyPair, bool);

fn load_or_create_ca(paths: &TlsPaths, now: Timestamp) -> Result<LoadedCa, TlsError> {
    if exists(&paths.ca_cert)? {
        if !exists(&paths.ca_key)? {
            return Err(TlsError::CaKeyMissing {
                cert: paths.ca_cert.clone(),
                key: paths.ca_key.clone(),
            });
        }
        let (pem, der) = read_cert(&paths.ca_cert)?;
        let key_pem = read_text(&paths.ca_key)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Invalid {
            path: paths.ca_key.clone(),
            reason: format!("not a usable PEM private key: {e}"),
        })?;
        let cert = parse_x509(&der).map_err(|reason| TlsError::Invalid {
            path: paths.ca_cert.clone(),
            reason,
        })?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(TlsError::KeyMismatch {
                key: paths.ca_key.clone(),
                cert: paths.ca_cert.clone(),
            });
        }
        if !cert.is_ca() {
            return Err(TlsError::Invalid {
                path: paths.ca_cert.clone(),
                reason: "not a CA certificate (basic constraints CA:FALSE or absent)".into(),
            });
        }
        restrict_key(&paths.ca_key)?;
        return Ok((pem, der, key, false));
    }

    check_clock(now)?;
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| TlsError::Generate {
            what: "CA key",
            source,
        })?;
    let cert = ca_params(now)?
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            what: "CA certificate",
            source,
        })?;
    // Key first: ca.pem is the marker that the CA exists.
    write_atomic(&paths.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
    let pem = cert.pem();
    write_atomic(&paths.ca_cert, pem.as_bytes(), 0o644)?;
    let der = cert.der().clone();
    tracing::info!(
        path = %paths.ca_cert.display(),
        fingerprint = %fingerprint_sha256(&der),
        "created the box CA"
    );
    Ok((pem, der, key, true))
}

/// Why the stored server certificate cannot be used as it is, if it cannot.
fn server_cert_problem(
    paths: &TlsPaths,
    ca_der: &[u8],
    names: &SubjectNames,
    now: Timestamp,
) -> Option<String> {
    if !paths.server_cert.exists() || !paths.server_key.exists() {
        return Some("no server certificate".into());
    }
    let (_, der) = match read_cert(&paths.server_cert) {
        Ok(c) => c,
        Err(e) => return Some(format!("unusable server certificate ({e})")),
    };
    let key = match read_text(&paths.server_key).and_then(|pem| {
        KeyPair::from_pem(&pem).map_err(|e| TlsError::Invalid {
            path: paths.server_key.clone(),
            reason: e.to_string(),
        })
    }) {
        Ok(k) => k,
        Err(e) => return Some(format!("unusable server key ({e})")),
    };
    let (Ok(cert), Ok(ca)) = (parse_x509(&der), parse_x509(ca_der)) else {
        return Some("unparsable server certificate".into());
    };
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Some("server key does not match server.pem".into());
    }
    if cert.issuer().as_raw() != ca.subject().as_raw()
        || cert.verify_signature(Some(ca.public_key())).is_err()
    {
        return Some("server certificate is not from this CA".into());
    }
    match cert_names(&cert) {
        Ok(have) if names.covered_by(&have) => {}
        _ => return Some("the names to cover changed".into()),
    }
    let not_after = cert.validity().not_after.timestamp();
    if not_after - now.as_second() < RENEW_BEFORE_DAYS * DAY_SECS {
        return Some(format!(
            "expires within {RENEW_BEFORE_DAYS} days ({})",
            Timestamp::from_second(not_after).unwrap_or(Timestamp::MIN)
        ));
    }
    None
}

fn check_clock(now: Timestamp) -> Result<(), TlsError> {
    if now < CLOCK_FLOOR {
        return Err(TlsError::ClockUnset { now });
    }
    Ok(())
}

/// Validity from yesterday, 00:00 UTC (clients whose clock is a little behind), for
/// `days` days.
fn validity(params: &mut CertificateParams, now: Timestamp, days: i64) -> Result<(), TlsError> {
    let clock_err = |_| TlsError::ClockUnset { now };
    let start = now
        .to_zoned(TimeZone::UTC)
        .date()
        .yesterday()
        .map_err(clock_err)?;
    let end = start
        .checked_add(jiff::Span::new().days(days))
        .map_err(clock_err)?;
    let ymd = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(d.year().into(), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(start);
    params.not_after = ymd(end);
    Ok(())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and 16 bytes long
    SerialNumber::from_slice(&bytes)
}

fn ca_params(now: Timestamp) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let id: [u8; 4] = rand::random();
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("venued CA {id}"));
    dn.push(DnType::OrganizationName, "venued");
    params.distinguished_name = dn;
    // Path length 0: it signs server certificates, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    validity(&mut params, now, CA_VALIDITY_DAYS)?;
    Ok(params)
}

fn server_params(names: &SubjectNames, now: Timestamp) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let cn = names
        .dns
        .iter()
        .find(|n| *n != "localhost")
        .map_or("venued", String::as_str);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "venued");
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .dns
        .iter()
        .map(|n| {
            n.as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| TlsError::InvalidName {
                    name: n.clone(),
                    reason: "not an ASCII DNS name",
                })
        })
        .chain(names.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, now, SERVER_VALIDITY_DAYS)?;
    Ok(params)
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing data after the certificate".into()),
        Err(e) => Err(format!("not an X.509 certificate: {e}")),
    }
}

fn cert_names(cert: &X509Certificate<'_>) -> Result<SubjectNames, String> {
    let mut names = SubjectNames::default();
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
    else {
        return Ok(names);
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(n) => names.dns.push(n.to_ascii_lowercase()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => names
                    .ips
                    .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                16 => names
                    .ips
                    .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                _ => {}
            },
            _ => {}
        }
    }
    Ok(names)
}

// ---- files ----------------------------------------------------------------------------

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Io {
        path,
        action,
        source,
    }
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(io_err(path, "check"))
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    let bytes = fs::read(path).map_err(io_err(path, "read"))?;
    String::from_utf8(bytes).map_err(|_| TlsError::Invalid {
        path: path.to_path_buf(),
        reason: "not a PEM file (not text)".into(),
    })
}

/// The first certificate of a PEM file: its text and DER.
fn read_cert(path: &Path) -> Result<(String, CertificateDer<'static>), TlsError> {
    let (pem, mut chain) = read_chain(path)?;
    Ok((pem, chain.swap_remove(0)))
}

/// Every certificate of a PEM file, in order; at least one.
fn read_chain(path: &Path) -> Result<(String, Vec<CertificateDer<'static>>), TlsError> {
    let pem = read_text(path)?;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not a valid PEM file: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    for der in &chain {
        parse_x509(der).map_err(|reason| TlsError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
    }
    Ok((pem, chain))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(io_err(path, "read"))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in it (expected PEM: \
                 -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY)"
                .into(),
            e => format!("not a valid PEM private key: {e}"),
        },
    })
}

/// Create `dir` (and its parents) and make it 0700.
fn make_private_dir(dir: &Path) -> Result<(), TlsError> {
    if !exists(dir)?
        && let Some(parent) = dir.parent()
        && exists(parent)?
    {
        check_owner(parent)?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir, "create the directory"))?;
    let meta = fs::metadata(dir).map_err(io_err(dir, "inspect"))?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        check_owner(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir, "set permissions on"))?;
    }
    Ok(())
}

/// A key someone loosened goes back to 0600.
fn restrict_key(path: &Path) -> Result<(), TlsError> {
    let meta = fs::metadata(path).map_err(io_err(path, "inspect"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        check_owner(path.parent().unwrap_or(Path::new(".")))?;
        tracing::warn!(path = %path.display(), "private key was readable by others: now 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_err(path, "set permissions on"))?;
    }
    Ok(())
}

/// Files here are written by the directory's owner only, so that `sudo venued tls show`
/// cannot leave root-owned files the service user cannot read.
fn check_owner(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let owner = fs::metadata(dir).map_err(io_err(dir, "inspect"))?.uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if owner != uid {
        return Err(TlsError::WrongOwner {
            dir: dir.to_path_buf(),
            owner,
            uid,
        });
    }
    Ok(())
}

/// An exclusive lock on the directory itself (no lock file to own), released when the
/// returned handle is dropped.
fn lock_dir(dir: &Path) -> Result<File, TlsError> {
    let file = File::open(dir).map_err(io_err(dir, "open"))?;
    loop {
        // SAFETY: flock on a descriptor we own for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(io_err(dir, "lock")(e));
        }
    }
}

/// Write `contents` to `path` atomically: a temporary file in the same directory,
/// fsynced, renamed over `path`, then the directory fsynced.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    check_owner(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path, "write"))
}

// ---- operator certificates --------------------------------------------------------------

/// A certificate chain and key supplied by the operator, checked to belong together.
pub struct OperatorCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub chain_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for OperatorCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("certificates", &self.chain.len())
            .field("key", &"[elided]")
            .finish()
    }
}

impl OperatorCert {
    pub fn info(&self) -> Result<CertInfo, TlsError> {
        let leaf = self.chain.first().map(|c| c.as_ref()).unwrap_or_default();
        CertInfo::parse(leaf).map_err(|reason| TlsError::Invalid {
            path: self.cert_file.clone(),
            reason,
        })
    }
}

/// Load an operator-supplied certificate chain (PEM, server certificate first) and its
/// private key (PEM: PKCS#8, SEC1 or PKCS#1). Errors name the file and the reason:
/// unreadable, not PEM, no certificate or key in it, or a key that does not match.
pub fn load_operator(cert_file: &Path, key_file: &Path) -> Result<OperatorCert, TlsError> {
    let (chain_pem, chain) = read_chain(cert_file)?;
    let key = read_key(key_file)?;
    let provider = ring_provider();
    match CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                key: key_file.to_path_buf(),
                cert: cert_file.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(TlsError::Invalid {
                path: key_file.to_path_buf(),
                reason: format!("unusable private key: {e}"),
            });
        }
    }
    Ok(OperatorCert {
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
        chain_pem,
        chain,
        key,
    })
}

// ---- serving ----------------------------------------------------------------------------

fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A rustls server configuration for `identity`: the ring provider (explicitly, not the
/// process default), TLS 1.3 and 1.2, ALPN `http/1.1`.
pub fn server_config(identity: &BoxIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(
            identity.server_chain.clone(),
            identity.server_key.clone_key(),
        )
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `app` over HTTPS on `listener` until `shutdown` resolves.
///
/// Each connection is handshaken in its own task (at most [`HANDSHAKE_TIMEOUT`]; a
/// failure is logged at debug and affects nothing else), then served as HTTP/1.1. Handlers
/// can extract `ConnectInfo<SocketAddr>` for the peer address. On shutdown the listener
/// is closed at once (new connections are refused), idle keep-alive connections are
/// closed, and in-flight requests get [`DRAIN_TIMEOUT`] to finish before the rest are
/// dropped.
pub async fn serve_https(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection(
                        acceptor.clone(),
                        tcp,
                        peer,
                        app.clone(),
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "https accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    if open > 0 {
        tracing::debug!(open, "https: draining connections");
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "https: connections still open after {DRAIN_TIMEOUT:?}: closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                return;
            }
        },
        () = stopped(&mut stop) => return,
    };
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            // Finish the request in progress, if any, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "https connection ended with an error");
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender (serve_https gone) counts as stopped too.
    let _ = stop.wait_for(|s| *s).await;
}

// ---- `venued tls show` --------------------------------------------------------------------

/// The text `venued tls show` prints.
pub fn describe(identity: &BoxIdentity) -> Result<String, TlsError> {
    let ca = identity.ca_info()?;
    let server = identity.server_info()?;
    let server_path = match &identity.source {
        ServerCertSource::Generated => identity.paths.server_cert.clone(),
        ServerCertSource::Operator { cert_file, .. } => cert_file.clone(),
    };
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "CA fingerprint (SHA-256): {}",
        identity.ca_fingerprint()
    ));
    line(format!(
        "CA certificate:           {}",
        identity.paths.ca_cert.display()
    ));
    line(format!("  subject:                {}", ca.subject));
    line(format!("  expires:                {}", ca.not_after));
    line(format!(
        "Server certificate:       {}",
        server_path.display()
    ));
    line(format!("  names:                  {}", server.names_line()));
    line(format!("  expires:                {}", server.not_after));
    Ok(out)
}
