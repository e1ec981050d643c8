//! Findings: one piece of evidence each, with a stable hazard code operators acknowledge by.

use serde::Serialize;

/// Where a finding's evidence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    Data,
    Catalog,
    Reference,
    LiveUse,
    /// The behavioural probe on the scratch database.
    Behaviour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Danger,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable hazard code (`composite_index`, `view`, `code_reference`, ...).
    pub code: &'static str,
    pub severity: Severity,
    /// A blocking finding stops `check` (exit 1) and `generate` unless acknowledged.
    pub blocking: bool,
    /// The dependent object's name (or file:line for code references).
    pub object: String,
    pub detail: String,
    /// What to do about it.
    pub fix: String,
    pub evidence: Evidence,
    /// Set when `--allow` or the config file acknowledged it.
    pub acknowledged: bool,
}

impl Finding {
    pub fn new(
        code: &'static str,
        severity: Severity,
        blocking: bool,
        evidence: Evidence,
        object: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            code,
            severity,
            blocking,
            object: object.into(),
            detail: detail.into(),
            fix: fix.into(),
            evidence,
            acknowledged: false,
        }
    }

    /// Blocking and not acknowledged: what makes `check` fail.
    pub fn blocks(&self) -> bool {
        self.blocking && !self.acknowledged
    }
}

/// Acknowledgements from `--allow CODE[=OBJECT]` and the config file's `allow:` list.
#[derive(Debug, Clone, Default)]
pub struct Acknowledgements {
    entries: Vec<(String, Option<String>)>,
}

impl Acknowledgements {
    /// `code` alone acknowledges every finding with that code; `code=object` one object.
    pub fn allow(&mut self, code: &str, object: Option<&str>) {
        self.entries
            .push((code.to_owned(), object.map(str::to_owned)));
    }

    pub fn apply(&self, findings: &mut [Finding]) {
        for finding in findings {
            finding.acknowledged = self.entries.iter().any(|(code, object)| {
                code == finding.code
                    && object
                        .as_deref()
                        .is_none_or(|object| object == finding.object)
            });
        }
    }

    /// Codes acknowledged that no finding has: likely a typo, reported as a warning.
    pub fn unused<'a>(&'a self, findings: &[Finding]) -> Vec<&'a str> {
        self.entries
            .iter()
            .filter(|(code, object)| {
                !findings
                    .iter()
                    .any(|f| f.code == code && object.as_deref().is_none_or(|o| o == f.object))
            })
            .map(|(code, _)| code.as_str())
            .collect()
    }
}

/// Every code a finding can carry, with what it means: `--allow` is checked against this list.
pub const CODES: &[(&str, &str)] = &[
    (
        "data_mismatch",
        "rows whose legacy value maps to a different type than they have",
    ),
    ("data_untyped", "rows left without a type"),
    ("data_missing", "legacy rows with no row in the STI table"),
    (
        "data_parity",
        "the data matches the backfill plan (information)",
    ),
    (
        "plan_mismatch",
        "the backfill plan is about another table or column",
    ),
    ("index", "an index on the column alone"),
    (
        "composite_index",
        "an index on the column and others: PostgreSQL drops it silently",
    ),
    (
        "partial_index",
        "an index whose predicate uses the column: PostgreSQL drops it silently",
    ),
    (
        "expression_index",
        "an index on an expression of the column",
    ),
    (
        "unique_constraint",
        "a UNIQUE constraint that includes the column",
    ),
    (
        "check_constraint",
        "a CHECK constraint that uses the column",
    ),
    (
        "exclusion_constraint",
        "an exclusion constraint that uses the column",
    ),
    (
        "foreign_key",
        "a foreign key from the column to another table",
    ),
    (
        "incoming_foreign_key",
        "a foreign key from another table that references the column",
    ),
    (
        "view",
        "a view that uses the column, directly or through other views",
    ),
    (
        "materialized_view",
        "a materialized view that uses the column",
    ),
    ("rule", "a rewrite rule (CREATE RULE) that uses the column"),
    ("policy", "a row-level security policy that uses the column"),
    (
        "restrictive_policy",
        "a RESTRICTIVE policy: dropping it widens access",
    ),
    ("trigger", "a trigger whose WHEN clause uses the column"),
    (
        "update_of_trigger",
        "a trigger that fires on UPDATE OF the column",
    ),
    (
        "generated_column",
        "a generated column computed from the column",
    ),
    (
        "publication_column_list",
        "a publication that lists the column",
    ),
    (
        "replica_identity",
        "the replica identity index includes the column",
    ),
    (
        "inheritance_child",
        "a child table that inherits the column and loses it too",
    ),
    (
        "column_grant",
        "privileges granted on the column (restored by the down migration)",
    ),
    (
        "comment",
        "a comment on the column (restored by the down migration)",
    ),
    (
        "extended_statistics",
        "an extended statistics object that uses the column",
    ),
    (
        "owned_sequence",
        "a sequence owned by the column (serial): kept, not dropped",
    ),
    (
        "identity_column",
        "the column is an identity column: its sequence restarts after a down",
    ),
    (
        "function_dependency",
        "a function whose SQL body PostgreSQL tracks as using the column",
    ),
    (
        "function_body",
        "a function body that mentions the column (not tracked by PostgreSQL)",
    ),
    (
        "trigger_function_body",
        "a trigger on the table runs a function that mentions the column",
    ),
    (
        "trigger_argument",
        "a trigger's arguments name the column (not tracked by PostgreSQL)",
    ),
    (
        "opaque_trigger",
        "a trigger runs a C function: the catalog cannot show whether it uses the column",
    ),
    (
        "publication_row_filter",
        "a publication's row filter uses the column",
    ),
    (
        "child_index",
        "a partition's or child's own index on the column: PostgreSQL drops it silently",
    ),
    (
        "partman_control",
        "pg_partman partitions the table by the column (part_config)",
    ),
    (
        "scheduled_job",
        "a pg_cron job's SQL names the table and the column",
    ),
    (
        "breaks_writes",
        "the behavioural probe: an INSERT, UPDATE or DELETE that worked fails after the up",
    ),
    (
        "breaks_reads",
        "the behavioural probe: a read of a view or function that worked fails after the up",
    ),
    (
        "up_fails",
        "the up migration fails on a scratch copy of the schema",
    ),
    (
        "probe_unbuildable",
        "the behavioural probe could not write a row before the up, so writes were not exercised",
    ),
    (
        "code_reference",
        "application code that mentions the column",
    ),
    (
        "migration_reference",
        "an earlier migration or schema dump that mentions the column",
    ),
    (
        "recent_queries",
        "pg_stat_statements shows queries naming the column",
    ),
    (
        "live_use_unknown",
        "pg_stat_statements is not available, so live use is unknown",
    ),
    (
        "not_null_without_default",
        "a schema-only down cannot re-add the NOT NULL column to a non-empty table",
    ),
];

pub fn is_known_code(code: &str) -> bool {
    CODES.iter().any(|(known, _)| *known == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(code: &'static str, object: &str) -> Finding {
        Finding::new(
            code,
            Severity::Danger,
            true,
            Evidence::Catalog,
            object,
            "",
            "",
        )
    }

    #[test]
    fn acknowledgement_by_code_or_by_object() {
        let mut findings = vec![finding("view", "public.v1"), finding("view", "public.v2")];
        let mut acks = Acknowledgements::default();
        acks.allow("view", Some("public.v1"));
        acks.apply(&mut findings);
        assert!(!findings[0].blocks());
        assert!(findings[1].blocks());
        acks.allow("view", None);
        acks.apply(&mut findings);
        assert!(findings.iter().all(|f| !f.blocks()));
        acks.allow("policy", None);
        assert_eq!(acks.unused(&findings), vec!["policy"]);
    }

    #[test]
    fn every_code_is_unique() {
        let mut codes: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CODES.len());
    }
}
