//! `check`: every finding about a column in one pass, and the acknowledgements that let a
//! blocking one through.

use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use crate::dependents::{self, Dependent};
use crate::error::Error;
use crate::findings::{self, Acknowledgements, Finding};
use crate::formats::{self, Format};
use crate::target::{self, Target};
use crate::{descendants, migration, parity, references, scratch, untracked};

/// What `check` looks at.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub table: String,
    pub column: String,
    pub backfill_plan: Option<PathBuf>,
    /// The application's source tree to search.
    pub repo: Option<PathBuf>,
    pub acknowledgements: Acknowledgements,
    /// Paths under `repo` that are not evidence (the migrations being generated).
    pub skip_paths: Vec<PathBuf>,
    /// `check --probe`: the connection URL the scratch database for the behavioural probe is
    /// made from (`generate` probes as part of its own verification instead).
    pub probe_url: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub target: Target,
    pub findings: Vec<Finding>,
    pub unused_acknowledgements: Vec<String>,
    #[serde(skip)]
    pub dependents: Vec<Dependent>,
}

impl CheckReport {
    /// Blocking findings nobody acknowledged.
    pub fn blocking(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.blocks()).collect()
    }

    pub fn passed(&self) -> bool {
        self.blocking().is_empty()
    }
}

/// Reads `--config FILE` acknowledgements into `acks`.
pub fn load_config(path: &Path, acks: &mut Acknowledgements) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::BadInput(format!("--config {}: cannot read it: {e}", path.display()))
    })?;
    let codes: Vec<&str> = findings::CODES.iter().map(|(c, _)| *c).collect();
    let config = sunset_plan::load_drop_column_config(
        &path.display().to_string(),
        &text,
        &sunset_plan::process_env,
        &codes,
    )?;
    for allow in &config.allow {
        acks.allow(
            allow.code.as_str(),
            allow.object.as_ref().map(|o| o.as_str()),
        );
    }
    Ok(())
}

/// Every finding in one pass. Bad input (unknown table or column, key columns) is an error.
pub async fn check(client: &Client, request: &CheckRequest) -> Result<CheckReport, Error> {
    let target = target::resolve(client, &request.table, &request.column).await?;
    let mut findings = Vec::new();
    if let Some(plan) = &request.backfill_plan {
        findings.extend(parity::check(client, plan, &target).await?);
    }
    // From here on, definitions read from the catalog name every object with its schema, so the
    // migration does not depend on the runner's search_path (the column's type included).
    // JIT off: the planner overestimates the recursive catalog queries and compiled the probe's
    // subset query for 0.3 s on 2,000 tables, to run it in 3 ms.
    client
        .batch_execute("SET search_path = ''; SET jit = off")
        .await
        .map_err(Error::db("qualifying names and turning JIT off"))?;
    let target = target::resolve(client, &target.table_sql, &target.column.name_sql).await?;
    let mut dependents = dependents::find(client, &target).await?;
    dependents.extend(descendants::find(client, &target).await?);
    let textual = references::function_bodies(client, &target)
        .await?
        .into_iter()
        .chain(untracked::find(client, &target).await?);
    for dependent in textual {
        // A trigger already dropped for its UPDATE OF or WHEN clause (or its function body) is
        // dropped once.
        let same_drop = |d: &Dependent| {
            d.change.as_ref().map(|c| &c.down) == dependent.change.as_ref().map(|c| &c.down)
        };
        if dependent.change.is_some() && dependents.iter().any(same_drop) {
            dependents.push(Dependent::finding(dependent.finding));
        } else {
            dependents.push(dependent);
        }
    }
    findings.extend(dependents.iter().map(|d| d.finding.clone()));
    if let Some(repo) = &request.repo {
        findings.extend(references::code_references(
            repo,
            &target,
            &request.skip_paths,
        )?);
    }
    findings.extend(references::live_use(client, &target).await?);
    if let Some(url) = &request.probe_url {
        findings.extend(probe(client, url, &target, &dependents).await?);
    }
    request.acknowledgements.apply(&mut findings);
    let unused = request
        .acknowledgements
        .unused(&findings)
        .into_iter()
        .map(str::to_owned)
        .collect();
    Ok(CheckReport {
        target,
        findings,
        unused_acknowledgements: unused,
        dependents,
    })
}

/// The behavioural probe around the up migration `generate` would write (its plain SQL form),
/// on a scratch database.
async fn probe(
    client: &Client,
    url: &str,
    target: &Target,
    dependents: &[Dependent],
) -> Result<Vec<Finding>, Error> {
    let options = migration::Options {
        restore_data: false,
        lock_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(60),
    };
    let migration = migration::build(target, dependents, &options)?;
    let rendered = formats::render(
        Format::Sql,
        &migration,
        chrono::Utc::now().naive_utc(),
        &formats::Context::default(),
    );
    let column_gone = |_: &[String]| true;
    scratch::probe(
        client,
        url,
        &scratch::Trial {
            up: &rendered.up,
            table: &target.table_sql,
            column_gone: &column_gone,
        },
    )
    .await
}
