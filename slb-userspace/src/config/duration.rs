//! Durations in the configuration: strings with a unit, `ms`, `s` or `m`
//! (`"1500ms"`, `"900s"`, `"2m"`). A whole, non-negative number is required;
//! a bare number, a fraction, a sign or any other unit is an error.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// A duration as written in the file, before it is checked: the text of a
/// string, or a description of a value of another TOML type (so that
/// validation can name the key instead of serde failing on the first one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawDuration {
    Text(String),
    /// Not a string, e.g. "the bare number 5".
    NotText(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawDurationVisitor;

        impl Visitor<'_> for RawDurationVisitor {
            type Value = RawDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with a unit ms, s or m, e.g. \"5s\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::NotText(format!("the bare number {v}")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::NotText(format!("the bare number {v}")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::NotText(format!("the bare number {v}")))
            }
        }

        deserializer.deserialize_any(RawDurationVisitor)
    }
}

const UNITS: &str = "must be a duration string with a unit ms, s or m, e.g. \"5s\"";

/// Parses `"1500ms"`, `"900s"` or `"2m"`. The error is a message for the key.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() || unit.is_empty() {
        return Err(format!("{UNITS} (got \"{text}\")"));
    }
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(format!("{UNITS} (got \"{text}\")")),
    };
    let too_large = || format!("duration \"{text}\" is too large");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let millis = n.checked_mul(millis_per_unit).ok_or_else(too_large)?;
    Ok(Duration::from_millis(millis))
}

/// Formats a duration the way it is written in the file: whole seconds as
/// `"900s"`, anything else as milliseconds (`"1500ms"`).
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

/// `serialize_with` helper: a duration as its config string.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// Checks a raw duration and its range; the error is a message for the key.
pub(crate) fn check(raw: &RawDuration, min: Duration, max: Duration) -> Result<Duration, String> {
    let text = match raw {
        RawDuration::Text(t) => t,
        RawDuration::NotText(what) => return Err(format!("{UNITS} (got {what})")),
    };
    let d = parse_duration(text)?;
    if d < min || d > max {
        return Err(format!(
            "must be {}..={} (got \"{text}\")",
            format_duration(min),
            format_duration(max),
        ));
    }
    Ok(d)
}
