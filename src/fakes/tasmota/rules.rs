//! Tasmota rule text (`ON <trigger> DO <command> ENDON`), parsed into a structure.
//!
//! The fake's rule engine runs what this parser returns, and other components reuse it to
//! check what the rule text venued uploads really means on a plug (for instance that
//! `DO Power1 OFF; RuleTimer1 0` is *one* command, `Power1` with the parameter
//! `OFF; RuleTimer1 0`, which firmware answers with the state instead of switching off:
//! several commands need `Backlog`).
//!
//! Syntax as the firmware reads it (xdrv_10_rules.ino): not case-sensitive; each rule is
//! `ON <trigger> DO <commands> ENDON` (or `BREAK`: when that rule fires, later rules of the
//! same set are skipped for that event); the words need spaces around them. Firmware skips
//! a malformed rule silently and stops reading the set there; [`parse_rules`] reports it,
//! and [`parse_rules_prefix`] returns the well-formed rules before it, which is what the
//! firmware runs.

use std::fmt;

/// What makes a rule fire. Only the triggers venued's fail-safe uses are modelled; any
/// other well-formed trigger is kept verbatim in [`Trigger::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `System#Boot`: once per boot, when MQTT first connects (at once without MQTT).
    SystemBoot,
    /// `Rules#Timer=<n>`: RuleTimer `n` (1..=8) ran out.
    RulesTimer(u8),
    /// `Mqtt#Connected`: every (re)connection to the broker.
    MqttConnected,
    /// `Mqtt#Disconnected`: the broker connection was lost.
    MqttDisconnected,
    /// `Power<relay>#State` (any change) or `Power<relay>#State=<0|1>`.
    PowerState { relay: u8, state: Option<bool> },
    /// Any other trigger, as written (`ENERGY#Power>100`, `Button1#State`, ...). The fake
    /// never fires these.
    Other(String),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SystemBoot => f.write_str("System#Boot"),
            Self::RulesTimer(n) => write!(f, "Rules#Timer={n}"),
            Self::MqttConnected => f.write_str("Mqtt#Connected"),
            Self::MqttDisconnected => f.write_str("Mqtt#Disconnected"),
            Self::PowerState { relay, state: None } => write!(f, "Power{relay}#State"),
            Self::PowerState {
                relay,
                state: Some(s),
            } => write!(f, "Power{relay}#State={}", u8::from(*s)),
            Self::Other(t) => f.write_str(t),
        }
    }
}

/// One Tasmota command as written: `RuleTimer1 120` is name `RuleTimer`, index 1,
/// parameter `120`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The command word without its trailing number, as written (`Power`, `ruletimer`).
    pub name: String,
    /// The trailing number of the command word (`Power1` → 1), if there is one.
    pub index: Option<u32>,
    /// Everything after the command word, trimmed; empty for a query.
    pub param: String,
}

impl Command {
    /// Split a command line the way firmware does: the command word ends at the first
    /// space or `=` (a `=` stays in the parameter, as for `Var1=1`). None for a blank line.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let end = line
            .find([' ', '\t', '\r', '\n', '='])
            .unwrap_or(line.len());
        let (word, rest) = line.split_at(end);
        let param = rest.strip_prefix([' ', '\t', '\r', '\n']).unwrap_or(rest);
        let digits = word.len() - word.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (name, index) = if digits > 0 && digits < word.len() {
            let (n, i) = word.split_at(word.len() - digits);
            match i.parse::<u32>() {
                Ok(i) => (n, Some(i)),
                Err(_) => (word, None),
            }
        } else {
            (word, None)
        };
        Some(Self {
            name: name.to_owned(),
            index,
            param: param.trim().to_owned(),
        })
    }

    /// Whether this is the command `name` (case-insensitive, index ignored).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(i) = self.index {
            write!(f, "{i}")?;
        }
        if !self.param.is_empty() {
            write!(f, " {}", self.param)?;
        }
        Ok(())
    }
}

/// One `ON ... DO ... ENDON` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub trigger: Trigger,
    /// The commands run when the trigger fires, in order. `DO Backlog a; b` is split into
    /// its commands (with [`Rule::backlog`] set); anything else is one command, even when
    /// its parameter holds a `;`.
    pub actions: Vec<Command>,
    /// The actions came from a `Backlog`: firmware queues them and runs them one at a
    /// time, about 200 ms apart, after the rule.
    pub backlog: bool,
    /// The rule ended with `BREAK`: once it fires, later rules of its set are skipped for
    /// that event.
    pub stop: bool,
}

/// Why rule text is malformed. `rule` counts the rules of the set from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule {rule}: expected ON, found {found:?}")]
    ExpectedOn { rule: usize, found: String },
    #[error("rule {rule}: no trigger after ON")]
    EmptyTrigger { rule: usize },
    #[error("rule {rule}: the trigger {trigger:?} has a space in it (is DO missing?)")]
    SpaceInTrigger { rule: usize, trigger: String },
    #[error("rule {rule}: {trigger:?} {reason}")]
    BadTrigger {
        rule: usize,
        trigger: String,
        reason: &'static str,
    },
    #[error("rule {rule}: no DO after the trigger")]
    MissingDo { rule: usize },
    #[error("rule {rule}: no command after DO")]
    EmptyActions { rule: usize },
    #[error("rule {rule}: no ENDON or BREAK")]
    MissingEndon { rule: usize },
}

/// Parse a whole rule set (the text of `Rule1`); empty text is an empty set.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, RuleError> {
    let (rules, error) = parse_rules_prefix(text);
    match error {
        Some(e) => Err(e),
        None => Ok(rules),
    }
}

/// The well-formed rules up to the first error, and that error: what firmware runs.
pub fn parse_rules_prefix(text: &str) -> (Vec<Rule>, Option<RuleError>) {
    let words = words(text);
    let mut rules = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let n = rules.len() + 1;
        match parse_one(text, &words, &mut i, n) {
            Ok(rule) => rules.push(rule),
            Err(e) => return (rules, Some(e)),
        }
    }
    (rules, None)
}

/// Whitespace-separated words of `text` with their byte ranges.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

fn parse_one(
    text: &str,
    words: &[(usize, usize)],
    i: &mut usize,
    rule: usize,
) -> Result<Rule, RuleError> {
    let word = |k: usize| &text[words[k].0..words[k].1];
    if !word(*i).eq_ignore_ascii_case("ON") {
        return Err(RuleError::ExpectedOn {
            rule,
            found: word(*i).to_owned(),
        });
    }
    *i += 1;
    let trigger_start = *i;
    while *i < words.len() && !word(*i).eq_ignore_ascii_case("DO") {
        *i += 1;
    }
    if *i == trigger_start {
        return Err(if *i < words.len() {
            RuleError::EmptyTrigger { rule }
        } else {
            RuleError::MissingDo { rule }
        });
    }
    if *i == words.len() {
        return Err(RuleError::MissingDo { rule });
    }
    if *i - trigger_start > 1 {
        return Err(RuleError::SpaceInTrigger {
            rule,
            trigger: text[words[trigger_start].0..words[*i - 1].1].to_owned(),
        });
    }
    let trigger = parse_trigger(word(trigger_start), rule)?;
    *i += 1; // DO
    let actions_start = *i;
    while *i < words.len()
        && !word(*i).eq_ignore_ascii_case("ENDON")
        && !word(*i).eq_ignore_ascii_case("BREAK")
    {
        *i += 1;
    }
    if *i == words.len() {
        return Err(RuleError::MissingEndon { rule });
    }
    if *i == actions_start {
        return Err(RuleError::EmptyActions { rule });
    }
    let stop = word(*i).eq_ignore_ascii_case("BREAK");
    let body = &text[words[actions_start].0..words[*i - 1].1];
    *i += 1;
    let (actions, backlog) = split_actions(body);
    if actions.is_empty() {
        return Err(RuleError::EmptyActions { rule });
    }
    Ok(Rule {
        trigger,
        actions,
        backlog,
        stop,
    })
}

/// `Backlog a; b` → ([a, b], true); anything else → ([it], false).
fn split_actions(body: &str) -> (Vec<Command>, bool) {
    match Command::parse(body) {
        Some(c) if c.is("Backlog") && matches!(c.index, None | Some(0..=3)) => (
            split_backlog(&c.param)
                .iter()
                .filter_map(|l| Command::parse(l))
                .collect(),
            true,
        ),
        Some(c) => (vec![c], false),
        None => (Vec::new(), false),
    }
}

/// The commands of a Backlog parameter: split at `;` (not inside `{}`), each trimmed and
/// without a repeated leading `Backlog`, blanks dropped (as CmndBacklog does).
pub fn split_backlog(param: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in param.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ';' && depth <= 0 {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| {
            let mut s = s.trim().to_owned();
            while s
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("Backlog"))
            {
                s = s[7..]
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .trim()
                    .to_owned();
            }
            s
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_trigger(t: &str, rule: usize) -> Result<Trigger, RuleError> {
    let bad = |reason| RuleError::BadTrigger {
        rule,
        trigger: t.to_owned(),
        reason,
    };
    let Some((name, rest)) = t.split_once('#') else {
        return Ok(Trigger::Other(t.to_owned()));
    };
    // The comparison starts at the first operator character; `Rules#Timer=1`.
    let op_at = rest
        .find(['=', '<', '>', '!', '|', '$'])
        .unwrap_or(rest.len());
    let (field, compare) = rest.split_at(op_at);
    let value = compare.strip_prefix('=').filter(|v| !v.starts_with('='));
    let upper = name.to_ascii_uppercase();
    let field = field.to_ascii_uppercase();
    match (upper.as_str(), field.as_str()) {
        ("SYSTEM", "BOOT") if compare.is_empty() => Ok(Trigger::SystemBoot),
        ("MQTT", "CONNECTED") if compare.is_empty() => Ok(Trigger::MqttConnected),
        ("MQTT", "DISCONNECTED") if compare.is_empty() => Ok(Trigger::MqttDisconnected),
        ("RULES", "TIMER") => match value.map(str::parse::<u8>) {
            Some(Ok(n @ 1..=8)) => Ok(Trigger::RulesTimer(n)),
            Some(_) => Err(bad("names no RuleTimer (1 to 8)")),
            None => Ok(Trigger::Other(t.to_owned())),
        },
        (p, "STATE") if p.starts_with("POWER") => {
            let Ok(relay @ 1..=32) = p[5..].parse::<u8>() else {
                return Ok(Trigger::Other(t.to_owned()));
            };
            match (compare.is_empty(), value) {
                (true, _) => Ok(Trigger::PowerState { relay, state: None }),
                (false, Some("0")) => Ok(Trigger::PowerState {
                    relay,
                    state: Some(false),
                }),
                (false, Some("1")) => Ok(Trigger::PowerState {
                    relay,
                    state: Some(true),
                }),
                (false, Some(_)) => Err(bad("compares a relay state with something not 0 or 1")),
                (false, None) => Ok(Trigger::Other(t.to_owned())),
            }
        }
        _ => Ok(Trigger::Other(t.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cmd(name: &str, index: Option<u32>, param: &str) -> Command {
        Command {
            name: name.into(),
            index,
            param: param.into(),
        }
    }

    #[test]
    fn the_dead_man_recipe() {
        let rules = parse_rules(
            "ON System#Boot DO RuleTimer1 120 ENDON ON Rules#Timer=1 DO Power1 OFF ENDON",
        )
        .unwrap();
        assert_eq!(
            rules,
            vec![
                Rule {
                    trigger: Trigger::SystemBoot,
                    actions: vec![cmd("RuleTimer", Some(1), "120")],
                    backlog: false,
                    stop: false,
                },
                Rule {
                    trigger: Trigger::RulesTimer(1),
                    actions: vec![cmd("Power", Some(1), "OFF")],
                    backlog: false,
                    stop: false,
                },
            ]
        );
    }

    #[test]
    fn keywords_and_triggers_are_case_insensitive_and_spacing_is_free() {
        let rules = parse_rules(
            "on mqtt#disconnected  do ruletimer2 300 endon\n  On MQTT#Connected Do RuleTimer2 0 EndOn",
        )
        .unwrap();
        assert_eq!(rules[0].trigger, Trigger::MqttDisconnected);
        assert_eq!(rules[0].actions, vec![cmd("ruletimer", Some(2), "300")]);
        assert_eq!(rules[1].trigger, Trigger::MqttConnected);
    }

    #[test]
    fn backlog_actions_are_split_and_other_semicolons_are_not() {
        let r = parse_rules("ON Power1#State=1 DO Backlog RuleTimer1 5; Power1 ON ENDON").unwrap();
        assert_eq!(
            r[0].trigger,
            Trigger::PowerState {
                relay: 1,
                state: Some(true)
            }
        );
        assert!(r[0].backlog);
        assert_eq!(
            r[0].actions,
            vec![cmd("RuleTimer", Some(1), "5"), cmd("Power", Some(1), "ON")]
        );
        // Without Backlog firmware runs one command whose parameter holds the rest.
        let r = parse_rules("ON Rules#Timer=1 DO Power1 OFF; RuleTimer1 0 ENDON").unwrap();
        assert!(!r[0].backlog);
        assert_eq!(
            r[0].actions,
            vec![cmd("Power", Some(1), "OFF; RuleTimer1 0")]
        );
    }

    #[test]
    fn break_ends_a_rule_and_stops_the_set() {
        let r =
            parse_rules("ON Power1#State DO Power1 OFF BREAK ON System#Boot DO Power1 ON ENDON")
                .unwrap();
        assert!(r[0].stop);
        assert_eq!(
            r[0].trigger,
            Trigger::PowerState {
                relay: 1,
                state: None
            }
        );
        assert!(!r[1].stop);
    }

    #[test]
    fn other_triggers_are_kept_verbatim() {
        let r = parse_rules(
            "ON ENERGY#Power>100 DO Power1 OFF ENDON ON Button1#State DO Power1 2 ENDON",
        )
        .unwrap();
        assert_eq!(r[0].trigger, Trigger::Other("ENERGY#Power>100".into()));
        assert_eq!(r[1].trigger, Trigger::Other("Button1#State".into()));
        assert_eq!(r[1].trigger.to_string(), "Button1#State");
    }

    #[test]
    fn malformed_text_is_reported_and_the_prefix_kept() {
        assert_eq!(parse_rules(""), Ok(vec![]));
        assert_eq!(parse_rules("   \n"), Ok(vec![]));
        assert_eq!(
            parse_rules("ON System#Boot DO RuleTimer1 2"),
            Err(RuleError::MissingEndon { rule: 1 })
        );
        assert_eq!(
            parse_rules("ON System#Boot RuleTimer1 2 ENDON"),
            Err(RuleError::MissingDo { rule: 1 })
        );
        assert_eq!(
            parse_rules("ON DO Power1 OFF ENDON"),
            Err(RuleError::EmptyTrigger { rule: 1 })
        );
        assert_eq!(
            parse_rules("ON System#Boot DO ENDON"),
            Err(RuleError::EmptyActions { rule: 1 })
        );
        assert!(matches!(
            parse_rules("ON Rules#Timer=9 DO Power1 OFF ENDON"),
            Err(RuleError::BadTrigger { rule: 1, .. })
        ));
        assert!(matches!(
            parse_rules("ON Power1#State=ON DO Power1 OFF ENDON"),
            Err(RuleError::BadTrigger { .. })
        ));
        assert!(matches!(
            parse_rules("ON Rules#Timer = 1 DO Power1 OFF ENDON"),
            Err(RuleError::SpaceInTrigger { rule: 1, .. })
        ));
        let (ok, err) = parse_rules_prefix(
            "ON System#Boot DO RuleTimer1 2 ENDON RuleTimer1 3 ON Rules#Timer=1 DO Power1 OFF ENDON",
        );
        assert_eq!(ok.len(), 1);
        assert_eq!(
            err,
            Some(RuleError::ExpectedOn {
                rule: 2,
                found: "RuleTimer1".into()
            })
        );
        assert!(err.unwrap().to_string().contains("expected ON"));
    }

    #[test]
    fn commands_split_like_firmware() {
        assert_eq!(
            Command::parse("Power1 ON"),
            Some(cmd("Power", Some(1), "ON"))
        );
        assert_eq!(
            Command::parse("  status   8 "),
            Some(cmd("status", None, "8"))
        );
        assert_eq!(Command::parse("Status"), Some(cmd("Status", None, "")));
        assert_eq!(Command::parse("Var1=1"), Some(cmd("Var", Some(1), "=1")));
        assert_eq!(Command::parse("Power0 1"), Some(cmd("Power", Some(0), "1")));
        assert_eq!(Command::parse("123"), Some(cmd("123", None, "")));
        assert_eq!(Command::parse(" "), None);
        assert_eq!(cmd("Power", Some(1), "OFF").to_string(), "Power1 OFF");
        assert_eq!(
            split_backlog("Power ON ; backlog Delay 10;;RuleTimer1 {a;b}"),
            vec!["Power ON", "Delay 10", "RuleTimer1 {a;b}"]
        );
    }
}
