//! SQL text building. Identifiers come from the catalog and are always quoted; every value from a
//! plan or a checkpoint travels as a text parameter cast to its column's real type, so a hostile
//! plan value is data, never SQL. The only SQL taken from a plan verbatim is its `where` filter,
//! which is the plan author's own SQL by design and is checked by preflight before any write.

/// A string literal that is safe whatever `standard_conforming_strings` says.
pub(crate) fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` does, unconditionally.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A statement under construction with its text parameters.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pub(crate) values: Vec<Option<String>>,
}

impl Params {
    /// Adds `value` and returns the placeholder that reads it as `sql_type`.
    pub(crate) fn bind(&mut self, value: Option<&str>, sql_type: &str) -> String {
        self.values.push(value.map(str::to_owned));
        format!("${}::text::{sql_type}", self.values.len())
    }

    pub(crate) fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_escaped() {
        assert_eq!(ident("type"), r#""type""#);
        assert_eq!(
            ident(r#"a"; drop table x; --"#),
            r#""a""; drop table x; --""#
        );
    }

    #[test]
    fn values_become_typed_text_parameters() {
        let mut params = Params::default();
        assert_eq!(params.bind(Some("42"), "bigint"), "$1::text::bigint");
        assert_eq!(params.bind(None, "uuid"), "$2::text::uuid");
        assert_eq!(params.values, [Some("42".to_owned()), None]);
    }
}
