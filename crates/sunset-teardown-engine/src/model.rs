//! What the checkpoint holds: the resolved (pinned) targets of every action and how far each
//! step got. It is written after each action and after each validation, atomically.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sunset_plan::StepState;
use sunset_plan::format::ActionKind;

/// The kind of resource a target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Instance,
    Volume,
    Address,
    SecurityGroup,
    LoadBalancer,
    Record,
}

impl ResourceKind {
    pub fn noun(self, count: usize) -> String {
        let singular = match self {
            ResourceKind::Instance => "instance",
            ResourceKind::Volume => "volume",
            ResourceKind::Address => "address",
            ResourceKind::SecurityGroup => "security group",
            ResourceKind::LoadBalancer => "load balancer",
            ResourceKind::Record => "DNS record set",
        };
        match (count, self) {
            (1, _) => format!("1 {singular}"),
            (n, ResourceKind::Address) => format!("{n} addresses"),
            (n, _) => format!("{n} {singular}s"),
        }
    }
}

/// One concrete resource an action acts on, resolved at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: ResourceKind,
    /// The AWS id (ARN for load balancers; `zone/name/type[/set]` for DNS records).
    pub id: String,
    /// Its Name tag or name, when it has one.
    pub label: Option<String>,
    /// How it was found: `id`, `Name tag legacy-collector-1`, `tag:Role=collector`, ...
    pub via: String,
}

impl Target {
    pub fn display(&self) -> String {
        match &self.label {
            Some(label) if label != &self.id => format!("{} ({label})", self.id),
            _ => self.id.clone(),
        }
    }
}

/// How far one action got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionPhase {
    Pending,
    /// Its calls may have been sent: a resumed run checks what took effect before calling again.
    Started,
    /// Its calls succeeded; its validation has not held yet.
    Applied,
    Validated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub kind: ActionKind,
    pub targets: Vec<Target>,
    /// Set when the targets were not written in the sequence: how they were derived.
    pub derived_from: Option<String>,
    pub phase: ActionPhase,
    pub started_at: Option<DateTime<Utc>>,
    pub applied_at: Option<DateTime<Utc>>,
    pub validated_at: Option<DateTime<Utc>>,
    /// What the action produced or left alone, by target id (snapshot ids, skip reasons).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Each target's state just before the action first started (`running`, `stopped`,
    /// `attached to i-... as /dev/sdf`, ...): rollback returns each target to exactly this and
    /// touches nothing that was already where the action would take it.
    #[serde(default)]
    pub before: BTreeMap<String, String>,
    pub rolled_back_at: Option<DateTime<Utc>>,
}

impl ActionRecord {
    pub fn new(kind: ActionKind, targets: Vec<Target>, derived_from: Option<String>) -> Self {
        ActionRecord {
            kind,
            targets,
            derived_from,
            phase: ActionPhase::Pending,
            started_at: None,
            applied_at: None,
            validated_at: None,
            outputs: BTreeMap::new(),
            before: BTreeMap::new(),
            rolled_back_at: None,
        }
    }

    pub fn target_ids(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.id.clone()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub state: StepState,
    pub actions: Vec<ActionRecord>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the step after this one may start (its `wait_time` after it validated).
    pub next_eligible_at: Option<DateTime<Utc>>,
    pub failure: Option<String>,
}

/// The whole checkpoint of one sequence run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub sequence: String,
    /// This attempt's identity: a fresh one for every start (first `plan` or `apply`, or
    /// `--restart`). Snapshots, archives and the inventory carry it, so a resumed attempt reuses
    /// its own work and never an earlier attempt's.
    #[serde(default)]
    pub attempt: String,
    pub account: String,
    pub region: String,
    pub planned_at: DateTime<Utc>,
    /// When `apply` first showed this attempt's plan: a resumed apply does not print (or read
    /// the states for) thousands of plan lines again.
    #[serde(default)]
    pub plan_shown_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepRecord>,
}

impl RunState {
    /// A new attempt's state, with a fresh attempt id.
    pub fn new(sequence: String, account: String, region: String, steps: Vec<StepRecord>) -> Self {
        let seed = format!(
            "{}-{}-{sequence}",
            Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            std::process::id()
        );
        RunState {
            sequence,
            attempt: sunset_plan::Fingerprint::of(&seed).to_string()[..12].to_owned(),
            account,
            region,
            planned_at: Utc::now(),
            plan_shown_at: None,
            steps,
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }
}
