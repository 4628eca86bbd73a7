//! A TCP proxy that a test controls, placed between the functions and a local server
//! (DynamoDB Local, moto, localstripe): it passes bytes through, refuses connections, or
//! stalls them, and cuts the connections it holds when told to.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass = 0,
    /// Accept and close at once (like a crashed server behind a load balancer).
    Refuse = 1,
    /// Accept and never answer (like a black-holed network).
    Stall = 2,
    /// Pass the request on, and lose the answer on its way back (a timeout after the server
    /// did the work).
    LoseAnswers = 3,
}

pub struct FaultProxy {
    pub url: String,
    mode: Arc<AtomicU8>,
    live: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Connections accepted while not passing (faults actually hit).
    pub faulted: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let live: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let faulted = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let (mode_in, live_in, faulted_in) = (mode.clone(), live.clone(), faulted.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mode = mode_in.load(Ordering::SeqCst);
                if mode != Mode::Pass as u8 {
                    faulted_in.fetch_add(1, Ordering::SeqCst);
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if mode == Mode::Refuse as u8 {
                        return;
                    }
                    if mode == Mode::Stall as u8 {
                        // Hold the connection open, answer nothing.
                        tokio::time::sleep(std::time::Duration::from_secs(300)).await;
                        return;
                    }
                    if mode == Mode::LoseAnswers as u8 {
                        if let Ok(server) = TcpStream::connect(&upstream).await {
                            let (mut client_in, _client_out) = client.into_split();
                            let (mut server_in, mut server_out) = server.into_split();
                            let mut lost = tokio::io::sink();
                            let _ = tokio::join!(
                                tokio::io::copy(&mut client_in, &mut server_out),
                                tokio::io::copy(&mut server_in, &mut lost),
                            );
                        }
                        return;
                    }
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                if let Ok(mut live) = live_in.lock() {
                    live.retain(|t| !t.is_finished());
                    live.push(task);
                }
            }
        });
        Self {
            url,
            mode,
            live,
            faulted,
        }
    }

    /// Switches mode; any fault also cuts every connection open now (pooled ones included).
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        if mode != Mode::Pass {
            if let Ok(mut live) = self.live.lock() {
                for task in live.drain(..) {
                    task.abort();
                }
            }
        }
    }
}

/// `host:port` of a URL like `http://127.0.0.1:8000`.
pub fn authority(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}
