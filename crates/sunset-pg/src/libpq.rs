//! libpq's way of completing a connection string: the settings tokio-postgres cannot parse
//! (`sslmode` beyond `require`, `sslrootcert`) taken out of the URL, then what the URL left open
//! filled from the environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`) and the password file, in
//! libpq's order: the connection string wins over the environment, which wins over defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Config;
use tokio_postgres::config::Host;

use crate::Error;

/// Looks up an environment variable; tests pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// What the user set (in the URL or the environment) rather than what defaults filled in: the
/// client programs sunset runs get exactly these, so their own defaults and environment apply
/// as they would for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSet {
    pub host: bool,
    pub port: bool,
    pub user: bool,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub connect_timeout: Option<String>,
    pub application_name: bool,
}

/// Fills what `config` leaves open from the environment and the password file; returns what
/// the user set and the effective `sslmode` and `sslrootcert`.
pub(crate) fn complete(
    config: &mut Config,
    url_sslmode: Option<String>,
    url_rootcert: Option<String>,
    env: Env<'_>,
) -> Result<UserSet, Error> {
    let mut set = UserSet {
        host: !config.get_hosts().is_empty(),
        port: !config.get_ports().is_empty(),
        user: config.get_user().is_some(),
        application_name: config.get_application_name().is_some(),
        ..UserSet::default()
    };
    if !set.host {
        match env("PGHOST") {
            Some(hosts) => {
                for host in hosts.split(',') {
                    add_host(config, host);
                }
                set.host = true;
            }
            None => add_host(config, default_socket_dir()),
        }
    }
    if !set.port
        && let Some(ports) = env("PGPORT")
    {
        for port in ports.split(',') {
            let port = port
                .trim()
                .parse::<u16>()
                .map_err(|_| Error::Url(format!("PGPORT `{port}`: expected a port number")))?;
            config.port(port);
        }
        set.port = true;
    }
    if !set.user {
        match env("PGUSER") {
            Some(user) => {
                config.user(&user);
                set.user = true;
            }
            None => {
                config.user(whoami::username().unwrap_or_else(|_| "postgres".to_owned()));
            }
        }
    }
    if config.get_dbname().is_none()
        && let Some(dbname) = env("PGDATABASE")
    {
        config.dbname(&dbname);
    }
    if !set.application_name
        && let Some(name) = env("PGAPPNAME")
    {
        config.application_name(&name);
        set.application_name = true;
    }
    if config.get_connect_timeout().is_none()
        && let Some(timeout) = env("PGCONNECT_TIMEOUT")
    {
        apply_connect_timeout(config, &timeout)?;
        set.connect_timeout = Some(timeout);
    }
    if config.get_password().is_none() {
        let password = env("PGPASSWORD").or_else(|| from_password_file(config, env));
        if let Some(password) = password {
            config.password(password);
        }
    }
    set.sslmode = url_sslmode.or_else(|| env("PGSSLMODE"));
    set.sslrootcert = url_rootcert.or_else(|| env("PGSSLROOTCERT"));
    Ok(set)
}

/// libpq's `connect_timeout`: whole seconds; zero or negative waits forever, and 1 means 2.
pub(crate) fn apply_connect_timeout(config: &mut Config, text: &str) -> Result<(), Error> {
    let seconds: i64 = text.trim().parse().map_err(|_| {
        Error::Url(format!(
            "connect_timeout `{text}`: expected a number of seconds"
        ))
    })?;
    if seconds > 0 {
        config.connect_timeout(Duration::from_secs(seconds.max(2) as u64));
    }
    Ok(())
}

fn add_host(config: &mut Config, host: &str) {
    let host = host.trim();
    if host.starts_with('/') {
        config.host_path(host);
    } else {
        config.host(host);
    }
}

/// Where Debian's (and most distributions') libpq looks for the server's socket.
fn default_socket_dir() -> &'static str {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql"
    } else {
        "/tmp"
    }
}

/// The password for the first host from `PGPASSFILE` or `~/.pgpass`, as libpq reads it: lines
/// `host:port:database:user:password`, `*` matching anything, `\` escaping `:` and `\`, the first
/// match winning; a file others can read is ignored, as libpq does.
fn from_password_file(config: &Config, env: Env<'_>) -> Option<String> {
    let path = env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".pgpass")))?;
    let metadata = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if !metadata.is_file() {
            return None;
        }
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or less, so it is ignored"
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        // libpq matches socket connections as `localhost`.
        Some(Host::Unix(_)) | None => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    password_for(&text, [&host, &port, dbname, user])
}

/// The first line of a password file whose four fields match `wanted`.
pub(crate) fn password_for(text: &str, wanted: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let fields = split_password_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, wanted)| field == "*" || field == wanted);
            matches.then(|| fields[4..].join(":"))
        })
}

fn split_password_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// Splits `sslmode` and `sslrootcert` off a URL or key/value string.
pub(crate) fn take_tls_settings(url: &str) -> (String, Option<String>, Option<String>) {
    let mut sslmode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            sslmode = Some(value);
            true
        }
        "sslrootcert" => {
            root_cert = Some(value);
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(key, percent_decode(value))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, sslmode, root_cert);
    }
    let mut kept = Vec::new();
    for token in key_value_tokens(url) {
        let taken = token
            .split_once('=')
            .is_some_and(|(key, value)| take(key.trim(), unquote(value.trim())));
        if !taken {
            kept.push(token);
        }
    }
    (kept.join(" "), sslmode, root_cert)
}

/// `key=value` tokens of a libpq string; single-quoted values may hold spaces.
fn key_value_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' => {
                current.push(c);
                escaped = true;
            }
            '\'' => {
                current.push(c);
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    inner.replace("\\'", "'").replace("\\\\", "\\")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An environment of fixed variables, for tests.
#[cfg(test)]
pub(crate) fn env_of(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_off_urls() {
        let (rest, mode, root) = take_tls_settings(
            "postgres://app@db:5432/prod?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://app@db:5432/prod?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, _) = take_tls_settings("postgres://db/prod?sslmode=require");
        assert_eq!(rest, "postgres://db/prod");
        assert_eq!(mode.as_deref(), Some("require"));
    }

    #[test]
    fn tls_settings_come_off_key_value_strings() {
        let (rest, mode, root) = take_tls_settings(
            "host=db dbname=prod sslmode=verify-ca sslrootcert='/my certs/ca.pem' user=app",
        );
        assert_eq!(rest, "host=db dbname=prod user=app");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/my certs/ca.pem"));
    }

    #[test]
    fn the_environment_fills_what_the_url_leaves_open() {
        let env = env_of(&[
            ("PGHOST", "db1,/run/pg"),
            ("PGPORT", "6432,6433"),
            ("PGUSER", "env-user"),
            ("PGPASSWORD", "env-secret"),
            ("PGDATABASE", "env-db"),
            ("PGAPPNAME", "env-app"),
            ("PGCONNECT_TIMEOUT", "1"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/env/ca.pem"),
        ]);
        let mut config: Config = "postgres://".parse().unwrap();
        let set = complete(&mut config, None, None, &env).unwrap();
        assert_eq!(
            config.get_hosts(),
            [Host::Tcp("db1".into()), Host::Unix("/run/pg".into())]
        );
        assert_eq!(config.get_ports(), [6432, 6433]);
        assert_eq!(config.get_user(), Some("env-user"));
        assert_eq!(config.get_password(), Some(&b"env-secret"[..]));
        assert_eq!(config.get_dbname(), Some("env-db"));
        assert_eq!(config.get_application_name(), Some("env-app"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(set.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(set.sslrootcert.as_deref(), Some("/env/ca.pem"));
        assert!(set.host && set.port && set.user && set.application_name);

        // The URL wins over every variable.
        let mut config: Config =
            "postgres://url-user:url-secret@urlhost:7000/url-db?application_name=url-app&connect_timeout=9"
                .parse()
                .unwrap();
        let set = complete(&mut config, Some("disable".into()), None, &env).unwrap();
        assert_eq!(config.get_hosts(), [Host::Tcp("urlhost".into())]);
        assert_eq!(config.get_ports(), [7000]);
        assert_eq!(config.get_user(), Some("url-user"));
        assert_eq!(config.get_password(), Some(&b"url-secret"[..]));
        assert_eq!(config.get_dbname(), Some("url-db"));
        assert_eq!(config.get_application_name(), Some("url-app"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(set.sslmode.as_deref(), Some("disable"));
    }

    #[test]
    fn nothing_set_leaves_libpq_defaults_to_the_client_programs() {
        let mut config: Config = "postgres://".parse().unwrap();
        let set = complete(&mut config, None, None, &|_| None).unwrap();
        assert_eq!(
            set,
            UserSet::default(),
            "defaults are not passed on as if the user set them"
        );
        assert!(config.get_user().is_some() && !config.get_hosts().is_empty());
        let error = complete(
            &mut "postgres://".parse().unwrap(),
            None,
            None,
            &env_of(&[("PGPORT", "x")]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("PGPORT `x`"), "{error}");
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let text = "# comment\n\
                    other:5432:*:app:nope\n\
                    db\\:1:*:prod:app:first:with:colons\n\
                    *:*:*:app:fallback\n";
        assert_eq!(
            password_for(text, ["db:1", "5432", "prod", "app"]).as_deref(),
            Some("first:with:colons")
        );
        assert_eq!(
            password_for(text, ["elsewhere", "5432", "prod", "app"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(password_for(text, ["db", "5432", "prod", "root"]), None);

        let dir = std::env::temp_dir().join(format!("sunset-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "127.0.0.1:5432:prod:app:from-file\n").unwrap();
        let path = file.display().to_string();
        let env = move |name: &str| (name == "PGPASSFILE").then(|| path.clone());
        let read = |mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let mut config: Config = "postgres://app@127.0.0.1:5432/prod".parse().unwrap();
            complete(&mut config, None, None, &env).unwrap();
            config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };
        assert_eq!(read(0o600).as_deref(), Some("from-file"));
        assert_eq!(read(0o644), None, "a file others can read is ignored");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
