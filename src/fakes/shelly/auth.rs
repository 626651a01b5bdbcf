//! HTTP authentication as Shelly plugs do it, in pure functions: Basic for Gen1, Digest
//! with SHA-256 (RFC 7616) for Gen2, both over HTTP headers and inside an RPC frame.
//!
//! Kept apart from the servers so the arithmetic can be checked against hand-computed
//! values, and so a client in venued can later be tested against the same rules.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The only user name Shelly firmware knows.
pub(crate) const USER: &str = "admin";

/// What Gen2 firmware hashes for HA2 when the credentials travel inside an RPC frame
/// (WebSocket, `POST /rpc` with an `auth` object): the frame has no HTTP method or URI.
const FRAME_HA2_INPUT: &str = "dummy_method:dummy_uri";

pub(crate) fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// HA1 = SHA-256(admin:realm:password), what `Shelly.SetAuth` stores.
pub(crate) fn ha1(realm: &str, password: &str) -> String {
    sha256_hex(&format!("{USER}:{realm}:{password}"))
}

/// The `response` of RFC 7616 with `qop=auth`.
pub(crate) fn response(ha1: &str, nonce: &str, nc: &str, cnonce: &str, ha2: &str) -> String {
    sha256_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// The `WWW-Authenticate` value of a 401.
pub(crate) fn challenge(realm: &str, nonce: &str) -> String {
    format!("Digest qop=\"auth\", realm=\"{realm}\", nonce=\"{nonce}\", algorithm=SHA-256")
}

/// The challenge carried in the `message` of an RPC error 401 (a JSON string inside JSON,
/// as the firmware sends it).
pub(crate) fn frame_challenge(realm: &str, nonce: &str) -> String {
    serde_json::json!({
        "auth_type": "digest",
        "nonce": nonce,
        "nc": 1,
        "realm": realm,
        "algorithm": "SHA-256",
    })
    .to_string()
}

/// The fields of an `Authorization: Digest …` header; None when it is not one.
/// Values may be quoted (and then contain commas) or bare tokens.
pub(crate) fn parse_digest(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim_start();
    let (scheme, rest) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut fields = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        fields.push((key.to_ascii_lowercase(), value));
    }
    Some(fields)
}

/// Why a Digest header was refused (for the request log and tests; the client only sees 401).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    NotDigest,
    Missing(&'static str),
    WrongUser,
    WrongRealm,
    UnknownNonce,
    WrongUri,
    UnsupportedAlgorithm,
    UnsupportedQop,
    WrongResponse,
}

/// Check an `Authorization` header for `method` on `uri` (path and query exactly as sent
/// on the request line). `known_nonce` says whether the device issued that nonce.
pub(crate) fn verify_header(
    header: &str,
    method: &str,
    uri: &str,
    realm: &str,
    password: &str,
    known_nonce: impl Fn(&str) -> bool,
) -> Result<(), Refused> {
    let fields = parse_digest(header).ok_or(Refused::NotDigest)?;
    let get = |k: &'static str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .ok_or(Refused::Missing(k))
    };
    if get("username")? != USER {
        return Err(Refused::WrongUser);
    }
    if get("realm")? != realm {
        return Err(Refused::WrongRealm);
    }
    let nonce = get("nonce")?;
    if !known_nonce(nonce) {
        return Err(Refused::UnknownNonce);
    }
    if get("uri")? != uri {
        return Err(Refused::WrongUri);
    }
    // RFC 7616 names SHA-256 "SHA-256"; absent means MD5, which this firmware refuses.
    if !get("algorithm")?.eq_ignore_ascii_case("SHA-256") {
        return Err(Refused::UnsupportedAlgorithm);
    }
    if get("qop")? != "auth" {
        return Err(Refused::UnsupportedQop);
    }
    let expected = response(
        &ha1(realm, password),
        nonce,
        get("nc")?,
        get("cnonce")?,
        &sha256_hex(&format!("{method}:{uri}")),
    );
    if same(&expected, &get("response")?.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(Refused::WrongResponse)
    }
}

/// Check the `auth` object of an RPC frame: `{realm, username, nonce, cnonce, response,
/// algorithm, nc}` with HA2 over `dummy_method:dummy_uri`; `nc` and `cnonce` may be numbers.
pub(crate) fn verify_frame(
    auth: &Value,
    realm: &str,
    password: &str,
    known_nonce: impl Fn(&str) -> bool,
) -> Result<(), Refused> {
    let text = |k: &'static str| match auth.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(Refused::Missing(k)),
    };
    if auth.get("username").and_then(Value::as_str) != Some(USER) {
        return Err(Refused::WrongUser);
    }
    if text("realm")? != realm {
        return Err(Refused::WrongRealm);
    }
    let nonce = text("nonce")?;
    if !known_nonce(&nonce) {
        return Err(Refused::UnknownNonce);
    }
    if let Ok(alg) = text("algorithm")
        && !alg.eq_ignore_ascii_case("SHA-256")
    {
        return Err(Refused::UnsupportedAlgorithm);
    }
    // Clients that leave `nc` out mean the first use of the nonce.
    let nc = text("nc").unwrap_or_else(|_| "1".into());
    let expected = response(
        &ha1(realm, password),
        &nonce,
        &nc,
        &text("cnonce")?,
        &sha256_hex(FRAME_HA2_INPUT),
    );
    if same(&expected, &text("response")?.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(Refused::WrongResponse)
    }
}

/// Check `Authorization: Basic …` against admin/`password` (Gen1).
pub(crate) fn verify_basic(header: &str, password: &str) -> bool {
    let Some((scheme, b64)) = header.trim().split_once(char::is_whitespace) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(raw) = base64_decode(b64.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(raw) else {
        return false;
    };
    match text.split_once(':') {
        Some((user, pass)) => user == USER && same(pass, password),
        None => false,
    }
}

/// Standard base64 with padding (RFC 4648 §4), as a Basic header carries it.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

use crate::auth::same;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        // FIPS 180-2 test vector.
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rfc7616_example_response() {
        // RFC 7616 §3.9.1, SHA-256 variant: user Mufasa, password "Circle of Life".
        let ha1 = sha256_hex("Mufasa:http-auth@example.org:Circle of Life");
        let ha2 = sha256_hex("GET:/dir/index.html");
        let r = response(
            &ha1,
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            &ha2,
        );
        assert_eq!(
            r,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    fn header(uri: &str, password: &str, nonce: &str) -> String {
        let realm = "shellyplusplugs-aabbccddeeff";
        let r = response(
            &ha1(realm, password),
            nonce,
            "00000001",
            "abc",
            &sha256_hex(&format!("GET:{uri}")),
        );
        format!(
            "Digest username=\"admin\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"abc\", response=\"{r}\""
        )
    }

    #[test]
    fn digest_header_is_verified() {
        let realm = "shellyplusplugs-aabbccddeeff";
        let uri = "/rpc/Switch.Set?id=0&on=true";
        let known = |n: &str| n == "n1";
        let h = header(uri, "secret", "n1");
        assert_eq!(
            verify_header(&h, "GET", uri, realm, "secret", known),
            Ok(())
        );
        assert_eq!(
            verify_header(&h, "GET", uri, realm, "other", known),
            Err(Refused::WrongResponse)
        );
        assert_eq!(
            verify_header(&h, "POST", uri, realm, "secret", known),
            Err(Refused::WrongResponse)
        );
        assert_eq!(
            verify_header(
                &h,
                "GET",
                "/rpc/Switch.Set?id=0&on=false",
                realm,
                "secret",
                known
            ),
            Err(Refused::WrongUri)
        );
        assert_eq!(
            verify_header(
                &header(uri, "secret", "n2"),
                "GET",
                uri,
                realm,
                "secret",
                known
            ),
            Err(Refused::UnknownNonce)
        );
        assert_eq!(
            verify_header("Basic YWRtaW46c2VjcmV0", "GET", uri, realm, "secret", known),
            Err(Refused::NotDigest)
        );
        let md5 = h.replace("algorithm=SHA-256", "algorithm=MD5");
        assert_eq!(
            verify_header(&md5, "GET", uri, realm, "secret", known),
            Err(Refused::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn digest_header_parsing() {
        let f = parse_digest(r#"Digest username="admin", uri="/a?b=1,2", nc=00000001, qop=auth"#)
            .unwrap();
        assert_eq!(
            f,
            vec![
                ("username".into(), "admin".into()),
                ("uri".into(), "/a?b=1,2".into()),
                ("nc".into(), "00000001".into()),
                ("qop".into(), "auth".into()),
            ]
        );
        assert!(parse_digest(r#"Digest username="admin"#).is_none());
        assert!(parse_digest("Basic abc").is_none());
        assert!(parse_digest("Digest username").is_none());
        assert_eq!(parse_digest("Digest ").unwrap(), vec![]);
    }

    #[test]
    fn frame_auth_uses_dummy_ha2() {
        let realm = "shellyplusplugs-aabbccddeeff";
        let r = response(
            &ha1(realm, "secret"),
            "n1",
            "1",
            "12345",
            &sha256_hex("dummy_method:dummy_uri"),
        );
        let auth = serde_json::json!({
            "realm": realm, "username": "admin", "nonce": "n1", "cnonce": 12345,
            "response": r, "algorithm": "SHA-256", "nc": 1,
        });
        assert_eq!(verify_frame(&auth, realm, "secret", |n| n == "n1"), Ok(()));
        assert_eq!(
            verify_frame(&auth, realm, "wrong", |n| n == "n1"),
            Err(Refused::WrongResponse)
        );
        assert_eq!(
            verify_frame(&auth, realm, "secret", |_| false),
            Err(Refused::UnknownNonce)
        );
    }

    #[test]
    fn basic_auth() {
        // base64("admin:secret")
        assert!(verify_basic("Basic YWRtaW46c2VjcmV0", "secret"));
        assert!(!verify_basic("Basic YWRtaW46c2VjcmV0", "other"));
        // base64("root:secret")
        assert!(!verify_basic("Basic cm9vdDpzZWNyZXQ=", "secret"));
        assert!(!verify_basic("Basic !!!!", "secret"));
        assert!(!verify_basic("Digest x=1", "secret"));
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert!(base64_decode("YWJ").is_none());
    }
}
