//! The TLS warm-up: cold starts with the endpoints behind TLS-terminating proxies, with the
//! warm-up on and off.

use std::time::{Duration, Instant};

use coffer_dev::runtime_api::RuntimeApi;

use crate::measure::answered;
use crate::runtime::{ready, start};
use crate::targets::Target;
use crate::tls_proxy::Handshakes;
use crate::{TIMEOUT, TLS_COLD_STARTS};

#[derive(Default)]
pub(crate) struct TlsRun {
    pub(crate) init: Vec<Duration>,
    pub(crate) first: Vec<Duration>,
    /// Handshakes completed with DynamoDB, Secrets Manager and Stripe's proxies.
    pub(crate) handshakes_init: [usize; 3],
    pub(crate) handshakes_first: [usize; 3],
    pub(crate) handshakes_failed: usize,
    pub(crate) cold_starts: usize,
    pub(crate) failures: usize,
    pub(crate) failure: Option<String>,
}

/// Cold starts with the endpoints behind the TLS proxies, `warmup` on or off.
pub(crate) async fn tls_run(
    target: &Target,
    tls_vars: &[(String, String)],
    warmup: bool,
    handshakes: &[Handshakes; 3],
) -> TlsRun {
    let done = || handshakes.each_ref().map(|h| h.get().0);
    let failed = || handshakes.iter().map(|h| h.get().1).sum::<usize>();
    let mut run = TlsRun::default();
    let mut vars = tls_vars.to_vec();
    if !warmup {
        vars.push(("COFFER_WARMUP".into(), "off".into()));
    }
    for _ in 0..TLS_COLD_STARTS {
        let runtime = RuntimeApi::start().await.expect("runtime api");
        let (done0, failed0) = (done(), failed());
        let (mut child, started) = start(target, &runtime, &vars, None);
        run.cold_starts += 1;
        match ready(&runtime, &mut child).await {
            Ok(at) => run.init.push(at - started),
            Err(why) => {
                run.failures += 1;
                run.failure.get_or_insert(why);
                let _ = child.kill().await;
                continue;
            }
        }
        let done1 = done();
        if let Some(event) = target.event.make() {
            let t = Instant::now();
            let reply = runtime.invoke(event, TIMEOUT).await;
            let latency = t.elapsed();
            match answered(&reply) {
                Ok(()) => run.first.push(latency),
                Err(why) => {
                    run.failures += 1;
                    run.failure.get_or_insert(why);
                }
            }
        }
        let (done2, failed2) = (done(), failed());
        for i in 0..3 {
            run.handshakes_init[i] += done1[i] - done0[i];
            run.handshakes_first[i] += done2[i] - done1[i];
        }
        run.handshakes_failed += failed2 - failed0;
        let _ = child.kill().await;
    }
    run
}
