//! A webhook receiver a test controls: an HTTP/1.1 server on a loopback port that keeps every
//! request it gets (when, headers, body) and answers as scripted: a status, a redirect, or
//! nothing at all (it hangs).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16),
    /// A 302 to this location.
    Redirect(String),
    /// This status, asking to be tried again no sooner than this many seconds (`Retry-After`).
    RetryAfter(u16, u64),
    /// Accept, read the request, never answer.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

pub struct Receiver {
    pub url: String,
    default: Answer,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// A receiver at `http://127.0.0.1:<port>/hook` answering `default` once its script is used.
    pub async fn start(default: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let fallback = default.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let state = shared.clone();
                let fallback = fallback.clone();
                tokio::spawn(async move {
                    let Some((headers, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    let answer = {
                        let Ok(mut state) = state.lock() else { return };
                        state.received.push(Received {
                            at: Instant::now(),
                            headers,
                            body,
                        });
                        state.script.pop_front().unwrap_or(fallback)
                    };
                    let reply = match answer {
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                        Answer::Status(status) => format!(
                            "HTTP/1.1 {status} Scripted\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        ),
                        Answer::RetryAfter(status, secs) => format!(
                            "HTTP/1.1 {status} Busy\r\nretry-after: {secs}\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy"
                        ),
                        Answer::Redirect(location) => format!(
                            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        ),
                    };
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            url,
            default,
            state,
        }
    }

    /// The next answers, in order (then the default).
    pub fn script(&self, answers: Vec<Answer>) {
        if let Ok(mut state) = self.state.lock() {
            state.script = answers.into();
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    pub fn default_answer(&self) -> &Answer {
        &self.default
    }
}

async fn read_request(
    socket: &mut tokio::net::TcpStream,
) -> Option<(HashMap<String, String>, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let end = buffer.len().min(head_end + length);
    Some((
        headers,
        String::from_utf8_lossy(&buffer[head_end..end]).into_owned(),
    ))
}

/// Verifies a delivery with the Standard Webhooks specification's own library (the
/// `standardwebhooks` Python package, in `.venv`): the parsed event, or the library's refusal.
pub async fn verify_with_library(
    secret: &str,
    received: &Received,
) -> Result<serde_json::Value, String> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    let input = serde_json::json!({
        "secret": secret,
        "body": received.body,
        "headers": received.headers,
    });
    let script = "import json,sys\nfrom standardwebhooks.webhooks import Webhook\nd=json.load(sys.stdin)\ntry:\n    print(json.dumps(Webhook(d['secret']).verify(d['body'], d['headers'])))\nexcept Exception as e:\n    print('REFUSED: %s' % e); sys.exit(3)\n";
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("python: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.to_string().as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    } else {
        Err(text)
    }
}
