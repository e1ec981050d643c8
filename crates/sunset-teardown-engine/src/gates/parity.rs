//! Over 600 lines with its unit tests, which judge the comparison without a server.
//!
//! `metrics_match`: the new system's collectors report what the legacy ones do. Each side's
//! metric names are listed, the patterns expanded against them, every metric read as a range
//! query on both sides at the same step (so samples align), series matched by their labels
//! (minus the collector's own, with the new side's renamed), and each sample compared by its
//! relative difference. Missing data is inconclusive, never a pass.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sunset_plan::format::{MetricsMatchFile, MissingSeries};
use sunset_plan::metric_expr::{self, DerivedExpr, Matcher, MetricPattern};

use crate::Error;
use crate::audit::AuditLog;
use crate::gates::prometheus::Prometheus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// The worse of two: a failure outweighs missing data, which outweighs a pass.
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
            (Verdict::Inconclusive, _) | (_, Verdict::Inconclusive) => Verdict::Inconclusive,
            _ => Verdict::Pass,
        }
    }
}

/// The whole comparison, as saved beside the audit log and summarized in the step's line.
#[derive(Debug, Clone, Serialize)]
pub struct ParityReport {
    pub verdict: Verdict,
    pub legacy: String,
    pub new: String,
    /// The window compared, Unix seconds, and its step in seconds.
    pub start: f64,
    pub end: f64,
    pub step: f64,
    pub metrics: Vec<MetricParity>,
}

/// One metric (or derived metric) compared.
#[derive(Debug, Clone, Serialize)]
pub struct MetricParity {
    pub metric: String,
    /// The pattern or the derived expression that named it.
    pub named_by: String,
    pub tolerance: f64,
    /// Series both sides have, compared sample by sample.
    pub series: usize,
    /// Of those, series with a sample beyond the tolerance.
    pub failing: usize,
    /// Series only one side has, and the first of them.
    pub only_legacy: usize,
    pub only_new: usize,
    pub first_missing: Option<String>,
    pub worst: Option<Worst>,
    pub verdict: Verdict,
    pub note: Option<String>,
}

/// The largest difference found in a metric: where and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Worst {
    pub series: String,
    pub at: f64,
    pub legacy: f64,
    pub new: f64,
    /// `|legacy - new| / max(|legacy|, |new|)`; 1 when only one of them is NaN.
    pub difference: f64,
}

/// How series are matched across the two sides.
pub(crate) struct Matching<'a> {
    pub ignore: &'a [String],
    /// New side's label name -> the legacy side's name for it.
    pub rename: &'a BTreeMap<String, String>,
    pub missing: MissingSeries,
}

/// What is compared and under what tolerance, before any query.
struct Comparison {
    metric: String,
    named_by: String,
    tolerance: f64,
    legacy_query: String,
    new_query: String,
}

pub(crate) async fn evaluate(
    parity: &MetricsMatchFile,
    audit: &AuditLog,
    now: f64,
) -> Result<ParityReport, Error> {
    let step = parity.step.0.as_secs_f64();
    let end = (now / step).floor() * step;
    let start = end - parity.range.0.as_secs_f64();
    let legacy = Prometheus::new(parity.legacy.prometheus.as_str(), audit)?;
    let new = Prometheus::new(parity.new.prometheus.as_str(), audit)?;
    let legacy_matchers = side_matchers(parity.legacy.selector.as_ref())?;
    let new_matchers = side_matchers(parity.new.selector.as_ref())?;
    let legacy_selector = parity.legacy.selector.as_ref().map(|s| s.as_str());
    let new_selector = parity.new.selector.as_ref().map(|s| s.as_str());
    let (legacy_names, new_names) = tokio::join!(
        legacy.metric_names(legacy_selector, start, end),
        new.metric_names(new_selector, start, end)
    );
    let names: BTreeSet<String> = legacy_names?.into_iter().chain(new_names?).collect();
    let (comparisons, mut metrics) = comparisons(parity, &names, &legacy_matchers, &new_matchers)?;
    let ignore: Vec<String> = parity.ignore_labels.iter().map(|l| l.0.clone()).collect();
    let rename: BTreeMap<String, String> = parity
        .label_map
        .iter()
        .map(|(new, legacy)| (new.0.clone(), legacy.0.clone()))
        .collect();
    let matching = Matching {
        ignore: &ignore,
        rename: &rename,
        missing: parity.missing_series,
    };
    for comparison in comparisons {
        let (legacy_series, new_series) = tokio::join!(
            legacy.query_range(&comparison.legacy_query, start, end, step),
            new.query_range(&comparison.new_query, start, end, step)
        );
        let mut result = compare(
            &legacy_series?,
            &new_series?,
            comparison.tolerance,
            &matching,
        );
        result.metric = comparison.metric;
        result.named_by = comparison.named_by;
        metrics.push(result);
    }
    metrics.sort_by(|a, b| a.metric.cmp(&b.metric));
    let verdict = metrics
        .iter()
        .fold(Verdict::Pass, |verdict, m| verdict.and(m.verdict));
    Ok(ParityReport {
        verdict,
        legacy: side_name(parity.legacy.prometheus.as_str(), legacy_selector),
        new: side_name(parity.new.prometheus.as_str(), new_selector),
        start,
        end,
        step,
        metrics,
    })
}

fn side_matchers(selector: Option<&sunset_plan::Text>) -> Result<Vec<Matcher>, Error> {
    selector
        .map(|s| metric_expr::parse_selector(s.as_str()).map_err(Error::BadInput))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn side_name(url: &str, selector: Option<&str>) -> String {
    let url = crate::gates::prometheus::without_credentials(url);
    match selector {
        Some(selector) => format!("{url} {selector}"),
        None => url,
    }
}

/// The metrics each pattern names among `names` (a tolerance pattern before `exact`, the first
/// that names a metric wins), and the derived metrics; a pattern or a derived metric that names
/// nothing is already an inconclusive result.
fn comparisons(
    parity: &MetricsMatchFile,
    names: &BTreeSet<String>,
    legacy_matchers: &[Matcher],
    new_matchers: &[Matcher],
) -> Result<(Vec<Comparison>, Vec<MetricParity>), Error> {
    let derived: BTreeSet<&str> = parity.derived.iter().map(|(n, _)| n.as_str()).collect();
    let tolerance_of = |name: &str| {
        parity
            .tolerance
            .iter()
            .find(|(pattern, _)| pattern.as_str() == name)
            .map_or(0.0, |(_, t)| t.0)
    };
    let mut patterns: Vec<(String, MetricPattern, f64)> = Vec::new();
    for (pattern, tolerance) in parity.tolerance.iter() {
        if !derived.contains(pattern.as_str()) {
            patterns.push((
                pattern.0.clone(),
                parse_pattern(pattern.as_str())?,
                tolerance.0,
            ));
        }
    }
    for pattern in &parity.exact {
        patterns.push((pattern.0.clone(), parse_pattern(pattern.as_str())?, 0.0));
    }
    let mut comparisons = Vec::new();
    let mut unmatched = Vec::new();
    let mut named: BTreeSet<&str> = BTreeSet::new();
    for (text, pattern, tolerance) in &patterns {
        let mut any = false;
        for name in names.iter().filter(|n| pattern.matches(n)) {
            any = true;
            if named.insert(name) {
                comparisons.push(Comparison {
                    metric: name.clone(),
                    named_by: text.clone(),
                    tolerance: *tolerance,
                    legacy_query: pattern.selector(name, legacy_matchers),
                    new_query: pattern.selector(name, new_matchers),
                });
            }
        }
        if !any {
            unmatched.push(inconclusive(
                text,
                text,
                *tolerance,
                "no metric of either side matches the pattern",
            ));
        }
    }
    for (name, expression) in parity.derived.iter() {
        let expr = DerivedExpr::parse(expression.as_str()).map_err(Error::BadInput)?;
        let mut resolved = BTreeMap::new();
        let mut problem = None;
        for ident in expr.names() {
            match resolve_name(ident, names) {
                Ok(full) => {
                    resolved.insert(ident.to_owned(), full);
                }
                Err(why) => problem = Some(why),
            }
        }
        let tolerance = tolerance_of(name.as_str());
        if let Some(why) = problem {
            unmatched.push(inconclusive(
                name.as_str(),
                expression.as_str(),
                tolerance,
                &why,
            ));
            continue;
        }
        let render = |matchers: &[Matcher]| {
            expr.render(|ident| metric_expr::selector(&resolved[ident], matchers))
        };
        comparisons.push(Comparison {
            metric: name.0.clone(),
            named_by: expression.0.clone(),
            tolerance,
            legacy_query: render(legacy_matchers),
            new_query: render(new_matchers),
        });
    }
    Ok((comparisons, unmatched))
}

fn parse_pattern(text: &str) -> Result<MetricPattern, Error> {
    MetricPattern::parse(text).map_err(Error::BadInput)
}

/// A derived expression's name: a metric of that name, else the one metric whose name ends in
/// `_NAME` (`blks_hit` for `pg_stat_database_blks_hit`).
fn resolve_name(ident: &str, names: &BTreeSet<String>) -> Result<String, String> {
    if names.contains(ident) {
        return Ok(ident.to_owned());
    }
    let suffix = format!("_{ident}");
    let candidates: Vec<&String> = names.iter().filter(|n| n.ends_with(&suffix)).collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("`{ident}` names no metric of either side")),
        several => Err(format!(
            "`{ident}` could be any of {}: write the full metric name",
            several
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn inconclusive(metric: &str, named_by: &str, tolerance: f64, why: &str) -> MetricParity {
    MetricParity {
        metric: metric.to_owned(),
        named_by: named_by.to_owned(),
        tolerance,
        series: 0,
        failing: 0,
        only_legacy: 0,
        only_new: 0,
        first_missing: None,
        worst: None,
        verdict: Verdict::Inconclusive,
        note: Some(why.to_owned()),
    }
}

/// A series' identity across the two sides: its labels without the metric name and the ignored
/// labels, the new side's renamed.
fn series_key(
    labels: &BTreeMap<String, String>,
    matching: &Matching<'_>,
    new_side: bool,
) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(label, value)| {
            let label = if new_side {
                matching.rename.get(label).unwrap_or(label)
            } else {
                label
            };
            (label.clone(), value.clone())
        })
        .filter(|(label, _)| label != "__name__" && !matching.ignore.contains(label))
        .collect()
}

pub(crate) fn display_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(label, value)| format!("{label}={value:?}"))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// `|a - b| / max(|a|, |b|)`: 0 for equal values (two NaN included), 1 when one is NaN.
pub(crate) fn relative_difference(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
        1.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// Compares one metric's series, sample by sample at the shared timestamps.
pub(crate) fn compare(
    legacy: &[sunset_promql::Series],
    new: &[sunset_promql::Series],
    tolerance: f64,
    matching: &Matching<'_>,
) -> MetricParity {
    let index = |series: &[sunset_promql::Series], new_side: bool| {
        let mut by_key: BTreeMap<BTreeMap<String, String>, BTreeMap<u64, f64>> = BTreeMap::new();
        let mut collisions = 0;
        for s in series {
            let key = series_key(&s.labels, matching, new_side);
            let points = s.points.iter().map(|(at, value)| (at.to_bits(), *value));
            if by_key.insert(key, points.collect()).is_some() {
                collisions += 1;
            }
        }
        (by_key, collisions)
    };
    let (legacy, legacy_collisions) = index(legacy, false);
    let (new, new_collisions) = index(new, true);
    let mut result = inconclusive("", "", tolerance, "");
    result.note = None;
    let mut missing: Vec<&BTreeMap<String, String>> = Vec::new();
    for (key, legacy_points) in &legacy {
        let Some(new_points) = new.get(key) else {
            result.only_legacy += 1;
            missing.push(key);
            continue;
        };
        let mut shared = 0;
        let mut worst: Option<Worst> = None;
        for (at, legacy_value) in legacy_points {
            let Some(new_value) = new_points.get(at) else {
                continue;
            };
            shared += 1;
            let difference = relative_difference(*legacy_value, *new_value);
            if worst.as_ref().is_none_or(|w| difference > w.difference) {
                worst = Some(Worst {
                    series: display_labels(key),
                    at: f64::from_bits(*at),
                    legacy: *legacy_value,
                    new: *new_value,
                    difference,
                });
            }
        }
        if shared == 0 {
            result.only_legacy += 1;
            missing.push(key);
            continue;
        }
        result.series += 1;
        if let Some(worst) = worst {
            if worst.difference > tolerance {
                result.failing += 1;
            }
            if result
                .worst
                .as_ref()
                .is_none_or(|w| worst.difference > w.difference)
            {
                result.worst = Some(worst);
            }
        }
    }
    for key in new.keys().filter(|key| !legacy.contains_key(*key)) {
        result.only_new += 1;
        missing.push(key);
    }
    result.first_missing = missing.first().map(|key| display_labels(key));
    let missing_counts = result.only_legacy + result.only_new > 0;
    result.verdict = if result.failing > 0 {
        Verdict::Fail
    } else if result.series == 0 || (missing_counts && matching.missing == MissingSeries::Fail) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let mut notes = Vec::new();
    if result.series == 0 && !missing_counts {
        notes.push("neither side has a sample in the window".to_owned());
    }
    if missing_counts {
        notes.push(format!(
            "series on one side only: {} legacy, {} new",
            result.only_legacy, result.only_new
        ));
    }
    if legacy_collisions + new_collisions > 0 {
        notes.push(format!(
            "{} series share their labels once the ignored ones are left out; keep a label that tells them apart",
            legacy_collisions + new_collisions
        ));
        result.verdict = result.verdict.and(Verdict::Inconclusive);
    }
    result.note = (!notes.is_empty()).then(|| notes.join("; "));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], points: &[(f64, f64)]) -> sunset_promql::Series {
        sunset_promql::Series {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            points: points.to_vec(),
        }
    }

    fn matching<'a>(
        ignore: &'a [String],
        rename: &'a BTreeMap<String, String>,
        missing: MissingSeries,
    ) -> Matching<'a> {
        Matching {
            ignore,
            rename,
            missing,
        }
    }

    #[test]
    fn series_match_by_labels_without_the_collectors_own() {
        let ignore = vec!["instance".to_owned()];
        let rename = BTreeMap::from([("service_name".to_owned(), "server".to_owned())]);
        let legacy = [series(
            &[
                ("__name__", "m"),
                ("instance", "a:1"),
                ("server", "db"),
                ("datname", "x"),
            ],
            &[(10.0, 5.0), (20.0, 6.0)],
        )];
        let new = [series(
            &[
                ("__name__", "m"),
                ("instance", "b:2"),
                ("service_name", "db"),
                ("datname", "x"),
            ],
            &[(10.0, 5.0), (20.0, 6.0), (30.0, 9.0)],
        )];
        let same = compare(
            &legacy,
            &new,
            0.0,
            &matching(&ignore, &rename, MissingSeries::Fail),
        );
        assert_eq!(
            (same.series, same.failing, same.verdict),
            (1, 0, Verdict::Pass)
        );
        let skewed = [series(
            &[("service_name", "db"), ("datname", "x")],
            &[(10.0, 5.0), (20.0, 6.6)],
        )];
        let result = compare(
            &legacy,
            &skewed,
            0.05,
            &matching(&ignore, &rename, MissingSeries::Fail),
        );
        assert_eq!(result.verdict, Verdict::Fail);
        let worst = result.worst.unwrap();
        assert_eq!(worst.series, r#"{datname="x", server="db"}"#);
        assert_eq!((worst.at, worst.legacy, worst.new), (20.0, 6.0, 6.6));
        assert!((worst.difference - 0.6 / 6.6).abs() < 1e-12);
        // Within the tolerance it passes.
        let result = compare(
            &legacy,
            &skewed,
            0.1,
            &matching(&ignore, &rename, MissingSeries::Fail),
        );
        assert_eq!(result.verdict, Verdict::Pass);
    }

    #[test]
    fn missing_data_is_never_a_pass() {
        let (ignore, rename) = (Vec::new(), BTreeMap::new());
        let legacy = [
            series(&[("db", "a")], &[(10.0, 1.0)]),
            series(&[("db", "b")], &[(10.0, 1.0)]),
        ];
        let new = [series(&[("db", "a")], &[(10.0, 1.0)])];
        let fail = compare(
            &legacy,
            &new,
            0.0,
            &matching(&ignore, &rename, MissingSeries::Fail),
        );
        assert_eq!(fail.verdict, Verdict::Inconclusive);
        assert_eq!(
            (fail.only_legacy, fail.first_missing.as_deref()),
            (1, Some(r#"{db="b"}"#))
        );
        let warn = compare(
            &legacy,
            &new,
            0.0,
            &matching(&ignore, &rename, MissingSeries::Warn),
        );
        assert_eq!(warn.verdict, Verdict::Pass);
        assert!(warn.note.unwrap().contains("1 legacy, 0 new"));
        // No samples at shared timestamps: inconclusive whatever the mode.
        let late = [series(&[("db", "a")], &[(20.0, 1.0)])];
        let none = compare(
            &legacy[..1],
            &late,
            0.0,
            &matching(&ignore, &rename, MissingSeries::Warn),
        );
        assert_eq!((none.series, none.verdict), (0, Verdict::Inconclusive));
        // Nothing at all on either side.
        let empty = compare(
            &[],
            &[],
            0.0,
            &matching(&ignore, &rename, MissingSeries::Warn),
        );
        assert_eq!(empty.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn relative_differences_treat_zero_and_nan_as_people_do() {
        assert_eq!(relative_difference(0.0, 0.0), 0.0);
        assert_eq!(relative_difference(f64::NAN, f64::NAN), 0.0);
        assert_eq!(relative_difference(f64::NAN, 1.0), 1.0);
        assert_eq!(relative_difference(0.0, 2.0), 1.0);
        assert_eq!(relative_difference(100.0, 99.0), 0.01);
    }

    #[test]
    fn derived_names_resolve_to_the_one_metric_they_end() {
        let names: BTreeSet<String> = [
            "pg_stat_database_blks_hit",
            "pg_stat_database_blks_read",
            "a_x",
            "b_x",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(
            resolve_name("blks_hit", &names).unwrap(),
            "pg_stat_database_blks_hit"
        );
        assert!(
            resolve_name("x", &names)
                .unwrap_err()
                .contains("`a_x`, `b_x`")
        );
        assert!(
            resolve_name("nothing", &names)
                .unwrap_err()
                .contains("names no metric")
        );
    }
}
