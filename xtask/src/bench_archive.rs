//! `cargo xtask bench archive`: sunset-archive side by side with what an ops engineer would
//! otherwise run, in one run, on the same 1 GiB of mixed data: `tar | pigz` and `tar -czf` to a
//! local directory, and `tar -czf - | aws s3 cp -` to S3 (the emulator). Reported as MB/s and
//! ratios, with sunset's peak memory. Speed is measured here, never asserted in tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::{moto, process, say, services, workspace_root};

const DATA_BYTES: u64 = 1 << 30;
const AWSCLI_REQUIREMENT: &str = "awscli==1.40.21";

pub(crate) fn archive() -> Result<()> {
    services::up()?;
    let env = services::current_env()?;
    let endpoint = services::aws_endpoint()?;
    let root = workspace_root().join("target/sunset-bench");
    let pigz = ensure_pigz()?;
    let aws = ensure_awscli(&root.join("awscli-venv"))?;
    let data = root.join("archive-data");
    make_data(&data)?;
    say!("building sunset-archive (release)");
    let binary = crate::build_binary("sunset-archive", true)?;
    let out = root.join("archive-out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let bucket = format!("sunset-bench-{}", std::process::id());
    crate::demo::create_bucket(&endpoint, &bucket)?;
    let data_arg = data.display().to_string();
    let out_arg = out.display().to_string();

    let sunset = |dest: &str, name: &str| {
        let mut command = Command::new(&binary);
        command
            .args([
                "create",
                "--dest",
                dest,
                "--name",
                name,
                "--dir",
                &data_arg,
                "--part-size",
                "16MiB",
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SUNSET_STATE_DIR", root.join("archive-state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let shell = |script: String| {
        let mut command = Command::new("sh");
        command
            .args(["-c", &script])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null());
        command
    };
    let mut results: Vec<Measured> = Vec::new();
    say!("running: sunset-archive to a directory");
    results.push(measure(
        "sunset-archive -> dir",
        sunset(&out_arg, "local"),
        &out.join("local/archive.tar.gz"),
    )?);
    say!("running: tar -cf - | pigz");
    results.push(measure(
        "tar -cf - | pigz",
        shell(format!(
            "tar -cf - -C {data_arg}/.. archive-data | {} > {out_arg}/pigz.tar.gz",
            pigz.display()
        )),
        &out.join("pigz.tar.gz"),
    )?);
    say!("running: tar -czf");
    results.push(measure(
        "tar -czf",
        shell(format!(
            "tar -czf {out_arg}/tar.tar.gz -C {data_arg}/.. archive-data"
        )),
        &out.join("tar.tar.gz"),
    )?);
    say!("running: sunset-archive to S3 (emulator)");
    results.push(measure(
        "sunset-archive -> S3",
        sunset(&format!("s3://{bucket}/bench"), "s3"),
        Path::new(""),
    )?);
    say!("running: tar -czf - | aws s3 cp -");
    results.push(measure(
        "tar -czf - | aws s3 cp -",
        shell(format!(
            "tar -czf - -C {data_arg}/.. archive-data | {} --endpoint-url {endpoint} s3 cp - s3://{bucket}/awscli.tar.gz",
            aws.display()
        )),
        Path::new(""),
    )?);
    report(&results);
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

struct Measured {
    name: &'static str,
    elapsed: Duration,
    output_bytes: Option<u64>,
    peak_rss_kib: Option<u64>,
}

/// Runs `command` to completion, sampling its peak resident memory (`VmHWM`, which only grows,
/// so the last sample before exit is close to the true peak).
fn measure(name: &'static str, mut command: Command, output: &Path) -> Result<Measured> {
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = Some(hwm);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    ensure!(status.success(), "{name} failed ({status})");
    Ok(Measured {
        name,
        elapsed,
        output_bytes: std::fs::metadata(output).ok().map(|m| m.len()),
        // A shell pipeline's own memory says nothing about its parts.
        peak_rss_kib: if name.starts_with("sunset") {
            peak
        } else {
            None
        },
    })
}

fn report(results: &[Measured]) {
    let seconds = |name: &str| {
        results
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.elapsed.as_secs_f64())
    };
    let mut out = format!(
        "archive of {} MiB of mixed data (text logs, random and half-compressible binaries, small files), gzip level 6\n",
        DATA_BYTES >> 20
    );
    out.push_str(&format!(
        "{:<26} {:>9} {:>9} {:>12} {:>13}\n",
        "contender", "seconds", "MB/s", "output MiB", "peak RSS MiB"
    ));
    for m in results {
        out.push_str(&format!(
            "{:<26} {:>9.2} {:>9.1} {:>12} {:>13}\n",
            m.name,
            m.elapsed.as_secs_f64(),
            DATA_BYTES as f64 / 1e6 / m.elapsed.as_secs_f64(),
            m.output_bytes
                .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
            m.peak_rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        ));
    }
    let ratio = |a: &str, b: &str, target: f64| match (seconds(a), seconds(b)) {
        (Some(a_secs), Some(b_secs)) => {
            let r = b_secs / a_secs;
            format!(
                "{a} vs {b}: {r:.2}x (target {target}x: {})\n",
                if r >= target { "met" } else { "NOT met" }
            )
        }
        _ => String::new(),
    };
    out.push_str(&ratio("sunset-archive -> dir", "tar -cf - | pigz", 0.9));
    out.push_str(&ratio("sunset-archive -> dir", "tar -czf", 1.7));
    out.push_str(&ratio(
        "sunset-archive -> S3",
        "tar -czf - | aws s3 cp -",
        1.5,
    ));
    #[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
    {
        print!("{out}");
    }
}

/// pigz from the system, installed with apt-get when missing (as root).
fn ensure_pigz() -> Result<PathBuf> {
    process::apt_program("pigz", "pigz", "the comparison")
}

/// awscli in a virtualenv of its own: installing it beside moto would move moto's pinned botocore.
fn ensure_awscli(venv: &Path) -> Result<PathBuf> {
    let aws = venv.join("bin/aws");
    let marker = venv.join(".sunset-requirement");
    if aws.exists() && std::fs::read_to_string(&marker).is_ok_and(|m| m == AWSCLI_REQUIREMENT) {
        return Ok(aws);
    }
    say!(
        "installing {AWSCLI_REQUIREMENT} into {} (first use only)",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(venv);
    process::run(
        Command::new(moto::find_python()?)
            .args(["-m", "venv"])
            .arg(venv),
    )?;
    process::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        AWSCLI_REQUIREMENT,
    ]))
    .context("could not install awscli from PyPI")?;
    std::fs::write(&marker, AWSCLI_REQUIREMENT)?;
    Ok(aws)
}

/// 1 GiB, made once: 40 % log-like text, 25 % random bytes, 25 % half-compressible binary, and
/// 10 % as 2,000 small config-like files. Deterministic, so every run measures the same bytes.
fn make_data(dir: &Path) -> Result<()> {
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    say!(
        "making {} MiB of benchmark data in {} (first use only)",
        DATA_BYTES >> 20,
        dir.display()
    );
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("conf"))?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let chunk = 1 << 20;
    let write = |path: PathBuf, mib: u64, fill: &mut dyn FnMut(&mut Vec<u8>)| -> Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut buf = Vec::with_capacity(chunk + 256);
        for _ in 0..mib {
            buf.clear();
            while buf.len() < chunk {
                fill(&mut buf);
            }
            file.write_all(&buf[..chunk])?;
        }
        file.flush()?;
        Ok(())
    };
    let quarter = (DATA_BYTES >> 20) / 10;
    let mut line = 0u64;
    for n in 0..4 {
        write(
            dir.join(format!("collector-{n}.log")),
            quarter,
            &mut |buf| {
                line += 1;
                let r = next();
                buf.extend_from_slice(
                format!(
                    "2026-11-{:02}T{:02}:{:02}:{:02}Z legacy-host-{} collector[{}]: metric={} value={}.{} seq={line}\n",
                    1 + r % 28, r % 24, (r >> 8) % 60, (r >> 16) % 60, (r >> 24) % 300, 1000 + (r >> 32) % 9000,
                    ["cpu", "mem", "disk", "net"][(r >> 40) as usize % 4], (r >> 44) % 100, (r >> 50) % 1000
                )
                .as_bytes(),
            );
            },
        )?;
    }
    for n in 0..2 {
        write(
            dir.join(format!("blob-{n}.bin")),
            quarter * 5 / 4,
            &mut |buf| buf.extend_from_slice(&next().to_le_bytes()),
        )?;
        write(
            dir.join(format!("series-{n}.bin")),
            quarter * 5 / 4,
            &mut |buf| {
                buf.extend_from_slice(&next().to_le_bytes()[..4]);
                buf.extend_from_slice(b"\0\0\0\x01");
            },
        )?;
    }
    let small = (DATA_BYTES / 10) / 2000;
    for n in 0..2000 {
        let mut text = String::new();
        while (text.len() as u64) < small {
            let r = next();
            text.push_str(&format!("setting_{}: {}\n", r % 500, r >> 20));
        }
        std::fs::write(dir.join(format!("conf/host-{n:04}.conf")), text)?;
    }
    std::fs::write(marker, "")?;
    Ok(())
}
