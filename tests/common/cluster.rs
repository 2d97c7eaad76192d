//! Cluster helpers shared by the integration tests: configs for the shipped worker binaries, an
//! actor that forwards what it receives into a channel, and hard deadlines.

use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use procactor::ClusterConfig;
use tokio::sync::mpsc;

/// A cluster of `n` `procactor-echo` workers with test-friendly timeouts.
pub(crate) fn echo_config(n: usize) -> ClusterConfig {
    ClusterConfig::new()
        .workers(n)
        .exec(env!("CARGO_BIN_EXE_procactor-echo"))
        .ready_timeout(Duration::from_secs(20))
        .shutdown_timeout(Duration::from_secs(5))
        .handle_signals(false)
}

/// A cluster of `n` `procactor-relay` workers (messaging, cache and log commands).
pub(crate) fn relay_config(n: usize) -> ClusterConfig {
    ClusterConfig::new()
        .workers(n)
        .exec(env!("CARGO_BIN_EXE_procactor-relay"))
        .ready_timeout(Duration::from_secs(20))
        .shutdown_timeout(Duration::from_secs(5))
        .handle_signals(false)
}

/// Sends a relay worker a command and returns its reply; panics if the call fails.
pub(crate) async fn relay(
    cluster: &procactor::Cluster<super::relay::Relay>,
    worker: usize,
    msg: super::relay::RelayMsg,
) -> super::relay::RelayReply {
    cluster
        .worker(worker)
        .send(procactor::Call(msg))
        .await
        .expect("mailbox")
        .expect("call")
}

/// A cluster of `n` `procactor-chaos` workers; `modes` names the misbehaving slots.
pub(crate) fn chaos_config(n: usize, modes: &[(usize, &str)]) -> ClusterConfig {
    let mut config = ClusterConfig::new()
        .workers(n)
        .exec(env!("CARGO_BIN_EXE_procactor-chaos"))
        .ready_timeout(Duration::from_secs(20))
        .shutdown_timeout(Duration::from_secs(5))
        .handle_signals(false);
    for (id, mode) in modes {
        config = config.env(format!("PROCACTOR_CHAOS_MODE_{id}"), *mode);
    }
    config
}

/// Forwards every `M` it receives into a channel the test reads.
pub(crate) struct Collector<M>(mpsc::UnboundedSender<M>);

impl<M: Message<Result = ()> + Send + 'static> Actor for Collector<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Send + 'static> Handler<M> for Collector<M> {
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

/// A recipient for `M` and the channel its messages arrive on.
pub(crate) fn collector<M: Message<Result = ()> + Send + 'static>(
) -> (Recipient<M>, mpsc::UnboundedReceiver<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collector(tx).start().recipient(), rx)
}

/// The next message satisfying `pred` within `timeout`, skipping the others.
pub(crate) async fn next_matching<M>(
    rx: &mut mpsc::UnboundedReceiver<M>,
    timeout: Duration,
    mut pred: impl FnMut(&M) -> bool,
) -> Option<M> {
    tokio::time::timeout(timeout, async {
        while let Some(msg) = rx.recv().await {
            if pred(&msg) {
                return Some(msg);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Runs `fut`, failing the test if it takes longer than `secs` seconds.
pub(crate) async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("test exceeded its {secs} s deadline"),
    }
}
