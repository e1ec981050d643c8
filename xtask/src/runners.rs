//! `cargo xtask runners`: the migration runners whose formats `sunset-drop-column` writes, so
//! its tests apply the files with the runner itself. Installed on first use under
//! `target/sunset-services/runners/` (npm, a Python virtualenv, `cargo install` from crates.io)
//! or from Debian (ActiveRecord), then cached; their paths go to
//! `target/sunset-services/runners.env` for the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{process, say, services_dir};

/// dbmate's npm package (it carries the Go binary for this platform).
const DBMATE: &str = "dbmate@2.36.0";
/// The Python runners and the driver they use, pinned.
const PYTHON_REQUIREMENTS: [&str; 3] = [
    "alembic==1.14.0",
    "Django==5.1.4",
    "psycopg2-binary==2.9.10",
];

/// A runner from crates.io, built with its PostgreSQL driver only (no SQLite or MySQL to compile).
struct CratesIoRunner {
    krate: &'static str,
    version: &'static str,
    /// The features besides `--no-default-features`.
    features: &'static str,
    program: &'static str,
}

const SQLX: CratesIoRunner = CratesIoRunner {
    krate: "sqlx-cli",
    version: "0.8.6",
    features: "postgres",
    program: "sqlx",
};

/// Its `postgres` feature links the system's libpq (Debian's `libpq-dev`).
const DIESEL: CratesIoRunner = CratesIoRunner {
    krate: "diesel_cli",
    version: "2.3.14",
    features: "postgres",
    program: "diesel",
};

/// Installs what is missing and writes the env file; returns its variables.
pub(crate) fn install() -> Result<Vec<(&'static str, String)>> {
    let root = services_dir().join("runners");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let vars = vec![
        ("SUNSET_DBMATE", dbmate(&root)?.display().to_string()),
        (
            "SUNSET_RUNNERS_PYTHON",
            python(&root)?.display().to_string(),
        ),
        ("SUNSET_RUBY", ruby()?.display().to_string()),
        (
            "SUNSET_SQLX",
            from_crates_io(&root, &SQLX)?.display().to_string(),
        ),
        (
            "SUNSET_DIESEL",
            from_crates_io(&root, &DIESEL)?.display().to_string(),
        ),
    ];
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let env_file = services_dir().join("runners.env");
    std::fs::write(&env_file, text).with_context(|| format!("writing {}", env_file.display()))?;
    Ok(vars)
}

/// Whether `marker` records exactly `wanted` (a previous install of the same pins finished).
fn installed(marker: &Path, wanted: &str) -> bool {
    std::fs::read_to_string(marker).is_ok_and(|text| text == wanted)
}

fn dbmate(root: &Path) -> Result<PathBuf> {
    let prefix = root.join("npm");
    let program = prefix.join("node_modules/.bin/dbmate");
    let marker = prefix.join(".sunset-requirement");
    if installed(&marker, DBMATE) && program.exists() {
        return Ok(program);
    }
    let npm = process::find_on_path("npm").context(
        "dbmate is installed with npm, which is not on PATH: install Node.js and npm (for example `apt-get install npm`)",
    )?;
    say!(
        "installing {DBMATE} with npm into {} (first use only)",
        prefix.display()
    );
    let _ = std::fs::remove_dir_all(&prefix);
    process::run(
        Command::new(npm)
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg(DBMATE),
    )
    .with_context(|| format!("could not install {DBMATE} from the npm registry"))?;
    std::fs::write(&marker, DBMATE)?;
    Ok(program)
}

fn python(root: &Path) -> Result<PathBuf> {
    let venv = root.join("python");
    let program = venv.join("bin/python");
    let marker = venv.join(".sunset-requirement");
    let wanted = PYTHON_REQUIREMENTS.join(" ");
    if installed(&marker, &wanted) && program.exists() {
        return Ok(program);
    }
    let python = crate::moto::find_python()?;
    say!(
        "installing {wanted} into {} (first use only)",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    process::run(Command::new(&python).args(["-m", "venv"]).arg(&venv)).context(
        "could not create a virtualenv; install Python's venv module (for example `apt-get install python3-venv`)",
    )?;
    process::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_REQUIREMENTS),
    )
    .with_context(|| format!("could not install {wanted} from PyPI"))?;
    std::fs::write(&marker, wanted)?;
    Ok(program)
}

/// Ruby with Debian's ActiveRecord (6.1) and its PostgreSQL adapter.
fn ruby() -> Result<PathBuf> {
    let loads = |ruby: &Path| {
        Command::new(ruby)
            .args(["-e", "require 'active_record'; require 'pg'"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(ruby) = process::find_on_path("ruby").filter(|r| loads(r)) {
        return Ok(ruby);
    }
    process::apt_install(&["ruby-activerecord", "ruby-pg"]);
    process::find_on_path("ruby").filter(|r| loads(r)).context(
        "the Rails migration test needs ruby with ActiveRecord and pg: `apt-get update && apt-get install ruby-activerecord ruby-pg`",
    )
}

/// `cargo install --locked` into `runners/cargo`, with its own target directory so the
/// workspace's `target/debug` is left alone. About 70 s for sqlx-cli and 60 s for diesel_cli here.
fn from_crates_io(root: &Path, runner: &CratesIoRunner) -> Result<PathBuf> {
    let install_root = root.join("cargo");
    let program = install_root.join("bin").join(runner.program);
    let wanted = format!(
        "{}@{} --features {}",
        runner.krate, runner.version, runner.features
    );
    let marker = install_root.join(format!(".sunset-requirement-{}", runner.program));
    if installed(&marker, &wanted) && program.exists() {
        return Ok(program);
    }
    if runner.krate == DIESEL.krate && process::find_on_path("pg_config").is_none() {
        process::apt_install(&["libpq-dev"]);
    }
    say!(
        "building {wanted} into {} (first use only)",
        install_root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    process::run(
        Command::new(cargo)
            .args(["install", "--locked", "--quiet", "--no-default-features"])
            .args(["--features", runner.features, "--version", runner.version])
            .arg("--root")
            .arg(&install_root)
            .arg("--target-dir")
            .arg(root.join("cargo-build"))
            .arg(runner.krate),
    )
    .with_context(|| {
        format!(
            "could not build {wanted} from crates.io (diesel_cli needs libpq: `apt-get install libpq-dev`)"
        )
    })?;
    // The build tree is only needed to build; the binary is what is cached.
    let _ = std::fs::remove_dir_all(root.join("cargo-build"));
    std::fs::write(&marker, wanted)?;
    Ok(program)
}
