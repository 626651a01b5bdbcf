//! Finding the controller on the LAN: `venued serve` advertises `_venued._tcp.local.` over
//! mDNS / DNS-SD, and `venued agent enroll` without `--controller` browses for it.
//!
//! Staff at a PC rarely know the box's address (DHCP moves it), but they hold the
//! enrollment code, and the code carries the first 64 bits of the box CA's fingerprint.
//! The advertisement carries the same 64 bits, so the agent takes the box the code came
//! from even when a second venued box shares the LAN.
//!
//! mDNS only finds an address; it proves nothing, since anyone on the LAN can advertise
//! anything. The agent then pins the CA in the TLS handshake exactly as it does for an
//! address typed by hand (src/agent/enroll.rs): a lying advertisement ends in a refused
//! handshake, never in a code or credentials exchanged with the wrong box.
//!
//! The TXT record: `v=1`, `https=<port>`, `mqtts=<port>` (absent while MQTT over TLS is
//! off or loopback-only) and `ca=<16 hex digits>`. Keys this version does not know are
//! ignored so later versions can add some; another `v` is refused.
//!
//! The pure parts (TXT encoding and decoding, what the controller advertises, choosing
//! among several boxes, the messages) are apart from the I/O ([`Advertiser`],
//! [`browse`]), which mdns-sd runs on a thread of its own.

use crate::protocol::enrollment::{CA_PREFIX_LEN, fingerprint_has_prefix};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The DNS-SD service type both sides use.
pub const SERVICE_TYPE: &str = "_venued._tcp.local.";
/// The TXT record layout this build writes and reads.
const VERSION: &str = "1";

/// What a controller says about itself in its TXT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// The HTTPS port enrollment goes to.
    pub https: u16,
    /// The MQTT-over-TLS port, when one is reachable from the LAN.
    pub mqtts: Option<u16>,
    /// The first 16 hex digits of the CA's SHA-256 fingerprint, upper case.
    pub ca_prefix: String,
}

/// A TXT record that is not a venued advertisement this agent understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed TXT record: {0}")]
pub struct BadTxt(String);

impl Advert {
    /// The TXT record's key/value pairs.
    pub fn to_txt(&self) -> Vec<(&'static str, String)> {
        let mut txt = vec![("v", VERSION.to_owned()), ("https", self.https.to_string())];
        if let Some(port) = self.mqtts {
            txt.push(("mqtts", port.to_string()));
        }
        txt.push(("ca", self.ca_prefix.clone()));
        txt
    }

    /// Read a TXT record: `(key, value)` pairs, a value being `None` for a bare key.
    /// Keys are case-insensitive and only a key's first occurrence counts (RFC 6763 §6.4).
    pub fn from_txt<'a>(
        props: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<Self, BadTxt> {
        fn bad<T>(reason: String) -> Result<T, BadTxt> {
            Err(BadTxt(reason))
        }
        let (mut v, mut https, mut mqtts, mut ca) = (None, None, None, None);
        for (key, value) in props {
            let slot = match key.to_ascii_lowercase().as_str() {
                "v" => &mut v,
                "https" => &mut https,
                "mqtts" => &mut mqtts,
                "ca" => &mut ca,
                _ => continue,
            };
            if slot.is_some() {
                continue;
            }
            let Some(value) = value else {
                return bad(format!("{} has no value", shown(key)));
            };
            let Ok(text) = std::str::from_utf8(value) else {
                return bad(format!("the value of {} is not text", shown(key)));
            };
            *slot = Some(text);
        }
        match v {
            None => return bad("no v= key (not a venued advertisement)".into()),
            Some(VERSION) => {}
            Some(other) => {
                return bad(format!(
                    "v={} (this agent reads v={VERSION}; a newer venued may need a newer agent)",
                    shown(other)
                ));
            }
        }
        let port = |key: &str, value: Option<&str>| match value {
            None => Ok(None),
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 => Ok(Some(port)),
                _ => bad(format!("{key}={} is not a port", shown(p))),
            },
        };
        let Some(https) = port("https", https)? else {
            return bad("no https= key".into());
        };
        let mqtts = port("mqtts", mqtts)?;
        let Some(ca) = ca else {
            return bad("no ca= key".into());
        };
        if ca.len() != CA_PREFIX_LEN || !ca.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!(
                "ca={} is not {CA_PREFIX_LEN} hex digits",
                shown(ca)
            ));
        }
        Ok(Self {
            https,
            mqtts,
            ca_prefix: ca.to_ascii_uppercase(),
        })
    }
}

/// Text from the network, quoted and cut short for a message: it may be long or hold
/// control characters.
fn shown(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// What the controller advertises: the listener PCs should enroll through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The HTTPS listener advertised (its address decides the interfaces used).
    pub listen: SocketAddr,
    pub advert: Advert,
}

/// The advertisement for these bound listeners, or why there is none. A loopback
/// listener is useless to a PC, so only non-loopback ones count.
pub fn plan(
    https: &[SocketAddr],
    mqtts: &[SocketAddr],
    ca_fingerprint: &str,
) -> Result<Plan, String> {
    let reachable = |a: &&SocketAddr| !a.ip().is_loopback();
    let Some(listen) = https.iter().find(reachable) else {
        if https.is_empty() {
            return Err("HTTPS is off (tls.https-listen is empty)".into());
        }
        let list: Vec<String> = https.iter().map(ToString::to_string).collect();
        return Err(format!(
            "HTTPS listens only on loopback ({}), which PCs cannot reach; add the box's LAN \
             address (or 0.0.0.0:8443) to tls.https-listen",
            list.join(", ")
        ));
    };
    let ca_prefix: String = ca_fingerprint
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .take(CA_PREFIX_LEN)
        .collect();
    if ca_prefix.len() < CA_PREFIX_LEN {
        return Err(format!(
            "the CA fingerprint {ca_fingerprint:?} is too short"
        ));
    }
    Ok(Plan {
        listen: *listen,
        advert: Advert {
            https: listen.port(),
            mqtts: mqtts.iter().find(reachable).map(SocketAddr::port),
            ca_prefix,
        },
    })
}

/// One controller seen on the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The instance name it advertises (the box's host name).
    pub name: String,
    /// Addresses a PC can dial, IPv4 first (see [`usable_addrs`]).
    pub addrs: Vec<IpAddr>,
    pub advert: Result<Advert, BadTxt>,
}

impl Seen {
    /// Is this the box that issued a code carrying `ca_prefix`, and can we dial it?
    pub fn matches(&self, ca_prefix: &str) -> bool {
        !self.addrs.is_empty()
            && matches!(&self.advert, Ok(a) if fingerprint_has_prefix(&a.ca_prefix, ca_prefix))
    }

    /// The HTTPS addresses to try, in order.
    pub fn targets(&self) -> Vec<SocketAddr> {
        match &self.advert {
            Ok(a) => self
                .addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, a.https))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// One line for a message listing what was found.
    fn describe(&self, ca_prefix: &str) -> String {
        let name = shown(&self.name);
        let at = match (&self.advert, self.addrs.as_slice()) {
            (_, []) => "no address this PC can dial".to_owned(),
            (Ok(_), _) => join(&self.targets()),
            (Err(_), addrs) => join(addrs),
        };
        match &self.advert {
            Err(e) => format!("{name} at {at}: ignored, {e}"),
            Ok(_) if self.matches(ca_prefix) => format!("{name} at {at}: issued this code"),
            Ok(a) if fingerprint_has_prefix(&a.ca_prefix, ca_prefix) => {
                format!("{name}: issued this code, but has {at}")
            }
            Ok(a) => format!(
                "{name} at {at}: another box (its CA starts {}, the code's {})",
                a.ca_prefix,
                ca_prefix.to_ascii_uppercase()
            ),
        }
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The controller that issued a code carrying `ca_prefix`: the first one seen whose
/// advertised CA matches it and that has an address to dial. Boxes with other CAs and
/// malformed advertisements are never chosen.
pub fn choose<'a>(seen: &'a [Seen], ca_prefix: &str) -> Option<&'a Seen> {
    seen.iter().find(|s| s.matches(ca_prefix))
}

/// The addresses worth dialling, IPv4 first: not loopback, unspecified or multicast
/// (nonsense in a LAN advertisement), and not link-local IPv6, which needs an interface
/// scope that the stored controller address cannot carry.
pub fn usable_addrs(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut usable: Vec<IpAddr> = addrs
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
        })
        .collect();
    usable.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    usable.dedup();
    usable
}

/// The error when no advertised controller issued the code: what was found, and the way
/// out (`--controller`).
pub fn no_match(seen: &[Seen], ca_prefix: &str, waited: Duration) -> String {
    let hint = "give the box's address instead: --controller https://<box address>:8443";
    if seen.is_empty() {
        return format!(
            "no venued controller answered on this network within {} (mDNS). Is the PC on \
             the box's network, does the box listen for HTTPS on its LAN address \
             (tls.https-listen) with mdns.enabled, and does no firewall drop UDP port 5353? \
             Or {hint}",
            crate::domain::time::exact(
                jiff::SignedDuration::try_from(waited).unwrap_or(jiff::SignedDuration::MAX)
            )
        );
    }
    let lines: Vec<String> = seen
        .iter()
        .map(|s| format!("  - {}", s.describe(ca_prefix)))
        .collect();
    format!(
        "no venued controller on this network issued this code (its CA starts {}); found:\n{}\n\
         Check the code with staff, or {hint}",
        ca_prefix.to_ascii_uppercase(),
        lines.join("\n")
    )
}

/// The instance name inside a full service name such as `venue\.box._venued._tcp.local.`,
/// with DNS escapes undone.
#[cfg(any(feature = "agent", test))]
fn instance_name(fullname: &str) -> String {
    let bare = fullname
        .len()
        .checked_sub(SERVICE_TYPE.len() + 1)
        .filter(|&cut| {
            fullname.is_char_boundary(cut)
                && fullname[cut..].eq_ignore_ascii_case(&format!(".{SERVICE_TYPE}"))
        })
        .map_or(fullname, |cut| &fullname[..cut]);
    let mut name = String::with_capacity(bare.len());
    let mut chars = bare.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => name.extend(chars.next()),
            c => name.push(c),
        }
    }
    name
}

/// A DNS label for the advertisement's host record, from the box's host name.
#[cfg(any(feature = "controller", test))]
fn host_label(name: &str) -> String {
    let label: String = name
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "box".to_owned()
    } else {
        label.to_owned()
    }
}

/// The box's host name, the advertisement's instance name.
#[cfg(feature = "controller")]
fn box_name() -> String {
    ["/etc/hostname", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .map(|s| s.trim().to_owned())
        // An instance name is one DNS label: at most 63 bytes.
        .find(|s| !s.is_empty() && s.len() <= 63 && !s.chars().any(char::is_control))
        .unwrap_or_else(|| "venued".to_owned())
}

/// The controller's advertisement, withdrawn by [`Advertiser::stop`].
#[cfg(feature = "controller")]
pub struct Advertiser {
    daemon: mdns_sd::ServiceDaemon,
    fullname: String,
}

#[cfg(feature = "controller")]
impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "controller")]
impl Advertiser {
    /// Advertise the controller if the configuration allows it and a PC could reach the
    /// HTTPS listener; the log says which and why. `https` and `mqtts` are the bound
    /// listener addresses; `ca_fingerprint` is `None` while HTTPS is off. A failure is
    /// logged, never fatal: PCs can still enroll with `--controller`. Call it within the
    /// tokio runtime (a task logs mdns-sd's own reports).
    pub fn start(
        config: &crate::config::MdnsConfig,
        https: &[SocketAddr],
        mqtts: &[SocketAddr],
        ca_fingerprint: Option<&str>,
    ) -> Option<Self> {
        if !config.enabled {
            tracing::info!("mdns off (mdns.enabled = false): PCs enroll with --controller");
            return None;
        }
        let plan = match ca_fingerprint {
            None => Err("HTTPS is off (tls.https-listen is empty)".to_owned()),
            Some(fingerprint) => plan(https, mqtts, fingerprint),
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(why) => {
                tracing::info!("mdns off: {why}");
                return None;
            }
        };
        let name = box_name();
        match Self::register(&plan, &name) {
            Ok(me) => {
                tracing::info!(
                    service = %me.fullname,
                    https = %plan.listen,
                    ca_prefix = %plan.advert.ca_prefix,
                    "mdns: advertising {SERVICE_TYPE}"
                );
                Some(me)
            }
            Err(e) => {
                tracing::warn!(error = %e, "mdns: cannot advertise; PCs enroll with --controller");
                None
            }
        }
    }

    fn register(plan: &Plan, name: &str) -> Result<Self, mdns_sd::Error> {
        let daemon = mdns_sd::ServiceDaemon::new()?;
        match Self::announce(&daemon, plan, name) {
            Ok(fullname) => Ok(Self { daemon, fullname }),
            Err(e) => {
                // Its thread would otherwise live on, answering for nothing.
                let _ = daemon.shutdown();
                Err(e)
            }
        }
    }

    /// Register the service on `daemon`; its full name.
    fn announce(
        daemon: &mdns_sd::ServiceDaemon,
        plan: &Plan,
        name: &str,
    ) -> Result<String, mdns_sd::Error> {
        use mdns_sd::{IfKind, ServiceInfo};
        // Our own host record, not the box's `<hostname>.local`: avahi may already answer
        // for that one, and two responders disagreeing on its addresses make one of them
        // rename the box.
        let host = format!("{}-venued.local.", host_label(name));
        let txt = plan.advert.to_txt();
        let ip = plan.listen.ip();
        let info = if ip.is_unspecified() {
            // Every LAN interface of the listener's family ([::] also takes IPv4 on Linux).
            daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
            if ip.is_ipv4() {
                daemon.disable_interface(IfKind::IPv6)?;
            }
            ServiceInfo::new(SERVICE_TYPE, name, &host, (), plan.listen.port(), &txt[..])?
                .enable_addr_auto()
        } else {
            // Only the interface with that address: PCs elsewhere could not reach it.
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::Addr(ip))?;
            ServiceInfo::new(SERVICE_TYPE, name, &host, ip, plan.listen.port(), &txt[..])?
        };
        let fullname = info.get_fullname().to_owned();
        if let Ok(events) = daemon.monitor() {
            tokio::spawn(log_daemon_events(events));
        }
        daemon.register(info)?;
        Ok(fullname)
    }

    /// Withdraw the advertisement (PCs browsing see it go at once) and stop mdns-sd.
    pub async fn stop(self) {
        match self.daemon.unregister(&self.fullname) {
            Ok(done) => match tokio::time::timeout(Duration::from_secs(2), done.recv_async()).await
            {
                Ok(Ok(mdns_sd::UnregisterStatus::OK)) => {
                    // mdns-sd repeats the goodbye 120 ms later; let it go out.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    tracing::info!(service = %self.fullname, "mdns: advertisement withdrawn");
                }
                other => {
                    tracing::warn!(result = ?other, "mdns: withdrawing the advertisement failed");
                }
            },
            Err(e) => tracing::warn!(error = %e, "mdns: withdrawing the advertisement failed"),
        }
        if let Ok(stopped) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(1), stopped.recv_async()).await;
        }
    }
}

/// mdns-sd reports socket trouble and renames (two boxes with one host name) only here.
#[cfg(feature = "controller")]
async fn log_daemon_events(events: mdns_sd::Receiver<mdns_sd::DaemonEvent>) {
    while let Ok(event) = events.recv_async().await {
        match event {
            mdns_sd::DaemonEvent::Error(e) => tracing::warn!(error = %e, "mdns"),
            mdns_sd::DaemonEvent::NameChange(change) => tracing::info!(
                from = %change.original,
                to = %change.new_name,
                "mdns: name taken on the LAN, advertising under another"
            ),
            _ => {}
        }
    }
}

/// Browse the LAN for up to `timeout` for the controller that issued a code carrying
/// `ca_prefix`, returning as soon as it answers. `note` gets a line for each
/// advertisement ignored as malformed. Without a match the error lists what was found.
#[cfg(feature = "agent")]
pub async fn browse(
    ca_prefix: &str,
    timeout: Duration,
    note: &mut dyn FnMut(&str),
) -> Result<Seen, String> {
    use mdns_sd::{ServiceDaemon, ServiceEvent};
    let daemon = ServiceDaemon::new().map_err(|e| format!("cannot start mDNS discovery: {e}"))?;
    let events = daemon
        .browse(SERVICE_TYPE)
        .map_err(|e| format!("cannot start mDNS discovery: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: Vec<Seen> = Vec::new();
    let mut found = None;
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv_async()).await {
        let ServiceEvent::ServiceResolved(resolved) = event else {
            continue;
        };
        let one = Seen {
            name: instance_name(&resolved.fullname),
            addrs: usable_addrs(resolved.addresses.iter().map(|a| a.to_ip_addr())),
            advert: Advert::from_txt(resolved.txt_properties.iter().map(|p| (p.key(), p.val()))),
        };
        if one.matches(ca_prefix) {
            found = Some(one);
            break;
        }
        // The same box is resolved again as its records change: keep the newest.
        let old = seen.iter().position(|s| s.name == one.name);
        if let Err(e) = &one.advert
            && old.is_none_or(|i| seen[i].advert.as_ref().err() != Some(e))
        {
            tracing::warn!(name = %one.name, error = %e, "mdns: ignoring an advertisement");
            note(&format!("ignoring {}: {e}", shown(&one.name)));
        }
        match old {
            Some(i) => seen[i] = one,
            None => seen.push(one),
        }
    }
    // Stop answering and querying before enrollment carries on in this process.
    if let Ok(stopped) = daemon.shutdown() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stopped.recv_async()).await;
    }
    found.ok_or_else(|| no_match(&seen, ca_prefix, timeout))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OURS: &str = "3F9A1C44B07E55D2";

    fn advert(ca: &str) -> Advert {
        Advert {
            https: 8443,
            mqtts: Some(8883),
            ca_prefix: ca.into(),
        }
    }

    fn txt<'a>(pairs: &'a [(&'a str, &'a str)]) -> Result<Advert, BadTxt> {
        Advert::from_txt(pairs.iter().map(|(k, v)| (*k, Some(v.as_bytes()))))
    }

    fn seen(name: &str, ip: &str, advert: Result<Advert, BadTxt>) -> Seen {
        Seen {
            name: name.into(),
            addrs: vec![ip.parse().unwrap()],
            advert,
        }
    }

    #[test]
    fn txt_round_trips() {
        for a in [
            advert(OURS),
            Advert {
                https: 443,
                mqtts: None,
                ca_prefix: OURS.into(),
            },
        ] {
            let pairs = a.to_txt();
            let back = Advert::from_txt(pairs.iter().map(|(k, v)| (*k, Some(v.as_bytes()))));
            assert_eq!(back, Ok(a));
        }
        assert_eq!(
            advert(OURS).to_txt(),
            [
                ("v", "1".to_owned()),
                ("https", "8443".to_owned()),
                ("mqtts", "8883".to_owned()),
                ("ca", OURS.to_owned()),
            ]
        );
    }

    #[test]
    fn txt_decoding_forgives_case_and_unknown_keys() {
        let a = txt(&[
            ("V", "1"),
            ("HTTPS", "9443"),
            ("ca", "3f9a1c44b07e55d2"),
            ("color", "blue"),
        ])
        .unwrap();
        assert_eq!(a.https, 9443);
        assert_eq!(a.mqtts, None);
        assert_eq!(a.ca_prefix, OURS);
        // A repeated key: the first occurrence counts, the rest are not even read.
        let a = Advert::from_txt([
            ("v", Some(&b"1"[..])),
            ("https", Some(&b"9443"[..])),
            ("https", Some(&b"\xff"[..])),
            ("ca", Some(OURS.as_bytes())),
            ("Ca", None),
        ])
        .unwrap();
        assert_eq!((a.https, a.ca_prefix.as_str()), (9443, OURS));
    }

    #[test]
    fn malformed_txt_is_refused_with_a_reason() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "no v= key"),
            (&[("https", "8443"), ("ca", OURS)], "no v= key"),
            (&[("v", "2"), ("https", "8443"), ("ca", OURS)], "v=\"2\""),
            (&[("v", "1"), ("ca", OURS)], "no https= key"),
            (
                &[("v", "1"), ("https", "http"), ("ca", OURS)],
                "https=\"http\" is not a port",
            ),
            (&[("v", "1"), ("https", "0"), ("ca", OURS)], "is not a port"),
            (
                &[("v", "1"), ("https", "70000"), ("ca", OURS)],
                "is not a port",
            ),
            (
                &[("v", "1"), ("https", "-1"), ("ca", OURS)],
                "is not a port",
            ),
            (
                &[("v", "1"), ("https", "1"), ("mqtts", "x"), ("ca", OURS)],
                "mqtts=\"x\" is not a port",
            ),
            (&[("v", "1"), ("https", "1")], "no ca= key"),
            (
                &[("v", "1"), ("https", "1"), ("ca", "3F9A")],
                "not 16 hex digits",
            ),
            (
                &[("v", "1"), ("https", "1"), ("ca", "3F9A1C44B07E55ZZ")],
                "not 16 hex digits",
            ),
            (
                &[("v", "1"), ("https", "1"), ("ca", "3F:9A:1C:44:B0:7E")],
                "not 16 hex digits",
            ),
        ];
        for (pairs, reason) in cases {
            let e = txt(pairs).unwrap_err();
            assert!(e.to_string().contains(reason), "{pairs:?}: {e}");
            assert!(e.to_string().starts_with("malformed TXT record: "), "{e}");
        }
        // Bytes that are not text, a bare key, and a long value are refused and quoted
        // safely.
        let e = Advert::from_txt([("v", Some(&b"\xff\x00"[..]))]).unwrap_err();
        assert!(e.to_string().contains("not text"), "{e}");
        let e = Advert::from_txt([("v", None)]).unwrap_err();
        assert!(e.to_string().contains("has no value"), "{e}");
        let long = format!("\u{1b}[31m{}", "9".repeat(200));
        let e = txt(&[("v", "1"), ("https", &long), ("ca", OURS)]).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("\\u{1b}[31m") && shown.ends_with("\"… is not a port"),
            "{e}"
        );
        assert!(shown.len() < 120, "{e}");
    }

    #[test]
    fn the_box_whose_ca_matches_the_code_is_chosen() {
        let rival = seen("rival", "192.168.1.20", Ok(advert("0011223344556677")));
        let junk = seen("junk", "192.168.1.21", txt(&[("v", "1"), ("ca", OURS)]));
        let ours = seen("venue-box", "192.168.1.10", Ok(advert(OURS)));
        let all = [rival.clone(), junk.clone(), ours.clone()];
        assert_eq!(choose(&all, OURS), Some(&ours));
        // The code's prefix as typed (lower case) matches too.
        assert_eq!(choose(&all, &OURS.to_lowercase()), Some(&ours));
        assert_eq!(
            ours.targets(),
            ["192.168.1.10:8443".parse::<SocketAddr>().unwrap()]
        );
        // Only others, malformed ones or no address to dial: nothing is chosen.
        assert_eq!(choose(&all[..2], OURS), None);
        let unreachable = Seen {
            addrs: Vec::new(),
            ..ours.clone()
        };
        assert_eq!(choose(&[unreachable], OURS), None);
        assert_eq!(choose(&[], OURS), None);
        // A malformed advertisement carrying our CA is still not taken.
        let forged = seen(
            "forged",
            "192.168.1.22",
            txt(&[("v", "1"), ("https", "x"), ("ca", OURS)]),
        );
        assert_eq!(choose(&[forged], OURS), None);
        // Two boxes with our CA (one box seen twice under two names): the first.
        let again = seen("venue-box (2)", "192.168.1.11", Ok(advert(OURS)));
        assert_eq!(choose(&[again.clone(), ours], OURS), Some(&again));
    }

    #[test]
    fn no_match_lists_what_was_found_and_suggests_controller() {
        let rival = seen("rival", "192.168.1.20", Ok(advert("0011223344556677")));
        let junk = seen("junk", "192.168.1.21", txt(&[("v", "1"), ("ca", OURS)]));
        let nowhere = Seen {
            addrs: Vec::new(),
            ..seen("venue-box", "10.0.0.1", Ok(advert(OURS)))
        };
        let e = no_match(&[rival, junk, nowhere], OURS, Duration::from_secs(5));
        assert!(
            e.contains("issued this code (its CA starts 3F9A1C44B07E55D2)"),
            "{e}"
        );
        assert!(
            e.contains(
                "\"rival\" at 192.168.1.20:8443: another box (its CA starts 0011223344556677"
            ),
            "{e}"
        );
        assert!(
            e.contains("\"junk\" at 192.168.1.21: ignored, malformed TXT record: no https= key"),
            "{e}"
        );
        assert!(
            e.contains("\"venue-box\": issued this code, but has no address this PC can dial"),
            "{e}"
        );
        assert!(e.contains("--controller https://"), "{e}");
        let e = no_match(&[], OURS, Duration::from_millis(2500));
        assert!(e.contains("no venued controller answered"), "{e}");
        assert!(e.contains("within 2s 500ms"), "{e}");
        assert!(e.contains("--controller https://"), "{e}");
    }

    #[test]
    fn only_dialable_addresses_are_kept_ipv4_first() {
        let ips = [
            "fe80::1",
            "2001:db8::2",
            "192.168.1.10",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "224.0.0.251",
            "10.0.0.5",
            "192.168.1.10",
        ]
        .map(|s| s.parse::<IpAddr>().unwrap());
        assert_eq!(
            usable_addrs(ips),
            ["10.0.0.5", "192.168.1.10", "2001:db8::2"].map(|s| s.parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn the_controller_advertises_only_a_listener_pcs_can_reach() {
        let fp = "3F:9A:1C:44:B0:7E:55:D2:11:22:33";
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        let p = plan(
            &addrs(&["127.0.0.1:8443", "192.168.1.10:9443"]),
            &addrs(&["127.0.0.1:8883", "0.0.0.0:8884"]),
            fp,
        )
        .unwrap();
        assert_eq!(p.listen, "192.168.1.10:9443".parse().unwrap());
        assert_eq!(
            p.advert,
            Advert {
                https: 9443,
                mqtts: Some(8884),
                ca_prefix: OURS.into()
            }
        );
        let p = plan(&addrs(&["[::]:8443"]), &addrs(&["127.0.0.1:8883"]), fp).unwrap();
        assert_eq!(p.advert.mqtts, None);
        let e = plan(&addrs(&["127.0.0.1:8443", "[::1]:8443"]), &[], fp).unwrap_err();
        assert!(
            e.contains("only on loopback (127.0.0.1:8443, [::1]:8443)"),
            "{e}"
        );
        assert!(e.contains("tls.https-listen"), "{e}");
        let e = plan(&[], &[], fp).unwrap_err();
        assert!(e.contains("HTTPS is off"), "{e}");
        assert!(plan(&addrs(&["0.0.0.0:8443"]), &[], "3F:9A").is_err());
    }

    #[test]
    fn names_are_unescaped_and_host_labels_are_clean() {
        assert_eq!(instance_name("venue-box._venued._tcp.local."), "venue-box");
        assert_eq!(
            instance_name("Venue\\.Box (2)._VENUED._tcp.local."),
            "Venue.Box (2)"
        );
        assert_eq!(instance_name("a\\\\b._venued._tcp.local."), "a\\b");
        assert_eq!(instance_name("odd"), "odd");
        assert_eq!(host_label("Venue_Box.example.com"), "venue-box");
        assert_eq!(host_label("--"), "box");
        assert_eq!(host_label(&"x".repeat(80)).len(), 40);
    }
}
