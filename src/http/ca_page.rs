//! The box's CA for people to download and trust: `/ca.pem` and a page with the
//! fingerprint and the steps per platform. Public on purpose: a CA certificate is not a
//! secret, and a device must fetch it before it can trust HTTPS.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

pub fn routes(ca_pem: String, fingerprint: String) -> Router {
    let page = page(&fingerprint);
    Router::new()
        .route(
            "/ca.pem",
            get(move || {
                let pem = ca_pem.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/x-pem-file"),
                            (
                                header::CONTENT_DISPOSITION,
                                "attachment; filename=\"venued-ca.pem\"",
                            ),
                        ],
                        pem,
                    )
                        .into_response()
                }
            }),
        )
        .route("/ca", get(move || async move { Html(page) }))
}

fn page(fingerprint: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Trust this venue box</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>Trust this venue box</h1>
<p>This box signs its own HTTPS certificate with its own certificate authority (CA).
Download the CA and trust it once on each device that talks to the box.</p>
<p><a href="/ca.pem" download>Download venued-ca.pem</a></p>
<p>Before trusting it, compare its SHA-256 fingerprint with the one printed by
<code>venued tls show</code> on the box itself:</p>
<pre>{fingerprint}</pre>
<h2>Windows</h2><p>Open the file, choose <em>Install Certificate</em>, <em>Local Machine</em>,
and place it in <em>Trusted Root Certification Authorities</em>.</p>
<h2>macOS</h2><p>Open the file in Keychain Access (System keychain), open the certificate,
and set <em>When using this certificate</em> to <em>Always Trust</em>.</p>
<h2>Linux</h2><p>Copy it to <code>/usr/local/share/ca-certificates/venued-ca.crt</code> and run
<code>sudo update-ca-certificates</code>.</p>
<h2>Android</h2><p>Settings, Security, Encryption &amp; credentials, Install a certificate,
CA certificate.</p>
<h2>iPhone and iPad</h2><p>Open the file in Safari, install the profile in Settings, then
enable it under General, About, Certificate Trust Settings.</p>
</body></html>
"#
    )
}
