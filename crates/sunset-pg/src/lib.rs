//! Connections to PostgreSQL for every sunset crate, as libpq makes them: the URL (or key/value
//! string) completed from libpq's environment and password file (`libpq`), and `sslmode` with
//! libpq's meaning over rustls (`tls`): `disable`; `allow` (plain first, TLS if the server
//! insists); `prefer` (TLS when offered, plain again if the handshake fails); `require` (TLS; the
//! chain checked when there is a root file); `verify-ca` (the chain); `verify-full` (the chain
//! and the host name). tokio-postgres parses only the first three, so `sslmode` and
//! `sslrootcert` are taken out of the URL here and applied by hand.

mod ident;
mod libpq;
mod tls;

use sunset_outcome::Classify;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use ident::{NameError, QualifiedName, split_identifiers};
pub use libpq::{Env, UserSet, process_env};
pub use tls::Roots;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL (or one of its TLS settings) is wrong: the user's input.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The server could not be reached, refused us, or its certificate did not verify.
    #[error("connecting to PostgreSQL: {}", describe(.0))]
    Connect(tokio_postgres::Error),
}

impl Classify for Error {
    fn is_bad_input(&self) -> bool {
        matches!(self, Error::Url(_))
    }
}

/// tokio-postgres renders server errors as "db error"; the message (and a TLS cause) helps.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    sunset_outcome::chain(error)
}

/// The libpq `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Result<TlsMode, Error> {
        Ok(match text {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(Error::Url(format!(
                    "sslmode `{other}`: expected disable, allow, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed database URL: the tokio-postgres config plus the TLS settings it cannot hold.
#[derive(Clone)]
pub struct Database {
    pub config: Config,
    pub tls_mode: TlsMode,
    pub roots: Roots,
    /// What the user set in the URL or the environment, to pass on to client programs.
    pub user_set: UserSet,
    connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("tls_mode", &self.tls_mode)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Parses a URL (`postgres://...?sslmode=verify-full&sslrootcert=/path`) or a libpq
    /// key/value string (`host=... sslmode=require`), completed from the process environment.
    pub fn parse(url: &str) -> Result<Database, Error> {
        Database::parse_with_env(url, &process_env)
    }

    /// [`Database::parse`] with the environment given (tests).
    pub fn parse_with_env(url: &str, env: Env<'_>) -> Result<Database, Error> {
        let (rest, sslmode, root_cert) = libpq::take_tls_settings(url);
        let mut config: Config = if rest.trim().is_empty() {
            Config::new()
        } else {
            rest.parse()
                .map_err(|e: tokio_postgres::Error| Error::Url(e.to_string()))?
        };
        let user_set = libpq::complete(&mut config, sslmode, root_cert, env)?;
        let rootcert = user_set.sslrootcert.as_deref();
        let tls_mode = match (user_set.sslmode.as_deref(), rootcert) {
            (Some(mode), Some("system")) if mode != "verify-full" => {
                return Err(Error::Url(format!(
                    "weak sslmode `{mode}` may not be used with sslrootcert=system (use verify-full)"
                )));
            }
            (None, Some("system")) => TlsMode::VerifyFull,
            (Some(mode), _) => TlsMode::parse(mode)?,
            (None, _) => TlsMode::Prefer,
        };
        let roots = tls::resolve_roots(tls_mode, rootcert, env)?;
        let connector = match tls_mode {
            TlsMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(tls::client_config(mode, &roots)?)),
        };
        Ok(Database {
            config,
            tls_mode,
            roots,
            user_set,
            connector,
        })
    }

    /// Connects and drives the connection on a task of its own.
    pub async fn connect(&self) -> Result<Client, Error> {
        let mut config = self.config.clone();
        match (&self.connector, self.tls_mode) {
            (None, _) => {
                config.ssl_mode(SslMode::Disable);
                connect_plain(&config).await
            }
            // libpq tries without TLS first and with it only if the server refuses.
            (Some(tls), TlsMode::Allow) => {
                config.ssl_mode(SslMode::Disable);
                match connect_plain(&config).await {
                    Ok(client) => Ok(client),
                    Err(_) => {
                        config.ssl_mode(SslMode::Require);
                        connect_tls(&config, tls).await
                    }
                }
            }
            // libpq goes on without TLS when the handshake fails.
            (Some(tls), TlsMode::Prefer) => {
                config.ssl_mode(SslMode::Prefer);
                match connect_tls(&config, tls).await {
                    Err(Error::Connect(e)) if e.as_db_error().is_none() => {
                        config.ssl_mode(SslMode::Disable);
                        connect_plain(&config).await
                    }
                    other => other,
                }
            }
            (Some(tls), _) => {
                config.ssl_mode(SslMode::Require);
                connect_tls(&config, tls).await
            }
        }
    }

    /// The settings the user gave that libpq keywords carry (host, port, user, TLS, timeout),
    /// for `pg_dump` and `psql`: only those, so a client program's own environment and
    /// defaults apply as they would for the user, and nothing sunset chose overrides them.
    pub fn libpq_params(&self) -> Vec<(&'static str, String)> {
        let config = &self.config;
        let set = &self.user_set;
        let mut params = Vec::new();
        if set.host {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(host) => host.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            params.push(("host", hosts.join(",")));
        }
        if set.port {
            let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
            params.push(("port", ports.join(",")));
        }
        if set.user
            && let Some(user) = config.get_user()
        {
            params.push(("user", user.to_owned()));
        }
        if set.application_name
            && let Some(name) = config.get_application_name()
        {
            params.push(("application_name", name.to_owned()));
        }
        if let Some(timeout) = config.get_connect_timeout() {
            params.push(("connect_timeout", timeout.as_secs().to_string()));
        }
        if let Some(mode) = &set.sslmode {
            params.push(("sslmode", mode.clone()));
        }
        if let Some(root) = &set.sslrootcert {
            params.push(("sslrootcert", root.clone()));
        }
        params
    }
}

async fn connect_plain(config: &Config) -> Result<Client, Error> {
    let (client, connection) = config.connect(NoTls).await.map_err(Error::Connect)?;
    tokio::spawn(drive(connection));
    Ok(client)
}

async fn connect_tls(config: &Config, tls: &MakeRustlsConnect) -> Result<Client, Error> {
    let (client, connection) = config.connect(tls.clone()).await.map_err(Error::Connect)?;
    tokio::spawn(drive(connection));
    Ok(client)
}

async fn drive<F, E>(connection: F)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended");
    }
}

/// Parses `url`, names the session `application_name` unless the user named it (in the URL or
/// `PGAPPNAME`, which win as they do over libpq's `fallback_application_name`), connects.
pub async fn connect(url: &str, application_name: &str) -> Result<Client, Error> {
    let mut database = Database::parse(url)?;
    if !database.user_set.application_name {
        database.config.application_name(application_name);
    }
    database.connect().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libpq::env_of;

    #[test]
    fn unknown_modes_and_missing_roots_are_bad_input() {
        let none = &|_: &str| None;
        let error =
            Database::parse_with_env("postgres://db/prod?sslmode=verify", none).unwrap_err();
        assert!(
            error.is_bad_input() && error.to_string().contains("expected disable"),
            "{error}"
        );
        let error = Database::parse_with_env(
            "postgres://db/prod?sslmode=verify-full&sslrootcert=/nonexistent.pem",
            none,
        )
        .unwrap_err();
        assert!(
            error.is_bad_input() && error.to_string().contains("/nonexistent.pem"),
            "{error}"
        );
    }

    #[test]
    fn verification_without_a_root_file_fails_as_libpq_does() {
        let home = env_of(&[("HOME", "/nonexistent-home")]);
        for mode in ["verify-ca", "verify-full"] {
            let error =
                Database::parse_with_env(&format!("postgres://db/prod?sslmode={mode}"), &home)
                    .unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("/nonexistent-home/.postgresql/root.crt")
                    && error.to_string().contains("sslrootcert=system"),
                "{error}"
            );
        }
        // Without a root file, `require` encrypts without checking; a missing explicit file too.
        let db = Database::parse_with_env(
            "postgres://db/prod?sslmode=require&sslrootcert=/nonexistent.pem",
            &home,
        )
        .unwrap();
        assert_eq!(db.roots, Roots::None);
        let system =
            Database::parse_with_env("postgres://db/prod?sslrootcert=system", &home).unwrap();
        assert_eq!(
            (system.tls_mode, system.roots),
            (TlsMode::VerifyFull, Roots::System)
        );
        let error = Database::parse_with_env(
            "postgres://db/prod?sslmode=require&sslrootcert=system",
            &home,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("weak sslmode `require`"),
            "{error}"
        );
    }

    #[test]
    fn the_environment_sets_tls_and_client_programs_get_only_what_the_user_set() {
        let env = env_of(&[("PGSSLMODE", "require"), ("PGAPPNAME", "nightly")]);
        let db = Database::parse_with_env("postgres://app@db:6432/prod", &env).unwrap();
        assert_eq!(db.tls_mode, TlsMode::Require);
        assert_eq!(
            db.libpq_params(),
            [
                ("host", "db".to_owned()),
                ("port", "6432".to_owned()),
                ("user", "app".to_owned()),
                ("application_name", "nightly".to_owned()),
                ("sslmode", "require".to_owned()),
            ]
        );
        let bare = Database::parse_with_env("dbname=prod", &|_| None).unwrap();
        assert_eq!(bare.libpq_params(), [], "libpq's own defaults apply");
        assert_eq!(bare.tls_mode, TlsMode::Prefer);
    }
}
