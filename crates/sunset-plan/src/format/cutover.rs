//! The cutover gates' settings: metric parity and zero traffic (validations), and the stages
//! and gates of a progressive traffic shift (an action).

use serde::{Deserialize, Serialize};

use crate::yaml::{DurationValue, Number, OrderedMap, Text};

/// `metrics_match`: series by series, the new system's collectors report what the legacy
/// ones do, over a window ending now.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsMatchFile {
    pub legacy: PrometheusSource,
    pub new: PrometheusSource,
    /// The `query_range` window, ending now.
    #[serde(default = "default_parity_range")]
    pub range: DurationValue,
    /// The resolution both sides are evaluated at, so their samples align.
    #[serde(default = "default_parity_step")]
    pub step: DurationValue,
    /// Metric name patterns (`*`, `?`), each optionally with label matchers
    /// (`pg_stat_database_tup_*{datname="app"}`), compared exactly.
    #[serde(default)]
    pub exact: Vec<Text>,
    /// Patterns compared within a relative difference (`0.01` is 1 %).
    #[serde(default)]
    pub tolerance: OrderedMap<Number>,
    /// Named arithmetic over metric names, evaluated by each side's Prometheus and compared
    /// like the others (exactly, unless `tolerance` names it).
    #[serde(default)]
    pub derived: OrderedMap<Text>,
    /// Labels of the new side renamed to the legacy side's names (`service_name: instance`).
    #[serde(default)]
    pub label_map: OrderedMap<Text>,
    /// Labels left out when series are matched: they name the collector, not the series.
    #[serde(default = "default_ignored_labels")]
    pub ignore_labels: Vec<Text>,
    /// A series one side has and the other lacks: `fail` (inconclusive, never passes) or `warn`.
    #[serde(default)]
    pub missing_series: MissingSeries,
}

fn default_parity_range() -> DurationValue {
    DurationValue(std::time::Duration::from_secs(3600))
}

fn default_parity_step() -> DurationValue {
    DurationValue(std::time::Duration::from_secs(60))
}

fn default_ignored_labels() -> Vec<Text> {
    ["instance", "job"]
        .into_iter()
        .map(|label| Text(label.to_owned()))
        .collect()
}

/// One side of a comparison: a Prometheus server, and the selector that picks this side's
/// series when both collectors report to the same server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSource {
    /// `http://host:9090` or `https://host/prefix`.
    pub prometheus: Text,
    /// Label matchers added to every query of this side (`{collector="otel"}`).
    #[serde(rename = "match", default)]
    pub selector: Option<Text>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingSeries {
    #[default]
    Fail,
    Warn,
}

/// `no_traffic`: `query` stays below `below` at every step of the last `for`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoTrafficFile {
    /// A Prometheus and the PromQL whose value is the traffic (`sum(rate(...[1m]))`): every
    /// series must be below...
    pub prometheus: Option<Text>,
    pub query: Option<Text>,
    /// ... or a load balancer's CloudWatch metric (its one-minute sums).
    pub cloudwatch: Option<CloudWatchTrafficFile>,
    pub below: Number,
    #[serde(rename = "for")]
    pub hold: DurationValue,
}

/// An Application Load Balancer's traffic as CloudWatch reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchTrafficFile {
    /// The load balancer's name or ARN.
    pub load_balancer: Text,
    #[serde(default)]
    pub metric: ElbMetric,
}

/// The `AWS/ApplicationELB` metrics that measure traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ElbMetric {
    #[default]
    RequestCount,
    ActiveConnectionCount,
}

impl ElbMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            ElbMetric::RequestCount => "RequestCount",
            ElbMetric::ActiveConnectionCount => "ActiveConnectionCount",
        }
    }
}

/// `shift_traffic`'s `traffic:`: where the legacy and new system's weights are set (one of).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficTargetFile {
    pub haproxy: Option<HaproxyTargetFile>,
    pub route53: Option<Route53TargetFile>,
    pub elbv2: Option<Elbv2TargetFile>,
}

/// Two weighted record sets of one name and type, told apart by their `SetIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route53TargetFile {
    /// The hosted zone's id or name.
    pub zone: Text,
    pub record: Text,
    #[serde(rename = "type", default = "default_record_type")]
    pub record_type: Text,
    /// The `SetIdentifier`s of the legacy and the new record set.
    pub legacy: Text,
    pub new: Text,
}

fn default_record_type() -> Text {
    Text("A".to_owned())
}

/// A listener whose default action forwards to two weighted target groups.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Elbv2TargetFile {
    pub listener: Text,
    /// The target groups' ARNs.
    pub legacy: Text,
    pub new: Text,
}

/// Two servers of one haproxy backend, weighted through haproxy's runtime API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyTargetFile {
    /// The runtime API (`stats socket ... level admin`): a Unix socket's path, or `HOST:PORT`.
    pub runtime_api: Text,
    pub backend: Text,
    /// The servers of `backend` that are the legacy and the new system.
    pub legacy: Text,
    pub new: Text,
}

/// One of a stage's gates: a PromQL query judged against a threshold for a window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftGateFile {
    /// How the evidence names it (the query itself otherwise).
    pub name: Option<Text>,
    pub prometheus: Text,
    pub query: Text,
    /// The value must stay below this.
    pub below: Option<Number>,
    /// The value must stay at most this many times its value before the first stage (a
    /// baseline of 0 allows 0).
    pub below_baseline: Option<Number>,
    /// The value (the new system's share of traffic, in percent) must stay within this many
    /// points of the stage's weight.
    pub within_weight: Option<Number>,
    /// A gate is broken when every sample of the last `for` breaks it.
    #[serde(rename = "for")]
    pub window: DurationValue,
}
