//! The AWS emulator: moto's server, installed into a virtualenv under `target/` on first use.
//!
//! The pin matters: moto 5.2.x answers ListParts with a `ListPartsResponse` root that aws-sdk-s3
//! rejects ("expected ListPartsResult"); 5.1.22 works for ListParts, ListMultipartUploads,
//! multipart upload, EC2, Route 53, ELBv2 and STS. Its whole-object checksums are wrong, so
//! sunset never relies on them: our own SHA-256s are the truth.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::process;
use crate::say;

pub(crate) const MOTO_REQUIREMENT: &str = "moto[server]==5.1.22";

/// What `up` recorded about the emulator it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Emulator {
    pub(crate) pid: u32,
    pub(crate) port: u16,
}

impl Emulator {
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Alive and answering; a busy emulator gets a few seconds before it counts as down.
    pub(crate) fn is_running(&self) -> bool {
        process::is_alive(self.pid)
            && process::wait_until(Duration::from_secs(5), || healthy(self.port))
    }

    pub(crate) fn stop(&self) {
        process::terminate(self.pid, Duration::from_secs(5));
    }
}

/// Installs moto if needed and starts it, detached, on a free loopback port.
pub(crate) fn start(root: &Path) -> Result<Emulator> {
    let venv = root.join("moto-venv");
    install(&venv)?;
    patch_record_values(&venv)?;
    let port = process::free_port()?;
    let log_path = root.join("moto.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let server = venv.join("bin").join("moto_server");
    let mut command = process::detached(&server);
    let child = command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // The recorder (off until a test turns it on) writes here, not into the working directory.
        .env("MOTO_RECORDER_FILEPATH", root.join("moto-recording.jsonl"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("could not start moto_server")?;
    let emulator = Emulator {
        pid: child.id(),
        port,
    };
    if !process::wait_until(Duration::from_secs(60), || healthy(port)) {
        emulator.stop();
        bail!(
            "moto did not become healthy on port {port} within 60s; its log is {}",
            log_path.display()
        );
    }
    Ok(emulator)
}

fn install(venv: &Path) -> Result<()> {
    let marker = venv.join(".sunset-requirement");
    if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == MOTO_REQUIREMENT) {
        return Ok(());
    }
    let python = find_python()?;
    say!(
        "installing {MOTO_REQUIREMENT} into {} (first use only)",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(venv);
    process::run(Command::new(&python).args(["-m", "venv"]).arg(venv)).context(
        "could not create a virtualenv; install Python's venv module (for example `apt-get install python3-venv`)",
    )?;
    process::run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        MOTO_REQUIREMENT,
    ]))
    .with_context(|| format!("could not install {MOTO_REQUIREMENT} from PyPI"))?;
    std::fs::write(&marker, MOTO_REQUIREMENT)?;
    Ok(())
}

/// moto wraps Route 53 record values in CDATA, which Route 53 itself never sends and
/// aws-smithy-xml reads as empty strings; an exact record set (needed to delete one) then can't
/// be read back. The template is changed to send escaped text, as Route 53 does.
fn patch_record_values(venv: &Path) -> Result<()> {
    const CDATA: &str = "<Value><![CDATA[{{ resource }}]]></Value>";
    const TEXT: &str = "<Value>{{ resource | e }}</Value>";
    let lib = venv.join("lib");
    for python in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let responses = python?
            .path()
            .join("site-packages/moto/route53/responses.py");
        let Ok(text) = std::fs::read_to_string(&responses) else {
            continue;
        };
        if text.contains(CDATA) {
            std::fs::write(&responses, text.replace(CDATA, TEXT))
                .with_context(|| format!("patching {}", responses.display()))?;
        }
    }
    Ok(())
}

pub(crate) fn find_python() -> Result<PathBuf> {
    for candidate in ["python3", "python"] {
        let works = Command::new(candidate)
            .args([
                "-c",
                "import sys, venv; sys.exit(0 if sys.version_info >= (3, 9) else 1)",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!(
        "the AWS emulator (moto) needs Python 3.9 or newer with the venv module on PATH; \
         install it, for example `apt-get install python3 python3-venv`"
    )
}

/// Turns the recorder off and empties its log: tests that judge by the emulator's request log
/// turn it on, and nothing after them should pay for writing every request (and body) down.
pub(crate) fn stop_recording(port: u16) -> Result<()> {
    for path in [
        "/moto-api/recorder/stop-recording",
        "/moto-api/recorder/reset-recording",
    ] {
        let status = post(port, path).with_context(|| format!("POST {path} to the emulator"))?;
        if status != 200 {
            bail!("the emulator answered {status} to POST {path}");
        }
    }
    Ok(())
}

/// A bodiless POST to the emulator's own API; the response's status code.
fn post(port: u16, path: &str) -> Result<u16> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(std::str::from_utf8(&head[9..12])?.parse()?)
}

/// Whether moto answers its own API (not just whether the port is open).
fn healthy(port: u16) -> bool {
    process::http_ok(port, "/moto-api/data.json")
}
