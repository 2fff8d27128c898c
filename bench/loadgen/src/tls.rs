//! Client TLS (`--tls`): rustls on the ring provider, the server's certificate verified
//! against one CA file and one server name.
//!
//! Every handshake is a full one: session resumption is off, so a `--reconnect` run
//! measures what a new client costs the server (key exchange, certificate, signature).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// What `--tls-ca` and `--tls-name` say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificate(s) to trust; nothing else is trusted.
    pub ca: PathBuf,
    /// The name the server's certificate must be valid for (a DNS name or an IP address).
    pub name: String,
}

/// The client configuration every connection of a run shares.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsClient({:?})", self.name)
    }
}

impl TlsClient {
    pub fn new(opts: &TlsOptions) -> Result<Self, String> {
        let ca = opts.ca.display();
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&opts.ca).map_err(|e| format!("--tls-ca {ca}: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--tls-ca {ca}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca {ca}: unusable certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("--tls-ca {ca}: no certificate in the file"));
        }
        let name = ServerName::try_from(opts.name.clone())
            .map_err(|_| format!("--tls-name {:?} is not a DNS name or an IP address", opts.name))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// A new client session; its ClientHello is ready to send.
    pub fn session(&self) -> Result<ClientConnection, String> {
        let mut session =
            ClientConnection::new(self.config.clone(), self.name.clone()).map_err(|e| format!("TLS session: {e}"))?;
        // One request at a time is buffered: its size (at most --size) is the limit.
        session.set_buffer_limit(None);
        Ok(session)
    }
}

/// "TLSv1_3 TLS13_AES_256_GCM_SHA384": what a finished handshake agreed on.
pub fn describe(session: &ClientConnection) -> Option<String> {
    let version = session.protocol_version()?;
    let suite = session.negotiated_cipher_suite()?;
    Some(format!("{version:?} {:?}", suite.suite()))
}
