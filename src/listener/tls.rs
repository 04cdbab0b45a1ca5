//! TLS for `tls` and `wss` listeners: the rustls `ServerConfig` built from the
//! listener's PEM files, mutual TLS through `WebPkiClientVerifier`, and the client
//! certificate's Common Name as an identity.
//!
//! Files are read when the listener starts and again on [`TlsListener::reload`],
//! never per connection. A reload builds a whole new `ServerConfig` and swaps it
//! in atomically: handshakes already under way finish with the old one, and a
//! reload that fails leaves the old one in place.
//!
//! Only the ring provider is used (no OpenSSL, no aws-lc). Revocation lists are
//! checked for the client's own certificate; a certificate whose issuer the lists
//! do not cover is refused, as OpenSSL's `X509_V_FLAG_CRL_CHECK` does.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerConfig, TlsVersion};

/// Why a listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or holds no PEM object of the expected kind.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The listener has no `cert` or `key` (a bug: `Config::validate` refuses that).
    #[error("a TLS listener needs `cert` and `key`")]
    MissingFiles,
    /// rustls refused the certificates, the key or the CA bundle.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (e.g. an empty CA bundle).
    #[error("client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS side of one listener; shared by its accept loop and the reloader.
#[derive(Debug)]
pub struct TlsListener {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
}

/// What a [`TlsListener`] is built from.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    crl: Option<PathBuf>,
    is_client_cert_required: bool,
    min_version: TlsVersion,
}

impl TlsListener {
    /// Reads the listener's files and builds its `ServerConfig`.
    pub fn load(listener: &ListenerConfig) -> Result<TlsListener, Error> {
        let (Some(cert), Some(key)) = (&listener.cert, &listener.key) else {
            return Err(Error::MissingFiles);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: listener.client_ca.clone(),
            crl: listener.crl.clone(),
            is_client_cert_required: listener.require_client_cert,
            min_version: listener.min_tls_version,
        };
        let config = ArcSwap::from_pointee(files.server_config()?);
        Ok(TlsListener { files, config })
    }

    /// Reads the files again. On success new handshakes use them; on failure
    /// nothing changes and the error says why.
    pub fn reload(&self) -> Result<(), Error> {
        let config = self.files.server_config()?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// The files a change of which should trigger a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let files = &self.files;
        [Some(&files.cert), Some(&files.key)]
            .into_iter()
            .chain([files.client_ca.as_ref(), files.crl.as_ref()])
            .flatten()
            .cloned()
            .collect()
    }

    /// Runs the server side of a TLS handshake. Returns the stream and the Common
    /// Name of the client's certificate, if it sent one (it has been verified
    /// against `client_ca` by then). Not cancel-safe; the caller bounds it with a timeout.
    pub async fn accept<S>(&self, stream: S) -> io::Result<(TlsStream<S>, Option<String>)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.config.load_full());
        let stream = acceptor.accept(stream).await?;
        let common_name = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| common_name(leaf));
        Ok((stream, common_name))
    }
}

impl TlsFiles {
    fn server_config(&self) -> Result<ServerConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&SupportedProtocolVersion] = match self.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(client_ca) => {
                builder.with_client_cert_verifier(self.client_verifier(client_ca, provider)?)
            }
        };
        let chain = read_certificates(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|error| Error::File {
            path: self.key.clone(),
            reason: format!("no private key: {error}"),
        })?;
        Ok(builder.with_single_cert(chain, key)?)
    }

    fn client_verifier(
        &self,
        client_ca: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Error> {
        let mut roots = RootCertStore::empty();
        for certificate in read_certificates(client_ca)? {
            roots.add(certificate)?;
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if let Some(crl) = &self.crl {
            verifier = verifier
                .with_crls(read_crls(crl)?)
                .only_check_end_entity_revocation();
        }
        if !self.is_client_cert_required {
            verifier = verifier.allow_unauthenticated();
        }
        Ok(verifier.build()?)
    }
}

fn open(path: &Path) -> Result<BufReader<File>, Error> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|error| Error::File {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certificates = CertificateDer::pem_reader_iter(open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::File {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            reason: "no PEM certificate".to_string(),
        });
    }
    Ok(certificates)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let crls = CertificateRevocationListDer::pem_reader_iter(open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::File {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    if crls.is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            reason: "no PEM X509 CRL".to_string(),
        });
    }
    Ok(crls)
}

/// The first Common Name (OID 2.5.4.3) in a DER certificate's subject, if it is a
/// UTF8String, PrintableString or IA5String. The certificate was already verified
/// by webpki; this walks just enough of the structure (RFC 5280 §4.1) to find the name.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (_, certificate, _) = der(certificate)?;
    let (_, tbs, _) = der(certificate)?;
    let mut fields = tbs;
    if fields.first() == Some(&0xA0) {
        fields = der(fields)?.2; // [0] version
    }
    for _ in 0..4 {
        fields = der(fields)?.2; // serial, signature, issuer, validity
    }
    let (_, mut subject, _) = der(fields)?;
    while !subject.is_empty() {
        let (_, mut set, rest) = der(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = der(set)?;
            set = rest;
            let (oid_tag, oid, value) = der(attribute)?;
            if oid_tag == 0x06 && oid == COMMON_NAME {
                let (tag, text, _) = der(value)?;
                return match tag {
                    0x0C | 0x13 | 0x16 => String::from_utf8(text.to_vec()).ok(),
                    _ => None,
                };
            }
        }
    }
    None
}

/// One DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return None;
        }
        let length = rest
            .get(..count)?
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest.get(count..)?)
    };
    Some((tag, rest.get(..length)?, rest.get(length..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_with(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in names {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_is_found_among_other_attributes() {
        let der = certificate_with(&[
            (rcgen::DnType::OrganizationName, "Rookery"),
            (rcgen::DnType::CommonName, "device-42"),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("device-42"));
    }

    #[test]
    fn certificate_without_common_name_has_none() {
        let der = certificate_with(&[(rcgen::DnType::OrganizationName, "Rookery")]);
        assert_eq!(common_name(&der), None);
    }

    #[test]
    fn truncated_certificate_has_no_common_name() {
        let der = certificate_with(&[(rcgen::DnType::CommonName, "device-42")]);
        for length in 0..der.len() {
            assert_eq!(common_name(der.get(..length).unwrap()), None);
        }
    }
}
