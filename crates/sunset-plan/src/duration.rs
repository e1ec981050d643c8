//! Human durations (`24h`, `90s`, `1h30m`, `200ms`) as operators write them in plans.
//!
//! A bare number is refused: `wait_time: 24` is ambiguous, and a teardown that waits
//! 24 seconds instead of 24 hours is the kind of mistake this tool exists to prevent.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused; the message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("expected a duration like `90s`, `1h30m` or `200ms`, found an empty string")]
    Empty,
    #[error(
        "expected a duration like `90s`, `1h30m` or `200ms`, found `{0}` (missing a unit: ms, s, m, h or d)"
    )]
    MissingUnit(String),
    #[error(
        "expected a duration like `90s`, `1h30m` or `200ms`, found `{text}` (unknown unit `{unit}`; use ms, s, m, h or d)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("expected a duration like `90s`, `1h30m` or `200ms`, found `{0}`")]
    Malformed(String),
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parses `1h30m`, `90s`, `200ms`, `2d`; components must be in any order but each needs a unit.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Malformed(trimmed.to_owned()));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(trimmed.to_owned()));
        }
        let (unit, after) = after.split_at(unit_len);
        let amount: u64 = number
            .parse()
            .map_err(|_| DurationError::Overflow(trimmed.to_owned()))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: trimmed.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        let millis = amount
            .checked_mul(millis_per_unit)
            .ok_or_else(|| DurationError::Overflow(trimmed.to_owned()))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| DurationError::Overflow(trimmed.to_owned()))?;
        rest = after;
    }
    Ok(total)
}

/// Renders a duration the way `parse_duration` reads it, largest units first (`1h30m`, `200ms`).
/// Hours are the largest unit: operators think of a wait gate as `48h`, not `2d`.
pub fn format_duration(duration: Duration) -> HumanDuration {
    HumanDuration(duration)
}

/// Display adapter returned by [`format_duration`].
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if millis >= size {
                write!(f, "{}{unit}", millis / size)?;
                millis %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<u64, &str>) {
        let actual = parse_duration(input)
            .map(|d| d.as_millis() as u64)
            .map_err(|e| e.to_string());
        assert_eq!(actual, expect.map_err(str::to_owned), "input {input:?}");
    }

    #[test]
    fn parses_the_units_operators_write() {
        check("24h", Ok(86_400_000));
        check("90s", Ok(90_000));
        check("1h30m", Ok(5_400_000));
        check("200ms", Ok(200));
        check("2d", Ok(172_800_000));
        check("1m30s500ms", Ok(90_500));
        check(" 5s ", Ok(5_000));
    }

    #[test]
    fn refuses_ambiguous_or_malformed_text() {
        check(
            "",
            Err("expected a duration like `90s`, `1h30m` or `200ms`, found an empty string"),
        );
        check(
            "24",
            Err(
                "expected a duration like `90s`, `1h30m` or `200ms`, found `24` (missing a unit: ms, s, m, h or d)",
            ),
        );
        check(
            "5w",
            Err(
                "expected a duration like `90s`, `1h30m` or `200ms`, found `5w` (unknown unit `w`; use ms, s, m, h or d)",
            ),
        );
        check(
            "h",
            Err("expected a duration like `90s`, `1h30m` or `200ms`, found `h`"),
        );
        check(
            "1.5h",
            Err(
                "expected a duration like `90s`, `1h30m` or `200ms`, found `1.5h` (missing a unit: ms, s, m, h or d)",
            ),
        );
        check(
            "-1s",
            Err("expected a duration like `90s`, `1h30m` or `200ms`, found `-1s`"),
        );
        check(
            "99999999999999999999s",
            Err("duration `99999999999999999999s` is too large"),
        );
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["1h30m", "200ms", "24h", "49h1m1s1ms", "0s"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed).to_string(), text);
            assert_eq!(
                parse_duration(&format_duration(parsed).to_string()).unwrap(),
                parsed
            );
        }
    }
}
