//! Checks of the cutover gates' settings (`metrics_match`, `no_traffic`) when a sequence loads:
//! every pattern, matcher and expression parses, every number is in its range, and each
//! problem points at its own node.

use crate::format::{MetricsMatchFile, NoTrafficFile, ProbeFile, PrometheusSource};
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
    prometheus_url(
        checker,
        &under(path, &["prometheus"]),
        traffic.prometheus.as_str(),
    );
    if traffic.query.as_str().trim().is_empty() {
        checker.error(&under(path, &["query"]), "expected a PromQL query");
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
