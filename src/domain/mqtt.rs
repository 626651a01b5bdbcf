//! MQTT accounts: who may connect to the embedded broker, and what each may touch.
//!
//! The user name says the kind (`agent:pc-01`, `device:plug-3`, `integration:ha`), so a
//! name alone tells an operator reading a log line what connected. Human staff log in with
//! their own user name (no colon) and get read-only access. The topic rules themselves are
//! derived from the scope here, in pure code, and enforced by the broker front.

use super::acl::{Access, Acl, Rule, overlaps, valid_filter, valid_topic};
use super::error::DomainError;
use super::ids::StationId;
use crate::protocol::topic::ROOT;
use serde::{Deserialize, Serialize};

/// What an account is for, and so which topics it may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MqttScope {
    /// The PC agent of one station.
    Agent { station: StationId },
    /// A plug or other device: full use of its own topic roots (e.g. `shellies/plug-3`,
    /// or `cmnd/plug3`, `stat/plug3`, `tele/plug3` for Tasmota), nothing else.
    Device { topics: Vec<String> },
    /// A scoped integration such as Home Assistant: explicit rules, never allowed to
    /// publish into the controller's own topics.
    Integration {
        #[schemars(with = "Vec<RuleView>")]
        rules: Vec<Rule>,
    },
}

/// JSON shape of one integration rule (for the API schema).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct RuleView {
    filter: String,
    /// `read` (subscribe), `write` (publish) or `read_write`.
    access: String,
}

impl MqttScope {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Agent { .. } => "agent",
            Self::Device { .. } => "device",
            Self::Integration { .. } => "integration",
        }
    }
}

/// An account as the venue state knows it (its secret hash lives only in the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MqttAccount {
    pub name: String,
    pub scope: MqttScope,
    pub revoked: bool,
    /// False until a secret is issued (an agent account made with its station but not
    /// yet enrolled): such an account cannot log in.
    pub has_secret: bool,
}

/// Most topic roots or rules one account may hold; keeps ACL checks cheap.
pub const MAX_RULES: usize = 32;

/// The user name of a station's agent account.
pub fn agent_account(station: &StationId) -> String {
    format!("agent:{station}")
}

/// Check a new account's name against its scope and its rules against the protocol.
pub fn validate(name: &str, scope: &MqttScope) -> Result<(), DomainError> {
    let invalid = |field, reason| Err(DomainError::InvalidField { field, reason });
    let Some((kind, rest)) = name.split_once(':') else {
        return invalid("name", "must be <kind>:<name>, e.g. device:plug-3");
    };
    if kind != scope.kind() {
        return invalid(
            "name",
            "must start with the scope's kind (agent:, device:, integration:)",
        );
    }
    if StationId::parse(rest).is_err() {
        return invalid(
            "name",
            "after the kind, must be 1-32 lowercase letters, digits, - or _",
        );
    }
    match scope {
        MqttScope::Agent { station } => {
            if rest != station.as_str() {
                return invalid("name", "of an agent account must be agent:<station>");
            }
        }
        MqttScope::Device { topics } => {
            if topics.is_empty() || topics.len() > MAX_RULES {
                return invalid("topics", "must list 1 to 32 topic roots");
            }
            for t in topics {
                if !valid_topic(t) || t.starts_with('$') || t.is_empty() {
                    return invalid("topics", "must be topic names without wildcards or $");
                }
                if overlaps(&format!("{t}/#"), &format!("{ROOT}/#")) {
                    return invalid("topics", "must not reach into venued/v1/");
                }
            }
        }
        MqttScope::Integration { rules } => {
            if rules.is_empty() || rules.len() > MAX_RULES {
                return invalid("rules", "must list 1 to 32 rules");
            }
            for r in rules {
                if !valid_filter(&r.filter) || r.filter.starts_with('$') {
                    return invalid("rules", "each filter must be a valid MQTT filter without $");
                }
                if r.access.can_write() && overlaps(&r.filter, &format!("{ROOT}/#")) {
                    return invalid(
                        "rules",
                        "must not grant publishing into venued/v1/ (controller topics)",
                    );
                }
            }
        }
    }
    Ok(())
}

/// The topic rules of an account, from its scope.
pub fn acl(scope: &MqttScope) -> Acl {
    let rule = |filter: String, access| Rule { filter, access };
    match scope {
        MqttScope::Agent { station } => {
            let s = format!("{ROOT}/stations/{station}");
            Acl::new(vec![
                // Everything about its own station (state, cmd, response, and the echo
                // of what it publishes), so `venued/v1/stations/<id>/#` works.
                rule(format!("{s}/#"), Access::Read),
                rule(format!("{ROOT}/announce"), Access::Read),
                rule(format!("{ROOT}/controller/status"), Access::Read),
                rule(format!("{s}/ack"), Access::Write),
                rule(format!("{s}/request"), Access::Write),
                rule(format!("{ROOT}/agents/{station}/status"), Access::ReadWrite),
            ])
        }
        MqttScope::Device { topics } => Acl::new(
            topics
                .iter()
                .flat_map(|t| {
                    [
                        rule(t.clone(), Access::ReadWrite),
                        rule(format!("{t}/#"), Access::ReadWrite),
                    ]
                })
                .collect(),
        ),
        MqttScope::Integration { rules } => Acl::new(rules.clone()),
    }
}

/// Staff logging in with their own user name may watch the floor, never publish. Not
/// requests and responses: those carry members' PINs.
pub fn human_acl() -> Acl {
    let read = |f: &str| Rule {
        filter: format!("{ROOT}/{f}"),
        access: Access::Read,
    };
    Acl::new(vec![
        read("stations/+/state"),
        read("agents/+/status"),
        read("controller/status"),
        read("announce"),
    ])
}

/// The Home Assistant preset: reads venue topics, owns `homeassistant/#` (discovery).
pub fn home_assistant_rules() -> Vec<Rule> {
    let read = |f: &str| Rule {
        filter: format!("{ROOT}/{f}"),
        access: Access::Read,
    };
    vec![
        read("stations/+/state"),
        read("agents/+/status"),
        read("controller/status"),
        read("announce"),
        Rule {
            filter: "homeassistant/#".into(),
            access: Access::ReadWrite,
        },
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sid(s: &str) -> StationId {
        StationId::parse(s).unwrap()
    }

    #[test]
    fn agent_touches_only_its_station() {
        let acl = acl(&MqttScope::Agent {
            station: sid("pc-01"),
        });
        assert!(acl.may_subscribe("venued/v1/stations/pc-01/state"));
        assert!(acl.may_subscribe("venued/v1/stations/pc-01/cmd"));
        assert!(!acl.may_subscribe("venued/v1/stations/pc-02/state"));
        assert!(acl.may_subscribe("venued/v1/stations/pc-01/#"));
        assert!(!acl.may_subscribe("venued/v1/stations/+/state"));
        assert!(!acl.may_subscribe("venued/v1/stations/#"));
        assert!(!acl.may_subscribe("#"));
        assert!(acl.may_publish("venued/v1/stations/pc-01/ack"));
        assert!(acl.may_publish("venued/v1/agents/pc-01/status"));
        assert!(!acl.may_publish("venued/v1/stations/pc-01/state"));
        assert!(!acl.may_publish("venued/v1/stations/pc-02/ack"));
    }

    #[test]
    fn names_and_rules_are_checked() {
        let agent = MqttScope::Agent {
            station: sid("pc-01"),
        };
        assert!(validate("agent:pc-01", &agent).is_ok());
        assert!(validate("agent:pc-02", &agent).is_err());
        assert!(validate("device:pc-01", &agent).is_err());
        assert!(validate("pc-01", &agent).is_err());
        let device = |t: &str| MqttScope::Device {
            topics: vec![t.into()],
        };
        assert!(validate("device:plug-1", &device("shellies/plug-1")).is_ok());
        assert!(validate("device:plug-1", &device("shellies/+")).is_err());
        assert!(validate("device:plug-1", &device("venued/v1")).is_err());
        assert!(validate("device:plug-1", &device("$SYS")).is_err());
        let integ = |filter: &str, access| MqttScope::Integration {
            rules: vec![Rule {
                filter: filter.into(),
                access,
            }],
        };
        assert!(validate("integration:ha", &integ("venued/v1/#", Access::Read)).is_ok());
        assert!(validate("integration:ha", &integ("+/v1/x", Access::Write)).is_err());
        assert!(validate("integration:ha", &integ("#", Access::ReadWrite)).is_err());
        assert!(
            validate(
                "integration:ha",
                &MqttScope::Integration {
                    rules: home_assistant_rules()
                }
            )
            .is_ok()
        );
    }
}
