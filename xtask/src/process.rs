//! Running commands: as another user when root must not run them, detached when they must outlive
//! the xtask, and with failures that show the command and its output.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `command` to completion, failing with its output if it fails.
pub(crate) fn run(command: &mut Command) -> Result<String> {
    let rendered = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {rendered}"))?;
    if !output.status.success() {
        bail!(
            "{rendered} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) fn is_root() -> bool {
    run(Command::new("id").arg("-u")).is_ok_and(|out| out.trim() == "0")
}

/// A command that runs as `user` when we are root (PostgreSQL refuses to run as root).
pub(crate) fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("could not find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether `pid` is a live process (signal 0 checks without sending anything).
pub(crate) fn is_alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL.
pub(crate) fn terminate(pid: u32, grace: Duration) {
    let _ = Command::new("kill")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if is_alive(pid) {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether something accepts TCP connections on the loopback `port`.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// Polls `check` until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `program` is an executable on PATH.
pub(crate) fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// Where `program` is on PATH, if it is.
pub(crate) fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// `program` from Debian package `package`, installed with apt-get on first use (as root; the
/// package lists are refreshed once if the package is not known yet). `why` says what needs it.
pub(crate) fn apt_program(package: &str, program: &str, why: &str) -> Result<std::path::PathBuf> {
    if let Some(path) = find_on_path(program) {
        return Ok(path);
    }
    apt_install(&[package]);
    find_on_path(program).with_context(|| {
        format!("{why} needs `{program}`, which could not be installed: `apt-get update && apt-get install {package}`")
    })
}

/// `apt-get install`s `packages` (after an `apt-get update` if the first try fails); whether
/// it succeeded. The caller checks for what it needed and says how to get it.
pub(crate) fn apt_install(packages: &[&str]) -> bool {
    crate::say!(
        "installing {} with apt-get (first use only)",
        packages.join(" ")
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    install() || {
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        install()
    }
}

/// Whether a server on loopback `port` answers `GET path` with 200 (not just whether the port is
/// open): how "up" is judged for the emulator and Prometheus.
pub(crate) fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// A command for a server that must outlive the xtask: a session of its own (`setsid`), like
/// pg_ctl gives PostgreSQL, so it outlives the shell or job that ran `services up` and a Ctrl-C
/// meant for a test run does not reach it. (Not a group leader when calling setsid, or setsid
/// forks and the pid we record is wrong.)
pub(crate) fn detached(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    if on_path("setsid") {
        let mut command = Command::new("setsid");
        command.arg(program);
        command
    } else {
        let mut command = Command::new(program);
        command.process_group(0);
        command
    }
}
