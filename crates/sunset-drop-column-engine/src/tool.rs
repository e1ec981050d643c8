//! Outside programs (git, gh, pg_dump, psql): run one, get its stdout, or an error that carries
//! its stderr.

use std::process::Command;

use crate::error::Error;

/// Runs `command` to completion; `what` names it in errors.
pub(crate) fn run(command: &mut Command, what: &str) -> Result<String, Error> {
    let output = command.output().map_err(|e| {
        Error::Tool(format!(
            "{what}: cannot start {:?}: {e}",
            command.get_program()
        ))
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(Error::Tool(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
