//! The relay worker: a test fixture that exercises messaging between processes. The master (or
//! a test) drives it with commands to tell, ask, broadcast, publish, join, confirm and control;
//! it records what other processes send it, with the sender the master stamped; and it drives
//! the cache, the logs and a cluster of its own on command.
//!
//! Not part of the library: `procactor-relay` (`main.rs`) runs it, and the integration tests
//! and the bench include this file as a module (`#[path = ".../actors/relay/relay.rs"]`) for
//! its types, so that the worker and its masters share one definition of its messages.
//!
//! Commands are handled by family: peers, groups, confirmations and controls in `messaging.rs`;
//! the cache in `cache.rs`; this process and its own workers in `process.rs`; messages from
//! peers and the log commands here (a test checks that a traced error's location names
//! `relay.rs`).

mod api;
mod cache;
mod messaging;
mod process;

use std::rc::Rc;
use std::time::Duration;

use procactor::cache::{LockGuard, NearCache, Replica, Subscription};
use procactor::logger::Fields;
use procactor::{AskError, Cluster, WorkerActor, WorkerContext, WorkerHandle};

pub(crate) use api::{Received, RelayMsg, RelayReply, CRASH_FROM_ENV, LEAVES_ENV};

type Handle = WorkerHandle<Relay>;

/// The timeout of the requests the relay makes on its own behalf.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The relay worker; see [`RelayMsg`].
#[derive(Debug, Default)]
pub(crate) struct Relay {
    received: Vec<Received>,
    locks: Vec<LockGuard<Handle>>,
    subscription: Option<Subscription<Handle>>,
    replica: Option<Replica<Handle, u64>>,
    near: Option<NearCache<Handle>>,
    leaves: Option<Rc<Cluster<Relay>>>,
}

impl WorkerActor for Relay {
    type Msg = RelayMsg;
    type Reply = RelayReply;
    type Event = String;
    type MasterReply = String;

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        process::crash_if_asked(ctx.generation());
        self.leaves = process::start_leaves().await;
    }

    async fn handle(&mut self, msg: RelayMsg, ctx: &mut WorkerContext<Self>) -> RelayReply {
        use RelayMsg as M;
        match msg {
            msg @ (M::TellPeer { .. }
            | M::TellMany { .. }
            | M::TellPeerAcked { .. }
            | M::AskPeer { .. }
            | M::Flood { .. }
            | M::AskGarbage { .. }
            | M::AskMaster(_)
            | M::Broadcast(_)
            | M::Publish { .. }
            | M::Join(_)
            | M::Leave(_)
            | M::Confirm(_)
            | M::AwaitConfirmations { .. }
            | M::Info
            | M::Stats
            | M::Kill(_)
            | M::Restart(_)
            | M::End { .. }
            | M::StopCluster) => messaging::command(msg, ctx.peers()).await,
            msg @ (M::CacheIncrement { .. }
            | M::CacheSet { .. }
            | M::CacheBurst { .. }
            | M::CacheLockedIncrement { .. }
            | M::CacheHoldLock(_)
            | M::CacheLockWait { .. }
            | M::CacheSubscribe { .. }
            | M::CacheEvents
            | M::CacheReplica(_)
            | M::CacheReplicaState
            | M::CacheBench { .. }
            | M::NearOpen { .. }
            | M::NearGet(_)
            | M::NearSet { .. }
            | M::NearStats
            | M::SetThenTell { .. }) => self.cache(msg, ctx.peers()).await,
            msg @ M::NearCheck { .. } => {
                let reply = self.cache(msg, ctx.peers()).await;
                if let RelayReply::Text(text) = &reply {
                    self.received.push(Received {
                        from: ctx.sender(),
                        via: ctx.via().clone(),
                        text: text.clone(),
                    });
                }
                reply
            }
            msg @ (M::Note(_) | M::Echo(_) | M::Log | M::Clear) => self.inbox(msg, ctx),
            msg @ (M::LogAll { .. } | M::LogMany(_)) => log(msg, ctx),
            msg => self.process(msg, ctx).await,
        }
    }
}

impl Relay {
    /// Messages from peers, and what this worker has received.
    fn inbox(&mut self, msg: RelayMsg, ctx: &WorkerContext<Self>) -> RelayReply {
        match msg {
            RelayMsg::Note(text) => {
                self.received.push(Received {
                    from: ctx.sender(),
                    via: ctx.via().clone(),
                    text,
                });
                RelayReply::Done
            }
            RelayMsg::Echo(text) => RelayReply::Echoed {
                by: ctx.id(),
                from: ctx.sender(),
                text,
            },
            RelayMsg::Log => RelayReply::Log(self.received.clone()),
            RelayMsg::Clear => {
                self.received.clear();
                RelayReply::Done
            }
            other => invalid(other),
        }
    }
}

/// The log commands.
fn log(msg: RelayMsg, ctx: &WorkerContext<Relay>) -> RelayReply {
    let log = ctx.log();
    match msg {
        RelayMsg::LogAll { tag, ips } => {
            for n in 0..ips {
                log.ip(
                    "10.0.0.1",
                    "GET",
                    &format!("/{tag}/{n}"),
                    200,
                    Duration::from_micros(1500),
                );
            }
            log.history("logged in", Fields::new().with("tag", &tag));
            log.error(
                &format!("{tag} failed"),
                vec!["disk full".into()],
                Some("relay.rs"),
            );
            tracing::info!(user = "alice", n = 3, tag = tag.as_str(), "traced");
            tracing::error!(tag = tag.as_str(), "traced failure");
            RelayReply::Done
        }
        RelayMsg::LogMany(count) => {
            for _ in 0..count {
                log.ip("10.0.0.1", "GET", "/bench", 200, Duration::from_micros(100));
            }
            RelayReply::Done
        }
        other => invalid(other),
    }
}

/// The answer to a message that reached a family it does not belong to (a bug of the dispatch).
fn invalid(msg: RelayMsg) -> RelayReply {
    RelayReply::Failed(AskError::Invalid(format!("{msg:?}")))
}

/// The answer to a command that returns nothing but may fail.
fn done(result: Result<(), AskError>) -> RelayReply {
    match result {
        Ok(()) => RelayReply::Done,
        Err(e) => RelayReply::Failed(e),
    }
}
