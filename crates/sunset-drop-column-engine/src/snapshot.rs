//! A catalog dump for comparing schemas: one sorted line per fact, by name, never by oid or
//! column position (a column added back goes to the end of the table; that is not a difference
//! anyone's SQL can see, except `SELECT *` column order, which the down reports).

use std::collections::HashSet;

use tokio_postgres::GenericClient;

use crate::error::Error;

/// The relation kinds that have columns of their own.
pub const COLUMN_RELKINDS: &str = "('r', 'p', 'v', 'm', 'f')";

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'";

/// Every fact the drop and its down can touch, in the user's schemas.
pub async fn catalog(client: &impl GenericClient) -> Result<Vec<String>, Error> {
    // Every line is built by `format()`, whose `%s` renders NULL as an empty string: a field
    // that is NULL on some major (attstattarget is NULL for the default target from 17 on) must
    // never turn a whole line into NULL and make the fact vanish from the comparison.
    let queries = [
        format!(
            "SELECT format('relation %I.%I kind=%s owner=%s options=%s acl=%s replident=%s comment=%s',
                    n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), array_to_string(c.reloptions, ','),
                    (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(c.relacl) x), c.relreplident,
                    obj_description(c.oid, 'pg_class'))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I')"
        ),
        format!(
            "SELECT format('column %I.%I.%I %s collation=%s notnull=%s default=%s generated=%s identity=%s acl=%s stattarget=%s storage=%s compression=%s inherited=%s local=%s comment=%s',
                    n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), co.collname, a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), a.attgenerated, a.attidentity,
                    (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x),
                    coalesce(NULLIF(a.attstattarget::int4, -1)::text, 'default'), a.attstorage, a.attcompression,
                    a.attinhcount, a.attislocal, col_description(c.oid, a.attnum))
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_collation co ON co.oid = a.attcollation
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE {USER_SCHEMAS} AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN {COLUMN_RELKINDS}"
        ),
        format!(
            "SELECT format('constraint %I.%I.%I %s validated=%s comment=%s', n.nspname, c.relname, k.conname,
                    pg_get_constraintdef(k.oid), k.convalidated, obj_description(k.oid, 'pg_constraint'))
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT format('index %I.%I %s valid=%s replident=%s', n.nspname, c.relname,
                    pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisreplident)
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT format('view %I.%I %s', n.nspname, c.relname, pg_get_viewdef(c.oid))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND c.relkind IN ('v', 'm')"
        ),
        format!(
            "SELECT format('trigger %I.%I %s enabled=%s', n.nspname, c.relname, pg_get_triggerdef(t.oid), t.tgenabled)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND NOT t.tgisinternal"
        ),
        format!(
            "SELECT format('rule %I.%I %s', n.nspname, c.relname, pg_get_ruledef(r.oid))
             FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND r.rulename <> '_RETURN'"
        ),
        format!(
            "SELECT format('policy %I.%I.%I permissive=%s cmd=%s roles=%s using=%s check=%s', n.nspname, c.relname,
                    p.polname, p.polpermissive, p.polcmd, p.polroles, pg_get_expr(p.polqual, p.polrelid),
                    pg_get_expr(p.polwithcheck, p.polrelid))
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT format('statistics %s target=%s', pg_get_statisticsobjdef(s.oid),
                    coalesce(NULLIF(s.stxstattarget::int4, -1)::text, 'default'))
             FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT format('publication %I %I.%I columns=%s where=%s', p.pubname, n.nspname, c.relname,
                    (SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_attribute a
                     WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs::int2[])),
                    pg_get_expr(r.prqual, r.prrelid))
             FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
             JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT format('sequence owner %I.%I %s %I.%I.%I', sn.nspname, s.relname, d.deptype, n.nspname, c.relname, a.attname)
             FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
               AND {USER_SCHEMAS}"
        ),
        format!(
            "SELECT format('function %I.%I(%s) %s', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
                    md5(pg_get_functiondef(p.oid)))
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {USER_SCHEMAS} AND p.prokind IN ('f', 'p')"
        ),
    ];
    let mut lines = Vec::new();
    for query in &queries {
        let rows = client
            .query(query.as_str(), &[])
            .await
            .map_err(Error::db("reading the catalog for comparison"))?;
        for row in &rows {
            lines.push(
                row.try_get::<_, String>(0)
                    .map_err(Error::db("reading the catalog for comparison"))?,
            );
        }
    }
    lines.sort();
    Ok(lines)
}

/// The lines only in `before` (`-`) and only in `after` (`+`).
pub fn difference(before: &[String], after: &[String]) -> Vec<String> {
    let (in_before, in_after): (HashSet<&String>, HashSet<&String>) =
        (before.iter().collect(), after.iter().collect());
    let mut out: Vec<String> = before
        .iter()
        .filter(|l| !in_after.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        after
            .iter()
            .filter(|l| !in_before.contains(l))
            .map(|l| format!("+ {l}")),
    );
    out
}
