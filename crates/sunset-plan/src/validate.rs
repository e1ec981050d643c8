//! Semantic checks that serde can't express, run after a plan deserialized. Unlike serde, they
//! collect every problem, each located in the file, so an operator fixes a plan in one pass.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::format::{
    ActionFile, ActionKind, BackfillMode, BackfillPlanFile, FORMAT_VERSION, SequenceFile, Unmapped,
    ValidationKind,
};
use crate::yaml::{PathSegment, diagnostic_at};

/// Collects located diagnostics for one file.
pub(crate) struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    found: Vec<Diagnostic>,
}

impl Checker<'_> {
    pub(crate) fn error(&mut self, path: &[PathSegment], message: impl Into<String>) {
        self.found
            .push(diagnostic_at(self.file, self.text, path, message));
    }

    fn finish(mut self) -> Result<(), Diagnostics> {
        self.found.sort_by_key(|d| (d.line, d.column));
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(Diagnostics(self.found))
        }
    }
}

fn key(name: &str) -> PathSegment {
    PathSegment::Key(name.to_owned())
}

fn check_version(checker: &mut Checker<'_>, version: u32) {
    if version != FORMAT_VERSION {
        checker.error(
            &[key("version")],
            format!("unsupported format version `{version}`, expected `{FORMAT_VERSION}`"),
        );
    }
}

pub(crate) fn backfill_plan(
    file: &str,
    text: &str,
    plan: &BackfillPlanFile,
) -> Result<(), Diagnostics> {
    let mut checker = Checker {
        file,
        text,
        found: Vec::new(),
    };
    check_version(&mut checker, plan.version);
    if plan.backfill.as_str().trim().is_empty() {
        checker.error(
            &[key("backfill")],
            "expected a run name, found an empty string",
        );
    }
    if plan.key.0.is_empty() {
        checker.error(&[key("key")], "expected at least one key column");
    }
    match plan.mode {
        BackfillMode::InPlace => {
            if plan.from.is_none() {
                checker.error(&[], "missing field `from`: in-place mode needs the legacy column to read types from");
            }
            match &plan.map {
                None => checker.error(
                    &[],
                    "missing field `map`: in-place mode needs a map of legacy value to type name",
                ),
                Some(map) if map.is_empty() => {
                    checker.error(&[key("map")], "expected at least one legacy value to map")
                }
                Some(_) => {}
            }
            if !plan.sources.is_empty() {
                checker.error(
                    &[key("sources")],
                    "`sources` is only used with `mode: copy`",
                );
            }
        }
        BackfillMode::Copy => {
            if plan.sources.is_empty() {
                checker.error(
                    &[],
                    "missing field `sources`: copy mode needs at least one legacy table",
                );
            }
            if plan.map.is_some() {
                checker.error(&[key("map")], "`map` is only used with `mode: in_place`");
            }
            if matches!(plan.unmapped, Unmapped::Default(_)) {
                checker.error(
                    &[key("unmapped")],
                    "`unmapped` is only used with `mode: in_place`",
                );
            }
            if plan.overwrite.is_some() {
                checker.error(
                    &[key("overwrite")],
                    "`overwrite` is only used with `mode: in_place`; a copy never replaces a row the STI table already has",
                );
            }
            if plan.from.is_some() {
                checker.error(
                    &[key("from")],
                    "`from` is only used with `mode: in_place`; each source's `type` names its rows' type",
                );
            }
            if plan.filter.is_some() {
                checker.error(
                    &[key("where")],
                    "a top-level `where` is only used with `mode: in_place`; put `where` on each source",
                );
            }
            for (n, source) in plan.sources.iter().enumerate() {
                let at = |field: &str| [key("sources"), PathSegment::Index(n), key(field)];
                if source.type_name.as_str().trim().is_empty() {
                    checker.error(&at("type"), "expected a type name, found an empty string");
                }
                if source.key.as_ref().is_some_and(|k| k.0.is_empty()) {
                    checker.error(&at("key"), "expected at least one key column");
                }
                if source
                    .columns
                    .keys()
                    .any(|c| c.as_str() == plan.discriminator.as_str())
                {
                    checker.error(
                        &at("columns"),
                        format!(
                            "`{}` is the discriminator: copy mode sets it to the source's `type`",
                            plan.discriminator.as_str()
                        ),
                    );
                }
            }
        }
    }
    let batch = &plan.batch;
    if batch.size == 0 || batch.min_size == 0 {
        checker.error(&[key("batch")], "expected batch sizes of at least 1");
    }
    if batch.min_size > batch.max_size {
        checker.error(
            &[key("batch"), key("min_size")],
            format!(
                "`min_size` ({}) is above `max_size` ({})",
                batch.min_size, batch.max_size
            ),
        );
    }
    if !(batch.min_size..=batch.max_size).contains(&batch.size) {
        checker.error(
            &[key("batch"), key("size")],
            format!(
                "expected a size between `min_size` ({}) and `max_size` ({}), found {}",
                batch.min_size, batch.max_size, batch.size
            ),
        );
    }
    if batch.target_duration.0.is_zero() {
        checker.error(
            &[key("batch"), key("target_duration")],
            "expected a target duration above zero",
        );
    }
    if plan.throttle.max_rows_per_second == Some(0) {
        checker.error(
            &[key("throttle"), key("max_rows_per_second")],
            "expected a rate of at least 1 row per second (leave it out for no cap)",
        );
    }
    if let Some(duty) = plan.throttle.duty_cycle
        && !(duty.0 > 0.0 && duty.0 <= 1.0)
    {
        checker.error(
            &[key("throttle"), key("duty_cycle")],
            format!(
                "expected a fraction above 0 and at most 1 (0.5: batches half the time), found {}",
                duty.0
            ),
        );
    }
    let throttle = &plan.throttle;
    if throttle.max_active_sessions == Some(0) {
        checker.error(
            &[key("throttle"), key("max_active_sessions")],
            "expected at least 1 session (leave it out for no limit)",
        );
    }
    if throttle
        .max_probe_latency
        .is_some_and(|latency| latency.0.is_zero())
    {
        checker.error(
            &[key("throttle"), key("max_probe_latency")],
            "expected a latency above zero",
        );
    }
    if let Some(slowdown) = throttle.max_probe_slowdown
        && !(slowdown.0 > 1.0 && slowdown.0.is_finite())
    {
        checker.error(
            &[key("throttle"), key("max_probe_slowdown")],
            format!(
                "expected a factor above 1 (2: twice the latency measured before the run), found {}",
                slowdown.0
            ),
        );
    }
    if throttle.probe.is_some()
        && throttle.max_probe_latency.is_none()
        && throttle.max_probe_slowdown.is_none()
    {
        checker.error(
            &[key("throttle"), key("probe")],
            "a probe needs `max_probe_latency` or `max_probe_slowdown` to judge it by",
        );
    }
    checker.finish()
}

/// Actions that may omit `targets`: they act on what the action before them in the step acted
/// on, or (for security groups) on the groups of the resources this sequence removed.
fn may_inherit_targets(kind: ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::DetachVolumes
            | ActionKind::DeleteVolumes
            | ActionKind::SnapshotVolumes
            | ActionKind::CleanSecurityGroups
            | ActionKind::ReleaseAddresses
            | ActionKind::Archive
            | ActionKind::Command
            | ActionKind::Sql
            | ActionKind::Http
            | ActionKind::RemoveDns
    )
}

pub(crate) fn sequence(file: &str, text: &str, sequence: &SequenceFile) -> Result<(), Diagnostics> {
    let mut checker = Checker {
        file,
        text,
        found: Vec::new(),
    };
    check_version(&mut checker, sequence.version);
    if sequence.decommission_sequence.is_empty() {
        checker.error(
            &[key("decommission_sequence")],
            "expected at least one step",
        );
    }
    for account in &sequence.allowed_accounts {
        if account.as_str().len() != 12 || !account.as_str().bytes().all(|b| b.is_ascii_digit()) {
            checker.error(
                &[key("allowed_accounts")],
                format!("expected 12-digit AWS account ids, found `{account}`"),
            );
        }
    }
    let archive_defaults = sequence
        .archive
        .as_ref()
        .is_some_and(|a| !a.dirs.is_empty() || !a.tables.is_empty());
    for (step_name, actions) in sequence.decommission_sequence.iter() {
        let step_path = [key("decommission_sequence"), key(step_name.as_str())];
        if actions.is_empty() {
            checker.error(&step_path, "expected at least one action in the step");
        }
        for (index, action) in actions.iter().enumerate() {
            let mut path = step_path.to_vec();
            path.push(PathSegment::Index(index));
            check_action(&mut checker, &path, index, action, archive_defaults);
        }
    }
    checker.finish()
}

fn check_action(
    checker: &mut Checker<'_>,
    path: &[PathSegment],
    index: usize,
    action: &ActionFile,
    archive_defaults: bool,
) {
    let at = |field: &str| {
        let mut p = path.to_vec();
        p.push(key(field));
        p
    };
    let name = action.action.as_str();
    if action.action == ActionKind::Gate && !action.targets.is_empty() {
        checker.error(
            &at("targets"),
            "`gate` acts on nothing: its `validation` is all it does, so it takes no `targets`",
        );
    }
    if action.targets.is_empty()
        && !may_inherit_targets(action.action)
        && !targetless(action.action)
    {
        checker.error(
            path,
            format!("`{name}` needs `targets` (ids, Name tags or `tag:Key=Value` selectors)"),
        );
    }
    if action.targets.is_empty()
        && index == 0
        && matches!(
            action.action,
            ActionKind::DetachVolumes | ActionKind::DeleteVolumes | ActionKind::SnapshotVolumes
        )
    {
        checker.error(path, format!("`{name}` without `targets` acts on the volumes of the action before it in the step, but it is the first action"));
    }
    for target in &action.targets {
        if let Some(selector) = target.as_str().strip_prefix("tag:")
            && (!selector.contains('=') || selector.starts_with('='))
        {
            checker.error(
                &at("targets"),
                format!("expected a tag selector like `tag:Role=collector`, found `{target}`"),
            );
        }
    }
    let required = match action.action {
        ActionKind::RemoveDns if action.records.is_empty() => {
            Some(("records", "the DNS names to remove"))
        }
        ActionKind::Command if action.command.is_none() => Some(("command", "the command to run")),
        ActionKind::Sql if action.sql.is_none() => Some(("sql", "the statement to run")),
        ActionKind::Http if action.url.is_none() => Some(("url", "the URL to call")),
        ActionKind::Gate if action.validation.is_none() => Some((
            "validation",
            "what must hold before the sequence goes on (`metrics_match`, `no_traffic`, ...)",
        )),
        ActionKind::Archive
            if action.dirs.is_empty() && action.tables.is_empty() && !archive_defaults =>
        {
            Some((
                "dirs",
                "the directories or `tables` to archive (or a top-level `archive` with them)",
            ))
        }
        _ => None,
    };
    if let Some((field, what)) = required {
        checker.error(path, format!("`{name}` needs `{field}`: {what}"));
    }
    let local = matches!(
        action.action,
        ActionKind::Command | ActionKind::Sql | ActionKind::Http
    ) || (action.action == ActionKind::StopServices && action.command.is_some());
    if action.idempotent && !local {
        checker.error(
            &at("idempotent"),
            format!("`idempotent` is for `command`, `sql` and `http` actions (AWS actions never repeat a call), not `{name}`"),
        );
    }
    let runs_command = action.command.is_some()
        && matches!(
            action.action,
            ActionKind::Command | ActionKind::StopServices
        );
    if !action.env.is_empty() && !runs_command {
        checker.error(
            &at("env"),
            format!("`env` is for actions that run a `command`, not `{name}`"),
        );
    }
    for variable in &action.env {
        let text = variable.as_str();
        let valid = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            checker.error(
                &at("env"),
                format!("expected environment variable names, found `{text}`"),
            );
        }
    }
    if action.expect.is_some() && targetless(action.action) {
        checker.error(
            &at("expect"),
            format!("`expect` counts targets, and `{name}` has none"),
        );
    }
    if !action.records.is_empty() && action.action != ActionKind::RemoveDns {
        checker.error(
            &at("records"),
            format!("`records` is only used by `remove_dns`, not `{name}`"),
        );
    }
    if let Some(problem) = validation_problem(action) {
        checker.error(&at("validation"), problem);
    }
    if let Some(probe) = action.validation.as_ref().and_then(|v| v.probe.as_ref()) {
        crate::gates::check(checker, &at("validation"), probe);
    }
    crate::gates::check_shift(checker, path, action);
    for field in ["timeout", "interval"] {
        let value = if field == "timeout" {
            action.timeout
        } else {
            action.interval
        };
        if value.is_some_and(|d| d.0.is_zero()) {
            checker.error(&at(field), "expected a duration above zero");
        }
    }
}

/// Actions that never act on AWS resources.
fn targetless(kind: ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::Archive
            | ActionKind::Sql
            | ActionKind::Http
            | ActionKind::Gate
            | ActionKind::ShiftTraffic
    )
}

fn kind_name<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A validation that can not check anything about its action's outcome, or lacks its probe.
fn validation_problem(action: &ActionFile) -> Option<String> {
    use ActionKind::*;
    use ValidationKind::*;
    let validation = action.validation.as_ref()?;
    let probe = validation.probe.as_ref();
    let probes = probe.map_or(0, |p| {
        usize::from(p.sql.is_some())
            + usize::from(p.command.is_some())
            + usize::from(p.url.is_some())
            + usize::from(p.no_traffic.is_some())
    });
    let check = kind_name(validation.check);
    let acted = kind_name(action.action);
    if probes > 1 {
        return Some(format!(
            "`{check}` takes one probe: `sql`, `command`, `url` or `no_traffic`, not several"
        ));
    }
    let on_instances = matches!(
        action.action,
        StopServices | StopInstances | StartInstances | TerminateInstances
    ) && !(action.action == StopServices && action.command.is_some());
    let fits = match validation.check {
        InstanceStopped | InstanceRunning | InstanceTerminated => {
            matches!(
                action.action,
                StopServices | StopInstances | StartInstances | TerminateInstances | Command
            )
        }
        SnapshotCompleted => action.action == SnapshotVolumes,
        NoAttachments | NoMountPoints => matches!(
            action.action,
            SnapshotVolumes
                | DetachVolumes
                | DeleteVolumes
                | StopServices
                | StopInstances
                | TerminateInstances
        ),
        NoActiveConnections => probes == 1 || on_instances,
        RecordAbsent => action.action == RemoveDns,
        LoadBalancerGone => action.action == DeleteLoadBalancers,
        SecurityGroupGone => matches!(action.action, DeleteSecurityGroups | CleanSecurityGroups),
        HttpStatus => probe.is_some_and(|p| p.url.is_some()) || action.url.is_some(),
        CommandSucceeds => probe.is_some_and(|p| p.command.is_some()) || action.command.is_some(),
        SqlReturnsZero => probe.is_some_and(|p| p.sql.is_some()) || action.sql.is_some(),
        MetricsMatch => probe.is_some_and(|p| p.metrics_match.is_some()),
        NoTraffic => probe.is_some_and(|p| p.no_traffic.is_some()),
    };
    if fits {
        return None;
    }
    Some(match validation.check {
        NoActiveConnections => format!(
            "`no_active_connections` after `{acted}` needs a probe: `{{ check: no_active_connections, sql: ... }}` (or `command`, or `url`); without one it can only check that instances are off the network"
        ),
        HttpStatus => "`http_status` needs `url` (in the validation or the action)".to_owned(),
        CommandSucceeds => {
            "`command_succeeds` needs `command` (in the validation or the action)".to_owned()
        }
        SqlReturnsZero => {
            "`sql_returns_zero` needs `sql` (in the validation or the action)".to_owned()
        }
        MetricsMatch => "`metrics_match` needs its settings: `validation: { metrics_match: { legacy: { prometheus: URL }, new: { prometheus: URL }, exact: [PATTERN, ...] } }`".to_owned(),
        NoTraffic => "`no_traffic` needs its settings: `validation: { no_traffic: { prometheus: URL, query: PROMQL, below: NUMBER, for: DURATION } }`".to_owned(),
        _ => format!("`{check}` can not check the outcome of `{acted}`"),
    })
}

pub(crate) fn drop_column_config(
    file: &str,
    text: &str,
    config: &crate::format::DropColumnConfigFile,
    known_codes: &[&str],
) -> Result<(), Diagnostics> {
    let mut checker = Checker {
        file,
        text,
        found: Vec::new(),
    };
    check_version(&mut checker, config.version);
    for (n, allow) in config.allow.iter().enumerate() {
        let code = allow.code.as_str();
        if !known_codes.contains(&code) {
            let hint = crate::yaml::closest(code, known_codes)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            checker.error(
                &[key("allow"), PathSegment::Index(n), key("code")],
                format!(
                    "unknown finding code `{code}`{hint} (`sunset-drop-column codes` lists them)"
                ),
            );
        }
        if allow.reason.as_str().trim().is_empty() {
            checker.error(
                &[key("allow"), PathSegment::Index(n), key("reason")],
                "expected why this finding is acceptable, found an empty string",
            );
        }
    }
    checker.finish()
}
