//! What every sunset binary shares: the exit codes operators script on, tracing setup (the only
//! place a subscriber is installed), and the progress display (a bar on a TTY, a log line every
//! few seconds otherwise).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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

/// `-v`/`-q`, declared once for every binary (`#[command(flatten)]`).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Verbosity {
    /// More logging on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Errors only on stderr (no warnings); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

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

/// Progress on stderr: an indicatif bar on a TTY, one plain line every few seconds otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    unit: &'static str,
    last_line: Instant,
}

impl Progress {
    /// `hidden` when stdout carries `--json` events and stderr should stay quiet.
    pub fn new(total: u64, unit: &'static str, hidden: bool) -> Progress {
        let bar = (!hidden && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(5));
            let color = std::env::var_os("NO_COLOR").is_none();
            let template = if color {
                "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {human_pos}/{human_len} {unit} {per_sec} eta {eta} {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {unit} {per_sec} eta {eta} {msg}"
            };
            bar.set_style(ProgressStyle::with_template(&template.replace("{unit}", unit)).expect("a valid template"));
            bar
        });
        Progress {
            bar,
            unit,
            last_line: Instant::now(),
        }
    }

    /// Updates position, total and the status message (for example the throttle reason).
    pub fn update(&mut self, position: u64, total: u64, message: Option<&str>) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total.max(position));
                bar.set_position(position);
                bar.set_message(message.unwrap_or_default().to_owned());
            }
            None if self.last_line.elapsed() >= Duration::from_secs(5) => {
                self.last_line = Instant::now();
                let percent = if total == 0 {
                    100.0
                } else {
                    position as f64 * 100.0 / total as f64
                };
                let message = message.map(|m| format!(" ({m})")).unwrap_or_default();
                tracing_line(&format!(
                    "{position}/{total} {} ({percent:.1}%){message}",
                    self.unit
                ));
            }
            None => {}
        }
    }

    pub fn finish(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(message.to_owned());
        }
    }
}

fn tracing_line(line: &str) {
    #[allow(clippy::print_stderr, reason = "progress lines are meant for stderr")]
    {
        eprintln!("{line}");
    }
}

/// A command's output (reports, JSON) on stdout.
pub fn emit(text: &str) {
    use std::io::Write;
    static CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if CLOSED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    if let Err(error) = written {
        // A reader that went away (`status --json | head`) is not a failure of the command,
        // and the work goes on to its end: only the output stops.
        CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
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

/// Runs `command` on a two-thread runtime. The first Ctrl-C or SIGTERM sets the flag `command`
/// polls (`stopping` tells the operator what happens next: the unit of work in flight finishes
/// and is checkpointed); a second one exits 130 at once.
pub fn run_with_interrupts<Fut>(
    stopping: &'static str,
    command: impl FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) -> Fut,
) -> std::process::ExitCode
where
    Fut: std::future::Future<Output = Exit>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report_error(&format!("error: cannot start the async runtime: {error}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            match term.as_mut() {
                Some(term) => {
                    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                }
                None => drop(tokio::signal::ctrl_c().await),
            }
            tracing::warn!("{stopping} (interrupt again to abort now)");
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = tokio::signal::ctrl_c().await;
            #[allow(
                clippy::exit,
                clippy::disallowed_methods,
                reason = "a second interrupt aborts at once; the checkpoint holds what finished"
            )]
            std::process::exit(130);
        });
        command(stop).await.into()
    })
}
