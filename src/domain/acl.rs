//! Topic ACLs.
//!
//! Pure MQTT 3.1.1 topic logic (§4.7) for the broker front: validity, matching, and the
//! two relations between filters that the ACL needs, containment (may a subscriber's
//! wildcard filter be allowed?) and overlap (could an integration rule reach a topic the
//! controller owns?).
//!
//! Every function takes arbitrary client input, so none of them panics or recurses, and
//! they answer `false` for invalid names rather than reasoning about them: an ACL built on
//! them therefore refuses what it does not understand.

use serde::{Deserialize, Serialize};

/// The rules §4.7 sets for topic names and filters alike.
///
/// `&str` already rules out the surrogate code points that §1.5.3 forbids.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= usize::from(u16::MAX) && !name.as_bytes().contains(&0)
}

/// Validity per MQTT 3.1.1 §4.7: non-empty, at most 65535 bytes, no NUL char.
/// A PUBLISH topic: no '+' or '#' anywhere.
pub fn valid_topic(topic: &str) -> bool {
    valid_name(topic) && !topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// Validity per MQTT 3.1.1 §4.7: non-empty, at most 65535 bytes, no NUL char.
/// '+' only as a whole level, '#' only as the whole last level.
pub fn valid_filter(filter: &str) -> bool {
    // Bytes rather than levels: this runs on every PUBLISH and SUBSCRIBE, and both
    // wildcards and '/' are ASCII, so they never sit inside a multi-byte char.
    let bytes = filter.as_bytes();
    let level_starts = |i: usize| i == 0 || bytes.get(i - 1) == Some(&b'/');
    let level_ends = |i: usize| bytes.get(i + 1).is_none_or(|&b| b == b'/');
    valid_name(filter)
        && bytes.iter().enumerate().all(|(i, &b)| match b {
            b'+' => level_starts(i) && level_ends(i),
            b'#' => level_starts(i) && i + 1 == bytes.len(),
            _ => true,
        })
}

/// A filter whose first level is a wildcard never reaches names starting with '$'
/// (§4.7.2), so `$SYS` and friends stay out of reach of a blanket `#` or `+/...`.
fn wildcard_hides(filter: &str, name: &str) -> bool {
    filter.starts_with(['+', '#']) && name.starts_with('$')
}

/// The levels of a valid filter, for comparing filters level by level.
///
/// Such a walk lets '#' stand for no level at all, which is wrong where that leaves no
/// topic: "#" (nothing) and "/#" (the empty string, not a valid topic). They are the same
/// sets as "+/#" and "/+/#", so walk those instead. Otherwise the walk would find "+/#" not
/// containing "#", or "+" overlapping "/#" on "". (It still lets '+' match the empty string
/// as a one-level topic; the proptests check that this changes no answer.)
fn levels(filter: &str) -> std::str::Split<'_, char> {
    match filter {
        "#" => "+/#",
        "/#" => "/+/#",
        _ => filter,
    }
    .split('/')
}

/// Does `topic` (valid topic name) match `filter` (valid filter)? Topics starting with '$' are
/// never matched by a filter whose first level is a wildcard (§4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if !valid_filter(filter) || !valid_topic(topic) || wildcard_hides(filter, topic) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            // '#' also matches the parent level, i.e. no level at all.
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            _ => return false,
        }
    }
}

/// Is every topic that `inner` matches also matched by `outer`? (containment, for checking a
/// subscriber's wildcard filter against an allowed pattern). e.g. contains("a/#","a/+/b")=true,
/// contains("a/+","a/#")=false, contains("a/#","a")=true (since "a/#" matches "a"),
/// contains("+/x","$SYS/x")=false.
///
/// Exact, not just sound: `false` means some topic matches `inner` but not `outer`.
/// `false` if either filter is invalid.
pub fn contains(outer: &str, inner: &str) -> bool {
    if !valid_filter(outer) || !valid_filter(inner) || wildcard_hides(outer, inner) {
        return false;
    }
    let (mut o, mut i) = (levels(outer), levels(inner));
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) | (None, None) => return true,
            // `inner` may stop here or go on, or its '#' takes any number of levels:
            // only an outer '#' at this level covers that.
            (None, Some(_)) | (Some(_), None) | (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            // An inner '+' falls here too and only equals an outer '+', handled above.
            (Some(ol), Some(il)) if ol == il => {}
            _ => return false,
        }
    }
}

/// Could some topic match both filters? (used to refuse integration rules that would let a
/// client publish into controller-owned topics).
///
/// Exact. `false` if either filter is invalid (it matches nothing): validate rules first.
pub fn overlaps(a: &str, b: &str) -> bool {
    if !valid_filter(a) || !valid_filter(b) || wildcard_hides(a, b) || wildcard_hides(b, a) {
        return false;
    }
    let (mut a, mut b) = (levels(a), levels(b));
    loop {
        match (a.next(), b.next()) {
            // Whatever the other filter still asks for, some tail satisfies it, and '#'
            // takes that tail (or none, at the parent level).
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

/// What a rule grants on the topics its filter matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Subscribe.
    Read,
    /// Publish.
    Write,
    ReadWrite,
}

impl Access {
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// A grant of `access` on every topic `filter` matches. A rule with an invalid filter grants
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub filter: String,
    pub access: Access,
}

/// One account's rules. Deny by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
}

impl Acl {
    pub fn new(rules: Vec<Rule>) -> Self {
        Acl { rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// May this client PUBLISH to `topic` (also used for its will topic)? false for invalid
    /// topics and for any topic starting with '$'.
    pub fn may_publish(&self, topic: &str) -> bool {
        // '$' topics are the broker's (§4.7.2), whatever the rules say.
        valid_topic(topic)
            && !topic.starts_with('$')
            && self
                .rules
                .iter()
                .any(|rule| rule.access.can_write() && matches(&rule.filter, topic))
    }

    /// May this client SUBSCRIBE to `filter`? Only if `filter` is valid, does not start with '$'
    /// (this also refuses `$share/...` shared subscriptions and `$SYS`), and is contained in some
    /// rule's filter that can_read.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        // One rule must cover the whole filter, not several together: easy to explain to
        // whoever writes the rules, and never more generous than they meant.
        valid_filter(filter)
            && !filter.starts_with('$')
            && self
                .rules
                .iter()
                .any(|rule| rule.access.can_read() && contains(&rule.filter, filter))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    #[test]
    fn spec_matching_examples() {
        // §4.7.1.2
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(matches("sport/#", "sport"));
        // §4.7.1.3
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        // §4.7.2
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // '$' is only special at the start.
        assert!(matches("a/+", "a/$x"));
    }

    #[test]
    fn other_matching_cases() {
        let cases = [
            ("#", "a", true),
            ("#", "/", true),
            ("#", "a/b/c", true),
            ("+/#", "a", true),
            ("+/#", "$x", false),
            ("a", "a", true),
            ("a", "a/", false),
            ("a/", "a", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("a/+/b", "a/b", false),
            ("/#", "/", true),
            ("/#", "a", false),
            ("a/b", "a/c", false),
            // Invalid on either side: no match.
            ("a/#/b", "a/x/b", false),
            ("a", "a+", false),
            ("", "", false),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(
                matches(filter, topic),
                want,
                "matches({filter:?}, {topic:?})"
            );
        }
    }

    #[test]
    fn validity() {
        for f in [
            "sport/tennis#",
            "sport+",
            "#/a",
            "a/#/b",
            "a/b+/c",
            "##",
            "++",
            "",
            "a\0b",
        ] {
            assert!(!valid_filter(f), "{f:?}");
        }
        for f in [
            "a/+/b", "#", "+", "+/+", "/", "a//b", "/+", "sport/#", "+/#", "$SYS/#", "$",
        ] {
            assert!(valid_filter(f), "{f:?}");
        }
        for t in ["a/+", "a/#", "+", "#", "a+b", "a#", "", "a\0b", "\0"] {
            assert!(!valid_topic(t), "{t:?}");
        }
        for t in ["a", "/", "a//b", "$SYS/x", " ", "é/ü"] {
            assert!(valid_topic(t), "{t:?}");
        }
        let longest = "a".repeat(65535);
        assert!(valid_topic(&longest) && valid_filter(&longest));
        let too_long = "a".repeat(65536);
        assert!(!valid_topic(&too_long) && !valid_filter(&too_long));
    }

    #[test]
    fn many_levels_do_not_recurse() {
        let deep = "/".repeat(65534);
        assert!(matches(&deep, &deep));
        assert!(contains(&deep, &deep));
        assert!(overlaps(&deep, &deep));
        // 32768 levels each.
        let (plus, empty) = (["+"; 32768].join("/"), "/".repeat(32767));
        assert!(matches(&plus, &empty));
        assert!(contains(&plus, &empty));
    }

    #[test]
    fn containment_table() {
        let cases = [
            ("a/#", "a/+/b", true),
            ("a/+", "a/#", false),
            ("a/#", "a", true),
            ("+/x", "$SYS/x", false),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/#", false),
            ("#", "#", true),
            ("#", "+/#", true),
            ("+/#", "#", true),
            ("+/+/#", "#", false),
            ("+/+/#", "/#", true),
            ("/+/#", "/#", true),
            ("/#", "/+/#", true),
            ("/#", "/", true),
            ("#", "a/b", true),
            ("a/#", "a/#", true),
            ("a/#", "b", false),
            ("a/#", "a/", true),
            ("a/+", "a", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a", "a/#", false),
            ("+", "a", true),
            ("+", "", false),
            ("a/+/#", "a/#", false),
            ("a/+/#", "a/b", true),
            ("a/+/#", "a/b/#", true),
            // Invalid on either side: refused.
            ("#", "a/#/b", false),
            ("a/#/b", "a/x/b", false),
        ];
        for (outer, inner, want) in cases {
            assert_eq!(
                contains(outer, inner),
                want,
                "contains({outer:?}, {inner:?})"
            );
        }
    }

    #[test]
    fn overlap_table() {
        let cases = [
            ("a/#", "a", true),
            ("a/+", "a", false),
            ("a/+", "+/b", true),
            ("a/b", "a/c", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/#", false),
            ("$SYS/#", "$SYS/+", true),
            ("#", "+", true),
            ("+/#", "#", true),
            ("a/#", "b/#", false),
            ("a/+/c", "a/b/+", true),
            ("a/+/c", "a/b", false),
            ("+/+", "+", false),
            ("+", "/#", false),
            ("+/#", "/#", true),
            ("/", "+/+", true),
            ("a/#", "", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(overlaps(a, b), want, "overlaps({a:?}, {b:?})");
            assert_eq!(overlaps(b, a), want, "overlaps({b:?}, {a:?})");
        }
    }

    #[test]
    fn acl_denies_by_default_and_guards_dollar() {
        let none = Acl::default();
        assert!(!none.may_publish("a") && !none.may_subscribe("a"));

        let acl = Acl::new(vec![
            Rule {
                filter: "#".into(),
                access: Access::ReadWrite,
            },
            Rule {
                filter: "$SYS/#".into(),
                access: Access::ReadWrite,
            },
        ]);
        assert!(acl.may_publish("a/b") && acl.may_subscribe("a/#") && acl.may_subscribe("#"));
        for name in ["$SYS/x", "$share/g/a", "$x"] {
            assert!(!acl.may_publish(name), "{name}");
            assert!(!acl.may_subscribe(name), "{name}");
        }
        assert!(!acl.may_publish("a/+") && !acl.may_publish(""));
        assert!(!acl.may_subscribe("a/#/b") && !acl.may_subscribe(""));
    }

    #[test]
    fn acl_separates_read_and_write() {
        let acl = Acl::new(vec![
            Rule {
                filter: "venue/+/cmd".into(),
                access: Access::Read,
            },
            Rule {
                filter: "venue/pc-1/#".into(),
                access: Access::Write,
            },
            // Grants nothing: invalid.
            Rule {
                filter: "venue/#/x".into(),
                access: Access::ReadWrite,
            },
        ]);
        assert!(acl.may_subscribe("venue/+/cmd"));
        assert!(acl.may_subscribe("venue/pc-2/cmd"));
        assert!(!acl.may_subscribe("venue/#"));
        assert!(!acl.may_subscribe("venue/pc-1/state"));
        assert!(!acl.may_publish("venue/pc-2/cmd"));
        assert!(acl.may_publish("venue/pc-1/state"));
        assert!(acl.may_publish("venue/pc-1"));
        assert!(!acl.may_publish("venue/#/x") && !acl.may_publish("venue/a/x"));
        assert_eq!(acl.rules().len(), 3);
    }

    #[test]
    fn access_serde_names() {
        let json =
            serde_json::to_string(&[Access::Read, Access::Write, Access::ReadWrite]).unwrap();
        assert_eq!(json, r#"["read","write","read_write"]"#);
        let rule: Rule = serde_json::from_str(r#"{"filter":"a/#","access":"read_write"}"#).unwrap();
        assert_eq!(
            rule,
            Rule {
                filter: "a/#".into(),
                access: Access::ReadWrite
            }
        );
        assert!(rule.access.can_read() && rule.access.can_write());
        assert!(Access::Read.can_read() && !Access::Read.can_write());
        assert!(!Access::Write.can_read() && Access::Write.can_write());
    }

    // Small alphabets so that random names collide; "$x" exercises §4.7.2.
    const LITERALS: [&str; 4] = ["a", "b", "", "$x"];

    fn literal() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(&LITERALS[..])
    }

    /// Topics of 1..=5 levels (the lone empty level gives the invalid "").
    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(literal(), 1..=5).prop_map(|levels| levels.join("/"))
    }

    /// Filters of 1..=4 levels, wildcards only where valid.
    fn filter() -> impl Strategy<Value = String> {
        let level = prop_oneof![3 => literal(), 1 => Just("+")];
        (proptest::collection::vec(level, 0..4), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
    }

    fn access() -> impl Strategy<Value = Access> {
        prop_oneof![
            Just(Access::Read),
            Just(Access::Write),
            Just(Access::ReadWrite)
        ]
    }

    fn acl() -> impl Strategy<Value = Acl> {
        proptest::collection::vec((filter(), access()), 0..4).prop_map(|rules| {
            Acl::new(
                rules
                    .into_iter()
                    .map(|(filter, access)| Rule { filter, access })
                    .collect(),
            )
        })
    }

    /// Every topic of 1..=5 levels over the literals plus one that no filter names.
    ///
    /// For filters of at most 4 levels over `LITERALS` this is an exact oracle: matching
    /// only compares levels for equality, a topic deeper than 5 levels behaves like its
    /// 5-level prefix, and an unnamed first level starting with '$' matches nothing.
    static TOPICS: LazyLock<Vec<String>> = LazyLock::new(|| {
        let alphabet = [LITERALS.as_slice(), &["z"]].concat();
        let mut all: Vec<String> = Vec::new();
        let mut layer: Vec<String> = alphabet.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let next = layer
                .iter()
                .flat_map(|t| alphabet.iter().map(move |l| format!("{t}/{l}")))
                .collect();
            all.extend(std::mem::replace(&mut layer, next));
        }
        all
    });

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn contains_is_sound(outer in filter(), inner in filter(), t in topic()) {
            if contains(&outer, &inner) && matches(&inner, &t) {
                prop_assert!(matches(&outer, &t));
            }
        }

        #[test]
        fn contains_is_reflexive_and_hash_contains_non_dollar(f in filter()) {
            if valid_filter(&f) {
                prop_assert!(contains(&f, &f));
                if !f.starts_with('$') {
                    prop_assert!(contains("#", &f));
                }
            }
        }

        #[test]
        fn overlaps_is_symmetric_and_sound(a in filter(), b in filter(), t in topic()) {
            prop_assert_eq!(overlaps(&a, &b), overlaps(&b, &a));
            if matches(&a, &t) && matches(&b, &t) {
                prop_assert!(overlaps(&a, &b));
            }
        }

        // Stronger than the two above: over every topic that can tell filters apart.
        #[test]
        fn contains_and_overlaps_are_exact(a in filter(), b in filter()) {
            // An invalid filter matches nothing, so the oracle would call it contained.
            prop_assume!(valid_filter(&a) && valid_filter(&b));
            let in_b: Vec<_> = TOPICS.iter().filter(|t| matches(&b, t)).collect();
            prop_assert_eq!(contains(&a, &b), in_b.iter().all(|t| matches(&a, t)));
            let shared = in_b.iter().any(|t| matches(&a, t));
            prop_assert_eq!(overlaps(&a, &b), shared);
        }

        #[test]
        fn acl_is_never_bypassed(acl in acl(), t in topic(), f in filter()) {
            if acl.may_publish(&t) {
                prop_assert!(acl.rules().iter().any(|r| r.access.can_write() && matches(&r.filter, &t)));
            }
            if acl.may_subscribe(&f) {
                for t in TOPICS.iter().filter(|t| matches(&f, t)) {
                    prop_assert!(
                        acl.rules().iter().any(|r| r.access.can_read() && matches(&r.filter, t)),
                        "{f:?} delivers {t:?}"
                    );
                }
            }
        }

        #[test]
        fn arbitrary_input_does_not_panic(a in "\\PC*", b in "\\PC*") {
            poke(&a, &b);
        }

        // Arbitrary strings rarely hold '/', '+' and '#' together; these do.
        #[test]
        fn topic_like_input_does_not_panic(a in "[ab/+#$\\x00]{0,12}", b in "[ab/+#$\\x00]{0,12}") {
            poke(&a, &b);
        }
    }

    fn poke(a: &str, b: &str) {
        let _ = (valid_topic(a), valid_filter(a), matches(a, b));
        let _ = (contains(a, b), overlaps(a, b));
        let acl = Acl::new(vec![Rule {
            filter: a.to_owned(),
            access: Access::ReadWrite,
        }]);
        let _ = (acl.may_publish(b), acl.may_subscribe(b));
    }
}
