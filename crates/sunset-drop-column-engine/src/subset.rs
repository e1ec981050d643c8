//! The part of a schema `check --probe` can touch. Replaying a whole `pg_dump` of a big schema
//! into the scratch database takes seconds (2,000 tables: about 5 s of psql), while the probe
//! exercises one table. So the probe first runs on a scratch database holding every object that
//! is not a relation (types, functions, extensions, publications, ...) and only these relations:
//! the table, its partitions or inheritance children and the views over them (what the probe
//! writes and reads), plus whatever those need to exist, transitively: foreign-key and
//! inheritance parents, relations their rules, policies, triggers and defaults name, the tables
//! whose row types their columns use. Their publication memberships are added back by hand
//! (`pg_dump --table` leaves them out, and the memberships of the tables left out are removed).
//!
//! A relation left out shows up as a failure ("relation ... does not exist"), never as a
//! success, so the subset's answer is kept only when every step of the probe succeeded before
//! and after the up; anything else is decided again on the whole schema ([`crate::scratch`]).

use tokio_postgres::Client;

use crate::error::Error;

/// What the subset scratch database is loaded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subset {
    /// `pg_dump --table` patterns, one per relation: quoted, so names match exactly.
    pub(crate) relations: Vec<String>,
    /// `ALTER PUBLICATION ... ADD TABLE` for the relations' publication memberships.
    pub(crate) publications: Vec<String>,
}

/// The relations the probe writes or reads: the table, its descendants, the views (and views
/// over views) that read any of them.
const READERS: &str = "
    WITH RECURSIVE readers(oid) AS (
        SELECT $1::text::regclass::oid
        UNION
        SELECT next.oid FROM readers r, LATERAL (
            SELECT i.inhrelid AS oid FROM pg_inherits i WHERE i.inhparent = r.oid
            UNION ALL
            SELECT w.ev_class FROM pg_depend d
            JOIN pg_rewrite w ON w.oid = d.objid
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = r.oid AND w.ev_class <> r.oid
        ) next
    )";

/// From the readers, everything they need to be created, transitively (never what merely
/// reads them, so the subset does not grow into the whole schema). Each step goes through the
/// catalogs' indexes (a relation's parts by relation, their dependencies by object): a scan of
/// `pg_depend` per step took 0.4 s on 2,000 tables.
const CLOSURE: &str = "
    , needed(oid) AS (
        SELECT oid FROM readers
        UNION
        SELECT next.oid FROM needed n, LATERAL (
            SELECT i.inhparent AS oid FROM pg_inherits i WHERE i.inhrelid = n.oid
            UNION ALL
            SELECT d.refobjid FROM (
                SELECT 'pg_class'::regclass AS classid, n.oid AS objid
                UNION ALL
                SELECT 'pg_constraint'::regclass, k.oid FROM pg_constraint k WHERE k.conrelid = n.oid
                UNION ALL
                SELECT 'pg_rewrite'::regclass, w.oid FROM pg_rewrite w WHERE w.ev_class = n.oid
                UNION ALL
                SELECT 'pg_policy'::regclass, p.oid FROM pg_policy p WHERE p.polrelid = n.oid
                UNION ALL
                SELECT 'pg_attrdef'::regclass, a.oid FROM pg_attrdef a WHERE a.adrelid = n.oid
                UNION ALL
                SELECT 'pg_trigger'::regclass, t.oid FROM pg_trigger t
                WHERE t.tgrelid = n.oid AND NOT t.tgisinternal
            ) part
            JOIN pg_depend d ON d.classid = part.classid AND d.objid = part.objid
            WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> n.oid AND d.deptype = 'n'
            UNION ALL
            SELECT coalesce(nullif(t.typrelid, 0), e.typrelid) FROM pg_attribute a
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_type e ON e.oid = t.typelem
            WHERE a.attrelid = n.oid AND a.attnum > 0 AND NOT a.attisdropped
              AND coalesce(nullif(t.typrelid, 0), e.typrelid, 0) <> 0
        ) next
    )";

/// Reads the subset for `table` (a qualified, quoted name).
pub(crate) async fn read(client: &Client, table: &str) -> Result<Subset, Error> {
    let rows = client
        .query(
            &format!(
                "{READERS}{CLOSURE}
                 SELECT c.oid, format('\"%s\".\"%s\"', replace(s.nspname, '\"', '\"\"'),
                                      replace(c.relname, '\"', '\"\"'))
                 FROM needed JOIN pg_class c ON c.oid = needed.oid
                 JOIN pg_namespace s ON s.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                 ORDER BY 2"
            ),
            &[&table],
        )
        .await
        .map_err(Error::db("finding the relations the probe needs"))?;
    let oids: Vec<u32> = rows.iter().map(|row| row.get(0)).collect();
    let relations = rows.iter().map(|row| row.get(1)).collect();
    let publications = client
        .query(
            "SELECT format('ALTER PUBLICATION %I ADD TABLE ONLY %I.%I%s%s;',
                 p.pubname, s.nspname, c.relname,
                 CASE WHEN r.prattrs IS NULL THEN '' ELSE ' (' || (
                     SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)
                     FROM unnest(r.prattrs::int2[]) WITH ORDINALITY k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = r.prrelid AND a.attnum = k.attnum
                 ) || ')' END,
                 CASE WHEN r.prqual IS NULL THEN ''
                      ELSE ' WHERE (' || pg_get_expr(r.prqual, r.prrelid) || ')' END)
             FROM pg_publication_rel r
             JOIN pg_publication p ON p.oid = r.prpubid
             JOIN pg_class c ON c.oid = r.prrelid
             JOIN pg_namespace s ON s.oid = c.relnamespace
             WHERE r.prrelid = ANY($1)
             ORDER BY 1",
            &[&oids],
        )
        .await
        .map_err(Error::db(
            "reading the publication memberships the probe needs",
        ))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(Subset {
        relations,
        publications,
    })
}

/// Whether a line of `pg_restore --list` is a table's publication membership (`<id>; <catalog
/// oid> <oid> PUBLICATION TABLE <schema> <publication> <table> <owner>`): the kind comes before
/// any name, so no name can pass for one.
pub(crate) fn is_publication_membership(line: &str) -> bool {
    let mut fields = line.splitn(4, ' ');
    let (Some(id), Some(_), Some(_), Some(rest)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    id.ends_with(';') && rest.starts_with("PUBLICATION TABLE ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_memberships_are_told_by_their_kind_not_their_names() {
        assert!(is_publication_membership(
            "2698; 6106 34422 PUBLICATION TABLE public account_changes accounts postgres"
        ));
        assert!(!is_publication_membership(
            "2697; 6104 34421 PUBLICATION - account_changes postgres"
        ));
        assert!(!is_publication_membership(
            "2700; 1255 34500 FUNCTION public x PUBLICATION TABLE y() postgres"
        ));
        assert!(!is_publication_membership(
            ";PUBLICATION TABLE public p t postgres"
        ));
        assert!(!is_publication_membership(
            "2701; 6107 34501 PUBLICATION TABLES IN SCHEMA public p postgres"
        ));
    }
}
