//! TLS for `https://` and `wss://` nodes: which certificate authorities a client trusts.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::ClientError;

/// The certificate authorities a client trusts when its node's URL is `https://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's (the certificates `rustls-native-certs` finds: the system
    /// bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    #[default]
    System,
    /// Only the CA certificates in this PEM file (a private CA, or a self-signed node).
    CaFile(PathBuf),
}

impl Trust {
    /// The rustls client configuration that trusts these authorities (HTTP/1.1, which both
    /// the REST calls and the WebSocket upgrade speak).
    ///
    /// # Errors
    /// [`ClientError::Tls`] when the CA file cannot be read or holds no certificate, or the
    /// system has no certificates at all.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        match self {
            Self::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found.errors.first().map_or_else(|| "none found".to_owned(), ToString::to_string);
                    return Err(ClientError::Tls(format!("no system CA certificates ({why}); give a CA file")));
                }
            }
            Self::CaFile(path) => {
                let bad = |reason: String| ClientError::Tls(format!("CA file {}: {reason}", path.display()));
                let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(format!("not PEM certificates ({e})")))?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(bad("holds no usable CA certificate".into()));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A configuration trusting nobody, for clients of `http://` nodes that never speak TLS.
pub(crate) fn unused_config() -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// Says in plain words why a TLS handshake failed, if `e` (or a cause of it) is a rustls
/// error: an untrusted or mismatched certificate is the common case, and the fix is the CA.
pub(crate) fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = source {
        if let Some(tls) = rustls_error(current) {
            return Some(describe(tls));
        }
        source = current.source();
    }
    None
}

/// `e` as a rustls error, looking inside I/O errors: tokio-rustls and hyper-rustls wrap rustls
/// errors in I/O errors (sometimes twice), whose `source()` skips the wrapped error.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(why) => format!(
            "the node's TLS certificate is not trusted ({why:?}); trust the CA that signed it (kith-chat --ca-file FILE)"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "hello").unwrap();
        let e = Trust::CaFile(path).client_config().unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("no usable CA certificate"), "{e}");
        let e = Trust::CaFile(dir.path().join("absent.pem")).client_config().unwrap_err().to_string();
        assert!(e.contains("absent.pem"), "{e}");
    }
}
