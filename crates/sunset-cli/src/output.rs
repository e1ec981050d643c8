//! Output: the command's result on stdout ([`emit`]), everything for the operator on stderr
//! ([`report_error`], tracing), and the tracing setup (the only place a subscriber is installed).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::args::Verbosity;

/// Installs the tracing subscriber on stderr; `RUST_LOG` overrides the verbosity flags.
pub fn init_tracing(verbosity: Verbosity) {
    let Verbosity { verbose, quiet } = verbosity;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .try_init();
}

/// A command's output (reports, JSON) on stdout, a line at a time.
pub fn emit(text: &str) {
    use std::io::Write;
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    if let Err(error) = written {
        // A reader that went away (`status --json | head`) is not a failure of the command,
        // and the work goes on to its end: only the output stops.
        CLOSED.store(true, Ordering::Relaxed);
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            report_error(&format!("warning: cannot write to stdout: {error}"));
        }
    }
}

/// Messages and errors for the operator on stderr.
pub fn report_error(text: &str) {
    #[allow(
        clippy::print_stderr,
        reason = "messages for the operator go to stderr"
    )]
    {
        eprintln!("{text}");
    }
}
