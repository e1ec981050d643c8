//! The plan and sequence model shared by every sunset binary.
//!
//! This crate does no IO: callers read files and pass their text, and pass the environment in as
//! a lookup function. It turns that text into validated plans with located diagnostics, durations,
//! `${VAR}` interpolation, fingerprints, step states and the dry-run rendering.

mod diagnostic;
mod duration;
mod fingerprint;
pub mod format;
mod gates;
mod interpolate;
mod kinds;
pub mod metric_expr;
mod redact;
mod render;
mod state;
mod validate;
mod yaml;

#[cfg(test)]
mod tests;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use duration::{DurationError, HumanDuration, format_duration, parse_duration};
pub use fingerprint::{Fingerprint, hex};
pub use interpolate::InterpolateError;
pub use kinds::Undo;
pub use redact::Redactor;
pub use render::{StepView, render_steps};
pub use state::{StepState, TransitionError};
pub use yaml::{
    DurationValue, Number, OrderedMap, PathSegment, Text, closest, diagnostic_at, display_path,
    locate,
};

use format::{BackfillPlanFile, SequenceFile};

/// A plan file that parsed and passed every check, with the fingerprint its checkpoints carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<T> {
    pub plan: T,
    pub fingerprint: Fingerprint,
    /// The environment values the plan interpolated, to keep them out of files and output.
    pub redactor: Redactor,
}

/// Loads a backfill plan; `file` is only used to name the file in diagnostics.
pub fn load_backfill_plan(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded<BackfillPlanFile>, Diagnostics> {
    let (plan, redactor) = yaml::load_redacting::<BackfillPlanFile>(file, text, env)?;
    validate::backfill_plan(file, text, &plan)?;
    let fingerprint = Fingerprint::of(&plan);
    Ok(Loaded {
        plan,
        fingerprint,
        redactor,
    })
}

/// Loads a sunset-drop-column config; `known_codes` are the finding codes `allow` may name.
pub fn load_drop_column_config(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    known_codes: &[&str],
) -> Result<format::DropColumnConfigFile, Diagnostics> {
    let config: format::DropColumnConfigFile = yaml::load(file, text, env)?;
    validate::drop_column_config(file, text, &config, known_codes)?;
    Ok(config)
}

/// Loads a decommission sequence; `file` is only used to name the file in diagnostics.
pub fn load_sequence(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded<SequenceFile>, Diagnostics> {
    let (sequence, redactor) = yaml::load_redacting::<SequenceFile>(file, text, env)?;
    validate::sequence(file, text, &sequence)?;
    let fingerprint = Fingerprint::of(&sequence);
    Ok(Loaded {
        plan: sequence,
        fingerprint,
        redactor,
    })
}

/// The process environment, for callers that have no reason to restrict it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
