//! Over 600 lines on purpose: every document case of both formats in one table-like file.
//!
//! Loading tests as data: each case is a document and the exact text an operator would see.

use expect_test::{Expect, expect};

use crate::*;

fn env(name: &str) -> Option<String> {
    match name {
        "LEGACY_REGION" => Some("eu-west-1".to_owned()),
        "BATCH_TARGET" => Some("250ms".to_owned()),
        _ => None,
    }
}

/// Loads `input` as a sequence (when it mentions `decommission_sequence`) or a backfill plan, and
/// renders either the diagnostics or a one-line summary of what loaded.
fn check(input: &str, expect: Expect) {
    let actual = if input.contains("decommission_sequence") {
        match load_sequence("seq.yaml", input, &env) {
            Ok(loaded) => format!("ok: {} steps", loaded.plan.decommission_sequence.len()),
            Err(diagnostics) => diagnostics.to_string(),
        }
    } else {
        match load_backfill_plan("plan.yaml", input, &env) {
            Ok(loaded) => format!("ok: {} on {}", loaded.plan.backfill, loaded.plan.table),
            Err(diagnostics) => diagnostics.to_string(),
        }
    };
    expect.assert_eq(&actual);
}

const ISSUE_SEQUENCE: &str = r#"
decommission_sequence:
  step_1_collectors:
    - action: stop_services
      targets: [legacy-collector-1, legacy-collector-2]
      validation: no_active_connections
      wait_time: 24h
  step_2_storage:
    - action: snapshot_volumes
      targets: [prometheus-data-vol-1]
      validation: snapshot_completed
    - action: detach_volumes
      validation: no_mount_points
  step_3_compute:
    - action: terminate_instances
      targets: [legacy-collector-instances]
      validation: instance_terminated
      wait_time: 1h
  step_4_networking:
    - action: remove_dns
      records: [legacy-metrics.internal]
    - action: delete_load_balancers
      targets: [legacy-metrics-lb]
    - action: clean_security_groups
"#;

const ISSUE_PLAN: &str = r#"
backfill: accounts-sti
table: public.accounts
key: id
discriminator: type
from: legacy_kind
map: { personal: PersonalAccount, business: BusinessAccount, partner: PartnerAccount }
unmapped: fail
where: "deleted_at IS NULL"
batch: { size: 1000, target_duration: 200ms }
throttle: { lock_timeout: 2s, statement_timeout: 30s, max_replication_lag: 10s }
"#;

#[test]
fn the_formats_from_the_issues_load_as_is() {
    check(ISSUE_SEQUENCE, expect!["ok: 4 steps"]);
    check(ISSUE_PLAN, expect!["ok: accounts-sti on public.accounts"]);
}

#[test]
fn the_sequence_keeps_step_order_and_values() {
    let loaded = load_sequence("seq.yaml", ISSUE_SEQUENCE, &env).unwrap();
    let names: Vec<&str> = loaded
        .plan
        .decommission_sequence
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "step_1_collectors",
            "step_2_storage",
            "step_3_compute",
            "step_4_networking"
        ]
    );
    let first = &loaded.plan.decommission_sequence.0[0].1[0];
    assert_eq!(
        first.wait_time.unwrap().0,
        std::time::Duration::from_secs(24 * 3600)
    );
    assert_eq!(
        first.validation.as_ref().unwrap().check,
        format::ValidationKind::NoActiveConnections
    );
    assert_eq!(loaded.plan.protect_tag.as_str(), "do-not-delete");
}

#[test]
fn malformed_sequences_point_at_the_problem() {
    // A typo'd action key suggests the right one.
    check(
        r#"
decommission_sequence:
  step_1:
    - acton: stop_services
      targets: [a]
"#,
        expect![
            "seq.yaml:4:7: decommission_sequence.step_1[0]: unknown field `acton`, expected one of `action`, `targets`, `records`, `zone`, `validation`, `wait_time`, `timeout`, `interval`, `command`, `sql`, `database_url`, `url`, `method`, `expect_status`, `dirs`, `tables`, `dest`, `idempotent`, `traffic`, `stages`, `hold`, `gates`, `expect`, `env` (did you mean `action`?)"
        ],
    );
    // An unknown action suggests the closest.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: terminate_instance
      targets: [a]
"#,
        expect![
            "seq.yaml:4:15: decommission_sequence.step_1[0].action: unknown variant `terminate_instance`, expected one of `stop_services`, `stop_instances`, `start_instances`, `snapshot_volumes`, `detach_volumes`, `delete_volumes`, `terminate_instances`, `release_addresses`, `delete_security_groups`, `clean_security_groups`, `remove_dns`, `delete_load_balancers`, `archive`, `command`, `sql`, `http`, `gate`, `shift_traffic` (did you mean `terminate_instances`?)"
        ],
    );
    // A bare number is not a duration.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: stop_services
      targets: [a]
      wait_time: 24
"#,
        expect![[
            r#"seq.yaml:6:18: decommission_sequence.step_1[0].wait_time: expected a duration like `90s`, `1h30m` or `200ms`, found `24` (missing a unit: ms, s, m, h or d)"#
        ]],
    );
    // An unknown unit.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: stop_services
      targets: [a]
      wait_time: 2w
"#,
        expect![[
            r#"seq.yaml:6:18: decommission_sequence.step_1[0].wait_time: expected a duration like `90s`, `1h30m` or `200ms`, found `2w` (unknown unit `w`; use ms, s, m, h or d)"#
        ]],
    );
    // An unknown validation.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: snapshot_volumes
      targets: [vol-1]
      validation: snapshot_complete
"#,
        expect![
            "seq.yaml:6:19: decommission_sequence.step_1[0].validation: unknown variant `snapshot_complete`, expected one of `instance_stopped`, `instance_running`, `instance_terminated`, `snapshot_completed`, `no_attachments`, `no_mount_points`, `no_active_connections`, `record_absent`, `load_balancer_gone`, `security_group_gone`, `http_status`, `command_succeeds`, `sql_returns_zero`, `metrics_match`, `no_traffic` (did you mean `snapshot_completed`?)"
        ],
    );
    // Targets must be a list.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: stop_services
      targets: { name: a }
"#,
        expect![[
            r#"seq.yaml:5:16: decommission_sequence.step_1[0].targets: invalid type: map, expected a sequence"#
        ]],
    );
    // Two steps with the same name would silently drop one.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: stop_services
      targets: [a]
  step_1:
    - action: terminate_instances
      targets: [a]
"#,
        expect![[r#"seq.yaml:6:3: decommission_sequence: duplicate key `step_1`"#]],
    );
    // An unset environment variable.
    check(
        r#"
region: ${LEGACY_REGION}
decommission_sequence:
  step_1:
    - action: http
      url: "https://${LEGACY_HOST}/health"
"#,
        expect![[
            r#"seq.yaml:6:12: decommission_sequence.step_1[0].url: environment variable `LEGACY_HOST` is not set (use `${LEGACY_HOST:-fallback}` for a default)"#
        ]],
    );
    // Broken YAML syntax.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: stop_services
      targets: [a, b
"#,
        expect![[
            r#"seq.yaml:6:1: did not find expected ',' or ']' while parsing a flow sequence at line 5 column 16"#
        ]],
    );
    // Semantic checks report every problem at once, each located.
    check(
        r#"
allowed_accounts: ["1234"]
decommission_sequence:
  step_1:
    - action: detach_volumes
    - action: remove_dns
  step_2: []
  step_3:
    - action: terminate_instances
      targets: ["tag:Role"]
"#,
        expect![[r#"
            seq.yaml:2:19: allowed_accounts: expected 12-digit AWS account ids, found `1234`
            seq.yaml:5:7: decommission_sequence.step_1[0]: `detach_volumes` without `targets` acts on the volumes of the action before it in the step, but it is the first action
            seq.yaml:6:7: decommission_sequence.step_1[1]: `remove_dns` needs `records`: the DNS names to remove
            seq.yaml:7:11: decommission_sequence.step_2: expected at least one action in the step
            seq.yaml:10:16: decommission_sequence.step_3[0].targets: expected a tag selector like `tag:Role=collector`, found `tag:Role`"#]],
    );
}

const PARITY_GATE: &str = r#"
decommission_sequence:
  step_1_parity:
    - action: gate
      validation:
        metrics_match:
          legacy: { prometheus: "http://prom:9090", match: '{collector="legacy"}' }
          new: { prometheus: "https://otel.example/prom" }
          range: 30m
          step: 30s
          exact: ["pg_stat_database_tup_*{datname='app'}", pg_locks_count]
          tolerance: { "pg_stat_database_blks_*": 0.01, cache_hit_ratio: 0.001 }
          derived: { cache_hit_ratio: "blks_hit / (blks_hit + blks_read)" }
          label_map: { service_name: instance }
          missing_series: warn
  step_2_quiet:
    - action: gate
      validation:
        no_traffic:
          prometheus: http://prom:9090
          query: 'sum(rate(haproxy_backend_http_requests_total{backend="legacy"}[1m]))'
          below: 0.01
          for: 5m
    - action: stop_instances
      targets: [legacy-1]
      validation: { check: no_active_connections, no_traffic: { prometheus: "http://prom:9090", query: "x", below: 1, for: 1m } }
"#;

#[test]
fn cutover_gates_load_with_their_settings() {
    let loaded = load_sequence("seq.yaml", PARITY_GATE, &env).unwrap();
    let (_, actions) = &loaded.plan.decommission_sequence.0[0];
    let probe = actions[0]
        .validation
        .as_ref()
        .unwrap()
        .probe
        .as_ref()
        .unwrap();
    let parity = probe.metrics_match.as_ref().unwrap();
    assert_eq!(parity.step.0, std::time::Duration::from_secs(30));
    assert_eq!(parity.tolerance.0[0].1, Number(0.01));
    assert_eq!(parity.missing_series, format::MissingSeries::Warn);
    assert_eq!(
        parity.ignore_labels,
        [Text("instance".to_owned()), Text("job".to_owned())]
    );
    let (_, quiet) = &loaded.plan.decommission_sequence.0[1];
    assert_eq!(
        quiet[1].validation.as_ref().unwrap().check,
        format::ValidationKind::NoActiveConnections
    );
}

#[test]
fn malformed_cutover_gates_point_at_the_problem() {
    // Every setting checked at once, each at its own node.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: gate
      targets: [i-1]
      validation:
        metrics_match:
          legacy: { prometheus: "prom:9090", match: "{collector=legacy}" }
          new: { prometheus: "http://prom:9090" }
          range: 1h
          step: 100ms
          exact: ["pg_stat[db]", "pg{datname=\"x\""]
          tolerance: { "pg_blks_*": 1.5, "pg_x": -0.1 }
          derived: { ratio: "blks_hit / (blks_hit + ", "bad-name": "a" }
          label_map: { service-name: instance }
          ignore_labels: ["job", "1x"]
    - action: gate
      validation:
        no_traffic: { prometheus: "http://p:9090", query: " ", below: -1, for: 0s }
    - action: gate
      validation: metrics_match
    - action: gate
    - action: gate
      validation: { metrics_match: { legacy: { prometheus: "http://a:1" }, new: { prometheus: "http://b:1" } } }
"#,
        expect![[r#"
            seq.yaml:5:16: decommission_sequence.step_1[0].targets: `gate` acts on nothing: its `validation` is all it does, so it takes no `targets`
            seq.yaml:8:33: decommission_sequence.step_1[0].validation.metrics_match.legacy.prometheus: expected a Prometheus URL like `http://prometheus:9090`, found `prom:9090`
            seq.yaml:8:53: decommission_sequence.step_1[0].validation.metrics_match.legacy.match: `{collector=legacy}` is not a list of label matchers: expected a quoted value for `collector`
            seq.yaml:11:17: decommission_sequence.step_1[0].validation.metrics_match.step: `range` over `step` is 36000 points a series; Prometheus answers at most 11000: take a longer step
            seq.yaml:12:19: decommission_sequence.step_1[0].validation.metrics_match.exact[0]: `pg_stat[db]` is not a metric name pattern: `[` is neither a metric name character (letters, digits, `_`, `:`) nor `*` or `?`
            seq.yaml:12:34: decommission_sequence.step_1[0].validation.metrics_match.exact[1]: `{datname="x"` is not a list of label matchers: expected `{label="value", ...}`
            seq.yaml:13:37: decommission_sequence.step_1[0].validation.metrics_match.tolerance.pg_blks_*: expected a relative difference from 0 up to (not including) 1, such as 0.01 for 1 %, found 1.5
            seq.yaml:13:50: decommission_sequence.step_1[0].validation.metrics_match.tolerance.pg_x: expected a relative difference from 0 up to (not including) 1, such as 0.01 for 1 %, found -0.1
            seq.yaml:14:29: decommission_sequence.step_1[0].validation.metrics_match.derived.ratio: `blks_hit / (blks_hit + ` is not arithmetic over metric names: it ends where a metric name or a number was expected
            seq.yaml:14:68: decommission_sequence.step_1[0].validation.metrics_match.derived.bad-name: `bad-name` is not a name for a derived metric (letters, digits, `_`)
            seq.yaml:15:38: decommission_sequence.step_1[0].validation.metrics_match.label_map.service-name: `service-name` is not a label name
            seq.yaml:16:26: decommission_sequence.step_1[0].validation.metrics_match.ignore_labels: `1x` is not a label name
            seq.yaml:19:59: decommission_sequence.step_1[1].validation.no_traffic.query: expected a PromQL query
            seq.yaml:19:71: decommission_sequence.step_1[1].validation.no_traffic.below: expected a threshold of 0 or more, found -1
            seq.yaml:19:80: decommission_sequence.step_1[1].validation.no_traffic.for: expected a duration above zero
            seq.yaml:21:19: decommission_sequence.step_1[2].validation: `metrics_match` needs its settings: `validation: { metrics_match: { legacy: { prometheus: URL }, new: { prometheus: URL }, exact: [PATTERN, ...] } }`
            seq.yaml:22:7: decommission_sequence.step_1[3]: `gate` needs `validation`: what must hold before the sequence goes on (`metrics_match`, `no_traffic`, ...)
            seq.yaml:24:36: decommission_sequence.step_1[4].validation.metrics_match: expected at least one metric to compare in `exact`, `tolerance` or `derived`"#]],
    );
    // A traffic shift: stages that do not increase, a gate with two thresholds and one whose
    // window outlasts the hold, fields of a shift on another action.
    check(
        r#"
decommission_sequence:
  shift:
    - action: shift_traffic
      traffic: { haproxy: { runtime_api: "127.0.0.1:9999", backend: app, legacy: old, new: old } }
      stages: [10, 50, 25, 100, 150]
      hold: 1m
      gates:
        - { prometheus: "http://p:9090", query: "errors", below: 0.01, within_weight: 2, for: 30s }
        - { prometheus: "http://p:9090", query: "p99", below_baseline: 0, for: 5m }
    - action: shift_traffic
      stages: [10]
    - action: gate
      validation: { no_traffic: { prometheus: "http://p:9090", query: q, below: 1, for: 1m } }
      hold: 1m
"#,
        expect![[r#"
            seq.yaml:5:92: decommission_sequence.shift[0].traffic.haproxy.new: expected `legacy` and `new` to name two different things
            seq.yaml:6:24: decommission_sequence.shift[0].stages[2]: expected stages that increase: 25 follows 50
            seq.yaml:6:33: decommission_sequence.shift[0].stages[4]: expected a share from 1 to 100 percent, found 150
            seq.yaml:9:11: decommission_sequence.shift[0].gates[0]: expected one threshold: `below`, `below_baseline` or `within_weight`
            seq.yaml:10:72: decommission_sequence.shift[0].gates[1].below_baseline: expected a factor above 0 (1.5: half as much again as before the shift), found 0
            seq.yaml:10:80: decommission_sequence.shift[0].gates[1].for: expected a window no longer than the stage's `hold`: a longer one is never judged
            seq.yaml:11:7: decommission_sequence.shift[1]: `shift_traffic` needs `traffic`: where the weights are set: `{ haproxy: { runtime_api, backend, legacy, new } }`
            seq.yaml:11:7: decommission_sequence.shift[1]: `shift_traffic` needs `hold`: how long each stage is watched before the next
            seq.yaml:15:13: decommission_sequence.shift[2].hold: `hold` is only used by `shift_traffic`, not `gate`"#]],
    );
    // A gate's settings under another check, and numbers that are not numbers: serde stops at
    // the first, so one case each.
    check(
        r#"
decommission_sequence:
  step_1:
    - action: gate
      validation: { check: sql_returns_zero, metrics_match: { legacy: { prometheus: "http://a:1" }, new: { prometheus: "http://b:1" }, exact: [x] } }
"#,
        expect![
            "seq.yaml:5:19: decommission_sequence.step_1[0].validation: `metrics_match` is a validation of its own, not a probe of `sql_returns_zero`"
        ],
    );
    check(
        r#"
decommission_sequence:
  step_1:
    - action: gate
      validation: { no_traffic: { prometheus: "http://p:9090", query: q, below: lots, for: 1m } }
"#,
        expect![
            "seq.yaml:5:81: decommission_sequence.step_1[0].validation.no_traffic.below: expected a number like `0.01` or `5`, found `lots`"
        ],
    );
    check(
        r#"
decommission_sequence:
  step_1:
    - action: gate
      validation: { metrics_match: { legacy: { prometheus: "http://a:1" }, new: { prometheus: "http://b:1" }, exact: [x], missing_series: ignore } }
"#,
        expect![
            "seq.yaml:5:139: decommission_sequence.step_1[0].validation.metrics_match.missing_series: unknown variant `ignore`, expected `fail` or `warn`"
        ],
    );
}

#[test]
fn malformed_backfill_plans_point_at_the_problem() {
    // A typo'd top-level key.
    check(
        r#"
backfill: b
tabel: public.accounts
key: id
discriminator: type
from: kind
map: { a: A }
"#,
        expect![[
            r#"plan.yaml:3:1: unknown field `tabel`, expected one of `version`, `backfill`, `mode`, `table`, `key`, `discriminator`, `from`, `map`, `unmapped`, `overwrite`, `where`, `sources`, `batch`, `throttle`, `coverage` (did you mean `table`?)"#
        ]],
    );
    // A missing required key.
    check(
        r#"
backfill: b
table: public.accounts
discriminator: type
from: kind
map: { a: A }
"#,
        expect![[r#"plan.yaml:2:1: missing field `key`"#]],
    );
    // A batch size that is not a number.
    check(
        r#"
backfill: b
table: t
key: id
discriminator: type
from: kind
map: { a: A }
batch: { size: big }
"#,
        expect![[r#"plan.yaml:8:16: batch.size: invalid type: string "big", expected u64"#]],
    );
    // `unmapped` with an unknown policy.
    check(
        r#"
backfill: b
table: t
key: id
discriminator: type
from: kind
map: { a: A }
unmapped: ignore
"#,
        expect![[
            r#"plan.yaml:8:11: unmapped: expected `fail`, `skip` or `{ default: TypeName }`, found `ignore`"#
        ]],
    );
    // A legacy value mapped twice.
    check(
        r#"
backfill: b
table: t
key: id
discriminator: type
from: kind
map:
  personal: PersonalAccount
  personal: BusinessAccount
"#,
        expect![[r#"plan.yaml:9:3: map: duplicate key `personal`"#]],
    );
    // Copy mode without sources and a batch out of bounds: both reported.
    check(
        r#"
backfill: b
mode: copy
table: t
key: [tenant_id, id]
discriminator: type
batch: { size: 5, min_size: 10 }
"#,
        expect![[r#"
            plan.yaml:2:1: missing field `sources`: copy mode needs at least one legacy table
            plan.yaml:7:16: batch.size: expected a size between `min_size` (10) and `max_size` (50000), found 5"#]],
    );
    // A pace of zero rows and a duty cycle that is not a fraction.
    check(
        r#"
backfill: b
table: t
key: id
discriminator: type
from: kind
map: { a: A }
throttle: { max_rows_per_second: 0, duty_cycle: 1.5 }
"#,
        expect![[r#"
            plan.yaml:8:34: throttle.max_rows_per_second: expected a rate of at least 1 row per second (leave it out for no cap)
            plan.yaml:8:49: throttle.duty_cycle: expected a fraction above 0 and at most 1 (0.5: batches half the time), found 1.5"#]],
    );
    // Load signals out of range, and a probe with nothing to judge it by.
    check(
        r#"
backfill: b
table: t
key: id
discriminator: type
from: kind
map: { a: A }
throttle: { max_active_sessions: 0, probe: "SELECT 1 FROM orders LIMIT 1", max_probe_slowdown: 0.5 }
"#,
        expect![[r#"
            plan.yaml:8:34: throttle.max_active_sessions: expected at least 1 session (leave it out for no limit)
            plan.yaml:8:96: throttle.max_probe_slowdown: expected a factor above 1 (2: twice the latency measured before the run), found 0.5"#]],
    );
    check(
        r#"
backfill: b
table: t
key: id
discriminator: type
from: kind
map: { a: A }
throttle: { probe: "SELECT 1" }
"#,
        expect![
            "plan.yaml:8:20: throttle.probe: a probe needs `max_probe_latency` or `max_probe_slowdown` to judge it by"
        ],
    );
    // A mode that does not exist.
    check(
        r#"
backfill: b
mode: inplace
table: t
key: id
discriminator: type
"#,
        expect![[
            r#"plan.yaml:3:7: mode: unknown variant `inplace`, expected `in_place` or `copy` (did you mean `in_place`?)"#
        ]],
    );
    // A version from the future.
    check(
        r#"
version: 2
backfill: b
table: t
key: id
discriminator: type
from: kind
map: { a: A }
"#,
        expect![[r#"plan.yaml:2:10: version: unsupported format version `2`, expected `1`"#]],
    );
    // The whole document is not a mapping.
    check(
        "- just\n- a list\n",
        expect![[r#"plan.yaml:1:1: invalid type: sequence, expected struct BackfillPlanFile"#]],
    );
}

#[test]
fn environment_values_are_interpolated_and_fingerprinted() {
    let plan = r#"
backfill: b
table: t
key: id
discriminator: type
from: kind
map: { a: A }
batch: { target_duration: "${BATCH_TARGET}" }
"#;
    let loaded = load_backfill_plan("plan.yaml", plan, &env).unwrap();
    assert_eq!(
        loaded.plan.batch.target_duration.0,
        std::time::Duration::from_millis(250)
    );
    let other_env = |name: &str| (name == "BATCH_TARGET").then(|| "300ms".to_owned());
    let changed = load_backfill_plan("plan.yaml", plan, &other_env).unwrap();
    assert_ne!(loaded.fingerprint, changed.fingerprint);
}

#[test]
fn fingerprints_ignore_formatting_but_not_meaning() {
    let base = load_backfill_plan("a.yaml", ISSUE_PLAN, &env)
        .unwrap()
        .fingerprint;
    let reformatted = r#"
# The same plan, written differently.
table: "public.accounts"
backfill: accounts-sti
key: [id]
discriminator: type
from: legacy_kind
map:
  partner: PartnerAccount
  business: BusinessAccount
  personal: PersonalAccount
where: deleted_at IS NULL
batch: { target_duration: 0h0m0s200ms }
throttle: { statement_timeout: 30000ms }
"#;
    assert_eq!(
        load_backfill_plan("b.yaml", reformatted, &env)
            .unwrap()
            .fingerprint,
        base
    );
    let changed = ISSUE_PLAN.replace("partner: PartnerAccount", "partner: BusinessAccount");
    assert_ne!(
        load_backfill_plan("c.yaml", &changed, &env)
            .unwrap()
            .fingerprint,
        base
    );

    // Step order is part of a sequence's meaning.
    let sequence = load_sequence("s.yaml", ISSUE_SEQUENCE, &env)
        .unwrap()
        .fingerprint;
    let swapped = ISSUE_SEQUENCE.replace("step_3_compute", "step_0_compute");
    assert_eq!(
        load_sequence("s.yaml", &swapped, &env)
            .unwrap()
            .fingerprint
            .as_str()
            .len(),
        64
    );
    assert_ne!(
        load_sequence("s.yaml", &swapped, &env).unwrap().fingerprint,
        sequence
    );
}
