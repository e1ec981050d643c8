//! Flags declared once and flattened (`#[command(flatten)]`) into every binary that takes them.

use std::path::PathBuf;

use crate::run::Failure;

/// What every command of every binary takes: `--json`, `-v` and `-q`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct GlobalArgs {
    /// Machine-readable output: JSON events and a JSON result on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// `-v`/`-q`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Verbosity {
    /// More logging on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Errors only on stderr (no warnings), and a sequence's apply shows only its step lines;
    /// RUST_LOG overrides.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `--database-url`, with libpq's own environment behind it (`DATABASE_URL`, then the `PG*`
/// variables and the service and password files, which `sunset-pg` reads).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL or key=value string (libpq style); secrets in it are never printed.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL, or bad input naming both ways of giving it.
    pub fn require(&self) -> Result<String, Failure> {
        self.database_url.clone().ok_or_else(|| {
            Failure::bad_input("no database: pass --database-url or set DATABASE_URL")
        })
    }
}

/// `--state-dir`: where checkpoints, run locks, audit logs and inventories live.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateDirArgs {
    /// Where checkpoints, run locks, audit logs and inventories live (default: $SUNSET_STATE_DIR,
    /// else $XDG_STATE_HOME/sunset, else ~/.local/state/sunset).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArgs {
    /// The flag, else the documented default.
    pub fn resolve(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(sunset_checkpoint::default_state_dir)
    }
}
