//! The logic behind `sunset-teardown`: decommission sequences run against AWS one step at a time.
//!
//! ```text
//! sequence.yaml --load--> Teardown --plan--> resolve targets --> pinned in the checkpoint
//!                                  --apply-> per step: safety checks, confirm,
//!                                            per action: inventory, calls, checkpoint, validation
//! ```
//!
//! Every call goes through [`Cloud`], which writes the audit log; every action reads the current
//! state before it calls, so a resumed or repeated run never changes anything twice.

mod actions;
mod audit;
mod checks;
mod cloud;
mod error;
mod gates;
mod inventory;
mod model;
mod plan;
mod probes;
mod resolve;
mod resources;
mod rollback;
mod runner;
mod safety;
mod states;

pub use audit::{AuditLog, AuditRecord, CallKind, CallTally, read_audit_log};
pub use checks::{Check, Condition, Polled, poll};
pub use cloud::Cloud;
pub use error::Error;
pub use gates::{
    GateReport, MetricParity, ParityReport, Verdict, Worst, check_reachable, saved_reports,
};
pub use model::{ActionPhase, ActionRecord, ResourceKind, RunState, StepRecord, Target};
pub use plan::{PlanAction, PlanReport, PlanStep, PlanTarget};
pub use resolve::{GROUP_TAG_KEYS, action_name};
pub use rollback::RollbackReport;
pub use runner::{ApplyOutcome, Event, Options, PROTECT_TAG, RunPaths, Teardown, Ui, target_list};
