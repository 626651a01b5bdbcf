//! What venued writes into a plug so that the plug itself ends free play when the
//! controller is gone, and a mains blip never re-energises a station.
//!
//! Tasmota: `PowerOnState 0` (off after power returns), telemetry every 10 s and on a
//! power change of a few watts (so the ladder's standby check and the tamper checks see
//! readings in seconds), and a dead-man rule: `RuleTimer1` counts down from the grace
//! period and switches the relay off when it runs out; the controller re-arms it with a
//! heartbeat (`cmnd/<topic>/RuleTimer1 <grace>`) while a session runs. The rule text is
//! kept to the ESP8266 rules engine (no Berry), and its meaning is checked in tests with
//! the same parser the Tasmota fake runs.

use std::time::Duration;

/// The rule set venued owns on a Tasmota plug.
pub const TASMOTA_RULE_SET: u8 = 1;

/// The shortest and longest dead-man grace accepted (RuleTimer counts whole seconds up
/// to 65535).
pub const MIN_GRACE: Duration = Duration::from_secs(10);
pub const MAX_GRACE: Duration = Duration::from_secs(65_535);

/// The commands that provision a Tasmota plug's fail-safe, in order, as `(command,
/// parameter)`. `grace` is how long the plug keeps power after the last heartbeat;
/// `delta_w` the power change that triggers an immediate reading.
pub fn tasmota(grace: Duration, delta_w: u32) -> Vec<(String, String)> {
    let g = grace.clamp(MIN_GRACE, MAX_GRACE).as_secs();
    let rule = format!(
        "ON System#Boot DO RuleTimer1 {g} ENDON \
         ON Mqtt#Connected DO RuleTimer1 {g} ENDON \
         ON Rules#Timer=1 DO Power1 OFF ENDON"
    );
    vec![
        ("PowerOnState".into(), "0".into()),
        ("TelePeriod".into(), "10".into()),
        // 101..32000 means "watts + 100".
        (
            "PowerDelta1".into(),
            (100 + delta_w.clamp(1, 31_900)).to_string(),
        ),
        (format!("Rule{TASMOTA_RULE_SET}"), rule),
        (format!("Rule{TASMOTA_RULE_SET}"), "1".into()),
    ]
}

/// The heartbeat that re-arms the dead-man: publish `payload` on `cmnd/<topic>/<command>`.
pub fn tasmota_heartbeat(grace: Duration) -> (String, String) {
    (
        "RuleTimer1".into(),
        grace.clamp(MIN_GRACE, MAX_GRACE).as_secs().to_string(),
    )
}

/// How often to send the heartbeat: a third of the grace, so two may be lost.
pub fn heartbeat_every(grace: Duration) -> Duration {
    grace.clamp(MIN_GRACE, MAX_GRACE) / 3
}

#[cfg(all(test, feature = "fakes"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fakes::tasmota::{Trigger, parse_rules};

    #[test]
    fn the_tasmota_rule_means_what_we_say() {
        let cmds = tasmota(Duration::from_secs(90), 5);
        assert_eq!(cmds[0], ("PowerOnState".into(), "0".into()));
        assert_eq!(cmds[2], ("PowerDelta1".into(), "105".into()));
        let rules = parse_rules(&cmds[3].1).unwrap();
        assert_eq!(rules.len(), 3);
        // Booting and (re)connecting arm the timer with the grace...
        for (rule, trigger) in rules
            .iter()
            .zip([Trigger::SystemBoot, Trigger::MqttConnected])
        {
            assert_eq!(rule.trigger, trigger);
            assert_eq!(rule.actions.len(), 1);
            assert!(rule.actions[0].name.eq_ignore_ascii_case("RuleTimer"));
            assert_eq!(rule.actions[0].index, Some(1));
            assert_eq!(rule.actions[0].param, "90");
        }
        // ...and when it runs out, the relay goes off: nothing else.
        assert_eq!(rules[2].trigger, Trigger::RulesTimer(1));
        assert_eq!(rules[2].actions.len(), 1);
        assert!(rules[2].actions[0].name.eq_ignore_ascii_case("Power"));
        assert!(rules[2].actions[0].param.eq_ignore_ascii_case("OFF"));
        assert_eq!(cmds[4], ("Rule1".into(), "1".into()));
        assert_eq!(
            tasmota_heartbeat(Duration::from_secs(90)),
            ("RuleTimer1".into(), "90".into())
        );
        assert_eq!(
            heartbeat_every(Duration::from_secs(90)),
            Duration::from_secs(30)
        );
        // Out-of-range graces are clamped to what RuleTimer can count.
        assert_eq!(tasmota_heartbeat(Duration::from_secs(1)).1, "10");
        assert_eq!(tasmota_heartbeat(Duration::from_secs(100_000)).1, "65535");
    }
}
