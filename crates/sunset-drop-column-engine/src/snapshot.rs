//! A catalog dump for comparing schemas: one sorted line per fact, by name, never by oid or
//! column position (a column added back goes to the end of the table; that is not a difference
//! anyone's SQL can see, except `SELECT *` column order, which the down reports).

use std::collections::HashSet;

use tokio_postgres::GenericClient;

use crate::error::Error;

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'";

/// Every fact the drop and its down can touch, in the user's schemas.
pub async fn catalog(client: &impl GenericClient) -> Result<Vec<String>, Error> {
    let queries = [
        format!(
            "SELECT 'relation ' || format('%I.%I', n.nspname, c.relname) || ' kind=' || c.relkind::text
                    || ' owner=' || pg_get_userbyid(c.relowner) || ' options=' || coalesce(array_to_string(c.reloptions, ','), '')
                    || ' acl=' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(c.relacl) x), '') || ' replident=' || c.relreplident::text
                    || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I')"
        ),
        format!(
            "SELECT 'column ' || format('%I.%I.%I', n.nspname, c.relname, a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                    || ' collation=' || coalesce(co.collname, '') || ' notnull=' || a.attnotnull
                    || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' generated=' || a.attgenerated::text
                    || ' identity=' || a.attidentity::text
                    || ' acl=' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x), '')
                    || ' stattarget=' || a.attstattarget || ' storage=' || a.attstorage::text
                    || ' inherited=' || a.attinhcount || ' local=' || a.attislocal
                    || ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_collation co ON co.oid = a.attcollation
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE {USER_SCHEMAS} AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        ),
        format!(
            "SELECT 'constraint ' || format('%I.%I.%I', n.nspname, c.relname, k.conname) || ' ' || pg_get_constraintdef(k.oid)
                    || ' validated=' || k.convalidated || ' comment=' || coalesce(obj_description(k.oid, 'pg_constraint'), '')
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT 'index ' || format('%I.%I', n.nspname, c.relname) || ' ' || pg_get_indexdef(i.indexrelid)
                    || ' valid=' || i.indisvalid || ' replident=' || i.indisreplident
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT 'view ' || format('%I.%I', n.nspname, c.relname) || ' ' || pg_get_viewdef(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND c.relkind IN ('v', 'm')"
        ),
        format!(
            "SELECT 'trigger ' || format('%I.%I', n.nspname, c.relname) || ' ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND NOT t.tgisinternal"
        ),
        format!(
            "SELECT 'rule ' || format('%I.%I', n.nspname, c.relname) || ' ' || pg_get_ruledef(r.oid)
             FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND r.rulename <> '_RETURN'"
        ),
        format!(
            "SELECT 'policy ' || format('%I.%I.%I', n.nspname, c.relname, p.polname) || ' permissive=' || p.polpermissive
                    || ' cmd=' || p.polcmd::text || ' roles=' || p.polroles::text
                    || ' using=' || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
                    || ' check=' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT 'statistics ' || pg_get_statisticsobjdef(s.oid)
             FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT 'publication ' || p.pubname || ' ' || format('%I.%I', n.nspname, c.relname) || ' columns='
                    || coalesce((SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_attribute a
                                 WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs::int2[])), '')
                    || ' where=' || coalesce(pg_get_expr(r.prqual, r.prrelid), '')
             FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
             JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS}"
        ),
        format!(
            "SELECT 'sequence owner ' || format('%I.%I', sn.nspname, s.relname) || ' ' || d.deptype::text || ' '
                    || format('%I.%I.%I', n.nspname, c.relname, a.attname)
             FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
               AND {USER_SCHEMAS}"
        ),
        format!(
            "SELECT 'function ' || format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
                    || ' ' || md5(pg_get_functiondef(p.oid))
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
        lines.extend(rows.iter().filter_map(|r| r.get::<_, Option<String>>(0)));
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
