//! An HTTP proxy in front of DynamoDB Local, moto and localstripe that counts each call a
//! function makes (by DynamoDB/Secrets Manager operation or Stripe path) and the time spent
//! waiting on it, so that a handler's own overhead is its latency minus that time.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Default, Clone)]
pub struct Tally {
    pub calls: BTreeMap<String, usize>,
    pub waited: Duration,
}

#[derive(Clone)]
pub struct CountingProxy {
    pub url: String,
    tally: Arc<Mutex<Tally>>,
}

impl CountingProxy {
    /// `service` names the calls: "dynamodb", "secretsmanager" or "stripe".
    pub async fn start(service: &'static str, upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let state = tally.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // As real endpoints do: small TLS records (session tickets after the
                // handshake) must not wait on Nagle and the client's delayed ACK (40 ms).
                let _ = stream.set_nodelay(true);
                let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        forward(
                            service,
                            req,
                            state.clone(),
                            client.clone(),
                            upstream.clone(),
                        )
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, tally }
    }

    /// What was called since the last `take`.
    pub fn take(&self) -> Tally {
        self.tally
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}

async fn forward(
    service: &'static str,
    req: hyper::Request<Incoming>,
    tally: Arc<Mutex<Tally>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let name = match req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        Some(target) => format!("{service}:{}", target.rsplit('.').next().unwrap_or(target)),
        None => format!("{service}:{} {}", req.method(), req.uri().path()),
    };
    let started = Instant::now();
    let reply = relay(req, &client, &upstream).await;
    let waited = started.elapsed();
    if let Ok(mut tally) = tally.lock() {
        *tally.calls.entry(name).or_default() += 1;
        tally.waited += waited;
    }
    Ok(reply)
}

/// Sends `req` on to `upstream` (`http://host:port`, same path and query) and returns its
/// answer read whole, or 502 when it cannot be reached. Hop-by-hop headers are the upstream
/// connection's, not the caller's (RFC 9110 7.6.1), and are not passed on: moto answers every
/// call with `Connection: close`, which would otherwise close the function's kept-alive
/// connection after each call.
pub async fn relay(
    req: hyper::Request<Incoming>,
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
) -> hyper::Response<Full<Bytes>> {
    let bad_gateway = || {
        let mut reply = hyper::Response::new(Full::new(Bytes::new()));
        *reply.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        reply
    };
    let (mut parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match format!("{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return bad_gateway(),
    };
    match client
        .request(hyper::Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            for name in [
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "te",
                "trailer",
                "upgrade",
            ] {
                parts.headers.remove(name);
            }
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            hyper::Response::from_parts(parts, Full::new(bytes))
        }
        Err(_) => bad_gateway(),
    }
}
