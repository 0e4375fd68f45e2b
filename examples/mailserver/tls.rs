//! Optional TLS for IMAP (rustls): implicit TLS on `--imaps`, and STARTTLS on the plain IMAP port, when the
//! server is given a certificate chain and a private key (PEM files).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Reads a PEM certificate chain and private key into a server configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// A connection, in clear or in TLS.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// Between the two during STARTTLS (never read or written).
    Switching,
}

impl Transport {
    /// The TCP socket underneath (for timeouts).
    pub fn tcp(&self) -> io::Result<&TcpStream> {
        match self {
            Transport::Plain(s) => Ok(s),
            Transport::Tls(s) => Ok(s.get_ref()),
            Transport::Switching => Err(io::Error::new(io::ErrorKind::NotConnected, "TLS negotiation failed")),
        }
    }

    /// True once TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Starts TLS as the server on a plain connection.
    pub fn start_tls(&mut self, config: &Arc<ServerConfig>) -> io::Result<()> {
        match std::mem::replace(self, Transport::Switching) {
            Transport::Plain(tcp) => {
                let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
                *self = Transport::Tls(Box::new(StreamOwned::new(conn, tcp)));
                Ok(())
            }
            other => {
                *self = other;
                Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS is already active"))
            }
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::Switching => Ok(0),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
            Transport::Switching => Err(io::Error::new(io::ErrorKind::NotConnected, "TLS negotiation failed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
            Transport::Switching => Ok(()),
        }
    }
}
