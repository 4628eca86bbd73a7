//! A small Lambda Runtime API (the `2018-06-01` interface that `bootstrap` binaries poll), so that
//! the real function binaries can be invoked with sample events locally: by the tests
//! (`events/`) and by the benchmark (init time is process start → first `/next`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const PREFIX: &str = "/2018-06-01/runtime";

type Outcome = Result<Value, String>;

struct Shared {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_next: Mutex<Option<Instant>>,
    /// How many times the function has asked for an invocation (`/next`), and a wake-up for it.
    nexts: AtomicU64,
    next_seen: tokio::sync::Notify,
    init_error: Mutex<Option<String>>,
}

/// One Runtime API endpoint, serving one function process at a time.
pub struct RuntimeApi {
    address: String,
    sender: mpsc::UnboundedSender<(String, Value)>,
    shared: Arc<Shared>,
}

impl RuntimeApi {
    /// Listens on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
            nexts: AtomicU64::new(0),
            next_seen: tokio::sync::Notify::new(),
            init_error: Mutex::new(None),
        });
        let state = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            address,
            sender,
            shared,
        })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API` for the function process.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// When the function first asked for an invocation (its init finished), if it did.
    pub fn first_next(&self) -> Option<Instant> {
        self.shared.first_next.lock().ok().and_then(|t| *t)
    }

    /// How many times the function has asked for an invocation (`GET …/invocation/next`).
    pub fn nexts(&self) -> u64 {
        self.shared.nexts.load(Ordering::SeqCst)
    }

    /// Waits until the function has asked for an invocation at least `count` times: after an
    /// invocation, the process is idle again (its runtime's own post-response work is done) once
    /// it asks for the next one. The benchmark reads the process's CPU time then.
    pub async fn wait_nexts(&self, count: u64, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.next_seen.notified();
            if self.nexts() >= count {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err("the function did not ask for its next invocation".into());
            }
        }
    }

    /// Forgets the first `/next` time (and the count), before starting a new process on the same
    /// endpoint.
    pub fn reset(&self) {
        self.shared.nexts.store(0, Ordering::SeqCst);
        if let Ok(mut first) = self.shared.first_next.lock() {
            *first = None;
        }
        if let Ok(mut error) = self.shared.init_error.lock() {
            *error = None;
        }
    }

    /// Waits until the function process has polled `/next` once.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.first_next() {
                return Ok(at);
            }
            if let Some(error) = self.shared.init_error.lock().ok().and_then(|e| e.clone()) {
                return Err(format!("init error: {error}"));
            }
            if Instant::now() > deadline {
                return Err("the function never asked for an invocation".into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Hands `event` to the function and waits for its reply.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Outcome {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.shared.waiting.lock() {
            waiting.insert(id.clone(), tx);
        }
        self.sender
            .send((id, event))
            .map_err(|_| "runtime API stopped".to_string())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the invocation was dropped".into()),
            Err(_) => Err("the function did not answer in time".into()),
        }
    }
}

type Reply = hyper::Response<Full<Bytes>>;

fn reply(status: u16, body: Bytes, headers: &[(&str, String)]) -> Reply {
    let mut builder = hyper::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

async fn handle(state: Arc<Shared>, req: hyper::Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(reply(404, Bytes::new(), &[]));
    };
    if rest == "/invocation/next" {
        if let Ok(mut first) = state.first_next.lock() {
            first.get_or_insert_with(Instant::now);
        }
        state.nexts.fetch_add(1, Ordering::SeqCst);
        state.next_seen.notify_waiters();
        let next = state.queue.lock().await.recv().await;
        let Some((id, event)) = next else {
            return Ok(reply(500, Bytes::new(), &[]));
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() + 30_000)
            .unwrap_or_default();
        let headers = [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:local".to_string(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".to_string(),
            ),
            ("content-type", "application/json".to_string()),
        ];
        return Ok(reply(200, Bytes::from(event.to_string()), &headers));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    if rest == "/init/error" {
        if let Ok(mut error) = state.init_error.lock() {
            *error = Some(text);
        }
        return Ok(reply(202, Bytes::new(), &[]));
    }
    if let Some(tail) = rest.strip_prefix("/invocation/") {
        let (id, kind) = tail.split_once('/').unwrap_or((tail, ""));
        let outcome = match kind {
            "response" => serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}")),
            "error" => Err(format!("function error: {text}")),
            _ => return Ok(reply(404, Bytes::new(), &[])),
        };
        if let Some(tx) = state.waiting.lock().ok().and_then(|mut w| w.remove(id)) {
            let _ = tx.send(outcome);
        }
        return Ok(reply(202, Bytes::new(), &[]));
    }
    Ok(reply(404, Bytes::new(), &[]))
}
