//! Enrollment codes and the `/api/v1/enroll` exchange, shared by the controller and the
//! agent.
//!
//! A code is short enough to type at a PC (`K7QFM-2XDRA-3F9A-1C44-B07E-55D2`): ten
//! characters of secret (50 bits, Crockford base32, single use, minutes long) and the
//! first 64 bits of the box CA's SHA-256 fingerprint, so the agent can check it talks to
//! this box before it has the CA.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Crockford's base32: no I, L, O, U, so nothing reads as another character.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const SECRET_LEN: usize = 10;
/// Hex digits of the CA fingerprint carried.
pub const CA_PREFIX_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentCode {
    /// The secret part, upper case.
    pub secret: String,
    /// The CA fingerprint's first 16 hex digits, upper case.
    pub ca_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not an enrollment code: expected 10 letters or digits then 16 hex digits, like K7QFM-2XDRA-3F9A-1C44-B07E-55D2"
)]
pub struct BadCode;

impl EnrollmentCode {
    /// A fresh code for a CA whose fingerprint is `ca_fingerprint` (hex, colons allowed).
    pub fn generate(ca_fingerprint: &str) -> Self {
        let secret = (0..SECRET_LEN)
            .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>() % 32)]))
            .collect();
        Self {
            secret,
            ca_prefix: hex_only(ca_fingerprint)
                .chars()
                .take(CA_PREFIX_LEN)
                .collect(),
        }
    }

    /// Read a code as typed: case, spaces and dashes do not matter, and the letters
    /// Crockford base32 leaves out are read as the digits they look like.
    pub fn parse(typed: &str) -> Result<Self, BadCode> {
        let clean: String = typed
            .chars()
            .filter(|c| !matches!(c, '-' | ' ' | '\t'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if clean.len() != SECRET_LEN + CA_PREFIX_LEN || !clean.is_ascii() {
            return Err(BadCode);
        }
        let (secret, prefix) = clean.split_at(SECRET_LEN);
        let secret: String = secret
            .chars()
            .map(|c| match c {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            })
            .collect();
        if !secret.bytes().all(|b| ALPHABET.contains(&b))
            || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BadCode);
        }
        Ok(Self {
            secret,
            ca_prefix: prefix.to_owned(),
        })
    }

    /// Does a CA fingerprint (hex, colons allowed) match the one the code carries?
    pub fn matches_ca(&self, fingerprint: &str) -> bool {
        fingerprint_has_prefix(fingerprint, &self.ca_prefix)
    }
}

/// Does `fingerprint` start with the hex digits of `prefix`? Case, colons and anything
/// not hex are ignored on both sides; an empty prefix matches nothing.
pub fn fingerprint_has_prefix(fingerprint: &str, prefix: &str) -> bool {
    let prefix = hex_only(prefix);
    !prefix.is_empty() && hex_only(fingerprint).starts_with(&prefix)
}

fn hex_only(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl fmt::Display for EnrollmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.secret.split_at(SECRET_LEN / 2);
        write!(f, "{a}-{b}")?;
        for chunk in self.ca_prefix.as_bytes().chunks(4) {
            write!(f, "-{}", String::from_utf8_lossy(chunk))?;
        }
        Ok(())
    }
}

/// `AB:CD:…`: SHA-256 of a certificate (DER), upper-case hex pairs joined by colons, as
/// `venued tls show` prints and enrollment codes carry.
#[cfg(any(feature = "controller", feature = "agent"))]
pub fn fingerprint_sha256(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Body of `POST /api/v1/enroll`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The code staff got from `venued station enroll <id>`.
    pub code: String,
}

/// What an agent needs to connect: its credentials and the CA to pin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnrollResponse {
    pub station: crate::domain::StationId,
    /// MQTT user name, `agent:<station>`.
    pub username: String,
    /// MQTT password; stored by the agent, never shown again.
    pub password: String,
    /// The box CA (PEM): the only root the agent trusts for this controller.
    pub ca_pem: String,
    /// SHA-256 of the CA, colon-separated hex.
    pub ca_fingerprint: String,
    /// Ports of the controller's MQTT-over-TLS listeners.
    pub mqtt_tls_ports: Vec<u16>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_round_trip_and_forgive_typing() {
        let fp = "3F:9A:1C:44:B0:7E:55:D2:11:22";
        let code = EnrollmentCode::generate(fp);
        let shown = code.to_string();
        assert_eq!(shown.len(), 10 + 16 + 5);
        assert_eq!(EnrollmentCode::parse(&shown).unwrap(), code);
        assert_eq!(
            EnrollmentCode::parse(&shown.to_lowercase().replace('-', " ")).unwrap(),
            code
        );
        assert!(code.matches_ca(fp));
        assert!(!code.matches_ca("00:11"));
        let typed = EnrollmentCode::parse("k7qfo-2xdri-3f9a1c44b07e55d2").unwrap();
        assert_eq!(typed.secret, "K7QF02XDR1");
        for bad in [
            "",
            "K7QFM-2XDRA",
            "K7QFM-2XDRA-3F9A-1C44-B07E-55DZ",
            "K7QFU-2XDRA-3F9A-1C44-B07E-55D2",
        ] {
            assert_eq!(EnrollmentCode::parse(bad), Err(BadCode), "{bad}");
        }
    }
}
