//! The column's dependency closure from the catalog. Each dependent becomes a finding and, where
//! the migration must deal with it, a [`Change`]: how the up migration removes it before the
//! `DROP COLUMN` (never CASCADE) and how the down migration recreates it.
//!
//! Longer than ~600 lines: one catalog query and change per kind of dependent, alike by design.

use tokio_postgres::Client;

use crate::error::Error;
use crate::findings::{Evidence, Finding, Severity};
use crate::target::{Grant, Target};

/// Which migration a change belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Outside a transaction, one statement at a time (`DROP INDEX CONCURRENTLY`).
    Concurrent,
    /// The transactional migration that ends with `DROP COLUMN`.
    Main,
}

/// Up-migration order inside the main stage: what depends on more comes off first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    IncomingForeignKey,
    View,
    Policy,
    Trigger,
    Publication,
    ReplicaIdentity,
    Constraint,
    Index,
    Statistics,
    GeneratedColumn,
    OwnedSequence,
}

/// How the migration handles one dependent: `up` removes it, `down` puts it back.
#[derive(Debug, Clone)]
pub struct Change {
    pub stage: Stage,
    pub rank: Rank,
    /// Orders changes of one rank in the up migration (views: deepest first).
    pub order: i32,
    pub up: Vec<String>,
    pub down: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Dependent {
    pub finding: Finding,
    pub change: Option<Change>,
}

impl Dependent {
    /// Evidence only: nothing for the migration to do.
    pub(crate) fn finding(finding: Finding) -> Dependent {
        Dependent {
            finding,
            change: None,
        }
    }
}

fn catalog(
    code: &'static str,
    severity: Severity,
    blocking: bool,
    object: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding::new(
        code,
        severity,
        blocking,
        Evidence::Catalog,
        object,
        detail,
        fix,
    )
}

fn main_change(rank: Rank, up: Vec<String>, down: Vec<String>) -> Option<Change> {
    Some(Change {
        stage: Stage::Main,
        rank,
        order: 0,
        up,
        down,
    })
}

/// A catalog query whose `$1` is the table's oid and `$2` the column's number.
async fn about_column(
    client: &Client,
    target: &Target,
    sql: &str,
    what: &str,
) -> Result<Vec<tokio_postgres::Row>, Error> {
    client
        .query(sql, &[&target.oid, &i32::from(target.column.attnum)])
        .await
        .map_err(Error::db(what))
}

/// Every dependent of the column, in a stable order.
pub async fn find(client: &Client, target: &Target) -> Result<Vec<Dependent>, Error> {
    let mut found = Vec::new();
    indexes(client, target, &mut found).await?;
    constraints(client, target, &mut found).await?;
    views(client, target, &mut found).await?;
    rules(client, target, &mut found).await?;
    policies(client, target, &mut found).await?;
    triggers(client, target, &mut found).await?;
    generated_columns(client, target, &mut found).await?;
    statistics(client, target, &mut found).await?;
    publications(client, target, &mut found).await?;
    children(client, target, &mut found).await?;
    sequences(client, target, &mut found).await?;
    column_properties(target, &mut found);
    Ok(found)
}

async fn indexes(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT format('%I.%I', n.nspname, c.relname), pg_get_indexdef(i.indexrelid),
                    i.indnatts::int4, i.indpred IS NOT NULL, i.indexprs IS NOT NULL, i.indisreplident,
                    EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype = 'f'),
                    obj_description(i.indexrelid, 'pg_class'),
                    $2::int4 = ANY (i.indkey::int2[])
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE i.indrelid = $1
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                               AND k.contype IN ('p', 'u', 'x'))
               AND ($2::int4 = ANY (i.indkey::int2[])
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int4))
             ORDER BY c.relname",
        "finding dependent indexes",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let definition: String = row.get(1);
        let columns: i32 = row.get(2);
        let partial: bool = row.get(3);
        let expression: bool = row.get(4);
        let replica_identity: bool = row.get(5);
        let referenced_by_fk: bool = row.get(6);
        let comment: Option<String> = row.get(7);
        let key_column: bool = row.get(8);
        let (code, severity, blocking, detail) = if partial && !(key_column && columns == 1) {
            (
                "partial_index",
                Severity::Danger,
                true,
                "its predicate uses the column; PostgreSQL would drop it silently and the queries it serves lose it",
            )
        } else if columns > 1 {
            (
                "composite_index",
                Severity::Danger,
                true,
                "it also covers other columns; PostgreSQL would drop it silently and queries on those columns lose it",
            )
        } else if expression && !key_column {
            (
                "expression_index",
                Severity::Warning,
                false,
                "an index on an expression of the column; dropped with it",
            )
        } else {
            (
                "index",
                Severity::Info,
                false,
                "an index on the column alone; dropped with it",
            )
        };
        // Indexes a foreign key or the replica identity relies on, indexes of a partitioned table
        // (no CONCURRENTLY there) and commented ones (a COMMENT cannot share a no-transaction
        // statement) come off inside the main migration, in order.
        let concurrent =
            !referenced_by_fk && !replica_identity && target.relkind != 'p' && comment.is_none();
        let mut down = vec![if concurrent {
            concurrently(&definition)
        } else {
            definition.clone()
        }];
        if let Some(comment) = &comment {
            down.push(format!("COMMENT ON INDEX {name} IS {}", literal(comment)));
        }
        let change = if concurrent {
            Change {
                stage: Stage::Concurrent,
                rank: Rank::Index,
                order: 0,
                up: vec![format!("DROP INDEX CONCURRENTLY IF EXISTS {name}")],
                down,
            }
        } else {
            Change {
                stage: Stage::Main,
                rank: Rank::Index,
                order: 0,
                up: vec![format!("DROP INDEX {name}")],
                down,
            }
        };
        found.push(Dependent {
            finding: catalog(
                code,
                severity,
                blocking,
                &name,
                format!("{detail}: {definition}"),
                if blocking {
                    "create a replacement index without the column (CONCURRENTLY) before the drop, then acknowledge"
                } else {
                    "none: the migration drops it explicitly and the down recreates it"
                },
            ),
            change: Some(change),
        });
        if replica_identity {
            let fallback = if target.has_primary_key {
                "DEFAULT"
            } else {
                "FULL"
            };
            found.push(Dependent {
                finding: catalog(
                    "replica_identity",
                    Severity::Danger,
                    true,
                    &name,
                    format!("the table's replica identity is this index; logical replication of UPDATE and DELETE depends on it (the migration switches to REPLICA IDENTITY {fallback})"),
                    "choose a replica identity without the column (ALTER TABLE ... REPLICA IDENTITY USING INDEX ...) before the drop",
                ),
                change: main_change(
                    Rank::ReplicaIdentity,
                    vec![format!("ALTER TABLE {} REPLICA IDENTITY {fallback}", target.table_sql)],
                    vec![format!("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}", target.table_sql, unqualified(&name))],
                ),
            });
        }
    }
    Ok(())
}

/// `CREATE [UNIQUE] INDEX name ...` as `CREATE [UNIQUE] INDEX CONCURRENTLY name ...`.
fn concurrently(definition: &str) -> String {
    definition.replacen(" INDEX ", " INDEX CONCURRENTLY ", 1)
}

/// `schema.name` to `name` (ALTER TABLE ... USING INDEX takes an unqualified name).
fn unqualified(name: &str) -> &str {
    // Quoted names may contain dots; the schema part never ends inside quotes here because
    // `format('%I.%I')` quotes both parts when needed, so the last unquoted dot splits.
    let mut in_quotes = false;
    let mut split = None;
    for (i, c) in name.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '.' if !in_quotes => split = Some(i),
            _ => {}
        }
    }
    split.map_or(name, |i| &name[i + 1..])
}

pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn constraints(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT quote_ident(k.conname), k.contype::text, pg_get_constraintdef(k.oid), k.convalidated,
                    format('%I.%I', n.nspname, c.relname), k.conrelid = $1 AND $2::int4 = ANY (k.conkey),
                    obj_description(k.oid, 'pg_constraint'), k.condeferrable, k.condeferred
             FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE k.contype IN ('c', 'u', 'x', 'f') AND k.conparentid = 0
               AND ((k.conrelid = $1 AND $2::int4 = ANY (k.conkey))
                    OR (k.contype = 'f' AND k.confrelid = $1 AND $2::int4 = ANY (k.confkey)))
             ORDER BY k.contype <> 'f' OR k.confrelid <> $1, c.relname, k.conname",
        "finding dependent constraints",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let kind: String = row.get(1);
        let definition: String = row.get(2);
        let validated: bool = row.get(3);
        let table: String = row.get(4);
        let own: bool = row.get(5);
        let comment: Option<String> = row.get(6);
        let object = format!("{table}.{name}");
        let incoming = kind == "f" && !own;
        let (code, severity, blocking, detail, fix) = match kind.as_str() {
            "f" if incoming => (
                "incoming_foreign_key",
                Severity::Danger,
                true,
                format!("{table} references the column: {definition}"),
                "move the reference to another key (or drop it in its own migration) before the drop",
            ),
            "f" => (
                "foreign_key",
                Severity::Warning,
                false,
                format!("the column references another table: {definition}"),
                "none: the migration drops the constraint explicitly and the down recreates it",
            ),
            "u" => (
                "unique_constraint",
                Severity::Danger,
                true,
                format!("uniqueness over the column and maybe others is lost: {definition}"),
                "replace the constraint with one without the column before the drop",
            ),
            "x" => (
                "exclusion_constraint",
                Severity::Danger,
                true,
                format!("exclusion over the column is lost: {definition}"),
                "replace the constraint with one without the column before the drop",
            ),
            _ => (
                "check_constraint",
                Severity::Warning,
                true,
                format!("a rule on the data is lost: {definition}"),
                "make sure the rule is enforced elsewhere (or no longer needed), then acknowledge",
            ),
        };
        // Foreign keys and checks come back NOT VALID then VALIDATE: a short lock, then a scan
        // that does not block writes. The catalog ends up the same as before.
        let revalidate = matches!(kind.as_str(), "f" | "c") && validated;
        let mut down = vec![format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {definition}{}",
            if revalidate { " NOT VALID" } else { "" }
        )];
        if revalidate {
            down.push(format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}"));
        }
        if let Some(comment) = &comment {
            down.push(format!(
                "COMMENT ON CONSTRAINT {name} ON {table} IS {}",
                literal(comment)
            ));
        }
        found.push(Dependent {
            finding: catalog(code, severity, blocking, object, detail, fix),
            change: main_change(
                if incoming {
                    Rank::IncomingForeignKey
                } else {
                    Rank::Constraint
                },
                vec![format!("ALTER TABLE {table} DROP CONSTRAINT {name}")],
                down,
            ),
        });
    }
    Ok(())
}

/// Rewrite rules (`CREATE RULE`, not the `_RETURN` rule of a view) that use the column.
async fn rules(client: &Client, target: &Target, found: &mut Vec<Dependent>) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT DISTINCT quote_ident(r.rulename), format('%I.%I', n.nspname, c.relname), pg_get_ruledef(r.oid)
             FROM pg_depend d
             JOIN pg_rewrite r ON r.oid = d.objid
             JOIN pg_class c ON c.oid = r.ev_class
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.refobjid = $1 AND d.refobjsubid = $2::int4 AND r.rulename <> '_RETURN'
             ORDER BY 2, 1",
        "finding dependent rules",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let table: String = row.get(1);
        let definition: String = row.get(2);
        found.push(Dependent {
            finding: catalog(
                "rule",
                Severity::Danger,
                true,
                format!("{table}.{name}"),
                format!("a rewrite rule uses the column: {definition}"),
                "rewrite the rule without the column before the drop, or acknowledge to have the migration drop it",
            ),
            change: main_change(
                Rank::View,
                vec![format!("DROP RULE {name} ON {table}")],
                vec![definition.trim_end_matches(';').to_owned()],
            ),
        });
    }
    Ok(())
}

async fn views(client: &Client, target: &Target, found: &mut Vec<Dependent>) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "WITH RECURSIVE closure(oid, depth, via) AS (
                 SELECT DISTINCT r.ev_class, 1, NULL::oid
                 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                 WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.refobjid = $1 AND d.refobjsubid = $2::int4 AND r.ev_class <> $1
               UNION
                 SELECT r.ev_class, c.depth + 1, c.oid
                 FROM closure c
                 JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
                                 AND d.classid = 'pg_rewrite'::regclass
                 JOIN pg_rewrite r ON r.oid = d.objid
                 WHERE r.ev_class <> c.oid AND c.depth < 100
             )
             SELECT format('%I.%I', n.nspname, v.relname), v.relkind::text, max(cl.depth)::int4,
                    (SELECT format('%I.%I', vn.nspname, vc.relname) FROM closure c2
                     JOIN pg_class vc ON vc.oid = c2.via JOIN pg_namespace vn ON vn.oid = vc.relnamespace
                     WHERE c2.oid = v.oid ORDER BY c2.depth LIMIT 1),
                    rtrim(pg_get_viewdef(v.oid), ';'), array_to_string(v.reloptions, ', '),
                    pg_get_userbyid(v.relowner)::text, obj_description(v.oid, 'pg_class'),
                    array(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = v.oid ORDER BY i.indexrelid),
                    array(SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid = v.oid AND NOT t.tgisinternal ORDER BY t.tgname),
                    v.oid
             FROM closure cl JOIN pg_class v ON v.oid = cl.oid JOIN pg_namespace n ON n.oid = v.relnamespace
             WHERE v.relkind IN ('v', 'm')
             GROUP BY v.oid, n.nspname
             ORDER BY 3, 1",
        "finding dependent views",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let materialized = row.get::<_, String>(1) == "m";
        let depth: i32 = row.get(2);
        let via: Option<String> = row.get(3);
        let definition: String = row.get(4);
        let options: Option<String> = row.get(5);
        let owner: String = row.get(6);
        let comment: Option<String> = row.get(7);
        let indexes: Vec<String> = row.get(8);
        let triggers: Vec<String> = row.get(9);
        let oid: u32 = row.get(10);
        let kind = if materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        let with = options
            .filter(|o| !o.is_empty())
            .map(|o| format!(" WITH ({o})"))
            .unwrap_or_default();
        let mut down = vec![format!(
            "CREATE {kind} {name}{with} AS\n{}{}",
            definition.trim_end(),
            if materialized { "\nWITH DATA" } else { "" }
        )];
        if owner != target.current_user {
            down.push(format!(
                "ALTER {kind} {name} OWNER TO {}",
                quote_role(&owner)
            ));
        }
        down.extend(relation_grants(client, oid, kind, &name).await?);
        if let Some(comment) = &comment {
            down.push(format!("COMMENT ON {kind} {name} IS {}", literal(comment)));
        }
        down.extend(indexes);
        down.extend(triggers);
        let how = match &via {
            Some(via) => format!("through {via}"),
            None => "directly".to_owned(),
        };
        found.push(Dependent {
            finding: catalog(
                if materialized { "materialized_view" } else { "view" },
                Severity::Danger,
                true,
                &name,
                format!("uses the column {how}; the drop would fail without CASCADE"),
                "rewrite the view without the column (CREATE OR REPLACE) before the drop, or acknowledge to have the migration drop it and the down recreate it",
            ),
            change: Some(Change {
                stage: Stage::Main,
                rank: Rank::View,
                order: -depth,
                up: vec![format!("DROP {kind} {name}")],
                down,
            }),
        });
    }
    Ok(())
}

fn quote_role(role: &str) -> String {
    if role
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !role.starts_with(|c: char| c.is_ascii_digit())
    {
        role.to_owned()
    } else {
        format!("\"{}\"", role.replace('"', "\"\""))
    }
}

/// `GRANT`s that recreate a relation's privileges (the owner's own are implicit).
async fn relation_grants(
    client: &Client,
    oid: u32,
    kind: &str,
    name: &str,
) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT g.privilege_type, CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                    g.is_grantable
             FROM pg_class c, aclexplode(c.relacl) g
             WHERE c.oid = $1 AND g.grantee <> c.relowner
             ORDER BY 2, 1",
            &[&oid],
        )
        .await
        .map_err(Error::db("reading a view's privileges"))?;
    let on = if kind == "VIEW" || kind == "MATERIALIZED VIEW" {
        "TABLE"
    } else {
        kind
    };
    Ok(rows
        .iter()
        .map(|r| {
            grant_sql(
                &Grant {
                    privilege: r.get(0),
                    grantee: r.get(1),
                    grantable: r.get(2),
                },
                &format!("{on} {name}"),
            )
        })
        .collect())
}

pub(crate) fn grant_sql(grant: &Grant, on: &str) -> String {
    format!(
        "GRANT {} ON {on} TO {}{}",
        grant.privilege,
        grant.grantee,
        if grant.grantable {
            " WITH GRANT OPTION"
        } else {
            ""
        }
    )
}

async fn policies(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT quote_ident(p.polname), format('%I.%I', n.nspname, c.relname), p.polpermissive,
                    CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                  WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                    array_to_string(array(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
                                          FROM unnest(p.polroles) r ORDER BY 1), ', '),
                    pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
             FROM pg_policy p
             JOIN pg_class c ON c.oid = p.polrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                           AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int4)
             ORDER BY c.relname, p.polname",
        "finding dependent policies",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let table: String = row.get(1);
        let permissive: bool = row.get(2);
        let command: String = row.get(3);
        let roles: String = row.get(4);
        let using: Option<String> = row.get(5);
        let check: Option<String> = row.get(6);
        let mut create = format!(
            "CREATE POLICY {name} ON {table} AS {} FOR {command} TO {roles}",
            if permissive {
                "PERMISSIVE"
            } else {
                "RESTRICTIVE"
            }
        );
        if let Some(using) = &using {
            create.push_str(&format!(" USING ({using})"));
        }
        if let Some(check) = &check {
            create.push_str(&format!(" WITH CHECK ({check})"));
        }
        let (code, detail) = if permissive {
            (
                "policy",
                "a permissive policy uses the column; without it, the rows it granted are no longer visible to its roles",
            )
        } else {
            (
                "restrictive_policy",
                "a RESTRICTIVE policy uses the column; dropping it WIDENS access to the table",
            )
        };
        found.push(Dependent {
            finding: catalog(
                code,
                Severity::Danger,
                true,
                format!("{table}.{name}"),
                format!("{detail}: {create}"),
                "rewrite the policy without the column (ALTER POLICY) before the drop",
            ),
            change: main_change(
                Rank::Policy,
                vec![format!("DROP POLICY {name} ON {table}")],
                vec![create],
            ),
        });
    }
    Ok(())
}

async fn triggers(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT quote_ident(t.tgname), format('%I.%I', n.nspname, c.relname), pg_get_triggerdef(t.oid),
                    t.tgrelid = $1 AND $2::int4 = ANY (t.tgattr::int2[]), t.tgenabled::text
             FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal
               AND ((t.tgrelid = $1 AND $2::int4 = ANY (t.tgattr::int2[]))
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_trigger'::regclass AND d.objid = t.oid
                               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int4))
             ORDER BY c.relname, t.tgname",
        "finding dependent triggers",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let table: String = row.get(1);
        let definition: String = row.get(2);
        let update_of: bool = row.get(3);
        let enabled: String = row.get(4);
        found.push(Dependent {
            finding: catalog(
                if update_of { "update_of_trigger" } else { "trigger" },
                Severity::Danger,
                true,
                format!("{table}.{name}"),
                format!(
                    "{}: {definition}",
                    if update_of {
                        "fires on UPDATE OF the column"
                    } else {
                        "its WHEN clause uses the column"
                    }
                ),
                "move the trigger off the column before the drop, or acknowledge to have the migration drop it",
            ),
            change: main_change(
                Rank::Trigger,
                vec![format!("DROP TRIGGER {name} ON {table}")],
                trigger_down(&definition, &name, &table, &enabled),
            ),
        });
    }
    Ok(())
}

/// `CREATE TRIGGER` plus the `ALTER TABLE ... DISABLE/ENABLE` that restores its firing state.
pub(crate) fn trigger_down(
    definition: &str,
    name: &str,
    table: &str,
    enabled: &str,
) -> Vec<String> {
    let mut down = vec![definition.to_owned()];
    let state = match enabled {
        "D" => Some("DISABLE TRIGGER"),
        "R" => Some("ENABLE REPLICA TRIGGER"),
        "A" => Some("ENABLE ALWAYS TRIGGER"),
        _ => None,
    };
    if let Some(state) = state {
        down.push(format!("ALTER TABLE {table} {state} {name}"));
    }
    down
}

async fn generated_columns(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), pg_get_expr(ad.adbin, ad.adrelid),
                    CASE a.attgenerated WHEN 'v' THEN 'VIRTUAL' ELSE 'STORED' END
             FROM pg_attrdef ad
             JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
             WHERE ad.adrelid = $1 AND a.attgenerated <> '' AND ad.adnum <> $2::int4 AND NOT a.attisdropped
               AND EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int4
                             AND ((d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid)
                                  OR (d.classid = 'pg_class'::regclass AND d.objid = $1 AND d.objsubid = a.attnum)))
             ORDER BY a.attnum",
        "finding dependent generated columns",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let type_sql: String = row.get(1);
        let expression: String = row.get(2);
        // PostgreSQL 18 adds VIRTUAL generated columns; the down keeps the kind.
        let kind: String = row.get(3);
        let table = &target.table_sql;
        found.push(Dependent {
            finding: catalog(
                "generated_column",
                Severity::Danger,
                true,
                format!("{table}.{name}"),
                format!("computed as {expression}; PostgreSQL would drop this column too"),
                "redefine the generated column without the legacy column before the drop",
            ),
            change: main_change(
                Rank::GeneratedColumn,
                vec![format!("ALTER TABLE {table} DROP COLUMN {name}")],
                vec![format!(
                    "ALTER TABLE {table} ADD COLUMN {name} {type_sql} GENERATED ALWAYS AS ({expression}) {kind}"
                )],
            ),
        });
    }
    Ok(())
}

async fn statistics(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT format('%I.%I', n.nspname, s.stxname), pg_get_statisticsobjdef(s.oid)
             FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
             WHERE s.stxrelid = $1
               AND ($2::int4 = ANY (s.stxkeys::int2[])
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_statistic_ext'::regclass AND d.objid = s.oid
                               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int4))
             ORDER BY s.stxname",
        "finding dependent statistics",
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let definition: String = row.get(1);
        found.push(Dependent {
            finding: catalog(
                "extended_statistics",
                Severity::Warning,
                false,
                &name,
                format!("the planner's extended statistics over the column: {definition}"),
                "none: the migration drops it explicitly and the down recreates it (run ANALYZE after a down)",
            ),
            change: main_change(
                Rank::Statistics,
                vec![format!("DROP STATISTICS {name}")],
                vec![definition],
            ),
        });
    }
    Ok(())
}

async fn publications(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(Error::db("reading the server version"))?
        .get(0);
    if version < 150000 {
        return Ok(()); // Column lists arrived in PostgreSQL 15.
    }
    let rows = about_column(
        client,
        target,
        "SELECT quote_ident(p.pubname),
                    array(SELECT quote_ident(a.attname) FROM pg_attribute a
                          WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs::int2[]) ORDER BY a.attnum),
                    pg_get_expr(r.prqual, r.prrelid)
             FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
             WHERE r.prrelid = $1
               AND (coalesce($2::int4 = ANY (r.prattrs::int2[]), false)
                    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_publication_rel'::regclass
                               AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
                               AND d.refobjid = $1 AND d.refobjsubid = $2::int4))
             ORDER BY p.pubname",
        "finding publications that list the column or filter on it",
    )
    .await?;
    for row in rows {
        let publication: String = row.get(0);
        let columns: Vec<String> = row.get(1);
        let filter: Option<String> = row.get(2);
        // The filter's text, as PostgreSQL deparses it, names the column as an identifier.
        let filtered_on = filter
            .as_deref()
            .is_some_and(|f| crate::references::contains_word(f, &target.column.name_sql));
        let table = &target.table_sql;
        let filter_sql = filter
            .as_ref()
            .map(|f| format!(" WHERE ({f})"))
            .unwrap_or_default();
        let rest: Vec<&String> = columns
            .iter()
            .filter(|c| **c != target.column.name_sql)
            .collect();
        let with_columns = |columns: &[&String]| {
            let list = if columns.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    columns
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            format!("ALTER PUBLICATION {publication} ADD TABLE {table}{list}{filter_sql}")
        };
        let drop_table = format!("ALTER PUBLICATION {publication} DROP TABLE {table}");
        if filtered_on {
            // Publishing the table again without the filter would send rows the subscribers never
            // received: the up takes the table out of the publication, and the down puts it back.
            let all: Vec<&String> = columns.iter().collect();
            found.push(Dependent {
                finding: catalog(
                    "publication_row_filter",
                    Severity::Danger,
                    true,
                    publication.clone(),
                    format!(
                        "publishes {table} with a row filter on the column (WHERE {}); the drop fails without CASCADE, and with it the table leaves the publication",
                        filter.as_deref().unwrap_or_default()
                    ),
                    "change the publication's row filter (ALTER PUBLICATION ... SET TABLE ... WHERE ...) to one without the column first",
                ),
                change: main_change(Rank::Publication, vec![drop_table], vec![with_columns(&all)]),
            });
            continue;
        }
        let mut up = vec![drop_table.clone()];
        if !rest.is_empty() {
            up.push(with_columns(&rest));
        }
        let all: Vec<&String> = columns.iter().collect();
        let down = if rest.is_empty() {
            vec![with_columns(&all)]
        } else {
            vec![drop_table, with_columns(&all)]
        };
        found.push(Dependent {
            finding: catalog(
                "publication_column_list",
                Severity::Danger,
                true,
                publication.clone(),
                format!(
                    "publishes {table} with the column list ({}); subscribers stop receiving it",
                    columns.join(", ")
                ),
                "remove the column from the publication (and from the subscribers' expectations) first",
            ),
            change: main_change(Rank::Publication, up, down),
        });
    }
    Ok(())
}

async fn children(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), a.attislocal, c.relispartition
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped
             WHERE i.inhparent = $1
             ORDER BY c.relname",
            &[&target.oid, &target.column.name],
        )
        .await
        .map_err(Error::db("finding child tables"))?;
    for row in rows {
        let child: String = row.get(0);
        let local: bool = row.get(1);
        let partition: bool = row.get(2);
        let (severity, blocking, detail) = if partition {
            (
                Severity::Info,
                false,
                "a partition: it loses the column with the parent".to_owned(),
            )
        } else if local {
            (
                Severity::Warning,
                false,
                "an inheritance child that also defines the column itself: it keeps its copy"
                    .to_owned(),
            )
        } else {
            (
                Severity::Danger,
                true,
                "an inheritance child: the drop removes the column (and its data) from it too"
                    .to_owned(),
            )
        };
        found.push(Dependent {
            finding: catalog(
                "inheritance_child",
                severity,
                blocking,
                child,
                detail,
                "check the child's own dependents and users too",
            ),
            change: None,
        });
    }
    Ok(())
}

async fn sequences(
    client: &Client,
    target: &Target,
    found: &mut Vec<Dependent>,
) -> Result<(), Error> {
    let rows = about_column(
        client,
        target,
        "SELECT format('%I.%I', n.nspname, s.relname), d.deptype::text
             FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_namespace n ON n.oid = s.relnamespace
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.refobjid = $1 AND d.refobjsubid = $2::int4 AND d.deptype IN ('a', 'i')
             ORDER BY s.relname",
        "finding owned sequences",
    )
    .await?;
    let table = &target.table_sql;
    let column = &target.column.name_sql;
    for row in rows {
        let sequence: String = row.get(0);
        if row.get::<_, String>(1) == "i" {
            found.push(Dependent {
                finding: catalog(
                    "identity_column",
                    Severity::Warning,
                    false,
                    &sequence,
                    "the column is an identity column; its sequence goes with it and a down recreates it from 1 (or, with --restore-data, from the restored maximum)",
                    "none, unless other code reads that sequence",
                ),
                change: None,
            });
            continue;
        }
        found.push(Dependent {
            finding: catalog(
                "owned_sequence",
                Severity::Warning,
                false,
                &sequence,
                "owned by the column (serial); PostgreSQL would drop it with the column, so the migration detaches it and keeps it",
                "drop the sequence in a later migration once nothing calls nextval on it",
            ),
            change: main_change(
                Rank::OwnedSequence,
                vec![format!("ALTER SEQUENCE {sequence} OWNED BY NONE")],
                vec![format!("ALTER SEQUENCE {sequence} OWNED BY {table}.{column}")],
            ),
        });
    }
    Ok(())
}

/// Findings about the column itself (its comment and grants are restored by the down).
fn column_properties(target: &Target, found: &mut Vec<Dependent>) {
    let column = &target.column;
    let object = format!("{}.{}", target.table_sql, column.name_sql);
    if column.not_null
        && column.default.is_none()
        && column.identity.is_none()
        && column.generated.is_none()
    {
        found.push(Dependent::finding(catalog(
            "not_null_without_default",
            Severity::Warning,
            false,
            &object,
            "the column is NOT NULL without a default: a schema-only down cannot add it back to a non-empty table",
            "generate with --restore-data for a down that works on a non-empty table",
        )));
    }
    if let Some(comment) = &column.comment {
        found.push(Dependent {
            finding: catalog(
                "comment",
                Severity::Info,
                false,
                &object,
                format!("documented as: {comment}"),
                "none: the down restores it",
            ),
            change: None,
        });
    }
    if !column.grants.is_empty() {
        let grants: Vec<String> = column
            .grants
            .iter()
            .map(|g| format!("{} to {}", g.privilege, g.grantee))
            .collect();
        found.push(Dependent {
            finding: catalog(
                "column_grant",
                Severity::Info,
                false,
                &object,
                format!("column privileges: {}", grants.join(", ")),
                "none: the down restores them; check the grantees do not rely on the column",
            ),
            change: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_index_definitions() {
        assert_eq!(
            concurrently("CREATE UNIQUE INDEX a ON public.t USING btree (x)"),
            "CREATE UNIQUE INDEX CONCURRENTLY a ON public.t USING btree (x)"
        );
        assert_eq!(
            concurrently("CREATE INDEX a ON public.t USING btree (x)"),
            "CREATE INDEX CONCURRENTLY a ON public.t USING btree (x)"
        );
    }

    #[test]
    fn unqualified_names() {
        assert_eq!(unqualified("public.idx"), "idx");
        assert_eq!(unqualified(r#""my.schema"."my.idx""#), r#""my.idx""#);
        assert_eq!(unqualified("idx"), "idx");
    }

    #[test]
    fn roles_are_quoted_only_when_needed() {
        assert_eq!(quote_role("app_reader"), "app_reader");
        assert_eq!(quote_role("App Reader"), "\"App Reader\"");
    }
}
