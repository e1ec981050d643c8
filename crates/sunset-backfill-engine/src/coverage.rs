//! Coverage of new writes: while a backfill runs, the application keeps inserting rows. Unless the
//! plan says the application already writes the discriminator, sunset installs a trigger that
//! derives it from the legacy column on insert and when the legacy column changes.

use sunset_plan::format::{Coverage, Unmapped};
use tokio_postgres::GenericClient;

use crate::catalog::Backfill;
use crate::error::Error;
use crate::sql::ident;

/// The trigger and its function, named after the run (each at most 63 bytes).
pub(crate) fn names(backfill: &Backfill) -> (String, String) {
    let safe: String = backfill
        .run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let name: String = format!("sunset_backfill_{safe}").chars().take(63).collect();
    (name.clone(), name)
}

/// A string literal that is safe whatever `standard_conforming_strings` says.
fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub(crate) async fn install(client: &impl GenericClient, backfill: &Backfill) -> Result<(), Error> {
    if backfill.coverage != Some(Coverage::Trigger) {
        return Ok(());
    }
    let (trigger, function) = names(backfill);
    let disc = ident(&backfill.discriminator.name);
    let from = ident(&backfill.from.name);
    let mut case = format!("CASE NEW.{from}::text");
    for (legacy, type_name) in &backfill.map {
        case.push_str(&format!(
            " WHEN {} THEN {}",
            literal(legacy),
            literal(type_name)
        ));
    }
    match &backfill.unmapped {
        Unmapped::Default(type_name) => {
            case.push_str(&format!(" ELSE {}", literal(type_name.as_str())))
        }
        Unmapped::Fail | Unmapped::Skip => case.push_str(" ELSE NULL"),
    }
    case.push_str(" END");
    let tag = "$sunset_coverage$";
    if backfill
        .map
        .iter()
        .any(|(k, v)| k.contains(tag) || v.contains(tag))
    {
        return Err(Error::Invalid(format!(
            "map values may not contain `{tag}`"
        )));
    }
    let sql = format!(
        "CREATE OR REPLACE FUNCTION sunset.{function}() RETURNS trigger LANGUAGE plpgsql AS {tag}
         BEGIN
             IF TG_OP = 'INSERT' AND NEW.{disc} IS NULL THEN
                 NEW.{disc} := CAST({case} AS {disc_type});
             ELSIF TG_OP = 'UPDATE' AND NEW.{from} IS DISTINCT FROM OLD.{from} THEN
                 NEW.{disc} := COALESCE(CAST({case} AS {disc_type}), NEW.{disc});
             END IF;
             RETURN NEW;
         END {tag};
         COMMENT ON FUNCTION sunset.{function}() IS 'sets the discriminator of new rows while backfill {run} runs';
         DROP TRIGGER IF EXISTS {trigger} ON {table};
         CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE OF {from} ON {table}
             FOR EACH ROW EXECUTE FUNCTION sunset.{function}();",
        function = ident(&function),
        trigger = ident(&trigger),
        disc_type = backfill.discriminator.sql_type,
        table = backfill.table.quoted(),
        run = backfill.run.replace('\'', "''"),
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::db("installing the coverage trigger"))
}

pub(crate) async fn remove(client: &impl GenericClient, backfill: &Backfill) -> Result<(), Error> {
    let (trigger, function) = names(backfill);
    client
        .batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {} ON {}; DROP FUNCTION IF EXISTS sunset.{}();",
            ident(&trigger),
            backfill.table.quoted(),
            ident(&function)
        ))
        .await
        .map_err(Error::db("removing the coverage trigger"))
}
