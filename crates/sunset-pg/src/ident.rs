//! Table names as people type them, with SQL's quoting rules, checked before any query: since
//! PostgreSQL 16, `to_regclass` answers NULL for a syntax error instead of raising one, so a name
//! that can not be a name must be told apart from a table that does not exist here.

/// A `schema.table` or `table` name as typed, with SQL quoting rules: unquoted parts fold to
/// lower case, `"Quoted"` parts keep their case and may contain dots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName {
    pub schema: Option<String>,
    pub name: String,
}

/// Why a text is not a table name; the message follows the quoted text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "is not a table name: expected `table` or `schema.table` (quote unusual names: \"My Table\")"
    )]
    Syntax,
    #[error("has {0} dotted parts: expected `table` or `schema.table`")]
    Parts(usize),
}

impl QualifiedName {
    pub fn parse(text: &str) -> Result<QualifiedName, NameError> {
        let parts = split_identifiers(text).ok_or(NameError::Syntax)?;
        match parts.as_slice() {
            [name] => Ok(QualifiedName {
                schema: None,
                name: name.clone(),
            }),
            [schema, name] => Ok(QualifiedName {
                schema: Some(schema.clone()),
                name: name.clone(),
            }),
            _ => Err(NameError::Parts(parts.len())),
        }
    }
}

/// Splits `a."B.c"` into `["a", "B.c"]`; `None` when the text is not identifier syntax.
pub fn split_identifiers(text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '$' {
                    part.extend(c.to_lowercase());
                    chars.next();
                } else {
                    break;
                }
            }
            if part.is_empty() || part.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
                return None;
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_like_sql() {
        let parsed = QualifiedName::parse("Public.Accounts").expect("valid");
        assert_eq!(parsed.schema.as_deref(), Some("public"));
        assert_eq!(parsed.name, "accounts");
        let quoted = QualifiedName::parse(r#""My Schema"."a.b""c""#).expect("valid");
        assert_eq!(quoted.schema.as_deref(), Some("My Schema"));
        assert_eq!(quoted.name, r#"a.b"c"#);
    }

    #[test]
    fn hostile_names_are_not_identifiers() {
        for text in [
            "a; drop table x",
            "accounts--",
            "a.b.c.d",
            "",
            "\"unterminated",
            "1abc",
        ] {
            assert!(
                QualifiedName::parse(text).is_err(),
                "{text:?} should be refused"
            );
        }
        // Quoted, anything goes: it is then only a name that does not exist.
        assert_eq!(
            QualifiedName::parse(r#""a; drop table x""#)
                .expect("quoted")
                .name,
            "a; drop table x"
        );
    }
}
