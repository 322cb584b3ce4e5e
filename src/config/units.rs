//! Config value types with units: durations ("250ms", "30s", "5m") and byte
//! sizes ("64KiB", "1MiB"). Parsing is delegated to `humantime` and
//! `bytesize`; these newtypes only pin down what the YAML accepts and say so
//! in the error message.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written with a unit. A bare number is refused: `timeout: 30`
/// could mean seconds or milliseconds, and guessing wrong is a silent outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "invalid duration {s:?}: add a unit, like 250ms, 30s or 5m"
            ));
        }
        humantime::parse_duration(text)
            .map(Duration)
            .map_err(|e| format!("invalid duration {s:?}: {e} (write it like 250ms, 30s or 5m)"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor::<Duration>::new(
            "a duration like 250ms, 30s or 5m",
        ))
    }
}

/// A byte size written as a number of bytes or with a unit ("512KiB", "1MiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|e| format!("invalid size {s:?}: {e} (write it like 64KiB or 1MiB)"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor::<ByteSize>::new("a size like 64KiB or 1MiB"))
    }
}

/// In the JSON Schema, a duration is a string with a unit: a bare number is
/// refused by pollgate, so editors flag it too.
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration with a unit, like 250ms, 30s, 5m or 1h 30m.",
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

/// A byte size is a number of bytes or a string with a unit.
impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes, or with a unit like 64KiB or 1MiB.",
            "oneOf": [
                // 0 is refused wherever a size is read.
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": BYTE_SIZE_PATTERN },
            ],
        })
    }
}

/// What `humantime` reads: number-and-unit pairs, with its unit names
/// (case matters: `M` is months, `m` minutes). A test holds the two together.
const DURATION_PATTERN: &str = concat!(
    r"^\s*([0-9]+(\.[0-9]+)?\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|",
    r"seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|",
    r"days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$"
);
/// A number with an optional unit, as `bytesize` reads it (its units, in
/// any case: B, K/KB/KiB ... P/PB/PiB).
const BYTE_SIZE_PATTERN: &str =
    r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtTpP][iI]?[bB]?|[bB])?\s*$";

/// Accepts a YAML string or number and runs it through `FromStr`, so that
/// `max_body: 1048576` and `max_body: 1MiB` both reach the same parser.
struct FromStrVisitor<T> {
    expecting: &'static str,
    marker: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            marker: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn durations_take_the_documented_units() {
        assert_eq!(
            "250ms".parse::<Duration>(),
            Ok(Duration(Std::from_millis(250)))
        );
        assert_eq!("30s".parse::<Duration>(), Ok(Duration(Std::from_secs(30))));
        assert_eq!("5m".parse::<Duration>(), Ok(Duration(Std::from_secs(300))));
        assert_eq!(
            "1h 30m".parse::<Duration>(),
            Ok(Duration(Std::from_secs(5400)))
        );
    }

    #[test]
    fn a_duration_without_unit_is_refused_with_a_hint() {
        let err = "30".parse::<Duration>().unwrap_err();
        assert!(err.contains("add a unit"), "{err}");
        assert!("5x".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
        assert!("-1s".parse::<Duration>().is_err());
    }

    #[test]
    fn sizes_take_units_or_plain_bytes() {
        assert_eq!("1MiB".parse::<ByteSize>(), Ok(ByteSize(1024 * 1024)));
        assert_eq!("64KiB".parse::<ByteSize>(), Ok(ByteSize(64 * 1024)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert!("lots".parse::<ByteSize>().is_err());
    }

    #[test]
    fn yaml_numbers_and_strings_both_reach_the_parser() {
        let size: ByteSize = serde_yaml::from_str("2048").unwrap();
        assert_eq!(size, ByteSize(2048));
        let err = serde_yaml::from_str::<Duration>("30")
            .unwrap_err()
            .to_string();
        assert!(err.contains("add a unit"), "{err}");
    }
}
