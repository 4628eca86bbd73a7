//! Deliveries to developers' webhook endpoints: one POST, answered within the timeout, whose
//! answer is read up to a bound. Its own HTTP client (never the one that talks to AWS and
//! Stripe): a host is resolved by a resolver that drops every address a delivery may not go to
//! (`domain::webhooks::address_allowed`), and connects only to what it kept, so a name that
//! resolves to a private or metadata address (or is made to, between the check and the
//! connection) is never reached. Redirects are never followed: a 3xx is the endpoint's answer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::domain::webhooks::{address_allowed, ANSWER_KEPT_BYTES};

type Sender = Client<hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>;

/// Resolves a host to the addresses a delivery may connect to; none left is an error.
#[derive(Clone)]
pub struct CheckedResolver {
    local: bool,
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let local = self.local;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|addr| address_allowed(addr.ip(), local))
                .collect();
            if found.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the host resolves only to addresses webhooks never go to",
                ));
            }
            Ok(found.into_iter())
        })
    }
}

/// What one attempt got.
#[derive(Clone, Debug)]
pub struct Answer {
    /// `None`: no answer (timeout, connection error, a refused address).
    pub status: Option<u16>,
    /// The first bytes of the answer (lossy UTF-8), or why there was none.
    pub text: String,
    pub latency_ms: i64,
    /// No answer because the host resolves only to addresses a delivery never goes to.
    pub refused: bool,
    /// The answer's `Retry-After`, when it gives whole seconds.
    pub retry_after_secs: Option<i64>,
}

impl Answer {
    /// No attempt made: the address is one a delivery never goes to (`why`, in words).
    pub fn refused(why: impl Into<String>) -> Self {
        Self {
            status: None,
            text: why.into(),
            latency_ms: 0,
            refused: true,
            retry_after_secs: None,
        }
    }
}

/// The delivery client (cheap to clone).
#[derive(Clone)]
pub struct Outbound {
    client: Sender,
    timeout: Duration,
}

impl Outbound {
    /// `local`: loopback addresses are allowed (the local stack's receivers).
    pub fn new(local: bool, timeout: Duration) -> Self {
        let (roots, _) = super::net::root_store(None);
        let mut tcp = HttpConnector::new_with_resolver(CheckedResolver { local });
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(super::net::tls_config(roots))
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(https);
        Self { client, timeout }
    }

    /// POSTs `body` to `url` with `headers`; the whole attempt (connecting, sending, reading
    /// up to `ANSWER_KEPT_BYTES` of the answer) within the timeout.
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> Answer {
        let started = Instant::now();
        let elapsed =
            |started: Instant| i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "Coffer-Webhooks/1");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(_) => {
                return Answer::refused(
                    "the request could not be made (the URL or a header is malformed)",
                )
            }
        };
        let attempt = async {
            let response = self.client.request(request).await.map_err(|err| {
                // The cause's words only (no URL with a query string, no header).
                let mut cause: &dyn std::error::Error = &err;
                let mut refused = false;
                while let Some(inner) = cause.source() {
                    cause = inner;
                    refused |= cause
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
                }
                (format!("no answer: {cause}"), refused)
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|secs| *secs >= 0);
            let mut body = response.into_body();
            let mut kept: Vec<u8> = Vec::new();
            while kept.len() < ANSWER_KEPT_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let room = ANSWER_KEPT_BYTES - kept.len();
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(_)) | None => break,
                }
            }
            let text = String::from_utf8_lossy(&kept).into_owned();
            Ok::<_, (String, bool)>((status, text, retry_after))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((status, text, retry_after_secs))) => Answer {
                status: Some(status),
                text,
                latency_ms: elapsed(started),
                refused: false,
                retry_after_secs,
            },
            Ok(Err((why, refused))) => Answer {
                status: None,
                text: why,
                latency_ms: elapsed(started),
                refused,
                retry_after_secs: None,
            },
            Err(_) => Answer {
                status: None,
                text: format!("no answer within {} s", self.timeout.as_secs()),
                latency_ms: elapsed(started),
                refused: false,
                retry_after_secs: None,
            },
        }
    }
}
