//! Up, down, up on a scratch database: a temporary database on the same server, loaded with the
//! real database's schema by `pg_dump --schema-only | psql`, then the runner's own units applied
//! and the catalog compared. Nothing is written to the project before this passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sunset_pg::Database;
use tokio_postgres::Client;

use crate::error::Error;
use crate::findings::{Evidence, Finding, Severity};
use crate::formats::Unit;
use crate::subset::Subset;
use crate::{probe, snapshot, subset, tool};
use sunset_outcome::Classify;

/// The application_name of every drop-column session.
pub const APPLICATION_NAME: &str = "sunset-drop-column";

pub async fn connect(url: &str) -> Result<Client, Error> {
    Ok(parse(url)?.connect().await?)
}

fn parse(url: &str) -> Result<Database, Error> {
    let mut database = Database::parse(url)?;
    if !database.user_set.application_name {
        database.config.application_name(APPLICATION_NAME);
    }
    Ok(database)
}

/// What the verification proved, for the report and the pull request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub scratch_database: String,
    /// Catalog facts compared before up and after down (all equal).
    pub facts_compared: usize,
    /// Facts that differ between the schema before and after up (what the up changes).
    pub facts_changed_by_up: usize,
    pub units_up: usize,
    pub units_down: usize,
    pub seconds: f64,
    /// What the behavioural probe found (blocking ones stop `generate` unless acknowledged).
    pub probe: Vec<Finding>,
}

/// libpq keyword/value connection string for `pg_dump` and `psql`: the scratch or source
/// database and what the user set, nothing else (their libpq reads the same environment and
/// defaults). The password goes through `PGPASSWORD` instead, so it never shows in `ps`.
fn conninfo(database: &Database, dbname: &str) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = vec![format!("dbname={}", quote(dbname))];
    for (key, value) in database.libpq_params() {
        parts.push(format!("{key}={}", quote(&value)));
    }
    parts.push(format!(
        "fallback_application_name={}",
        quote(APPLICATION_NAME)
    ));
    parts.join(" ")
}

/// A PostgreSQL client program of the server's major version (or newer): `SUNSET_PG_BIN_DIR`,
/// the distributions' versioned directories, then PATH.
fn pg_tool(tool: &str, server_major: u32) -> Result<PathBuf, Error> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("SUNSET_PG_BIN_DIR") {
        candidates.push(Path::new(&dir).join(tool));
    }
    for major in (server_major..server_major + 4).rev() {
        candidates.push(PathBuf::from(format!(
            "/usr/lib/postgresql/{major}/bin/{tool}"
        )));
        candidates.push(PathBuf::from(format!("/usr/pgsql-{major}/bin/{tool}")));
        candidates.push(PathBuf::from(format!(
            "/opt/homebrew/opt/postgresql@{major}/bin/{tool}"
        )));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        candidates.push(dir.join(tool));
    }
    for candidate in candidates.into_iter().filter(|c| c.is_file()) {
        let Ok(output) = Command::new(&candidate).arg("--version").output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let major = text
            .split_whitespace()
            .find_map(|w| w.split('.').next()?.parse::<u32>().ok());
        if major.is_some_and(|m| m >= server_major) {
            return Ok(candidate);
        }
    }
    Err(Error::Tool(format!(
        "no {tool} of PostgreSQL {server_major} or newer (looked in SUNSET_PG_BIN_DIR, /usr/lib/postgresql/*/bin and PATH): \
         install the PostgreSQL {server_major} client programs; they build the scratch database the migration is verified on"
    )))
}

/// Builds the scratch database, probes the table, runs `up`, probes again, runs `down`, `up`,
/// compares the catalog, and drops it.
pub async fn verify(
    admin: &Client,
    url: &str,
    migration: &Trial<'_>,
    down: &[Unit],
) -> Result<Verification, Error> {
    let started = Instant::now();
    let (scratch, (facts_compared, facts_changed_by_up, probe)) =
        in_scratch(admin, url, Schema::Whole, async |client: &Client| {
            run_in_scratch(client, migration, down).await
        })
        .await?;
    Ok(Verification {
        scratch_database: scratch,
        facts_compared,
        facts_changed_by_up,
        units_up: migration.up.len(),
        units_down: down.len(),
        seconds: started.elapsed().as_secs_f64(),
        probe,
    })
}

/// The up migration to try on the scratch database, and how to see that it did its job.
pub struct Trial<'a> {
    pub up: &'a [Unit],
    /// The table, qualified and quoted, that the behavioural probe exercises.
    pub table: &'a str,
    pub column_gone: &'a (dyn Fn(&[String]) -> bool + Sync),
}

/// `check --probe`: the behavioural probe before and after `up` on a scratch database, without
/// the down. An up that fails is a blocking finding too. Tried first on a scratch database with
/// only the relations the probe can touch ([`subset`]), which is kept when every step succeeded;
/// otherwise (or when the subset cannot be loaded) decided on the whole schema.
pub async fn probe(
    admin: &Client,
    url: &str,
    migration: &Trial<'_>,
) -> Result<Vec<Finding>, Error> {
    let subset = subset::read(admin, migration.table).await?;
    let around_up = async |client: &Client| probe_around_up(client, migration).await;
    let relations = subset.relations.len();
    match in_scratch(admin, url, Schema::Subset(&subset), around_up).await {
        Ok((_, (findings, None))) => {
            tracing::info!(
                "behavioural probe: every step passed on a scratch database with the {relations} relation(s) it touches"
            );
            return Ok(findings);
        }
        Ok((_, (_, Some(failed)))) => tracing::info!(
            "behavioural probe: a step failed on the scratch database with the {relations} relation(s) it touches ({failed}); deciding on the whole schema"
        ),
        Err(error) if error.is_stopped() => return Err(error),
        Err(error) => tracing::info!(
            "behavioural probe: the {relations} relation(s) it touches did not load on their own ({error}); deciding on the whole schema"
        ),
    }
    let (_, (findings, _)) = in_scratch(admin, url, Schema::Whole, around_up).await?;
    tracing::info!("behavioural probe: decided on the whole schema");
    Ok(findings)
}

/// The probe before and after the up: its findings, and the first step that failed, if any (a
/// subset of the schema is trusted only when none did).
async fn probe_around_up(
    client: &Client,
    migration: &Trial<'_>,
) -> Result<(Vec<Finding>, Option<String>), Error> {
    let before = probe::exercise(client, migration.table, None).await?;
    match apply(client, migration.up, "up").await {
        Ok(()) => {}
        Err(Error::Verification(message)) => {
            let finding = Finding::new(
                "up_fails",
                Severity::Danger,
                true,
                Evidence::Behaviour,
                migration.table,
                message,
                "find what the drop trips over (the message names it) and deal with it first",
            );
            return Ok((vec![finding], Some("the up".to_owned())));
        }
        Err(other) => return Err(other),
    }
    let after = probe::exercise(client, migration.table, Some(before.fill)).await?;
    let failed = before.first_failure().or_else(|| after.first_failure());
    Ok((probe::compare(migration.table, &before, &after), failed))
}

/// What a scratch database is loaded with.
#[derive(Clone, Copy)]
enum Schema<'a> {
    /// `pg_dump --schema-only` of the whole database.
    Whole,
    /// Every object that is not a relation, and these relations.
    Subset(&'a Subset),
}

/// Creates a scratch database loaded with the schema of `url`'s database, runs `work` on it,
/// and drops it whatever happened: the scratch database's name and what `work` returned.
async fn in_scratch<T>(
    admin: &Client,
    url: &str,
    schema: Schema<'_>,
    work: impl AsyncFnOnce(&Client) -> Result<T, Error>,
) -> Result<(String, T), Error> {
    let database = parse(url)?;
    let row = admin
        .query_one(
            "SELECT current_database()::text, current_setting('server_version_num')::int4",
            &[],
        )
        .await
        .map_err(Error::db("reading the server version"))?;
    let source: String = row.get(0);
    let major = u32::try_from(row.get::<_, i32>(1) / 10000).unwrap_or(0);
    drop_orphans(admin).await?;
    let tools = Tools::find(major)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let scratch = format!(
        "sunset_scratch_{}_{}_{nanos:x}",
        host_tag(),
        std::process::id()
    );
    admin
        .batch_execute(&format!("CREATE DATABASE \"{scratch}\""))
        .await
        .map_err(Error::db(
            "creating the scratch database (the role needs CREATEDB)",
        ))?;
    let outcome = async {
        load_schema(&database, &source, &scratch, &tools, schema)?;
        let mut scratch_database = database.clone();
        scratch_database.config.dbname(&scratch);
        let client = scratch_database.connect().await?;
        work(&client).await
    }
    .await;
    let dropped = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
        ))
        .await;
    let outcome = outcome?;
    dropped.map_err(Error::db(format!(
        "dropping the scratch database {scratch}"
    )))?;
    Ok((scratch, outcome))
}

/// This host, in scratch database names, so a run only cleans up after runs of its own host.
fn host_tag() -> String {
    let host = gethostname::gethostname();
    let hash = host
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        });
    format!("{hash:08x}")
}

/// Drops scratch databases that killed runs of this host left behind: their process is gone.
/// Sessions still in them (a `psql` the killed run started, still loading) are ended.
async fn drop_orphans(admin: &Client) -> Result<(), Error> {
    let prefix = format!("sunset_scratch_{}_", host_tag());
    let rows = admin
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1)",
            &[&prefix],
        )
        .await
        .map_err(Error::db("looking for abandoned scratch databases"))?;
    for row in rows {
        let name: String = row.get(0);
        let pid = name[prefix.len()..]
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            tracing::info!(database = %name, "dropping a scratch database a killed run left behind");
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .map_err(Error::db(format!(
                    "dropping the abandoned scratch database {name}"
                )))?;
        }
    }
    Ok(())
}

/// Probe, up, probe, down, up: the catalog facts compared, those the up changed, and the
/// probe's findings.
async fn run_in_scratch(
    client: &Client,
    migration: &Trial<'_>,
    down: &[Unit],
) -> Result<(usize, usize, Vec<Finding>), Error> {
    let before = snapshot::catalog(client).await?;
    let probe_before = probe::exercise(client, migration.table, None).await?;
    apply(client, migration.up, "up").await?;
    let after_up = snapshot::catalog(client).await?;
    if !(migration.column_gone)(&after_up) {
        return Err(Error::Verification(
            "the up migration ran but the column is still there".to_owned(),
        ));
    }
    let probe_after = probe::exercise(client, migration.table, Some(probe_before.fill)).await?;
    let findings = probe::compare(migration.table, &probe_before, &probe_after);
    apply(client, down, "down").await?;
    let after_down = snapshot::catalog(client).await?;
    let difference = snapshot::difference(&before, &after_down);
    if !difference.is_empty() {
        let shown: Vec<&String> = difference.iter().take(40).collect();
        return Err(Error::Verification(format!(
            "the down migration does not restore the schema: {} catalog facts differ (- before up, + after down):\n{}",
            difference.len(),
            shown
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    apply(client, migration.up, "second up").await?;
    Ok((
        before.len(),
        snapshot::difference(&before, &after_up).len(),
        findings,
    ))
}

/// The client programs of the server's major that copy the schema.
struct Tools {
    pg_dump: PathBuf,
    pg_restore: PathBuf,
    psql: PathBuf,
}

impl Tools {
    fn find(major: u32) -> Result<Tools, Error> {
        Ok(Tools {
            pg_dump: pg_tool("pg_dump", major)?,
            pg_restore: pg_tool("pg_restore", major)?,
            psql: pg_tool("psql", major)?,
        })
    }
}

/// Connection details for the client programs: the password through `PGPASSWORD`.
struct Programs<'a> {
    database: &'a Database,
    tools: &'a Tools,
    password: Option<String>,
}

impl Programs<'_> {
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        command
    }

    /// `pg_dump --schema-only` of `dbname` with `selection` into `file`.
    fn dump(&self, dbname: &str, selection: &[String], file: &Path) -> Result<(), Error> {
        let mut dump = self.command(&self.tools.pg_dump);
        dump.args(["--schema-only", "--no-subscriptions"])
            .args(selection)
            .arg("--file")
            .arg(file)
            .arg(conninfo(self.database, dbname));
        tool::run(&mut dump, "pg_dump --schema-only").map(drop)
    }

    /// psql, stopping at the first error, everything in one transaction.
    fn psql(&self, dbname: &str) -> Command {
        let mut load = self.command(&self.tools.psql);
        load.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
            .arg("-d")
            .arg(conninfo(self.database, dbname));
        load
    }
}

fn load_schema(
    database: &Database,
    source: &str,
    scratch: &str,
    tools: &Tools,
    schema: Schema<'_>,
) -> Result<(), Error> {
    let programs = Programs {
        database,
        tools,
        password: database
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    };
    let dir = tempfile_dir()?;
    let loaded = match schema {
        Schema::Whole => {
            let file = dir.join("schema.sql");
            programs.dump(source, &[], &file).and_then(|()| {
                let mut load = programs.psql(scratch);
                tool::run(
                    load.arg("-f").arg(&file),
                    "loading the schema into the scratch database",
                )
                .map(drop)
            })
        }
        Schema::Subset(subset) => load_subset(&programs, source, scratch, subset, &dir),
    };
    let _ = std::fs::remove_dir_all(&dir);
    loaded
}

/// Everything but relations (through pg_restore's table of contents, without the publication
/// memberships of tables left out: PostgreSQL 18's pg_dump keeps them), then the subset's
/// relations and their memberships. The two dumps run side by side.
fn load_subset(
    programs: &Programs<'_>,
    source: &str,
    scratch: &str,
    subset: &Subset,
    dir: &Path,
) -> Result<(), Error> {
    let not_relations = dir.join("not-relations.dump");
    let contents = dir.join("not-relations.list");
    let relations = dir.join("relations.sql");
    // Strict: a relation whose pattern matched nothing would be missing without a failure.
    let selection: Vec<String> = std::iter::once("--strict-names".to_owned())
        .chain(subset.relations.iter().map(|r| format!("--table={r}")))
        .collect();
    let (first, second) = std::thread::scope(|scope| {
        let others = scope.spawn(|| {
            programs.dump(
                source,
                &[
                    "--format=custom".to_owned(),
                    "--exclude-table=*.*".to_owned(),
                ],
                &not_relations,
            )?;
            let mut list = programs.command(&programs.tools.pg_restore);
            let listed = tool::run(list.arg("--list").arg(&not_relations), "pg_restore --list")?;
            let kept: String = listed
                .lines()
                .filter(|line| !subset::is_publication_membership(line))
                .map(|line| format!("{line}\n"))
                .collect();
            std::fs::write(&contents, kept)
                .map_err(Error::io(format!("writing {}", contents.display())))
        });
        let tables = programs.dump(source, &selection, &relations);
        let others = others
            .join()
            .unwrap_or_else(|_| Err(Error::Tool("pg_dump's thread panicked".to_owned())));
        (others, tables)
    });
    first?;
    second?;
    let mut restore = programs.command(&programs.tools.pg_restore);
    restore
        .args(["--exit-on-error", "--single-transaction", "--use-list"])
        .arg(&contents)
        .arg("--dbname")
        .arg(conninfo(programs.database, scratch))
        .arg(&not_relations);
    tool::run(
        &mut restore,
        "restoring everything but relations into the scratch database",
    )?;
    let mut load = programs.psql(scratch);
    load.arg("-f").arg(&relations);
    for statement in &subset.publications {
        load.arg("-c").arg(statement);
    }
    tool::run(
        &mut load,
        "loading the probe's relations into the scratch database",
    )
    .map(drop)
}

fn tempfile_dir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!(
        "sunset-drop-column-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Sends each unit as the runner would: transactional ones inside BEGIN/COMMIT, the others as
/// they are (a CONCURRENTLY statement alone).
pub async fn apply(client: &Client, units: &[Unit], direction: &str) -> Result<(), Error> {
    for (n, unit) in units.iter().enumerate() {
        let result = if unit.transactional {
            client
                .batch_execute(&format!("BEGIN;\n{}COMMIT;", unit.sql))
                .await
        } else {
            client.batch_execute(&unit.sql).await
        };
        if let Err(error) = result {
            let _ = client.batch_execute("ROLLBACK").await;
            let message = error
                .as_db_error()
                .map_or_else(|| error.to_string(), |d| d.message().to_owned());
            return Err(Error::Verification(format!(
                "the {direction} migration failed on the scratch database (statement group {} of {}): {message}\n{}",
                n + 1,
                units.len(),
                unit.sql.trim_end()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_values_and_leaves_out_the_password() {
        let database = Database::parse(
            "postgres://app:s3cret@db.example:6432/prod?sslmode=require&sslrootcert=/etc/ca.pem",
        )
        .expect("a URL");
        let info = conninfo(&database, "it's");
        assert_eq!(
            info,
            "dbname='it\\'s' host='db.example' port='6432' user='app' sslmode='require' sslrootcert='/etc/ca.pem' fallback_application_name='sunset-drop-column'"
        );
        assert!(!info.contains("s3cret"));
    }
}
