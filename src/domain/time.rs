//! Small helpers for instants and durations. Domain code never reads a clock: `now` is
//! always a parameter.

use jiff::{SignedDuration, Timestamp};

/// `ts + d`, saturating at the ends of jiff's range instead of panicking. Durations in
/// the domain are validated far below these bounds; saturation only guards corrupt input.
pub fn add(ts: Timestamp, d: SignedDuration) -> Timestamp {
    ts.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `later - earlier` as a signed duration.
pub fn since(later: Timestamp, earlier: Timestamp) -> SignedDuration {
    later.duration_since(earlier)
}

/// Format a duration the way staff read it: `1h 30m`, `45s`. Sub-second parts are
/// dropped; everything the domain schedules is in whole seconds.
pub fn human(d: SignedDuration) -> String {
    exact(SignedDuration::from_secs(d.as_secs()))
}

/// Like [`human`] but keeps fractions (`500ms`) and prints negatives with a sign
/// (`-30s`), for messages that quote what someone typed.
pub fn exact(d: SignedDuration) -> String {
    use jiff::fmt::friendly::{Designator, Direction, SpanPrinter};
    static PRINTER: SpanPrinter = SpanPrinter::new()
        .designator(Designator::Compact)
        .direction(Direction::Sign);
    PRINTER.duration_to_string(&d)
}

/// Serde adapters so durations travel as `"30m"` rather than `"PT30M"`; both are accepted
/// on input.
pub mod serde_dur {
    use jiff::SignedDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub mod req {
        use super::*;
        pub fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&super::super::human(*d))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
            SignedDuration::deserialize(d)
        }
    }

    /// A list of durations, e.g. `warnings = ["5m", "1m"]`.
    pub mod vec {
        use super::*;
        use serde::Serialize;
        pub fn serialize<S: Serializer>(d: &[SignedDuration], s: S) -> Result<S::Ok, S::Error> {
            d.iter()
                .map(|d| super::super::human(*d))
                .collect::<Vec<_>>()
                .serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<SignedDuration>, D::Error> {
            Vec::<SignedDuration>::deserialize(d)
        }
    }

    pub mod opt {
        use super::*;
        pub fn serialize<S: Serializer>(
            d: &Option<SignedDuration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.collect_str(&super::super::human(*d)),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SignedDuration>, D::Error> {
            Option::<SignedDuration>::deserialize(d)
        }
    }
}
