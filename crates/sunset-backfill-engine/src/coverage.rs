//! Coverage of new writes: while a backfill runs, the application keeps inserting rows. Unless the
//! plan says the application already writes the discriminator, sunset installs a trigger that
//! derives it from the legacy column on insert and when the legacy column changes (in place), or
//! that mirrors each source's writes into the STI table (copy).

use sunset_plan::format::{Coverage, Unmapped};
use tokio_postgres::GenericClient;

use crate::catalog::{Backfill, InPlace, Mode, Source};
use crate::error::Error;
use crate::sql::{ident, literal};

/// The trigger and its function, named after the run (each at most 63 bytes). Copy mode has one
/// function per source, `n` being the source's position.
pub(crate) fn names(backfill: &Backfill, source: Option<usize>) -> (String, String) {
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
    let function = match source {
        None => name.clone(),
        Some(n) => {
            let suffix = format!("_s{n}");
            let base: String = name.chars().take(63 - suffix.len()).collect();
            format!("{base}{suffix}")
        }
    };
    (name, function)
}

/// The dollar-quote tag of trigger bodies; plan values are checked not to contain it.
const TAG: &str = "$sunset_coverage$";

pub(crate) async fn install(client: &impl GenericClient, backfill: &Backfill) -> Result<(), Error> {
    if backfill.coverage != Some(Coverage::Trigger) {
        return Ok(());
    }
    let sql = match &backfill.mode {
        Mode::InPlace(in_place) => in_place_trigger(backfill, in_place)?,
        Mode::Copy(sources) => {
            let mut sql = String::new();
            for (n, source) in sources.iter().enumerate() {
                sql.push_str(&copy_trigger(backfill, source, n)?);
            }
            sql
        }
    };
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::db("installing the coverage trigger"))
}

fn refuse_tag<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
    if values.into_iter().any(|v| v.contains(TAG)) {
        return Err(Error::BadInput(format!(
            "plan values may not contain `{TAG}`"
        )));
    }
    Ok(())
}

/// In place: a BEFORE trigger derives the discriminator from the legacy column.
fn in_place_trigger(backfill: &Backfill, in_place: &InPlace) -> Result<String, Error> {
    let (trigger, function) = names(backfill, None);
    let disc = ident(&backfill.discriminator.name);
    let from = ident(&in_place.from.name);
    let mut case = format!("CASE NEW.{from}::text");
    for (legacy, type_name) in &in_place.map {
        case.push_str(&format!(
            " WHEN {} THEN {}",
            literal(legacy),
            literal(type_name)
        ));
    }
    match &in_place.unmapped {
        Unmapped::Default(type_name) => {
            case.push_str(&format!(" ELSE {}", literal(type_name.as_str())))
        }
        Unmapped::Fail | Unmapped::Skip => case.push_str(" ELSE NULL"),
    }
    case.push_str(" END");
    refuse_tag(
        in_place
            .map
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
    )?;
    Ok(format!(
        "CREATE OR REPLACE FUNCTION sunset.{function}() RETURNS trigger LANGUAGE plpgsql AS {TAG}
         BEGIN
             IF TG_OP = 'INSERT' AND NEW.{disc} IS NULL THEN
                 NEW.{disc} := CAST({case} AS {disc_type});
             ELSIF TG_OP = 'UPDATE' AND NEW.{from} IS DISTINCT FROM OLD.{from} THEN
                 NEW.{disc} := COALESCE(CAST({case} AS {disc_type}), NEW.{disc});
             END IF;
             RETURN NEW;
         END {TAG};
         COMMENT ON FUNCTION sunset.{function}() IS 'sets the discriminator of new rows while backfill {run} runs';
         DROP TRIGGER IF EXISTS {trigger} ON {table};
         CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE OF {from} ON {table}
             FOR EACH ROW EXECUTE FUNCTION sunset.{function}();",
        function = ident(&function),
        trigger = ident(&trigger),
        disc_type = backfill.discriminator.sql_type,
        table = backfill.table.quoted(),
        run = backfill.run.replace('\'', "''"),
    ))
}

/// Copy: an AFTER trigger on the source mirrors its writes into the STI table while the copy
/// runs: an inserted or updated row in scope is upserted (journalled when new, so rollback
/// removes it); the copy of a deleted row, or of one that left the scope or changed key, is
/// deleted. Only STI rows of the source's type are ever updated or deleted.
fn copy_trigger(backfill: &Backfill, source: &Source, n: usize) -> Result<String, Error> {
    refuse_tag(
        [source.type_name.as_str(), backfill.run.as_str()]
            .into_iter()
            .chain(source.columns.iter().map(|(_, sql)| sql.as_str()))
            .chain(source.walk.filter.as_deref()),
    )?;
    let (trigger, function) = names(backfill, Some(n));
    let table = backfill.table.quoted();
    let disc = ident(&backfill.discriminator.name);
    let type_value = format!(
        "CAST({} AS {})",
        literal(&source.type_name),
        backfill.discriminator.sql_type
    );
    let key_texts = backfill
        .key
        .iter()
        .map(|c| format!("CAST({} AS {})::text", source.value_of(&c.name), c.sql_type))
        .collect::<Vec<_>>()
        .join(", ");
    let key_match = backfill
        .key
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "t.{} = sunset_old[{}]::{}",
                ident(&c.name),
                i + 1,
                c.sql_type
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let columns: Vec<String> = source.columns.iter().map(|(c, _)| ident(&c.name)).collect();
    let values: Vec<&str> = source.columns.iter().map(|(_, sql)| sql.as_str()).collect();
    let filter = source
        .walk
        .filter
        .as_deref()
        .map(|f| format!(" WHERE ({f})"))
        .unwrap_or_default();
    Ok(format!(
        "CREATE OR REPLACE FUNCTION sunset.{function}() RETURNS trigger LANGUAGE plpgsql AS {TAG}
         DECLARE
             sunset_old text[];
             sunset_new text[];
             sunset_inserted boolean;
         BEGIN
             IF TG_OP <> 'INSERT' THEN
                 SELECT ARRAY[{key_texts}] INTO sunset_old FROM (SELECT OLD.*) s;
             END IF;
             IF TG_OP <> 'DELETE' THEN
                 SELECT ARRAY[{key_texts}] INTO sunset_new FROM (SELECT NEW.*) s{filter};
             END IF;
             IF sunset_old IS NOT NULL AND sunset_old IS DISTINCT FROM sunset_new THEN
                 DELETE FROM {table} t WHERE {key_match} AND t.{disc} = {type_value};
             END IF;
             IF sunset_new IS NOT NULL THEN
                 INSERT INTO {table} AS t ({columns}, {disc}) OVERRIDING SYSTEM VALUE
                 SELECT {values}, {type_value} FROM (SELECT NEW.*) s
                 ON CONFLICT ({key}) DO UPDATE SET ({columns}) = ROW({excluded}) WHERE t.{disc} = {type_value}
                 RETURNING (t.xmax = 0) INTO sunset_inserted;
                 IF sunset_inserted THEN
                     INSERT INTO sunset.backfill_undo (run, keys, old_values)
                     VALUES ({run}, ARRAY[sunset_new], ARRAY[NULL::text]);
                 END IF;
             END IF;
             RETURN NULL;
         END {TAG};
         COMMENT ON FUNCTION sunset.{function}() IS {comment};
         DROP TRIGGER IF EXISTS {trigger} ON {source_table};
         CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {source_table}
             FOR EACH ROW EXECUTE FUNCTION sunset.{function}();",
        function = ident(&function),
        trigger = ident(&trigger),
        source_table = source.walk.table.quoted(),
        columns = columns.join(", "),
        values = values.join(", "),
        excluded = columns
            .iter()
            .map(|c| format!("EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        key = backfill
            .key
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
        run = literal(&backfill.run),
        comment = literal(&format!(
            "copies writes to {} into {} while backfill {} runs",
            source.walk.table.display(),
            backfill.table.display(),
            backfill.run
        )),
    ))
}

pub(crate) async fn remove(client: &impl GenericClient, backfill: &Backfill) -> Result<(), Error> {
    let mut sql = String::new();
    let sources = match &backfill.mode {
        Mode::InPlace(_) => vec![(None, &backfill.table)],
        Mode::Copy(sources) => sources
            .iter()
            .enumerate()
            .map(|(n, s)| (Some(n), &s.walk.table))
            .collect(),
    };
    for (n, table) in sources {
        let (trigger, function) = names(backfill, n);
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {} ON {}; DROP FUNCTION IF EXISTS sunset.{}();",
            ident(&trigger),
            table.quoted(),
            ident(&function)
        ));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::db("removing the coverage trigger"))
}
