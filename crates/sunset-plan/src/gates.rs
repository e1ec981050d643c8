//! Checks of the cutover gates' settings (`metrics_match`, `no_traffic`) when a sequence loads:
//! every pattern, matcher and expression parses, every number is in its range, and each
//! problem points at its own node.

use crate::format::{
    ActionFile, ActionKind, MetricsMatchFile, NoTrafficFile, ProbeFile, PrometheusSource,
    ShiftGateFile,
};
use crate::metric_expr::{DerivedExpr, MetricPattern, is_label_name, parse_selector};
use crate::validate::Checker;
use crate::yaml::PathSegment;

/// Prometheus refuses a `query_range` of more points than this per series.
const MAX_POINTS: u128 = 11_000;

pub(crate) fn check(checker: &mut Checker<'_>, path: &[PathSegment], probe: &ProbeFile) {
    if let Some(parity) = &probe.metrics_match {
        metrics_match(checker, &under(path, &["metrics_match"]), parity);
    }
    if let Some(traffic) = &probe.no_traffic {
        no_traffic(checker, &under(path, &["no_traffic"]), traffic);
    }
}

/// `shift_traffic`'s own fields: present on it, and only on it; stages that increase; gates
/// that say what they judge.
pub(crate) fn check_shift(checker: &mut Checker<'_>, path: &[PathSegment], action: &ActionFile) {
    let name = action.action.as_str();
    if action.action != ActionKind::ShiftTraffic {
        for (field, present) in [
            ("traffic", action.traffic.is_some()),
            ("stages", !action.stages.is_empty()),
            ("hold", action.hold.is_some()),
            ("gates", !action.gates.is_empty()),
        ] {
            if present {
                checker.error(
                    &under(path, &[field]),
                    format!("`{field}` is only used by `shift_traffic`, not `{name}`"),
                );
            }
        }
        return;
    }
    if !action.targets.is_empty() {
        checker.error(
            &under(path, &["targets"]),
            "`shift_traffic` moves weights named in `traffic`: it takes no `targets`",
        );
    }
    for (field, present, what) in [
        (
            "traffic",
            action.traffic.is_some(),
            "where the weights are set: `{ haproxy: { runtime_api, backend, legacy, new } }`",
        ),
        (
            "stages",
            !action.stages.is_empty(),
            "the new system's share at each stage, in percent: `[10, 25, 50, 100]`",
        ),
        (
            "hold",
            action.hold.is_some(),
            "how long each stage is watched before the next",
        ),
    ] {
        if !present {
            checker.error(path, format!("`shift_traffic` needs `{field}`: {what}"));
        }
    }
    let mut previous = 0;
    for (n, stage) in action.stages.iter().enumerate() {
        let mut at = under(path, &["stages"]);
        at.push(PathSegment::Index(n));
        if !(1..=100).contains(stage) {
            checker.error(
                &at,
                format!("expected a share from 1 to 100 percent, found {stage}"),
            );
        } else if *stage <= previous {
            checker.error(
                &at,
                format!("expected stages that increase: {stage} follows {previous}"),
            );
        }
        previous = previous.max(*stage);
    }
    if let Some(traffic) = &action.traffic {
        let targets = [
            traffic
                .haproxy
                .as_ref()
                .map(|h| ("haproxy", &h.legacy, &h.new)),
            traffic
                .route53
                .as_ref()
                .map(|r| ("route53", &r.legacy, &r.new)),
            traffic.elbv2.as_ref().map(|e| ("elbv2", &e.legacy, &e.new)),
        ];
        let named: Vec<_> = targets.iter().flatten().collect();
        if named.len() != 1 {
            checker.error(
                &under(path, &["traffic"]),
                format!(
                    "expected one of `haproxy`, `route53` or `elbv2`, found {}",
                    named.len()
                ),
            );
        }
        for (kind, legacy, new) in named {
            if legacy == new {
                checker.error(
                    &under(path, &["traffic", kind, "new"]),
                    "expected `legacy` and `new` to name two different things",
                );
            }
        }
    }
    if action.hold.is_some_and(|hold| hold.0.is_zero()) {
        checker.error(&under(path, &["hold"]), "expected a duration above zero");
    }
    for (n, gate) in action.gates.iter().enumerate() {
        let mut at = under(path, &["gates"]);
        at.push(PathSegment::Index(n));
        shift_gate(checker, &at, gate, action.hold.map(|h| h.0));
    }
}

fn shift_gate(
    checker: &mut Checker<'_>,
    path: &[PathSegment],
    gate: &ShiftGateFile,
    hold: Option<std::time::Duration>,
) {
    prometheus_url(
        checker,
        &under(path, &["prometheus"]),
        gate.prometheus.as_str(),
    );
    if gate.query.as_str().trim().is_empty() {
        checker.error(&under(path, &["query"]), "expected a PromQL query");
    }
    let thresholds = [
        gate.below.is_some(),
        gate.below_baseline.is_some(),
        gate.within_weight.is_some(),
    ];
    if thresholds.iter().filter(|set| **set).count() != 1 {
        checker.error(
            path,
            "expected one threshold: `below`, `below_baseline` or `within_weight`",
        );
    }
    if let Some(factor) = gate.below_baseline
        && factor.0 <= 0.0
    {
        checker.error(
            &under(path, &["below_baseline"]),
            format!(
                "expected a factor above 0 (1.5: half as much again as before the shift), found {}",
                factor.0
            ),
        );
    }
    if let Some(points) = gate.within_weight
        && !(0.0..=100.0).contains(&points.0)
    {
        checker.error(
            &under(path, &["within_weight"]),
            format!(
                "expected percentage points from 0 to 100, found {}",
                points.0
            ),
        );
    }
    if gate.window.0.is_zero() {
        checker.error(&under(path, &["for"]), "expected a duration above zero");
    } else if hold.is_some_and(|hold| gate.window.0 > hold) {
        checker.error(
            &under(path, &["for"]),
            "expected a window no longer than the stage's `hold`: a longer one is never judged",
        );
    }
}

fn under(path: &[PathSegment], keys: &[&str]) -> Vec<PathSegment> {
    let mut path = path.to_vec();
    path.extend(keys.iter().map(|k| PathSegment::Key((*k).to_owned())));
    path
}

fn metrics_match(checker: &mut Checker<'_>, path: &[PathSegment], parity: &MetricsMatchFile) {
    for (side, source) in [("legacy", &parity.legacy), ("new", &parity.new)] {
        prometheus_source(checker, &under(path, &[side]), source);
    }
    let (range, step) = (parity.range.0, parity.step.0);
    if step.is_zero() {
        checker.error(&under(path, &["step"]), "expected a step above zero");
    } else if range < step {
        checker.error(
            &under(path, &["range"]),
            "expected a range of at least one `step`",
        );
    } else if range.as_millis() / step.as_millis() > MAX_POINTS {
        checker.error(
            &under(path, &["step"]),
            format!(
                "`range` over `step` is {} points a series; Prometheus answers at most {MAX_POINTS}: take a longer step",
                range.as_millis() / step.as_millis()
            ),
        );
    }
    if parity.exact.is_empty() && parity.tolerance.is_empty() && parity.derived.is_empty() {
        checker.error(
            path,
            "expected at least one metric to compare in `exact`, `tolerance` or `derived`",
        );
    }
    for (n, pattern) in parity.exact.iter().enumerate() {
        if let Err(problem) = MetricPattern::parse(pattern.as_str()) {
            let mut at = under(path, &["exact"]);
            at.push(PathSegment::Index(n));
            checker.error(&at, problem);
        }
    }
    for (pattern, tolerance) in parity.tolerance.iter() {
        let at = under(path, &["tolerance", pattern.as_str()]);
        let is_derived = parity.derived.iter().any(|(name, _)| name == pattern);
        if !is_derived && let Err(problem) = MetricPattern::parse(pattern.as_str()) {
            checker.error(&at, problem);
        }
        if !(0.0..1.0).contains(&tolerance.0) {
            checker.error(
                &at,
                format!(
                    "expected a relative difference from 0 up to (not including) 1, such as 0.01 for 1 %, found {}",
                    tolerance.0
                ),
            );
        }
    }
    for (name, expression) in parity.derived.iter() {
        let at = under(path, &["derived", name.as_str()]);
        if !is_label_name(name.as_str()) {
            checker.error(
                &at,
                format!("`{name}` is not a name for a derived metric (letters, digits, `_`)"),
            );
        }
        if let Err(problem) = DerivedExpr::parse(expression.as_str()) {
            checker.error(&at, problem);
        }
    }
    for (new_label, legacy_label) in parity.label_map.iter() {
        for label in [new_label, legacy_label] {
            if !is_label_name(label.as_str()) {
                checker.error(
                    &under(path, &["label_map", new_label.as_str()]),
                    format!("`{label}` is not a label name"),
                );
            }
        }
    }
    for label in &parity.ignore_labels {
        if !is_label_name(label.as_str()) {
            checker.error(
                &under(path, &["ignore_labels"]),
                format!("`{label}` is not a label name"),
            );
        }
    }
}

fn no_traffic(checker: &mut Checker<'_>, path: &[PathSegment], traffic: &NoTrafficFile) {
    match (&traffic.prometheus, &traffic.query, &traffic.cloudwatch) {
        (Some(prometheus), Some(query), None) => {
            prometheus_url(checker, &under(path, &["prometheus"]), prometheus.as_str());
            if query.as_str().trim().is_empty() {
                checker.error(&under(path, &["query"]), "expected a PromQL query");
            }
        }
        (None, None, Some(cloudwatch)) => {
            if traffic.hold.0 < std::time::Duration::from_secs(60) {
                checker.error(
                    &under(path, &["for"]),
                    "expected at least 1m: CloudWatch reports load balancer traffic per minute",
                );
            }
            if cloudwatch.load_balancer.as_str().trim().is_empty() {
                checker.error(
                    &under(path, &["cloudwatch", "load_balancer"]),
                    "expected a load balancer's name or ARN",
                );
            }
        }
        _ => checker.error(
            path,
            "expected `prometheus` with `query`, or `cloudwatch: { load_balancer, metric }`",
        ),
    }
    if traffic.below.0 < 0.0 {
        checker.error(
            &under(path, &["below"]),
            format!(
                "expected a threshold of 0 or more, found {}",
                traffic.below.0
            ),
        );
    }
    if traffic.hold.0.is_zero() {
        checker.error(&under(path, &["for"]), "expected a duration above zero");
    }
}

fn prometheus_source(checker: &mut Checker<'_>, path: &[PathSegment], source: &PrometheusSource) {
    prometheus_url(
        checker,
        &under(path, &["prometheus"]),
        source.prometheus.as_str(),
    );
    if let Some(selector) = &source.selector
        && let Err(problem) = parse_selector(selector.as_str())
    {
        checker.error(&under(path, &["match"]), problem);
    }
}

fn prometheus_url(checker: &mut Checker<'_>, path: &[PathSegment], url: &str) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
        checker.error(
            path,
            format!("expected a Prometheus URL like `http://prometheus:9090`, found `{url}`"),
        );
    }
}
