//! The function's one HTTP client: HTTP/1.1 over rustls (ring) with the web PKI roots
//! compiled in, built once per cold start (the `App` holds it) and shared by every AWS SDK client
//! (through [`sdk_http_client`]) and by the Stripe client. One TLS configuration and one
//! connection pool: a connection opened to an endpoint (by the init warm-up or by a call) serves
//! every later call to it. (It is not a process-wide static: its connections live on the tokio
//! runtime that opened them, and a test process runs many runtimes.)
//!
//! Plain `http://` endpoints are allowed for the local emulators (DynamoDB Local, moto,
//! localstripe). `COFFER_EXTRA_ROOT_PEM` names a PEM file of extra roots to trust: only the
//! benchmark's TLS-terminating proxy uses it; unset, nothing but the web PKI roots is trusted.

use std::borrow::Cow;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::{
    capture_connection, CaptureConnection, HttpConnector as TcpConnector,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The shared client. The body type is the SDK's (it streams); Stripe sends bytes in it.
pub type Http = Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>;

/// The variable naming a PEM file of extra roots to trust (the benchmark's local CA).
pub const EXTRA_ROOT_VARIABLE: &str = "COFFER_EXTRA_ROOT_PEM";

/// How long an idle connection is kept: below the idle timeouts of DynamoDB, Secrets Manager and
/// Stripe, so that a pooled connection is not one the server has already dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// TCP connect limit (the SDK's attempt timeout bounds the TLS handshake too).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A new client (cheap to clone: clones share the pool).
pub fn client() -> Http {
    build(extra_roots().as_deref())
}

/// The AWS SDK's view of a client.
pub fn sdk_http_client(http: &Http) -> SharedHttpClient {
    SharedHttpClient::new(SdkHttp(http.clone()))
}

/// Reads `COFFER_EXTRA_ROOT_PEM` when set. A file that cannot be read is logged and ignored:
/// the web PKI roots still apply, and a connection to an endpoint they do not vouch for fails.
fn extra_roots() -> Option<Vec<u8>> {
    let path = std::env::var_os(EXTRA_ROOT_VARIABLE)?;
    match std::fs::read(&path) {
        Ok(pem) => Some(pem),
        Err(err) => {
            tracing::warn!(error = %err, "{EXTRA_ROOT_VARIABLE} could not be read; ignored");
            None
        }
    }
}

/// The web PKI roots (pre-parsed trust anchors: nothing is parsed at run time) and any extra
/// PEM roots. Returns how many extra roots were taken.
pub fn root_store(extra_pem: Option<&[u8]>) -> (rustls::RootCertStore, usize) {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut added = 0;
    if let Some(pem) = extra_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            match cert.map(|der| roots.add(der)) {
                Ok(Ok(())) => added += 1,
                _ => tracing::warn!("an extra root certificate could not be used; ignored"),
            }
        }
    }
    (roots, added)
}

/// The TLS configuration every client uses: ring's safe defaults and the given roots.
pub fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    match safe_defaults() {
        Some(builder) => builder.with_root_certificates(roots),
        // ring has suites for TLS 1.2 and 1.3 (a unit test checks it), so this is not reached;
        // were it, rustls' process default (ring, the one provider linked) is the fallback.
        None => rustls::ClientConfig::builder().with_root_certificates(roots),
    }
    .with_no_client_auth()
}

fn build(extra_pem: Option<&[u8]>) -> Http {
    let (roots, _) = root_store(extra_pem);
    let tls = tls_config(roots);
    let mut tcp = TcpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(https)
}

/// TLS 1.2 and 1.3 with ring's default cipher suites and key exchanges.
fn safe_defaults() -> Option<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()
}

/// The AWS SDK's HTTP client: every attempt goes through the shared client.
#[derive(Clone, Debug)]
struct SdkHttp(Http);

impl HttpClient for SdkHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(SdkConnector {
            http: self.0.clone(),
            read_timeout: settings.read_timeout(),
        })
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("hyper", Some(Cow::Borrowed("1.x"))))
    }
}

#[derive(Debug)]
struct SdkConnector {
    http: Http,
    read_timeout: Option<Duration>,
}

impl HttpConnector for SdkConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(err) => return HttpConnectorFuture::ready(Err(ConnectorError::user(err.into()))),
        };
        // Lets the SDK close ("poison") the connection a transient error came from, so that
        // its retry opens a new one instead of reusing it.
        let captured = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || poisonable(&captured));
        }
        let response = self.http.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            // From sending to the response's head, as the SDK's own read timeout.
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, response)
                    .await
                    .map_err(|elapsed| ConnectorError::timeout(elapsed.into()))?,
                None => response.await,
            }
            .map_err(classify)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|err| ConnectorError::other(err.into(), None))
        })
    }
}

/// The connection a request went out on, as the SDK's connection poisoning wants it.
fn poisonable(captured: &CaptureConnection) -> Option<ConnectionMetadata> {
    captured.connection_metadata().as_ref()?;
    let captured = captured.clone();
    Some(
        ConnectionMetadata::builder()
            .proxied(false)
            .poison_fn(move || {
                if let Some(connection) = captured.connection_metadata().as_ref() {
                    connection.poison();
                }
            })
            .build(),
    )
}

/// Connection failures and cut connections are I/O errors, which the SDK's retry strategy
/// retries; anything else is not retried.
fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    if err.is_connect() {
        return ConnectorError::io(err.into());
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(hyper_err) = cause.downcast_ref::<hyper::Error>() {
            if hyper_err.is_timeout() {
                return ConnectorError::timeout(err.into());
            }
            if hyper_err.is_closed() || hyper_err.is_canceled() || hyper_err.is_incomplete_message()
            {
                return ConnectorError::io(err.into());
            }
        }
        if cause.is::<std::io::Error>() {
            return ConnectorError::io(err.into());
        }
        source = cause.source();
    }
    ConnectorError::other(err.into(), None)
}

/// The variable that turns the init warm-up off (`off`).
pub const WARMUP_VARIABLE: &str = "COFFER_WARMUP";
/// How long init waits for the warm-up connections at most.
const WARMUP_LIMIT: Duration = Duration::from_millis(300);

/// Opens a pooled connection to each `https://` base URL (scheme and authority exactly as the
/// calls will use them) during init, so that the first invocation pays no TLS handshake: one
/// `GET /` each, all at once, its answer read to the end (any answer leaves the connection in
/// the pool), within [`WARMUP_LIMIT`]. Plain `http://` endpoints (local emulators) have no
/// handshake to save and are skipped. Returns how many connections were pooled.
pub async fn warm_up(http: &Http, bases: &[String]) -> usize {
    if std::env::var(WARMUP_VARIABLE).is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        return 0;
    }
    let mut tasks = Vec::new();
    for base in bases.iter().filter(|b| b.starts_with("https://")) {
        let Some(uri) = origin(base).and_then(|o| format!("{o}/").parse::<http::Uri>().ok()) else {
            continue;
        };
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let request = http::Request::get(uri).body(SdkBody::empty()).ok()?;
            let response = tokio::time::timeout(WARMUP_LIMIT, async {
                let response = http.request(request).await.ok()?;
                response.into_body().collect().await.ok()
            })
            .await
            .ok()??;
            drop(response);
            Some(())
        }));
    }
    let mut pooled = 0;
    for task in tasks {
        if let Ok(Some(())) = task.await {
            pooled += 1;
        }
    }
    pooled
}

/// `scheme://authority` of a URL, as the connection pool keys it.
fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_pki_roots_are_compiled_in_and_extra_pem_roots_are_added() {
        let (roots, added) = root_store(None);
        assert_eq!(added, 0);
        assert!(roots.len() > 100, "{} roots", roots.len());
        let (with_bad, added) = root_store(Some(b"not a certificate"));
        assert_eq!(added, 0);
        assert_eq!(with_bad.len(), roots.len());
    }

    #[test]
    fn ring_offers_tls_1_2_and_1_3() {
        assert!(safe_defaults().is_some());
    }

    #[test]
    fn an_origin_is_scheme_and_authority_as_given() {
        assert_eq!(
            origin("https://dynamodb.eu-west-1.amazonaws.com/").as_deref(),
            Some("https://dynamodb.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            origin("https://localhost:8443/v1").as_deref(),
            Some("https://localhost:8443")
        );
        assert_eq!(origin("not a url"), None);
    }
}
