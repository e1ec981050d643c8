//! `${ENV_VAR}` interpolation in plan values.
//!
//! Interpolation happens per string value after YAML parsing, never on the raw text, so an
//! environment value can not inject YAML structure, and errors point at the value's own position.
//! Supported forms: `${NAME}`, `${NAME:-fallback}`, and `$$` for a literal `$`.

use std::collections::BTreeMap;

/// Why a value could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("environment variable `{0}` is not set (use `${{{0}:-fallback}}` for a default)")]
    Unset(String),
    #[error("unterminated `${{` in `{0}`: expected `${{NAME}}`")]
    Unterminated(String),
    #[error("invalid variable name `{name}` in `{text}`: expected letters, digits and `_`")]
    InvalidName { name: String, text: String },
}

/// The variables a document refers to, resolved once, so deserialization does no IO.
pub(crate) type Resolved = BTreeMap<String, Option<String>>;

/// Every `${NAME}` named anywhere in `text`, so the caller can resolve them up front.
pub(crate) fn referenced_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = after[..end].split(":-").next().unwrap_or_default();
        if is_valid_name(name) && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        rest = &after[end..];
    }
    names
}

/// Replaces `${NAME}` in one value with its resolved value.
pub(crate) fn interpolate(value: &str, vars: &Resolved) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| InterpolateError::Unterminated(value.to_owned()))?;
            let (name, fallback) = match body[..end].split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (&body[..end], None),
            };
            if !is_valid_name(name) {
                return Err(InterpolateError::InvalidName {
                    name: name.to_owned(),
                    text: value.to_owned(),
                });
            }
            match (vars.get(name).cloned().flatten(), fallback) {
                (Some(resolved), _) => out.push_str(&resolved),
                (None, Some(fallback)) => out.push_str(fallback),
                (None, None) => return Err(InterpolateError::Unset(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Resolved {
        [
            ("REGION".to_owned(), Some("eu-west-1".to_owned())),
            ("EMPTY".to_owned(), Some(String::new())),
            ("UNSET".to_owned(), None),
        ]
        .into_iter()
        .collect()
    }

    fn check(input: &str, expect: Result<&str, &str>) {
        let actual = interpolate(input, &vars()).map_err(|e| e.to_string());
        assert_eq!(
            actual,
            expect.map(str::to_owned).map_err(str::to_owned),
            "input {input:?}"
        );
    }

    #[test]
    fn substitutes_and_escapes() {
        check("plain", Ok("plain"));
        check("s3://bucket-${REGION}/x", Ok("s3://bucket-eu-west-1/x"));
        check("${EMPTY}x", Ok("x"));
        check("${UNSET:-us-east-1}", Ok("us-east-1"));
        check("${REGION:-ignored}", Ok("eu-west-1"));
        check("cost: $$5 and $HOME", Ok("cost: $5 and $HOME"));
    }

    #[test]
    fn reports_what_is_wrong() {
        check(
            "${UNSET}",
            Err("environment variable `UNSET` is not set (use `${UNSET:-fallback}` for a default)"),
        );
        check(
            "${REGION",
            Err("unterminated `${` in `${REGION`: expected `${NAME}`"),
        );
        check(
            "${1X}",
            Err("invalid variable name `1X` in `${1X}`: expected letters, digits and `_`"),
        );
    }

    #[test]
    fn finds_every_referenced_name_once() {
        assert_eq!(
            referenced_names("${A} ${B:-x} ${A} $${C} ${bad name}"),
            ["A", "B", "C"]
        );
    }
}
