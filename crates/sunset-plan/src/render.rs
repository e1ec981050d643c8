//! Compact human rendering of a plan for dry-runs and `status`: one line per step, aligned,
//! readable without colour, with irreversible steps marked.

use std::fmt::Write;

use crate::state::StepState;

/// What a dry-run shows of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepView {
    pub name: String,
    pub state: StepState,
    /// One line: what the action will do to which targets.
    pub summary: String,
    /// What must hold before the next step starts, if anything.
    pub validation: Option<String>,
    /// Whether the step destroys something that can not be brought back by `rollback`.
    pub irreversible: bool,
    /// Detail lines (resolved targets, current states), indented under the step.
    pub details: Vec<String>,
}

/// Renders steps as an aligned list:
///
/// ```text
///  1  pending    step_1_collectors   stop 2 instances
///                                    then: no active connections
/// ```
pub fn render_steps(steps: &[StepView]) -> String {
    let name_width = steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let number_width = steps.len().to_string().len();
    let indent = " ".repeat(number_width + 2 + 9 + 2 + name_width + 2);
    let mut out = String::new();
    for (i, step) in steps.iter().enumerate() {
        let marker = if step.irreversible {
            "  [irreversible]"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>number_width$}  {:<9}  {:<name_width$}  {}{marker}",
            i + 1,
            step.state.as_str(),
            step.name,
            step.summary,
        );
        if let Some(validation) = &step.validation {
            let _ = writeln!(out, "{indent}then: {validation}");
        }
        for detail in &step.details {
            let _ = writeln!(out, "{indent}- {detail}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn renders_aligned_without_colour() {
        let steps = vec![
            StepView {
                name: "step_1_collectors".into(),
                state: StepState::Validated,
                summary: "stop 2 instances".into(),
                validation: Some("no active connections".into()),
                irreversible: false,
                details: vec!["i-0abc (legacy-collector-1): running".into()],
            },
            StepView {
                name: "step_3_compute".into(),
                state: StepState::Pending,
                summary: "terminate 1 instance".into(),
                validation: None,
                irreversible: true,
                details: vec![],
            },
        ];
        expect![[r#"
            1  validated  step_1_collectors  stop 2 instances
                                             then: no active connections
                                             - i-0abc (legacy-collector-1): running
            2  pending    step_3_compute     terminate 1 instance  [irreversible]
        "#]]
        .assert_eq(&render_steps(&steps));
    }
}
