//! The life cycle of one step of a plan, shared by every runner so `status` reads the same everywhere.
//!
//! ```text
//! pending ──> running ──> applied ──> validated
//!    │           │           │
//!    └─> skipped └─> failed <┘   (failed ──> running on retry)
//! ```

use std::fmt;
use std::str::FromStr;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// The action has been sent; after a crash, the runner must find out whether it took effect.
    Running,
    /// The action completed; its validation has not yet held.
    Applied,
    /// The validation held: the next step may start.
    Validated,
    /// The action or its validation failed; a retry moves it back to running.
    Failed,
    /// Deliberately not run (already in the wanted state, or excluded by the operator).
    Skipped,
}

/// A transition the state model does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a step cannot go from `{from}` to `{to}`")]
pub struct TransitionError {
    pub from: StepState,
    pub to: StepState,
}

impl StepState {
    pub const ALL: [StepState; 6] = [
        StepState::Pending,
        StepState::Running,
        StepState::Applied,
        StepState::Validated,
        StepState::Failed,
        StepState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Applied => "applied",
            StepState::Validated => "validated",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        }
    }

    /// Whether nothing more will happen to this step in this run.
    pub fn is_done(self) -> bool {
        matches!(self, StepState::Validated | StepState::Skipped)
    }

    /// Checks a transition, so a corrupted or hand-edited checkpoint can't skip a validation.
    pub fn transition(self, to: StepState) -> Result<StepState, TransitionError> {
        use StepState::*;
        let allowed = matches!(
            (self, to),
            (Pending, Running | Skipped)
                | (Running, Applied | Failed)
                | (Applied, Validated | Failed)
                | (Failed, Running | Skipped)
        );
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown step state `{s}`, expected one of pending, running, applied, validated, failed, skipped"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_and_retries_are_allowed() {
        let mut state = StepState::Pending;
        for next in [
            StepState::Running,
            StepState::Failed,
            StepState::Running,
            StepState::Applied,
            StepState::Validated,
        ] {
            state = state.transition(next).unwrap();
        }
        assert!(state.is_done());
    }

    #[test]
    fn a_validation_can_not_be_skipped() {
        let error = StepState::Running
            .transition(StepState::Validated)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "a step cannot go from `running` to `validated`"
        );
        assert!(StepState::Validated.transition(StepState::Running).is_err());
        assert!(StepState::Pending.transition(StepState::Applied).is_err());
    }

    #[test]
    fn names_round_trip() {
        for state in StepState::ALL {
            assert_eq!(state.as_str().parse::<StepState>(), Ok(state));
        }
        assert!("done".parse::<StepState>().is_err());
    }
}
