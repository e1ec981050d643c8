//! Connections to PostgreSQL for every sunset crate, with libpq's `sslmode` semantics over
//! rustls: `disable`, `allow`/`prefer` (TLS when the server offers it, unverified), `require`
//! (TLS, unverified, as libpq does), `verify-ca` (the chain against `sslrootcert`) and
//! `verify-full` (the chain and the host name). tokio-postgres parses only the first three, so
//! `sslmode` and `sslrootcert` are taken out of the URL here and applied by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL (or one of its TLS settings) is wrong: the user's input.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The server could not be reached, refused us, or its certificate did not verify.
    #[error("connecting to PostgreSQL: {}", describe(.0))]
    Connect(tokio_postgres::Error),
}

impl Error {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::Url(_))
    }
}

/// tokio-postgres renders server errors as "db error"; the message (and a TLS cause) helps.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
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
    pub root_cert: Option<PathBuf>,
    connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("tls_mode", &self.tls_mode)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Parses a URL (`postgres://...?sslmode=verify-full&sslrootcert=/path`) or a libpq
    /// key/value string (`host=... sslmode=require`).
    pub fn parse(url: &str) -> Result<Database, Error> {
        let (rest, sslmode, root_cert) = take_tls_settings(url);
        let mut config: Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Url(e.to_string()))?;
        let tls_mode = match sslmode {
            Some(mode) => TlsMode::parse(&mode)?,
            None => TlsMode::Prefer,
        };
        let root_cert = root_cert.map(PathBuf::from);
        config.ssl_mode(match tls_mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Allow | TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let connector = match tls_mode {
            TlsMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(client_config(
                mode,
                root_cert.as_deref(),
            )?)),
        };
        Ok(Database {
            config,
            tls_mode,
            root_cert,
            connector,
        })
    }

    /// Connects and drives the connection on a task of its own.
    pub async fn connect(&self) -> Result<Client, Error> {
        let client = match &self.connector {
            None => {
                let (client, connection) =
                    self.config.connect(NoTls).await.map_err(Error::Connect)?;
                tokio::spawn(drive(connection));
                client
            }
            Some(tls) => {
                let (client, connection) = self
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(Error::Connect)?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }

    /// The TLS settings as libpq keywords, for `pg_dump` and `psql`.
    pub fn libpq_tls_params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![("sslmode", self.tls_mode.name().to_owned())];
        if let Some(root) = &self.root_cert {
            params.push(("sslrootcert", root.display().to_string()));
        }
        params
    }
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

/// Parses `url`, names the session `application_name`, connects.
pub async fn connect(url: &str, application_name: &str) -> Result<Client, Error> {
    let mut database = Database::parse(url)?;
    database.config.application_name(application_name);
    database.connect().await
}

/// Splits `sslmode` and `sslrootcert` off a URL or key/value string.
fn take_tls_settings(url: &str) -> (String, Option<String>, Option<String>) {
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trust anchors for `verify-*`: `sslrootcert` (a PEM file, or `system` for the Mozilla set),
/// else `~/.postgresql/root.crt` as libpq reads it, else the Mozilla set.
fn roots(root_cert: Option<&Path>) -> Result<RootCertStore, Error> {
    let default = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".postgresql/root.crt"))
        .filter(|p| p.is_file());
    let file = match root_cert {
        Some(path) if path == Path::new("system") => None,
        Some(path) => Some(path.to_path_buf()),
        None => default,
    };
    let mut store = RootCertStore::empty();
    match file {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(&file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Error::Url(format!("sslrootcert {}: {e}", file.display())))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Url(format!(
                    "sslrootcert {}: no certificate in it",
                    file.display()
                )));
            }
        }
    }
    Ok(store)
}

fn client_config(mode: TlsMode, root_cert: Option<&Path>) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Url(format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        TlsMode::VerifyFull => {
            return Ok(builder
                .with_root_certificates(roots(root_cert)?)
                .with_no_client_auth());
        }
        TlsMode::VerifyCa => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert)?), provider)
                .build()
                .map_err(|e| Error::Url(format!("TLS setup: {e}")))?,
        )),
        _ => Arc::new(Unverified(provider)),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `require`/`prefer`: encrypted, the certificate not checked (libpq's meaning of them).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
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
    fn unknown_modes_and_missing_roots_are_bad_input() {
        let error = Database::parse("postgres://db/prod?sslmode=verify").unwrap_err();
        assert!(
            error.is_bad_input() && error.to_string().contains("expected disable"),
            "{error}"
        );
        let error =
            Database::parse("postgres://db/prod?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .unwrap_err();
        assert!(
            error.is_bad_input() && error.to_string().contains("/nonexistent.pem"),
            "{error}"
        );
    }
}
