//! Identifiers. Station ids are chosen by staff and appear in MQTT topics and URLs,
//! so they are restricted to a safe alphabet at the edge and can never carry `/`, `+` or `#`.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// The longest station id accepted; long enough for `arena-b-row3-seat12`.
pub const MAX_STATION_ID_LEN: usize = 32;

/// 1-32 lowercase letters, digits, `-` and `_`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = "^[a-z0-9][a-z0-9_-]{0,31}$", "examples" = ["pc-01"]))]
pub struct StationId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("station id must not be empty")]
    Empty,
    #[error("station id is longer than {MAX_STATION_ID_LEN} characters")]
    TooLong,
    #[error(
        "station id {0:?} may only contain lowercase letters, digits, '-' and '_', and must start with a letter or digit"
    )]
    BadCharacter(String),
    #[error("session id {0:?} is not a number (expected e.g. 42 or S-42)")]
    BadSessionId(String),
}

impl StationId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_STATION_ID_LEN {
            return Err(IdError::TooLong);
        }
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !(first_ok && rest_ok) {
            return Err(IdError::BadCharacter(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for StationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Sessions are numbered by the controller, gaplessly, so staff can read them out loud.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S-{}", self.0)
    }
}

impl FromStr for SessionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix("S-")
            .or_else(|| s.strip_prefix("s-"))
            .unwrap_or(s);
        digits
            .parse::<u64>()
            .map(SessionId)
            .map_err(|_| IdError::BadSessionId(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn station_ids_reject_topic_metacharacters() {
        for bad in [
            "",
            "PC-01",
            "pc/01",
            "pc+1",
            "pc#",
            "-pc",
            "pc 1",
            &"a".repeat(33),
        ] {
            assert!(StationId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["pc-01", "ps5_a", "7", &"a".repeat(32)] {
            assert!(StationId::parse(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn session_ids_parse_with_or_without_prefix() {
        assert_eq!("S-42".parse::<SessionId>(), Ok(SessionId(42)));
        assert_eq!("42".parse::<SessionId>(), Ok(SessionId(42)));
        assert!("S-x".parse::<SessionId>().is_err());
    }
}
