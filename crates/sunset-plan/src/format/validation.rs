//! A step's `validation:`: a check by name, or a mapping with the check's probe, or a cutover
//! gate named by its settings' key.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{MetricsMatchFile, NoTrafficFile};
use crate::yaml::{DurationValue, Text};

/// A validation by name (`validation: snapshot_completed`) or with its probe
/// (`validation: { check: no_active_connections, sql: "select count(*) ..." }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationFile {
    pub check: ValidationKind,
    pub probe: Option<ProbeFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationKind {
    InstanceStopped,
    InstanceRunning,
    InstanceTerminated,
    SnapshotCompleted,
    NoAttachments,
    NoMountPoints,
    NoActiveConnections,
    RecordAbsent,
    LoadBalancerGone,
    SecurityGroupGone,
    HttpStatus,
    CommandSucceeds,
    SqlReturnsZero,
    /// The new system's collectors report what the legacy ones do (`metrics_match: {...}`).
    MetricsMatch,
    /// A Prometheus query stays below a threshold for a while (`no_traffic: {...}`).
    NoTraffic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeFile {
    pub check: ValidationKind,
    pub sql: Option<Text>,
    pub database_url: Option<Text>,
    pub command: Option<Text>,
    pub url: Option<Text>,
    pub expect_status: Option<u16>,
    pub timeout: Option<DurationValue>,
    pub interval: Option<DurationValue>,
    pub metrics_match: Option<MetricsMatchFile>,
    pub no_traffic: Option<NoTrafficFile>,
}

/// A validation written as a mapping: `check` with its probe, or a gate named by its settings'
/// key (`metrics_match: {...}`, `no_traffic: {...}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeMap {
    check: Option<ValidationKind>,
    sql: Option<Text>,
    database_url: Option<Text>,
    command: Option<Text>,
    url: Option<Text>,
    expect_status: Option<u16>,
    timeout: Option<DurationValue>,
    interval: Option<DurationValue>,
    metrics_match: Option<MetricsMatchFile>,
    no_traffic: Option<NoTrafficFile>,
}

impl ProbeMap {
    /// The check the mapping names, or why it names none or two.
    fn check(&self) -> Result<ValidationKind, String> {
        match (self.check, &self.metrics_match, &self.no_traffic) {
            (_, Some(_), Some(_)) => {
                Err("a validation is `metrics_match` or `no_traffic`, not both".to_owned())
            }
            (None | Some(ValidationKind::MetricsMatch), Some(_), None) => {
                Ok(ValidationKind::MetricsMatch)
            }
            (None | Some(ValidationKind::NoTraffic), None, Some(_)) => {
                Ok(ValidationKind::NoTraffic)
            }
            (Some(ValidationKind::NoActiveConnections), None, Some(_)) => {
                Ok(ValidationKind::NoActiveConnections)
            }
            (Some(other), Some(_), None) => Err(format!(
                "`metrics_match` is a validation of its own, not a probe of `{}`",
                other.as_str()
            )),
            (Some(other), None, Some(_)) => Err(format!(
                "`no_traffic` is a probe of `no_active_connections` or a validation of its own, not a probe of `{}`",
                other.as_str()
            )),
            (Some(check), None, None) => Ok(check),
            (None, None, None) => {
                Err("missing field `check` (or `metrics_match`, or `no_traffic`)".to_owned())
            }
        }
    }
}

impl<'de> Deserialize<'de> for ValidationFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValidationVisitor;
        impl<'de> Visitor<'de> for ValidationVisitor {
            type Value = ValidationFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a validation name or a mapping with `check`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ValidationFile, E> {
                let check =
                    ValidationKind::deserialize(de::value::StrDeserializer::<E>::new(value))?;
                Ok(ValidationFile { check, probe: None })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ValidationFile, A::Error> {
                let map = ProbeMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let check = map.check().map_err(de::Error::custom)?;
                let probe = ProbeFile {
                    check,
                    sql: map.sql,
                    database_url: map.database_url,
                    command: map.command,
                    url: map.url,
                    expect_status: map.expect_status,
                    timeout: map.timeout,
                    interval: map.interval,
                    metrics_match: map.metrics_match,
                    no_traffic: map.no_traffic,
                };
                Ok(ValidationFile {
                    check,
                    probe: Some(probe),
                })
            }
        }
        deserializer.deserialize_any(ValidationVisitor)
    }
}
