//! The relay's messaging commands: tell and ask its peers and the master, broadcast, publish,
//! join and leave groups, confirm, read the cluster's info and stats, kill and restart workers.

use std::future::Future;
use std::time::Duration;

use procactor::AskError;

use super::api::Undecodable;
use super::{done, invalid, Handle, RelayMsg, RelayReply, TIMEOUT};

/// Runs one messaging command with this worker's handle.
pub(super) async fn command(msg: RelayMsg, peers: &Handle) -> RelayReply {
    match msg {
        RelayMsg::TellPeer { to, text } => done(peers.tell_worker(to, &RelayMsg::Note(text))),
        RelayMsg::TellMany { to, prefix, count } => done(
            (0..count)
                .try_for_each(|n| peers.tell_worker(to, &RelayMsg::Note(format!("{prefix}{n}")))),
        ),
        RelayMsg::TellPeerAcked { to, text } => done(
            peers
                .tell_worker_acked(to, &RelayMsg::Note(text), TIMEOUT)
                .await,
        ),
        RelayMsg::AskPeer {
            to,
            text,
            timeout_ms,
        } => peers
            .ask_worker(to, &RelayMsg::Echo(text), Duration::from_millis(timeout_ms))
            .await
            .unwrap_or_else(RelayReply::Failed),
        RelayMsg::Flood { to, count, bytes } => flood(peers, to, count, bytes).await,
        RelayMsg::AskGarbage { to } => {
            // Bytes that do not decode as the receiver's `RelayMsg`.
            let garbage = RelayMsg::Undecodable(Undecodable);
            match peers.ask_worker(to, &garbage, TIMEOUT).await {
                Ok(_) => RelayReply::Done,
                Err(e) => RelayReply::Failed(e),
            }
        }
        RelayMsg::AskMaster(text) => match peers.ask_master(&text, TIMEOUT).await {
            Ok(answer) => RelayReply::Text(answer),
            Err(e) => RelayReply::Failed(e),
        },
        RelayMsg::Broadcast(text) => done(peers.broadcast(&RelayMsg::Note(text))),
        RelayMsg::Publish { group, text } => done(peers.publish(&group, &RelayMsg::Note(text))),
        RelayMsg::Join(group) => done(peers.join(&group).await),
        RelayMsg::Leave(group) => done(peers.leave(&group).await),
        RelayMsg::Confirm(key) => done(peers.confirm(&key).await),
        RelayMsg::AwaitConfirmations { key, n, timeout_ms } => match peers
            .await_confirmations(&key, n, Duration::from_millis(timeout_ms))
            .await
        {
            Ok(ids) => RelayReply::Confirmed(ids),
            Err(e) => RelayReply::Failed(e),
        },
        RelayMsg::Info => match peers.cluster_info().await {
            Ok(info) => RelayReply::Info(Box::new(info)),
            Err(e) => RelayReply::Failed(e),
        },
        RelayMsg::Stats => match peers.cluster_stats().await {
            Ok(stats) => RelayReply::Stats(stats),
            Err(e) => RelayReply::Failed(e),
        },
        RelayMsg::Kill(id) => done(peers.kill_worker(id).await),
        RelayMsg::Restart(id) => done(peers.restart_worker(id, TIMEOUT).await),
        RelayMsg::End { target, ending } => {
            done(peers.end_worker(target, ending, TIMEOUT).await.map(drop))
        }
        RelayMsg::StopCluster => done(peers.stop_cluster().await),
        other => invalid(other),
    }
}

/// Asks worker `to` `count` echoes of `bytes` bytes each, all in flight at once, and counts
/// how they ended.
async fn flood(peers: &Handle, to: procactor::WorkerId, count: usize, bytes: usize) -> RelayReply {
    let text = "x".repeat(bytes);
    let asks = (0..count).map(|_| {
        let peers = peers.clone();
        let msg = RelayMsg::Echo(text.clone());
        async move { peers.ask_worker(to, &msg, TIMEOUT).await }
    });
    let (mut ok, mut backpressure, mut other) = (0, 0, Vec::new());
    for result in join_all(asks).await {
        match result {
            Ok(_) => ok += 1,
            Err(AskError::Backpressure(_)) => backpressure += 1,
            Err(e) => other.push(e.to_string()),
        }
    }
    RelayReply::Flooded {
        ok,
        backpressure,
        other,
    }
}

/// Runs every future as a task of its own (so that they are in flight together) and collects
/// their outputs in order.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let tasks: Vec<_> = futures.map(actix_rt::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(output) = task.await {
            outputs.push(output);
        }
    }
    outputs
}
