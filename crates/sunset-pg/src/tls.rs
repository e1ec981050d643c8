//! TLS as libpq does it, over rustls: where the trusted roots come from (`sslrootcert`, else
//! `~/.postgresql/root.crt`, or `system`), and what each `sslmode` checks with them. With a root
//! file, libpq checks the chain in every mode that uses TLS (`require` then acts as
//! `verify-ca`); without one, `verify-ca` and `verify-full` refuse to connect at all.

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

use crate::libpq::Env;
use crate::{Error, TlsMode};

/// Where the trust anchors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// No root file: the server's certificate is not checked (`prefer`, `require`).
    None,
    File(PathBuf),
    /// `sslrootcert=system`: the public roots (Mozilla's set, as bundled by webpki-roots).
    System,
}

/// Resolves `sslrootcert` as libpq does: `system`, a file, else `~/.postgresql/root.crt`; a
/// missing file is an error only for `verify-ca` and `verify-full`.
pub(crate) fn resolve_roots(
    mode: TlsMode,
    sslrootcert: Option<&str>,
    env: Env<'_>,
) -> Result<Roots, Error> {
    if sslrootcert == Some("system") {
        return Ok(Roots::System);
    }
    let file = match sslrootcert {
        Some(path) => Some(PathBuf::from(path)),
        None => env("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt")),
    };
    match file {
        Some(file) if file.exists() => Ok(Roots::File(file)),
        missing if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) => {
            let shown = missing.map_or_else(
                || "~/.postgresql/root.crt".to_owned(),
                |f| f.display().to_string(),
            );
            Err(Error::Url(format!(
                "root certificate file \"{shown}\" does not exist: sslmode={} needs one; provide the file (sslrootcert or PGSSLROOTCERT), use the system's trusted roots with sslrootcert=system, or choose an sslmode that does not verify the server",
                mode.name()
            )))
        }
        _ => Ok(Roots::None),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(roots: &Roots) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::None => {}
        Roots::System => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::File(file) => {
            let certs = CertificateDer::pem_file_iter(file)
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

/// The rustls configuration for `mode` with `roots`.
pub(crate) fn client_config(mode: TlsMode, roots: &Roots) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Url(format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (TlsMode::VerifyFull, _) => {
            return Ok(builder
                .with_root_certificates(root_store(roots)?)
                .with_no_client_auth());
        }
        (_, Roots::None) => Arc::new(Unverified(provider)),
        (_, roots) => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(roots)?), provider)
                .build()
                .map_err(|e| Error::Url(format!("TLS setup: {e}")))?,
        )),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Encrypted, the certificate not checked: `allow`, `prefer` and `require` without a root file.
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
