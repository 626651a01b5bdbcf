//! A small HTTP/1.1 client for device APIs: one request per connection (plugs close after
//! each answer anyway), a deadline on the whole exchange, a bounded answer, and TLS pinned
//! to a certificate's SHA-256 fingerprint (a router's self-signed certificate names no
//! host we could check).

use super::DeviceError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read from a device.
pub const MAX_ANSWER: usize = 1 << 20;

/// Where a request goes, parsed from `http://host[:port]` or `https://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// `http://host[:port]`, `https://host[:port]` (a trailing `/` is allowed), or a bare
    /// `host[:port]` meaning plain HTTP.
    pub fn parse(url: &str) -> Result<Origin, DeviceError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            (false, url)
        };
        let rest = rest.trim_end_matches('/');
        let bad = || DeviceError::Config(format!("{url:?} is not host[:port]"));
        if rest.is_empty() || rest.contains('/') {
            return Err(bad());
        }
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default,
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
                None => (rest.to_owned(), default),
            }
        };
        Ok(Origin { tls, host, port })
    }

    /// `host:port` as it goes in the Host header and in messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as Basic auth headers carry it.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An answer: status, headers, body (at most [`MAX_ANSWER`] bytes).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Send one request to `origin` and read the answer, all within `timeout`.
pub async fn send(
    origin: &Origin,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: Method,
    path_and_query: &str,
    headers: &[(hyper::header::HeaderName, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Answer, DeviceError> {
    let who = origin.authority();
    tokio::time::timeout(
        timeout,
        exchange(origin, tls, method, path_and_query, headers, body),
    )
    .await
    .map_err(|_| DeviceError::Timeout(who, timeout))?
}

async fn exchange(
    origin: &Origin,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: Method,
    path_and_query: &str,
    headers: &[(hyper::header::HeaderName, String)],
    body: Option<Vec<u8>>,
) -> Result<Answer, DeviceError> {
    let who = origin.authority();
    let unreachable = |e: &dyn std::fmt::Display| DeviceError::Unreachable(format!("{who}: {e}"));
    let tcp = tokio::net::TcpStream::connect((origin.host.as_str(), origin.port))
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, &who)
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| DeviceError::Config(format!("bad request for {who}: {e}")))?;
    let response = if origin.tls {
        let config = tls
            .cloned()
            .ok_or_else(|| DeviceError::Config(format!("{who}: HTTPS without a TLS setup")))?;
        let name = ServerName::try_from(origin.host.clone())
            .map_err(|e| DeviceError::Config(format!("{who}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(&format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .map_err(|e| unreachable(&format!("no answer: {e}")))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| DeviceError::Malformed(who.clone(), format!("answer body: {e}")))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// TLS that trusts exactly one certificate, by its SHA-256 fingerprint (hex, colons
/// allowed): RouterOS makes itself a self-signed certificate, so neither a CA nor a host
/// name can vouch for it.
pub fn tls_pinned(fingerprint_hex: &str) -> Result<Arc<rustls::ClientConfig>, DeviceError> {
    let want: String = fingerprint_hex
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(DeviceError::Config(
            "a TLS fingerprint is 64 hex digits (SHA-256)".into(),
        ));
    }
    pinned_config(Some(want), Arc::default())
}

/// TLS that accepts no certificate but writes the SHA-256 (lowercase hex) of the one
/// presented into `seen`: to show an operator what to pin, without sending anything to
/// an unverified peer.
pub fn tls_recording(
    seen: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<Arc<rustls::ClientConfig>, DeviceError> {
    pinned_config(None, seen)
}

fn pinned_config(
    want: Option<String>,
    seen: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<Arc<rustls::ClientConfig>, DeviceError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DeviceError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            want,
            seen,
            provider,
        }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The SHA-256 of a certificate, lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts exactly the certificate with the pinned SHA-256 fingerprint, whatever its name
/// and issuer, and checks the handshake signatures with it. Without a pin it accepts
/// nothing. Either way it records the fingerprint it was shown.
#[derive(Debug)]
struct Pinned {
    want: Option<String>,
    seen: Arc<std::sync::Mutex<Option<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = sha256_hex(end_entity.as_ref());
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(got.clone());
        if self
            .want
            .as_deref()
            .is_some_and(|want| crate::auth::same(&got, want))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            Origin::parse("https://10.0.0.1").unwrap(),
            Origin {
                tls: true,
                host: "10.0.0.1".into(),
                port: 443
            }
        );
        assert_eq!(Origin::parse("192.168.1.5:8080").unwrap().port, 8080);
        assert_eq!(
            Origin::parse("http://[::1]:81/").unwrap().authority(),
            "[::1]:81"
        );
        assert!(Origin::parse("https://r/rest").is_err());
        assert!(Origin::parse("http://r:x").is_err());
        assert!(tls_pinned("abc").is_err());
    }
}
