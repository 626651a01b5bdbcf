//! The plug's web server, without I/O: which requests are commands, and firmware's
//! answers to the others (xdrv_01_9_webserver.ino `HandleHttpCommand`, `HandleNotFound`).
//!
//! `/cm?cmnd=<command>` runs a command (GET, or POST with a form body); with a web
//! password set, `user=admin&password=<pw>` must come along, else firmware answers 401
//! `{"WARNING":"Need user=<username>&password=<password>"}` (8.2.3 and later; older
//! builds said it with 200). An empty `cmnd` gets `{"WARNING":"Enter command cmnd="}`.

use super::device::WEB_USER;

/// Longest command `/cm` takes (firmware: under `MQTT_MAX_PACKET_SIZE`).
const MAX_COMMAND: usize = 1200;

/// What the web server does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Web {
    /// Run this command line; its merged JSON replies are the answer (200, JSON).
    Command(String),
    /// Answer this, no command runs.
    Answer {
        status: u16,
        content_type: &'static str,
        body: String,
    },
}

pub const JSON: &str = "application/json";
const TEXT: &str = "text/plain";
const HTML: &str = "text/html";

/// A page that is not JSON, served for [`super::Fault::WrongAnswers`]: what a captive
/// portal or another device at the plug's address would answer.
pub const WRONG_ANSWER: &str = "<!DOCTYPE html><html><head><title>Login</title></head><body><form method=post action=/login><input name=pass type=password></form></body></html>";

/// Route one request. `query` is the raw query string, `form` a raw
/// `application/x-www-form-urlencoded` body (empty if none).
pub fn route(post: bool, path: &str, query: &str, form: &str, password: Option<&str>) -> Web {
    let args: Vec<(String, String)> = parse_form(query)
        .into_iter()
        .chain(parse_form(form))
        .collect();
    let arg = |name: &str| {
        args.iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    match path {
        "/cm" => {
            if let Some(pw) = password.filter(|p| !p.is_empty())
                && !(arg("user") == WEB_USER && arg("password") == pw)
            {
                return answer(
                    401,
                    JSON,
                    r#"{"WARNING":"Need user=<username>&password=<password>"}"#,
                );
            }
            let cmnd = arg("cmnd");
            if cmnd.trim().is_empty() || cmnd.len() >= MAX_COMMAND {
                return answer(200, JSON, r#"{"WARNING":"Enter command cmnd="}"#);
            }
            Web::Command(cmnd.to_owned())
        }
        "/" => answer(
            200,
            HTML,
            "<!DOCTYPE html><html><head><title>Tasmota - Main Menu</title></head><body><h2>Tasmota</h2></body></html>",
        ),
        _ => {
            let mut body = format!(
                "File Not Found\n\nURI: {path}\nMethod: {}\nArguments: {}\n",
                if post { "POST" } else { "GET" },
                args.len()
            );
            for (k, v) in &args {
                body.push_str(&format!(" {k}: {v}\n"));
            }
            Web::Answer {
                status: 404,
                content_type: TEXT,
                body,
            }
        }
    }
}

fn answer(status: u16, content_type: &'static str, body: &str) -> Web {
    Web::Answer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// `a=1&b=x%20y` → [(a, 1), (b, x y)]; `+` is a space, as the ESP web server decodes.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decode (`%20`, and `+` for a space); a malformed escape stays as it is.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_warnings() {
        assert_eq!(
            route(false, "/cm", "cmnd=Power%20On", "", None),
            Web::Command("Power On".into())
        );
        assert_eq!(
            route(
                false,
                "/cm",
                "cmnd=Backlog+Power1+ON%3BRuleTimer1+120",
                "",
                None
            ),
            Web::Command("Backlog Power1 ON;RuleTimer1 120".into())
        );
        assert_eq!(
            route(false, "/cm", "cmnd=", "", None),
            answer(200, JSON, r#"{"WARNING":"Enter command cmnd="}"#)
        );
        assert_eq!(
            route(false, "/cm", "", "", None),
            answer(200, JSON, r#"{"WARNING":"Enter command cmnd="}"#)
        );
        assert_eq!(
            route(true, "/cm", "", "cmnd=Status", None),
            Web::Command("Status".into())
        );
    }

    #[test]
    fn web_password() {
        let need = answer(
            401,
            JSON,
            r#"{"WARNING":"Need user=<username>&password=<password>"}"#,
        );
        assert_eq!(route(false, "/cm", "cmnd=Power", "", Some("s3cret")), need);
        assert_eq!(
            route(
                false,
                "/cm",
                "user=admin&password=wrong&cmnd=Power",
                "",
                Some("s3cret")
            ),
            need
        );
        assert_eq!(
            route(
                false,
                "/cm",
                "user=root&password=s3cret&cmnd=Power",
                "",
                Some("s3cret")
            ),
            need
        );
        // Checked before the empty-command warning.
        assert_eq!(route(false, "/cm", "", "", Some("s3cret")), need);
        assert_eq!(
            route(
                false,
                "/cm",
                "user=admin&password=s3cret&cmnd=Power",
                "",
                Some("s3cret")
            ),
            Web::Command("Power".into())
        );
        // An empty password is no password.
        assert_eq!(
            route(false, "/cm", "cmnd=Power", "", Some("")),
            Web::Command("Power".into())
        );
    }

    #[test]
    fn other_paths() {
        let Web::Answer { status, body, .. } = route(false, "/nope", "a=1", "", None) else {
            panic!()
        };
        assert_eq!(status, 404);
        assert!(body.starts_with("File Not Found\n\nURI: /nope\nMethod: GET\nArguments: 1\n"));
        assert!(matches!(
            route(false, "/", "", "", None),
            Web::Answer { status: 200, .. }
        ));
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("a%3Bb+c"), "a;b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%C3%A9"), "é");
    }
}
