//! Data parity with the backfill that moved the column's meaning into the discriminator: the
//! backfill's own validation, read as findings.

use std::path::Path;

use sunset_backfill_engine::catalog::Mode;
use tokio_postgres::Client;

use crate::error::Error;
use crate::findings::{Evidence, Finding, Severity};
use crate::target::Target;

pub async fn check(
    client: &Client,
    plan_path: &Path,
    target: &Target,
) -> Result<Vec<Finding>, Error> {
    let text = std::fs::read_to_string(plan_path).map_err(|e| {
        Error::BadInput(format!(
            "--backfill-plan {}: cannot read it: {e}",
            plan_path.display()
        ))
    })?;
    let loaded = sunset_backfill_engine::load(&plan_path.display().to_string(), &text)?;
    let mut backfill = sunset_backfill_engine::catalog::resolve(client, &loaded).await?;
    // Parity asks whether the type says what the legacy column says, for every row: a row the
    // backfill kept with another type (`overwrite: false`) is information the drop would lose.
    if let Mode::InPlace(in_place) = &mut backfill.mode {
        in_place.overwrite = true;
    }
    let mut findings = Vec::new();
    let about_this_column = match &backfill.mode {
        Mode::InPlace(in_place) => {
            backfill.table.oid == target.oid && in_place.from.name == target.column.name
        }
        Mode::Copy(sources) => sources.iter().any(|s| s.walk.table.oid == target.oid),
    };
    let plan_name = loaded.plan.backfill.as_str().to_owned();
    if !about_this_column {
        findings.push(Finding::new(
            "plan_mismatch",
            Severity::Warning,
            true,
            Evidence::Data,
            &plan_name,
            format!(
                "the plan backfills {} and does not read {}",
                backfill.table.display(),
                target.display()
            ),
            "pass the plan that moved this column's data",
        ));
    }
    let validation = sunset_backfill_engine::ops::validate(client, &backfill).await?;
    let sample = || {
        let keys: Vec<String> = validation
            .offending_keys
            .iter()
            .map(|k| k.join(","))
            .collect();
        if keys.is_empty() {
            String::new()
        } else {
            format!("; first keys: {}", keys.join(" "))
        }
    };
    let table = backfill.table.display();
    let fix =
        format!("run `sunset-backfill run` (then `validate`) for {plan_name} until it passes");
    for (code, rows, what) in [
        (
            "data_mismatch",
            validation.mismatched,
            "rows whose type is not the one their legacy value maps to",
        ),
        (
            "data_untyped",
            validation.untyped,
            "rows left without a type",
        ),
        (
            "data_missing",
            validation.missing,
            "legacy rows with no row in the STI table",
        ),
        (
            "data_differs",
            validation.differing,
            "copied rows whose values differ from their legacy row's",
        ),
    ] {
        if rows > 0 {
            findings.push(Finding::new(
                code,
                Severity::Danger,
                true,
                Evidence::Data,
                &table,
                format!("{rows} {what}{}", sample()),
                &fix,
            ));
        }
    }
    if validation.passed() {
        let counted: i64 = validation
            .counts
            .iter()
            .map(|c| c.rows)
            .chain(validation.sources.iter().map(|s| s.rows))
            .sum();
        findings.push(Finding::new(
            "data_parity",
            Severity::Info,
            false,
            Evidence::Data,
            &table,
            format!(
                "{counted} rows checked against {plan_name}: every type matches its legacy value"
            ),
            "none",
        ));
    }
    Ok(findings)
}
