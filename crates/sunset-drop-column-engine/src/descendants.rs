//! Indexes and constraints of partitions and inheritance children that are their own (not
//! attached to one of the parent's) and use the column: the drop on the parent removes the
//! column from each child, and PostgreSQL drops these with it without a word.

use tokio_postgres::Client;

use crate::dependents::{Change, Dependent, Rank, Stage, literal};
use crate::error::Error;
use crate::findings::{Evidence, Finding, Severity};
use crate::target::Target;

pub async fn find(client: &Client, target: &Target) -> Result<Vec<Dependent>, Error> {
    // Only children that lose the column count: one that defines it itself (or inherits it
    // from a second parent too) keeps it, and so do its own children.
    let rows = client
        .query(
            "WITH RECURSIVE losing(relid, attnum) AS (
                 SELECT a.attrelid, a.attnum FROM pg_inherits i
                 JOIN pg_attribute a ON a.attrelid = i.inhrelid AND a.attname = $2 AND NOT a.attisdropped
                 WHERE i.inhparent = $1 AND NOT a.attislocal AND a.attinhcount = 1
                 UNION
                 SELECT a.attrelid, a.attnum FROM losing l
                 JOIN pg_inherits i ON i.inhparent = l.relid
                 JOIN pg_attribute a ON a.attrelid = i.inhrelid AND a.attname = $2 AND NOT a.attisdropped
                 WHERE NOT a.attislocal AND a.attinhcount = 1
             )
             SELECT format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(x.indexrelid),
                    x.indnatts::int4, x.indpred IS NOT NULL, format('%I.%I', tn.nspname, tc.relname),
                    quote_ident(k.conname), pg_get_constraintdef(k.oid), obj_description(x.indexrelid, 'pg_class')
             FROM losing l
             JOIN pg_index x ON x.indrelid = l.relid
             JOIN pg_class ic ON ic.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = ic.relnamespace
             JOIN pg_class tc ON tc.oid = l.relid
             JOIN pg_namespace tn ON tn.oid = tc.relnamespace
             LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = l.relid
             WHERE NOT EXISTS (SELECT 1 FROM pg_inherits p WHERE p.inhrelid = x.indexrelid)
               AND (l.attnum = ANY (x.indkey::int2[])
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = x.indexrelid AND d.refclassid = 'pg_class'::regclass
                               AND d.refobjid = l.relid AND d.refobjsubid = l.attnum))
             ORDER BY tc.relname, ic.relname",
            &[&target.oid, &target.column.name],
        )
        .await
        .map_err(Error::db("finding the children's own indexes"))?;
    let mut found = Vec::new();
    for row in rows {
        let index: String = row.get(0);
        let definition: String = row.get(1);
        let columns: i32 = row.get(2);
        let partial: bool = row.get(3);
        let child: String = row.get(4);
        let constraint: Option<String> = row.get(5);
        let constraint_definition: Option<String> = row.get(6);
        let comment: Option<String> = row.get(7);
        let blocking = partial || columns > 1 || constraint.is_some();
        let what = match (&constraint, partial, columns > 1) {
            (Some(_), _, _) => "a constraint of its own",
            (None, true, _) => "a partial index of its own",
            (None, false, true) => "an index of its own that also covers other columns",
            (None, false, false) => "an index of its own on the column",
        };
        let (up, mut down) = match (&constraint, &constraint_definition) {
            (Some(name), Some(definition)) => (
                format!("ALTER TABLE {child} DROP CONSTRAINT {name}"),
                vec![format!(
                    "ALTER TABLE {child} ADD CONSTRAINT {name} {definition}"
                )],
            ),
            _ => (format!("DROP INDEX {index}"), vec![definition.clone()]),
        };
        if let Some(comment) = &comment {
            down.push(format!("COMMENT ON INDEX {index} IS {}", literal(comment)));
        }
        found.push(Dependent {
            finding: Finding::new(
                "child_index",
                if blocking {
                    Severity::Danger
                } else {
                    Severity::Warning
                },
                blocking,
                Evidence::Catalog,
                &index,
                format!("{child} has {what}, not attached to an index of {}; PostgreSQL drops it with the column, silently: {}", target.table_sql, constraint_definition.as_deref().unwrap_or(&definition)),
                if blocking {
                    "create its replacement on the child without the column before the drop, then acknowledge"
                } else {
                    "none: the migration drops it explicitly and the down recreates it"
                },
            ),
            change: Some(Change {
                stage: Stage::Main,
                rank: Rank::Index,
                order: 0,
                up: vec![up],
                down,
            }),
        });
    }
    Ok(found)
}
