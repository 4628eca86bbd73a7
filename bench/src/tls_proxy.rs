//! A TLS-terminating proxy for the warm-up section: the functions talk HTTPS to it, with a
//! certificate signed by a CA made at run time (trusted only by the processes the bench starts
//! with `COFFER_EXTRA_ROOT_PEM`), and it forwards plain HTTP to a counting proxy. It counts the
//! handshakes it completed and the ones that failed, so that the bench can tell which connections
//! were opened during init and which during the first invocation.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The run's certificate authority: its PEM file, and a server configuration for
/// "localhost" and "127.0.0.1" with a leaf certificate it signed.
pub struct BenchCa {
    pub pem_path: PathBuf,
    pub server: Arc<ServerConfig>,
}

impl BenchCa {
    pub fn generate() -> Result<Self, String> {
        let err = |e: rcgen::Error| e.to_string();
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "coffer-bench run-time CA");
        let ca_key = KeyPair::generate().map_err(err)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);

        // webpki rejects a CA certificate used as a server's: the server gets its own leaf.
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(err)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "coffer-bench proxy");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(err)?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(err)?;

        let pem_path = std::env::temp_dir().join(format!(
            "coffer-bench-ca-{}.pem",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&pem_path, ca_cert.pem()).map_err(|e| e.to_string())?;

        let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        // The provider named, not the process default: nothing depends on which one another
        // crate in the build enabled.
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            pem_path,
            server: Arc::new(server),
        })
    }
}

impl Drop for BenchCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem_path);
    }
}

/// Handshakes completed and failed so far, over all TLS proxies of a run.
#[derive(Clone, Default)]
pub struct Handshakes {
    done: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Handshakes {
    /// (completed, failed)
    pub fn get(&self) -> (usize, usize) {
        (
            self.done.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

pub struct TlsProxy {
    /// `https://localhost:PORT` and `https://127.0.0.1:PORT` (the certificate names both).
    pub localhost_url: String,
    pub ip_url: String,
}

impl TlsProxy {
    /// Accepts TLS on a free loopback port and forwards every request to `upstream` (http://…).
    pub async fn start(ca: &BenchCa, upstream: String, handshakes: Handshakes) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = TlsAcceptor::from(ca.server.clone());
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // As real endpoints do: small TLS records (session tickets after the
                // handshake) must not wait on Nagle and the client's delayed ACK (40 ms).
                let _ = stream.set_nodelay(true);
                let (acceptor, client, upstream, handshakes) = (
                    acceptor.clone(),
                    client.clone(),
                    upstream.clone(),
                    handshakes.clone(),
                );
                tokio::spawn(async move {
                    let stream = match acceptor.accept(stream).await {
                        Ok(stream) => {
                            handshakes.done.fetch_add(1, Ordering::SeqCst);
                            stream
                        }
                        Err(_) => {
                            handshakes.failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let service =
                        service_fn(move |req| forward(req, client.clone(), upstream.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            localhost_url: format!("https://localhost:{port}"),
            ip_url: format!("https://127.0.0.1:{port}"),
        }
    }
}

async fn forward(
    req: hyper::Request<Incoming>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    Ok(crate::counting_proxy::relay(req, &client, &upstream).await)
}
