//! TLS for the relay's QUIC endpoint, built from the node's own Ed25519 key and checked against
//! the roster.
//!
//! Each node presents a self-signed certificate whose subject key *is* its node key, so the
//! certificate names the node by its libp2p PeerId. Both sides require a certificate: a peer is
//! accepted only when the key in its certificate is the PeerId of a roster site (the dialer also
//! checks that it is the site it meant to reach), and the handshake signature proves that the
//! peer holds that key. Certificate dates and names are not used: the roster is the trust anchor.
//!
//! The configs are built with an explicit ring provider, so they never depend on the
//! process-wide default (several rustls back-ends are linked into the node).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p_identity::{Keypair, PeerId, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tracing::warn;

/// The ALPN protocol of the relay; its number is the control protocol's major version.
pub const ALPN: &[u8] = b"huiyan-relay/1";
/// The server name a dialer puts in its ClientHello. Names are not checked (the key is).
pub const SERVER_NAME: &str = "huiyan-relay";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The node key is not Ed25519.
    #[error("the node key is not Ed25519; the relay needs the key made by `huiyan keygen`")]
    NotEd25519,
    /// rcgen or rustls refused the key or certificate.
    #[error("cannot build the relay certificate: {0}")]
    Build(String),
}

/// The roster as the relay's TLS sees it: which PeerId is which site. Counts refusals.
#[derive(Debug, Default)]
pub struct RosterKeys {
    sites: HashMap<PeerId, String>,
    refused: AtomicU64,
}

impl RosterKeys {
    /// `(site id, PeerId)` of every enrolled roster site.
    pub fn new(sites: impl IntoIterator<Item = (String, PeerId)>) -> Self {
        Self {
            sites: sites.into_iter().map(|(site, peer)| (peer, site)).collect(),
            refused: AtomicU64::new(0),
        }
    }

    /// The site a PeerId belongs to.
    pub fn site_of(&self, peer: &PeerId) -> Option<&str> {
        self.sites.get(peer).map(String::as_str)
    }

    /// How many handshakes were refused because the peer was not (the expected) roster site.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self, what: &str, peer: Option<PeerId>) -> rustls::Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        match peer {
            Some(peer) => warn!(%peer, "relay peer refused: {what}"),
            None => warn!("relay peer refused: {what}"),
        }
        rustls::Error::General(format!("relay peer refused: {what}"))
    }
}

/// The ring provider every relay config is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The node's certificate and its private key (PKCS#8).
pub fn certificate(
    key: &Keypair,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let ed = key
        .clone()
        .try_into_ed25519()
        .map_err(|_| TlsError::NotEd25519)?;
    // PKCS#8 v1 for an Ed25519 private key (RFC 8410): a fixed prefix, then the 32-byte seed.
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut pkcs8 = PREFIX.to_vec();
    pkcs8.extend_from_slice(&ed.to_bytes()[..32]);
    let key_der = PrivatePkcs8KeyDer::from(pkcs8);
    let signer = rcgen::KeyPair::try_from(&key_der).map_err(|e| TlsError::Build(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .map_err(|e| TlsError::Build(e.to_string()))?;
    let cert = params
        .self_signed(&signer)
        .map_err(|e| TlsError::Build(e.to_string()))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(key_der)))
}

/// The PeerId whose Ed25519 key is the subject key of `cert`, or why not.
pub fn peer_of(cert: &CertificateDer<'_>) -> Result<PeerId, &'static str> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (rest, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|_| "not an X.509 certificate")?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate");
    }
    let spki = &parsed.tbs_certificate.subject_pki;
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return Err("the certificate key is not Ed25519");
    }
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&spki.subject_public_key.data)
        .map_err(|_| "the certificate's Ed25519 key is malformed")?;
    Ok(PublicKey::from(key).to_peer_id())
}

/// Checks the handshake signature with the key of the certificate (Ed25519 only).
fn verify_signature(
    algorithms: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
}

/// The dialer's check of the server: it must be the roster site we meant to reach.
#[derive(Debug)]
struct ServerCheck {
    keys: Arc<RosterKeys>,
    expected: PeerId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let peer = peer_of(end_entity).map_err(|why| self.keys.refuse(why, None))?;
        if peer != self.expected {
            let what = match self.keys.site_of(&peer) {
                Some(site) => format!("answered as site {site}, not the one dialled"),
                None => "not in the roster".to_owned(),
            };
            return Err(self.keys.refuse(&what, Some(peer)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The listener's check of a dialer: any roster site.
#[derive(Debug)]
struct ClientCheck {
    keys: Arc<RosterKeys>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let peer = peer_of(end_entity).map_err(|why| self.keys.refuse(why, None))?;
        if self.keys.site_of(&peer).is_none() {
            return Err(self.keys.refuse("not in the roster", Some(peer)));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The rustls server config of the relay listener: our certificate, client certificates
/// required and checked against the roster.
pub fn server_config(
    key: &Keypair,
    keys: Arc<RosterKeys>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let (cert, private) = certificate(key)?;
    let check = ClientCheck {
        keys,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Build(e.to_string()))?
        .with_client_cert_verifier(Arc::new(check))
        .with_single_cert(vec![cert], private)
        .map_err(|e| TlsError::Build(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The rustls client config for dialling the site whose PeerId is `expected`.
pub fn client_config(
    key: &Keypair,
    keys: Arc<RosterKeys>,
    expected: PeerId,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let (cert, private) = certificate(key)?;
    let check = ServerCheck {
        keys,
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Build(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(check))
        .with_client_auth_cert(vec![cert], private)
        .map_err(|e| TlsError::Build(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_node_key() {
        let key = Keypair::generate_ed25519();
        let (cert, _) = certificate(&key).unwrap();
        assert_eq!(peer_of(&cert).unwrap(), key.public().to_peer_id());
        assert!(peer_of(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])).is_err());
    }

    /// Real QUIC handshakes on loopback: roster peers meet, anyone else is refused and counted.
    #[tokio::test]
    async fn only_roster_peers_complete_the_handshake() {
        use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

        let server_key = Keypair::generate_ed25519();
        let member = Keypair::generate_ed25519();
        let stranger = Keypair::generate_ed25519();
        let server_peer = server_key.public().to_peer_id();
        let keys = Arc::new(RosterKeys::new([
            ("bureau".to_owned(), server_peer),
            ("scenic-2".to_owned(), member.public().to_peer_id()),
        ]));
        let server_tls = server_config(&server_key, keys.clone()).unwrap();
        let server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server_tls).unwrap(),
        ));
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let accept = {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                while let Some(incoming) = endpoint.accept().await {
                    if let Ok(conn) = incoming.await {
                        accepted.push(conn);
                    }
                }
                accepted
            })
        };

        let dial = |key: &Keypair, expected: PeerId| {
            let tls = client_config(key, keys.clone(), expected).unwrap();
            let config =
                quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
            let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            client.set_default_client_config(config);
            async move { client.connect(addr, SERVER_NAME).unwrap().await }
        };

        // A roster member meets the server and sees its identity.
        let conn = dial(&member, server_peer).await.expect("member connects");
        let certs = conn.peer_identity().unwrap();
        let certs = certs.downcast::<Vec<CertificateDer>>().unwrap();
        assert_eq!(peer_of(&certs[0]).unwrap(), server_peer);

        // A key outside the roster is refused by the server. (TLS 1.3 lets the client finish
        // before the server has checked the client's certificate: then the server closes.)
        let before = keys.refused();
        if let Ok(conn) = dial(&stranger, server_peer).await {
            let closed = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed());
            closed
                .await
                .expect("the server closes the stranger's connection");
        }
        assert_eq!(keys.refused(), before + 1);

        // A dialer expecting another site refuses the server.
        let before = keys.refused();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert!(dial(&member, other).await.is_err());
        assert_eq!(keys.refused(), before + 1);

        endpoint.close(0u32.into(), b"done");
        drop(conn);
        let accepted = accept.await.unwrap();
        assert_eq!(accepted.len(), 1, "only the member got in");
    }
}
