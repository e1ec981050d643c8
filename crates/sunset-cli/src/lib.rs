//! The one command-line layer of every sunset binary, so that each cross-cutting thing is done
//! one way: the flags every command shares ([`args`]), the value parsers ([`parse`]), running a
//! command under Ctrl-C/SIGTERM and turning its result into a documented exit code ([`run`]),
//! the progress display ([`progress`]), Prometheus metrics on `--metrics-addr` ([`metrics`]) and
//! the output on stdout and stderr ([`output`]).

pub mod args;
pub mod metrics;
pub mod output;
pub mod parse;
pub mod progress;
pub mod run;

pub use args::{DatabaseArgs, GlobalArgs, StateDirArgs, Verbosity};
pub use metrics::MetricsArgs;
pub use output::{emit, init_tracing, report_error};
pub use progress::{Meter, Progress, Sample, Unit};
pub use run::{Failure, Runtime, conclude, exit_code, run_with_interrupts};
pub use sunset_outcome::{Classify, Shutdown};

/// The documented exit codes of every sunset binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Failed = 1,
    /// Bad input (plan or flags): nothing was changed.
    BadInput = 2,
    /// Stopped early (Ctrl-C, pause, cancel, wait gate): the checkpoint is saved, run again to resume.
    Stopped = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}
