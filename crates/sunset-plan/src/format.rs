//! On-disk plan formats: the serde types of backfill plans and decommission sequences.
//!
//! These are API boundaries: operators keep these files in git for years. Every type denies
//! unknown fields (a typo'd key is an error with a suggestion), carries an optional `version`,
//! and serializes only to compute fingerprints.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::yaml::{DurationValue, OrderedMap, Text};

mod cutover;
mod validation;
pub use cutover::*;
pub use validation::*;

/// The only format version so far; files without `version` are version 1.
pub const FORMAT_VERSION: u32 = 1;

fn format_version() -> u32 {
    FORMAT_VERSION
}

/// One string or a list of strings (`key: id` or `key: [tenant_id, id]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OneOrMany(pub Vec<Text>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;
        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name or a list of column names")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<OneOrMany, E> {
                Text::deserialize(de::value::StrDeserializer::<E>::new(value))
                    .map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Text>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

/// A mapping with unique keys whose order does not matter (fingerprinted sorted).
fn unique_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<Text, Text>, D::Error> {
    OrderedMap::<Text>::deserialize(deserializer).map(|map| map.0.into_iter().collect())
}

fn optional_unique_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<Text, Text>>, D::Error> {
    unique_map(deserializer).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Backfill plans

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillPlanFile {
    #[serde(default = "format_version")]
    pub version: u32,
    /// The run's name: checkpoints and locks are keyed by it.
    pub backfill: Text,
    #[serde(default)]
    pub mode: BackfillMode,
    /// The STI table, `schema.table` or `table`.
    pub table: Text,
    /// Primary key or unique not-null column(s) used for keyset chunking.
    pub key: OneOrMany,
    /// The column that receives the type name.
    pub discriminator: Text,
    /// In-place mode: the legacy column the type is derived from.
    pub from: Option<Text>,
    /// In-place mode: legacy value to type name.
    #[serde(default, deserialize_with = "optional_unique_map")]
    pub map: Option<BTreeMap<Text, Text>>,
    #[serde(default)]
    pub unmapped: Unmapped,
    /// In-place mode: replace a discriminator that already holds another type. Unset or false:
    /// such rows are left alone, preflight counts them and `validate` lists them. Left out of
    /// the fingerprint when unset, so plans written before it keep their checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
    /// An SQL condition limiting the rows touched.
    #[serde(rename = "where")]
    pub filter: Option<Text>,
    /// Copy mode: the legacy per-type tables.
    #[serde(default)]
    pub sources: Vec<CopySourceFile>,
    #[serde(default)]
    pub batch: BatchFile,
    #[serde(default)]
    pub throttle: ThrottleFile,
    /// Who writes the discriminator for new rows while the backfill runs.
    pub coverage: Option<Coverage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillMode {
    #[default]
    InPlace,
    Copy,
}

/// What to do with rows whose legacy value is not in `map`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmapped {
    /// Refuse to start while any exist (counted by preflight).
    #[default]
    Fail,
    /// Leave them without a type.
    Skip,
    /// Give them this type.
    Default(Text),
}

impl<'de> Deserialize<'de> for Unmapped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UnmappedVisitor;
        impl<'de> Visitor<'de> for UnmappedVisitor {
            type Value = Unmapped;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`fail`, `skip` or `{ default: TypeName }`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Unmapped, E> {
                match value {
                    "fail" => Ok(Unmapped::Fail),
                    "skip" => Ok(Unmapped::Skip),
                    other => Err(E::custom(format_args!(
                        "expected `fail`, `skip` or `{{ default: TypeName }}`, found `{other}`"
                    ))),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Unmapped, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "expected `{ default: TypeName }`, found an empty mapping",
                    ));
                };
                if key != "default" {
                    return Err(de::Error::custom(format_args!(
                        "expected `{{ default: TypeName }}`, found key `{key}`"
                    )));
                }
                let value: Text = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("expected only `default` in `unmapped`"));
                }
                Ok(Unmapped::Default(value))
            }
        }
        deserializer.deserialize_any(UnmappedVisitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// The tool installs a trigger that sets the discriminator on insert and update.
    Trigger,
    /// The application already writes the discriminator for new rows.
    Application,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CopySourceFile {
    pub table: Text,
    /// The type name rows from this table get.
    #[serde(rename = "type")]
    pub type_name: Text,
    /// The source's columns to walk it by in keyset chunks; default: its primary key.
    pub key: Option<OneOrMany>,
    /// Target column to source column or SQL expression; unlisted columns copy by name.
    #[serde(default, deserialize_with = "unique_map")]
    pub columns: BTreeMap<Text, Text>,
    #[serde(rename = "where")]
    pub filter: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchFile {
    /// The first batch's size; the controller then adapts it.
    pub size: u64,
    pub min_size: u64,
    pub max_size: u64,
    pub target_duration: DurationValue,
}

impl Default for BatchFile {
    fn default() -> Self {
        BatchFile {
            size: 1_000,
            min_size: 10,
            max_size: 50_000,
            target_duration: DurationValue(std::time::Duration::from_millis(200)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleFile {
    pub lock_timeout: DurationValue,
    pub statement_timeout: DurationValue,
    pub max_replication_lag: DurationValue,
    /// Pause while any other transaction has been open longer than this.
    pub max_transaction_age: DurationValue,
    /// Pause while more sessions than this wait for a lock on the table.
    pub max_lock_waiters: u32,
    /// A pace the DBA chooses: at most this many rows per second, shared by the workers of one
    /// process (each process of a `--join`ed run keeps its own pace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rows_per_second: Option<u64>,
    /// The fraction of wall time a worker spends in batches: 0.5 rests as long as each batch
    /// took, leaving the server idle half the time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duty_cycle: Option<Decimal>,
    /// Pause while more sessions than this are running a query (`active` in pg_stat_activity,
    /// anywhere on the server, other than the run's own): the application is busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_active_sessions: Option<u32>,
    /// A read-only query standing for the application's (default `SELECT 1`), timed between
    /// batches when `max_probe_latency` or `max_probe_slowdown` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Text>,
    /// Pause while the probe takes longer than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_probe_latency: Option<DurationValue>,
    /// Pause while the probe is this many times slower than before the run started (2: twice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_probe_slowdown: Option<Decimal>,
}

/// A plain number from a plan (a duty cycle, a slowdown factor); validation checks its range.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Decimal(pub f64);

// Validation refuses NaN, so equality is reflexive for every number a plan holds.
impl Eq for Decimal {}

impl Default for ThrottleFile {
    fn default() -> Self {
        let seconds = |s| DurationValue(std::time::Duration::from_secs(s));
        ThrottleFile {
            lock_timeout: seconds(2),
            statement_timeout: seconds(30),
            max_replication_lag: seconds(10),
            max_transaction_age: seconds(300),
            max_lock_waiters: 5,
            max_rows_per_second: None,
            duty_cycle: None,
            max_active_sessions: None,
            probe: None,
            max_probe_latency: None,
            max_probe_slowdown: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decommission sequences

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceFile {
    #[serde(default = "format_version")]
    pub version: u32,
    /// Steps in the order they run; each step is a list of actions run in order.
    pub decommission_sequence: OrderedMap<Vec<ActionFile>>,
    /// AWS account ids this sequence may run against (STS GetCallerIdentity is checked).
    #[serde(default)]
    pub allowed_accounts: Vec<Text>,
    pub region: Option<Text>,
    #[serde(default)]
    pub defaults: DefaultsFile,
    /// Resources carrying this tag key are never touched.
    #[serde(default = "default_protect_tag")]
    pub protect_tag: Text,
    /// Where `archive` actions write, unless they say otherwise.
    pub archive: Option<ArchiveFile>,
    /// The most targets an action without `expect` may resolve to (default
    /// [`DEFAULT_MAX_TARGETS`]): a Name that falls back to group tags can match a fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_targets: Option<u32>,
}

/// `max_targets` when a sequence does not set it.
pub const DEFAULT_MAX_TARGETS: u32 = 20;

/// `expect: 3` (exactly) or `expect: {min: 1, max: 5}`: how many targets an action must resolve
/// to, checked at plan time before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TargetCount {
    pub min: u32,
    pub max: u32,
}

impl TargetCount {
    pub fn allows(&self, count: usize) -> bool {
        u32::try_from(count).is_ok_and(|n| (self.min..=self.max).contains(&n))
    }
}

impl fmt::Display for TargetCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "exactly {}", self.min)
        } else {
            write!(f, "{} to {}", self.min, self.max)
        }
    }
}

impl<'de> Deserialize<'de> for TargetCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TargetCountVisitor)
    }
}

struct TargetCountVisitor;

impl<'de> Visitor<'de> for TargetCountVisitor {
    type Value = TargetCount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of targets, or `{min: N, max: M}`")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<TargetCount, E> {
        let n = u32::try_from(value).map_err(|_| E::custom("expected at most 4294967295"))?;
        Ok(TargetCount { min: n, max: n })
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<TargetCount, E> {
        u64::try_from(value)
            .map_err(|_| E::custom("expected a number of targets, not a negative one"))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<TargetCount, A::Error> {
        let (mut min, mut max) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "min" => min = Some(map.next_value::<u32>()?),
                "max" => max = Some(map.next_value::<u32>()?),
                other => {
                    return Err(de::Error::unknown_field(other, &["min", "max"]));
                }
            }
        }
        let count = TargetCount {
            min: min.unwrap_or(0),
            max: max.unwrap_or(u32::MAX),
        };
        if count.min > count.max {
            return Err(de::Error::custom(format!(
                "`min` {} is above `max` {}",
                count.min, count.max
            )));
        }
        Ok(count)
    }
}

fn default_protect_tag() -> Text {
    Text("do-not-delete".to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsFile {
    /// How long a validation is polled before the step fails.
    pub validation_timeout: DurationValue,
    /// How often a validation is polled.
    pub poll_interval: DurationValue,
}

impl Default for DefaultsFile {
    fn default() -> Self {
        DefaultsFile {
            validation_timeout: DurationValue(std::time::Duration::from_secs(30 * 60)),
            poll_interval: DurationValue(std::time::Duration::from_secs(15)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    /// `s3://bucket/prefix` or a local directory.
    pub dest: Text,
    #[serde(default)]
    pub dirs: Vec<Text>,
    #[serde(default)]
    pub tables: Vec<Text>,
    pub database_url: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionFile {
    pub action: ActionKind,
    /// Instance, volume, load balancer or group ids, Name tags, or `tag:Key=Value` selectors.
    #[serde(default)]
    pub targets: Vec<Text>,
    /// DNS names for `remove_dns`.
    #[serde(default)]
    pub records: Vec<Text>,
    /// The Route 53 hosted zone of `records`, when the name alone is ambiguous.
    pub zone: Option<Text>,
    pub validation: Option<ValidationFile>,
    /// How long to wait after this action before the next step may start.
    pub wait_time: Option<DurationValue>,
    pub timeout: Option<DurationValue>,
    pub interval: Option<DurationValue>,
    /// `command` actions, or `stop_services` run on the hosts instead of stopping them.
    pub command: Option<Text>,
    /// `sql` actions.
    pub sql: Option<Text>,
    pub database_url: Option<Text>,
    /// `http` actions.
    pub url: Option<Text>,
    pub method: Option<Text>,
    pub expect_status: Option<u16>,
    /// `archive` actions: the archiver's sources and destination.
    #[serde(default)]
    pub dirs: Vec<Text>,
    #[serde(default)]
    pub tables: Vec<Text>,
    pub dest: Option<Text>,
    /// `command`, `sql` and `http` actions: sending it twice is harmless, so a run interrupted
    /// while it was in flight may send it again (otherwise only with `--rerun STEP`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
    /// `shift_traffic`: where the weights are set, the new system's share at each stage (in
    /// percent, increasing), how long each stage is held and the gates watched while it is.
    pub traffic: Option<TrafficTargetFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<u32>,
    pub hold: Option<DurationValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<ShiftGateFile>,
    /// How many targets the action must resolve to; without it, at most `max_targets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<TargetCount>,
    /// `command` and `stop_services` commands: the environment variables passed on to the
    /// command, besides PATH, HOME and `SUNSET_TARGET_*` (nothing else is inherited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<Text>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    StopServices,
    StopInstances,
    StartInstances,
    SnapshotVolumes,
    DetachVolumes,
    DeleteVolumes,
    TerminateInstances,
    ReleaseAddresses,
    DeleteSecurityGroups,
    CleanSecurityGroups,
    RemoveDns,
    DeleteLoadBalancers,
    Archive,
    Command,
    Sql,
    Http,
    /// Changes nothing: its `validation` (a metric parity or zero-traffic gate, say) must hold
    /// before the sequence goes on.
    Gate,
    /// Moves traffic from the legacy to the new system stage by stage, watching gates, and
    /// moves it back a stage when one breaks.
    ShiftTraffic,
}

// ---------------------------------------------------------------------------------------------
// sunset-drop-column acknowledgements

/// `.sunset-drop-column.yaml`: blocking findings a team has reviewed and accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropColumnConfigFile {
    #[serde(default = "format_version")]
    pub version: u32,
    #[serde(default)]
    pub allow: Vec<AllowFile>,
}

/// One acknowledged finding: every finding with `code`, or only the one about `object`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowFile {
    pub code: Text,
    #[serde(default)]
    pub object: Option<Text>,
    /// Why it is safe: reviewers read this in the pull request.
    pub reason: Text,
}
