//! Value parsers for clap (`value_parser = sunset_cli::parse::duration`): one spelling of each
//! kind of value across the binaries, with errors that say what was expected.

use std::time::Duration;

/// `30s`, `5m`, `12h`, `7d`, as in plans and sequences.
pub fn duration(text: &str) -> Result<Duration, String> {
    sunset_plan::parse_duration(text).map_err(|e| e.to_string())
}

/// `64MiB`, `8MB`, `5242880` (bytes).
pub fn size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "size `{text}`: unknown unit `{other}` (expected B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("size `{text}`: expected a number such as 64MiB"))?;
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// `NAME=VALUE`, split at the first `=` (`what` names the shape in the error, as `NAME=SQL`).
pub fn pair(text: &str, what: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected {what}"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// A day (`2027-01-31`, midnight UTC) or an RFC 3339 time.
pub fn date(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| format!("`{text}`: expected YYYY-MM-DD or an RFC 3339 time"))
}

/// A migration version, `YYYYMMDDHHMMSS`.
pub fn timestamp(text: &str) -> Result<chrono::NaiveDateTime, String> {
    chrono::NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S")
        .map_err(|e| format!("expected YYYYMMDDHHMMSS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(size("64MiB").unwrap(), 64 << 20);
        assert_eq!(size("5MB").unwrap(), 5_000_000);
        assert_eq!(size("1024").unwrap(), 1024);
        assert!(
            size("12 parsecs")
                .unwrap_err()
                .contains("unknown unit `parsecs`")
        );
        assert!(size("MiB").is_err());
        assert!(size("99999999999GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn pairs_dates_and_timestamps() {
        assert_eq!(
            pair("recent=SELECT 1 = 1", "NAME=SQL").unwrap(),
            ("recent".to_owned(), "SELECT 1 = 1".to_owned())
        );
        assert_eq!(
            pair("recent", "NAME=SQL").unwrap_err(),
            "`recent`: expected NAME=SQL"
        );
        assert_eq!(
            date("2027-01-31").unwrap().to_rfc3339(),
            "2027-01-31T00:00:00+00:00"
        );
        assert!(date("31/01/2027").is_err());
        assert!(timestamp("20261203120000").is_ok());
        assert!(timestamp("2026-12-03").is_err());
        assert_eq!(duration("90s").unwrap(), Duration::from_secs(90));
        assert!(duration("soon").is_err());
    }
}
