//! HTTP Digest authentication with SHA-256 (RFC 7616), the client side, as pure functions:
//! reading a `WWW-Authenticate: Digest …` challenge and writing the `Authorization`
//! answer.
//!
//! Why our own: Shelly Gen2+ firmware protects its HTTP RPC with exactly this scheme
//! (user `admin`, realm = device id, `qop="auth"`, `algorithm=SHA-256`), and no small
//! client crate in the tree does SHA-256 digest. Kept free of I/O so the arithmetic is
//! checked against the RFC's own worked example.
//!
//! Supported: `algorithm=SHA-256` (the only one Shelly offers; MD5 and `-sess` variants
//! are refused, SHA-512-256 is not implemented), `qop=auth` or no `qop` at all (RFC 2069
//! style), `opaque` echoed back, `userhash` not used (RFC 7616 allows the plain name).

use sha2::{Digest, Sha256};

/// A challenge we can answer, from one `WWW-Authenticate` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `Some("auth")` when the server offered `qop=auth`; None when it offered no `qop`.
    pub qop: Option<&'static str>,
}

/// Why no usable challenge was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChallengeError {
    /// No `Digest` challenge at all (none, or Basic only).
    NotDigest,
    /// A Digest challenge we cannot answer (MD5, `auth-int` only, no nonce…); the text
    /// says which.
    Unsupported(String),
}

pub(crate) fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `response` value of RFC 7616 §3.4.1 with SHA-256:
/// `H(H(user:realm:password):nonce:nc:cnonce:qop:H(method:uri))`, or without `qop`
/// `H(H(user:realm:password):nonce:H(method:uri))`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: Option<&str>,
) -> String {
    let ha1 = sha256_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = sha256_hex(&format!("{method}:{uri}"));
    match qop {
        Some(qop) => sha256_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")),
        None => sha256_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// `nc` as the header carries it: eight hex digits.
pub(crate) fn nc_text(nc: u32) -> String {
    format!("{nc:08x}")
}

/// A quoted-string (RFC 9110 §5.6.4): `"` and `\` escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `Authorization` value answering `ch` for `method` on `uri` (path and query exactly
/// as on the request line), the `nc`-th use of its nonce, with our `cnonce`.
pub(crate) fn authorization(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let nc = nc_text(nc);
    let r = response(
        user, &ch.realm, password, method, uri, &ch.nonce, &nc, cnonce, ch.qop,
    );
    // Token values (algorithm, qop, nc) unquoted as RFC 7616 §3.4 writes them; the
    // parameter order follows the RFC's example.
    let mut h = format!(
        "Digest username={}, realm={}, uri={}, algorithm=SHA-256, nonce={}",
        quoted(user),
        quoted(&ch.realm),
        quoted(uri),
        quoted(&ch.nonce),
    );
    if let Some(qop) = ch.qop {
        h.push_str(&format!(", nc={nc}, cnonce={}, qop={qop}", quoted(cnonce)));
    }
    h.push_str(&format!(", response={}", quoted(&r)));
    if let Some(o) = &ch.opaque {
        h.push_str(&format!(", opaque={}", quoted(o)));
    }
    h
}

/// A fresh client nonce: 128 random bits, hex.
pub(crate) fn new_cnonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The first challenge we can answer among the `WWW-Authenticate` values (a server may
/// send one per algorithm, RFC 7616 §3.7).
pub(crate) fn pick_challenge<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Challenge, ChallengeError> {
    let mut last = ChallengeError::NotDigest;
    for v in values {
        match parse_challenge(v) {
            Ok(c) => return Ok(c),
            Err(ChallengeError::NotDigest) => {}
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One `WWW-Authenticate` value holding one challenge.
pub(crate) fn parse_challenge(value: &str) -> Result<Challenge, ChallengeError> {
    let (scheme, params) = parse_params(value).ok_or(ChallengeError::NotDigest)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(ChallengeError::NotDigest);
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let unsupported = |why: String| Err(ChallengeError::Unsupported(why));
    // RFC 7616 §3.3: no algorithm means MD5.
    let algorithm = get("algorithm").unwrap_or("MD5");
    if !algorithm.eq_ignore_ascii_case("SHA-256") {
        return unsupported(format!("algorithm {algorithm} (only SHA-256 is supported)"));
    }
    let qop = match get("qop") {
        None => None,
        Some(list) => {
            if list
                .split(',')
                .any(|q| q.trim().eq_ignore_ascii_case("auth"))
            {
                Some("auth")
            } else {
                return unsupported(format!("qop {list:?} (only auth is supported)"));
            }
        }
    };
    let Some(realm) = get("realm") else {
        return unsupported("no realm".into());
    };
    let Some(nonce) = get("nonce").filter(|n| !n.is_empty()) else {
        return unsupported("no nonce".into());
    };
    Ok(Challenge {
        realm: realm.to_owned(),
        nonce: nonce.to_owned(),
        opaque: get("opaque").map(str::to_owned),
        qop,
    })
}

/// `Scheme k=v, k="quoted, \"v\"", …` → the scheme and its parameters; None when the
/// syntax is broken (an unclosed quote, a parameter without `=`).
fn parse_params(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let value = value.trim();
    let (scheme, rest) = match value.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r),
        None => (value, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
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
        let mut v = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => v.push(c),
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
                v.push(c);
                chars.next();
            }
        }
        params.push((key, v));
    }
    Some((scheme.to_owned(), params))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // RFC 7616 §3.9.1, the SHA-256 variant of its example.
    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const RFC_RESPONSE: &str = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";

    #[test]
    fn rfc7616_sha256_example() {
        let r = response(
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            RFC_NONCE,
            "00000001",
            RFC_CNONCE,
            Some("auth"),
        );
        assert_eq!(r, RFC_RESPONSE);
    }

    #[test]
    fn rfc7616_challenge_to_header() {
        // The RFC's SHA-256 challenge (it offers `auth, auth-int`; we take auth).
        let ch = parse_challenge(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm=SHA-256, nonce=\"{RFC_NONCE}\", opaque=\"{RFC_OPAQUE}\""
        ))
        .unwrap();
        assert_eq!(
            ch,
            Challenge {
                realm: "http-auth@example.org".into(),
                nonce: RFC_NONCE.into(),
                opaque: Some(RFC_OPAQUE.into()),
                qop: Some("auth"),
            }
        );
        let h = authorization(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            RFC_CNONCE,
        );
        assert_eq!(
            h,
            format!(
                "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
                 uri=\"/dir/index.html\", algorithm=SHA-256, nonce=\"{RFC_NONCE}\", \
                 nc=00000001, cnonce=\"{RFC_CNONCE}\", qop=auth, \
                 response=\"{RFC_RESPONSE}\", opaque=\"{RFC_OPAQUE}\""
            )
        );
        // Our header parses back into the same fields.
        let (scheme, p) = parse_params(&h).unwrap();
        assert_eq!(scheme, "Digest");
        assert!(p.contains(&("response".into(), RFC_RESPONSE.into())));
        assert!(p.contains(&("nc".into(), "00000001".into())));
    }

    #[test]
    fn shelly_challenge() {
        // The shape Gen2 firmware sends.
        let ch = parse_challenge(
            "Digest qop=\"auth\", realm=\"shellyplus1-7c87ce7213ec\", nonce=\"642daba1\", algorithm=SHA-256",
        )
        .unwrap();
        assert_eq!(ch.realm, "shellyplus1-7c87ce7213ec");
        assert_eq!(ch.nonce, "642daba1");
        assert_eq!(ch.qop, Some("auth"));
        assert_eq!(ch.opaque, None);
        // The response Shelly's docs define: SHA256(HA1:nonce:nc:cnonce:auth:HA2).
        let uri = "/rpc/Switch.Set?id=0&on=true&toggle_after=1";
        let h = authorization(&ch, "admin", "pw", "GET", uri, 3, "12");
        let ha1 = sha256_hex("admin:shellyplus1-7c87ce7213ec:pw");
        let ha2 = sha256_hex(&format!("GET:{uri}"));
        let want = sha256_hex(&format!("{ha1}:642daba1:00000003:12:auth:{ha2}"));
        assert!(h.contains(&format!("response=\"{want}\"")), "{h}");
        assert!(h.contains("nc=00000003"));
        assert!(h.contains(&format!("uri=\"{uri}\"")));
    }

    #[test]
    fn without_qop_the_rfc2069_form() {
        let ch = parse_challenge("Digest realm=\"r\", nonce=\"n\", algorithm=sha-256").unwrap();
        assert_eq!(ch.qop, None);
        let h = authorization(&ch, "admin", "pw", "GET", "/x", 1, "c");
        assert!(!h.contains("nc="));
        assert!(!h.contains("cnonce="));
        let ha1 = sha256_hex("admin:r:pw");
        let ha2 = sha256_hex("GET:/x");
        assert!(h.contains(&sha256_hex(&format!("{ha1}:n:{ha2}"))));
    }

    #[test]
    fn challenges_we_cannot_answer() {
        assert_eq!(
            parse_challenge("Basic realm=\"x\""),
            Err(ChallengeError::NotDigest)
        );
        assert_eq!(parse_challenge(""), Err(ChallengeError::NotDigest));
        assert!(matches!(
            parse_challenge("Digest realm=\"x\", nonce=\"n\", qop=\"auth\""),
            Err(ChallengeError::Unsupported(s)) if s.contains("MD5")
        ));
        assert!(matches!(
            parse_challenge("Digest realm=\"x\", nonce=\"n\", algorithm=SHA-256-sess"),
            Err(ChallengeError::Unsupported(_))
        ));
        assert!(matches!(
            parse_challenge("Digest realm=\"x\", nonce=\"n\", algorithm=SHA-256, qop=\"auth-int\""),
            Err(ChallengeError::Unsupported(s)) if s.contains("qop")
        ));
        assert!(matches!(
            parse_challenge("Digest realm=\"x\", algorithm=SHA-256"),
            Err(ChallengeError::Unsupported(s)) if s.contains("nonce")
        ));
        assert_eq!(
            parse_challenge("Digest realm=\"unclosed"),
            Err(ChallengeError::NotDigest)
        );
        // Among several, the SHA-256 one is taken.
        let ch = pick_challenge([
            "Basic realm=\"b\"",
            "Digest realm=\"r\", nonce=\"md5\", algorithm=MD5, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"sha\", algorithm=SHA-256, qop=\"auth\"",
        ])
        .unwrap();
        assert_eq!(ch.nonce, "sha");
        assert!(matches!(
            pick_challenge(["Digest realm=\"r\", nonce=\"md5\""]),
            Err(ChallengeError::Unsupported(_))
        ));
        assert_eq!(pick_challenge([]), Err(ChallengeError::NotDigest));
    }

    #[test]
    fn quoting_and_parsing() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        let (_, p) = parse_params(r#"Digest a="x, \"y\"", b=tok,c = "z""#).unwrap();
        assert_eq!(
            p,
            vec![
                ("a".into(), r#"x, "y""#.into()),
                ("b".into(), "tok".into()),
                ("c".into(), "z".into()),
            ]
        );
        assert!(parse_params("Digest novalue").is_none());
        assert_eq!(nc_text(1), "00000001");
        assert_eq!(nc_text(255), "000000ff");
        let a = new_cnonce();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_cnonce());
    }
}
