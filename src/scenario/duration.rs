//! The one duration grammar, for scenario files, the `[gateway]` table and command-line flags:
//! `100ms`, `30s`, `3m`, `1m30s`, `1h`.
//!
//! - A duration is one or more `NUMBER UNIT` parts, added up: `1h2m3s4ms`. A number may have a
//!   fraction (`0.5s`, `.5s`); units are `h`, `m`, `s`, `ms`, `us` and `µs`.
//! - Whitespace around the text, between a number and its unit and between parts is allowed:
//!   `20 s`, `1m 30s`.
//! - A bare number (`1.5`) is seconds only where [`parse_or_seconds`] is used: the `[gateway]`
//!   settings, which take TOML numbers as seconds too (`heartbeat_interval = 1.5`). Elsewhere
//!   ([`parse`]: the scenario's own fields, flags) it is refused with a hint, because `10` could
//!   as well mean milliseconds.

use std::time::Duration;

/// Parses a duration whose every number has a unit; a bare number is refused with a hint.
pub fn parse(text: &str) -> Result<Duration, String> {
    parse_with(text, false)
}

/// Parses a duration as [`parse`] does, and also a bare number as seconds (`"1.5"` is 1.5 s).
pub fn parse_or_seconds(text: &str) -> Result<Duration, String> {
    parse_with(text, true)
}

/// A number of seconds (a TOML number) as a duration; refuses what no duration can be.
pub fn from_seconds(seconds: f64) -> Result<Duration, String> {
    if seconds.is_nan() {
        return Err("NaN is not a duration".into());
    }
    if seconds < 0.0 {
        return Err(format!("negative duration {seconds}"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration of {seconds}s is too long"))
}

fn parse_with(text: &str, bare_seconds: bool) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; expected e.g. \"30s\", \"100ms\", \"3m\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    let mut first = true;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "\"{text}\" is not a duration; expected e.g. \"30s\", \"100ms\", \"1m30s\""
            ));
        }
        let value: f64 = rest[..digits].parse().map_err(|_| {
            format!(
                "\"{}\" is not a number in duration \"{text}\"",
                &rest[..digits]
            )
        })?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let seconds = match unit {
            "" if bare_seconds && first && rest.is_empty() => value,
            "" => {
                return Err(format!(
                    "\"{s}\" lacks a unit; expected e.g. \"{s}s\" or \"{s}ms\""
                ))
            }
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1e3,
            "us" | "µs" => value / 1e6,
            _ => {
                return Err(format!(
                    "unknown unit \"{unit}\" in duration \"{text}\"; use h, m, s, ms or us"
                ))
            }
        };
        total = from_seconds(seconds)
            .ok()
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("duration \"{text}\" is too long"))?;
        first = false;
    }
    Ok(total)
}

/// Formats a duration the way scenario files write them (`1m30s`, `250ms`).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// serde adapter: a duration field written as text.
pub mod serde_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Parses a duration written as text (`"30s"`, `"1m30s"`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }

    /// Writes a duration in the same text form.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
    }

    #[test]
    fn rejects_with_a_hint() {
        assert!(parse("10").unwrap_err().contains("lacks a unit"));
        assert!(parse("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn allows_whitespace_between_numbers_units_and_parts() {
        assert_eq!(parse(" 20 s ").unwrap(), Duration::from_secs(20));
        assert_eq!(parse("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse(".5s").unwrap(), Duration::from_millis(500));
        assert!(parse("2 seconds").unwrap_err().contains("unknown unit"));
        assert!(parse("1m30").unwrap_err().contains("lacks a unit"));
    }

    /// The `[gateway]` table's forms (the gateway harness had its own parser for them).
    #[test]
    fn a_bare_number_is_seconds_where_asked_for() {
        assert_eq!(parse_or_seconds("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_or_seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_or_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_or_seconds("20 s"), Ok(Duration::from_secs(20)));
        assert!(parse_or_seconds("5 parsecs").is_err());
        // Only a whole duration can be bare: in `1m30` the 30 has lost its unit.
        assert!(parse_or_seconds("1m30")
            .unwrap_err()
            .contains("lacks a unit"));
        assert!(parse_or_seconds("").is_err());
        assert!(parse("1.5").unwrap_err().contains("lacks a unit"));
    }

    #[test]
    fn refuses_what_no_duration_can_hold_rather_than_panicking() {
        assert!(parse("99999999999999999999999h")
            .unwrap_err()
            .contains("too long"));
        assert!(parse("18446744073709551615s 1s")
            .unwrap_err()
            .contains("too long"));
        assert!(from_seconds(f64::INFINITY)
            .unwrap_err()
            .contains("too long"));
        assert!(from_seconds(-1.0).unwrap_err().contains("negative"));
        assert!(from_seconds(f64::NAN).is_err());
        assert_eq!(from_seconds(1.5), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1m30s", "250ms", "3m", "1h", "10s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
