//! The worker's side of messaging between processes: requests awaiting answers from the master,
//! and the operations of [`WorkerHandle`].

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::{CacheAnswer, CacheClient, CacheError, CacheOp, CacheTransport, Subscription};

use crate::codec::{decode_value, encode_value};
use crate::messaging::{AskError, ClusterInfo, Route, SystemOp, WorkerStats};
use crate::protocol::Envelope;
use crate::state::WorkerId;
use crate::worker::context::WorkerHandle;
use crate::worker::WorkerActor;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AskError> {
    let mut buf = Vec::new();
    encode_value(&mut buf, value).map_err(|e| AskError::Invalid(e.to_string()))?;
    Ok(buf)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AskError> {
    decode_value(bytes).map_err(|e| AskError::BadReply(e.to_string()))
}

impl<A: WorkerActor> WorkerHandle<A> {
    /// One-way messages to one receiver that may wait to be taken in (see
    /// [`tell_worker`](Self::tell_worker)).
    pub const TELL_WINDOW_MESSAGES: usize = super::window::MESSAGES;
    /// Bytes of one-way messages to one receiver that may wait to be taken in; a larger message
    /// goes alone.
    pub const TELL_WINDOW_BYTES: usize = super::window::BYTES;

    fn push(&self, envelope: &Envelope<'_>) -> Result<(), AskError> {
        self.outbox.push(envelope).map_err(|e| match e {
            crate::error::FrameError::Io(_) => AskError::Closed,
            other => AskError::Invalid(other.to_string()),
        })
    }

    async fn ask_with(
        &self,
        timeout: Duration,
        send: impl FnOnce(u64, &dyn Fn(&Envelope<'_>) -> Result<(), AskError>) -> Result<(), AskError>,
    ) -> Result<Bytes, AskError> {
        let (id, rx) = self.asks.open();
        if let Err(e) = send(id, &|env| self.push(env)) {
            self.asks.close(id);
            return Err(e);
        }
        if timeout == Duration::MAX {
            // The master always answers (or its channel closes, which fails every ask).
            return rx.await.unwrap_or(Err(AskError::Closed));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AskError::Closed),
            Err(_) => {
                self.asks.close(id);
                Err(AskError::Timeout(timeout))
            }
        }
    }

    async fn system<T: DeserializeOwned>(
        &self,
        op: SystemOp<'_>,
        timeout: Duration,
    ) -> Result<T, AskError> {
        let bytes = self
            .ask_with(timeout, |id, push| push(&Envelope::System { id, op }))
            .await?;
        decode(&bytes)
    }

    /// The cluster's shared cache (see [`crate::cache`]).
    pub fn cache(&self) -> CacheClient<Self> {
        CacheClient::new(self.clone())
    }

    /// Sends a one-way message to worker `id`, which handles it with its `tell` hook and sees
    /// this worker as [`sender`](crate::WorkerContext::sender).
    ///
    /// Messages to one worker arrive in order. `Ok` means the master will deliver it unless
    /// the receiver's process ends first: up to [`TELL_WINDOW_MESSAGES`](Self::TELL_WINDOW_MESSAGES)
    /// messages or [`TELL_WINDOW_BYTES`](Self::TELL_WINDOW_BYTES) to one receiver may wait to be
    /// taken in by it (its outbox is over its limit while it is not reading); past that, the
    /// message is refused here, unsent.
    ///
    /// # Errors
    /// [`AskError::Backpressure`] when the window to `id` is full (it is not keeping up),
    /// [`AskError::Invalid`] when the message cannot be encoded or is too large,
    /// [`AskError::Closed`] when the master is gone. Delivery is not confirmed; use
    /// [`tell_worker_acked`](Self::tell_worker_acked) for that.
    pub fn tell_worker(&self, id: WorkerId, msg: &A::Msg) -> Result<(), AskError> {
        let payload = encode(msg)?;
        let to = id as u64;
        if !self.asks.windows.has_room(to, payload.len()) {
            return Err(AskError::Backpressure(id));
        }
        self.push(&Envelope::Send {
            to: Route::Worker(to),
            ack: None,
            payload: &payload,
        })?;
        self.asks.windows.sent(to, payload.len());
        Ok(())
    }

    /// As [`tell_worker`](Self::tell_worker), and resolves once worker `id` has received the
    /// message (Node's `send(msg, callback)`).
    ///
    /// # Errors
    /// [`AskError::NoSuchWorker`], [`AskError::NotRunning`], [`AskError::Backpressure`] (its
    /// outbox is full), [`AskError::WorkerDied`], [`AskError::Timeout`], and those of
    /// [`tell_worker`](Self::tell_worker).
    pub async fn tell_worker_acked(
        &self,
        id: WorkerId,
        msg: &A::Msg,
        timeout: Duration,
    ) -> Result<(), AskError> {
        let payload = encode(msg)?;
        self.ask_with(timeout, |ack, push| {
            push(&Envelope::Send {
                to: Route::Worker(id as u64),
                ack: Some(ack),
                payload: &payload,
            })
        })
        .await
        .map(drop)
    }

    /// Asks worker `id` (a worker of the same type) and awaits its typed reply; the receiver
    /// handles it with its `handle` hook and sees this worker as its sender.
    ///
    /// A worker handles one message at a time: two workers asking each other at once wait for
    /// each other until one request times out.
    ///
    /// # Errors
    /// [`AskError::Timeout`], [`AskError::NoSuchWorker`], [`AskError::NotRunning`],
    /// [`AskError::WorkerDied`], [`AskError::Failed`] (e.g. the request did not decode as the
    /// receiver's type), [`AskError::Backpressure`], [`AskError::BadReply`].
    pub async fn ask_worker(
        &self,
        id: WorkerId,
        msg: &A::Msg,
        timeout: Duration,
    ) -> Result<A::Reply, AskError> {
        let payload = encode(msg)?;
        let bytes = self
            .ask_with(timeout, |ask, push| {
                push(&Envelope::Ask {
                    id: ask,
                    to: Route::Worker(id as u64),
                    payload: &payload,
                })
            })
            .await?;
        decode(&bytes)
    }

    /// Asks worker `id` of node `node` (a cluster that spans hosts, see
    /// [`backend`](crate::backend)) and awaits its typed reply. A worker of this node (`node`
    /// is this node's name) is asked on the local path, as [`ask_worker`](Self::ask_worker)
    /// does; another node's through Redis, at most once: the request is never handled twice,
    /// and an answer lost on the way ends as [`AskError::Timeout`].
    ///
    /// # Errors
    /// Those of [`ask_worker`](Self::ask_worker), and [`AskError::NoSuchNode`] (no live node of
    /// that name, or no backend), [`AskError::NodeGone`] (it left, or restarted with a new
    /// epoch, before it answered), [`AskError::BackendUnavailable`] (Redis cannot be reached
    /// now): each as soon as it is known, not at the timeout.
    pub async fn ask_worker_on(
        &self,
        node: &str,
        id: WorkerId,
        msg: &A::Msg,
        timeout: Duration,
    ) -> Result<A::Reply, AskError> {
        let payload = encode(msg)?;
        let timeout_ms = timeout.as_millis().try_into().unwrap_or(u64::MAX);
        let bytes = self
            .ask_with(timeout, |ask, push| {
                push(&Envelope::Ask {
                    id: ask,
                    to: Route::Node {
                        node,
                        worker: id as u64,
                        timeout_ms,
                    },
                    payload: &payload,
                })
            })
            .await?;
        decode(&bytes)
    }

    /// Sends a one-way message to worker `id` of node `node`, which handles it with its `tell`
    /// hook. To this node's own workers it goes the local path; to another node's through
    /// Redis, **at most once**: a node that is down or cut off from Redis when it is published
    /// never gets it, and nothing tells the sender (use
    /// [`ask_worker_on`](Self::ask_worker_on) when it must be known).
    ///
    /// # Errors
    /// [`AskError::Invalid`] (cannot be encoded, too large), [`AskError::Closed`]. A node that
    /// is unknown or unreachable is not reported here: the message is dropped (and logged by
    /// the master).
    pub fn tell_worker_on(&self, node: &str, id: WorkerId, msg: &A::Msg) -> Result<(), AskError> {
        let payload = encode(msg)?;
        self.push(&Envelope::Send {
            to: Route::Node {
                node,
                worker: id as u64,
                timeout_ms: 0,
            },
            ack: None,
            payload: &payload,
        })
    }

    /// Asks the master and awaits its answer: the request is this worker type's `Event`, the
    /// answer its [`MasterReply`](WorkerActor::MasterReply), given by the handler registered
    /// with [`ClusterBuilder::on_request`](crate::ClusterBuilder::on_request) (or
    /// [`GroupHandlers::on_request`](crate::GroupHandlers::on_request)), which the types make
    /// answer with that type.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use procactor::prelude::*;
    /// struct Counter;
    ///
    /// impl WorkerActor for Counter {
    ///     type Msg = ();
    ///     type Reply = ();
    ///     type Event = String;
    ///     type MasterReply = i64; // the master answers with a number
    ///
    ///     async fn handle(&mut self, _: (), ctx: &mut WorkerContext<Self>) {
    ///         let timeout = Duration::from_secs(1);
    ///         let n: i64 = ctx.peers().ask_master(&"hi".to_string(), timeout).await.unwrap();
    ///         assert!(n >= 0);
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    /// [`AskError::NoHandler`] when the master registered none, [`AskError::Failed`] when the
    /// master's handler is gone, [`AskError::BadReply`] when the answer does not decode (a master
    /// built from other types), [`AskError::Timeout`], [`AskError::Closed`].
    pub async fn ask_master(
        &self,
        msg: &A::Event,
        timeout: Duration,
    ) -> Result<A::MasterReply, AskError> {
        let payload = encode(msg)?;
        let bytes = self
            .ask_with(timeout, |ask, push| {
                push(&Envelope::Ask {
                    id: ask,
                    to: Route::Master,
                    payload: &payload,
                })
            })
            .await?;
        decode(&bytes)
    }

    /// Sends a one-way message to every other worker.
    ///
    /// # Errors
    /// As [`tell_worker`](Self::tell_worker).
    pub fn broadcast(&self, msg: &A::Msg) -> Result<(), AskError> {
        let payload = encode(msg)?;
        self.push(&Envelope::Send {
            to: Route::All,
            ack: None,
            payload: &payload,
        })
    }

    /// Sends a one-way message to every member of `group` but this worker.
    ///
    /// # Errors
    /// As [`tell_worker`](Self::tell_worker).
    pub fn publish(&self, group: &str, msg: &A::Msg) -> Result<(), AskError> {
        let payload = encode(msg)?;
        self.push(&Envelope::Send {
            to: Route::Group(group),
            ack: None,
            payload: &payload,
        })
    }

    /// Joins topic `group`; messages published to it after this resolves reach this worker. A
    /// worker's memberships end with its process. A worker is a member of its own supervision
    /// group's topic from its start: joining that one does nothing (see [`ClusterInfo`'s
    /// Groups](crate::ClusterInfo#groups)).
    ///
    /// # Errors
    /// [`AskError::Invalid`] past 1024 topics or for a name over 1 KiB (README's Bounds),
    /// [`AskError::Timeout`] (10 s), [`AskError::Closed`].
    pub async fn join(&self, group: &str) -> Result<(), AskError> {
        self.system(SystemOp::Join(group), Duration::from_secs(10))
            .await
    }

    /// Leaves topic `group`; nothing published to it after this resolves reaches this worker.
    /// Its own supervision group's topic cannot be left: leaving it does nothing.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub async fn leave(&self, group: &str) -> Result<(), AskError> {
        self.system(SystemOp::Leave(group), Duration::from_secs(10))
            .await
    }

    /// Confirms `key` (clustr-node's confirmations): counts toward every
    /// [`await_confirmations`](Self::await_confirmations) of that key.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub async fn confirm(&self, key: &str) -> Result<(), AskError> {
        self.system(SystemOp::Confirm(key), Duration::from_secs(10))
            .await
    }

    /// Waits until `n` workers have confirmed `key`, and returns which (in the order they
    /// confirmed).
    ///
    /// # Errors
    /// [`AskError::Timeout`] when fewer have confirmed within `timeout`.
    pub async fn await_confirmations(
        &self,
        key: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<WorkerId>, AskError> {
        let op = SystemOp::AwaitConfirmations {
            key,
            n: n.try_into().unwrap_or(u32::MAX),
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        };
        // The master enforces the timeout; allow for the trip.
        self.system(op, timeout + Duration::from_secs(5)).await
    }

    /// The cluster: the master's pid, every worker's pid, state, generation, uptime and
    /// restarts, and the groups.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub async fn cluster_info(&self) -> Result<ClusterInfo, AskError> {
        self.system(SystemOp::Info, Duration::from_secs(10)).await
    }

    /// Every worker's traffic counters, CPU time and memory.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub async fn cluster_stats(&self) -> Result<Vec<WorkerStats>, AskError> {
        self.system(SystemOp::Stats, Duration::from_secs(10)).await
    }

    /// Kills worker `id` (its restart policy decides what follows), where the cluster permits
    /// it ([`ClusterConfig::worker_control`](crate::ClusterConfig::worker_control)).
    ///
    /// # Errors
    /// [`AskError::NotPermitted`], [`AskError::NoSuchWorker`], and as [`join`](Self::join).
    pub async fn kill_worker(&self, id: WorkerId) -> Result<(), AskError> {
        self.system(SystemOp::Kill(id as u64), Duration::from_secs(30))
            .await
    }

    /// Ends worker `target` (by id or pid; clustr-node's `emitKill(pid, exitCode)`), where the
    /// cluster permits it ([`ClusterConfig::worker_control`](crate::ClusterConfig::worker_control)):
    /// gracefully with an exit status (it runs its `stopping` hook; the restart policy decides
    /// by the status) or at once. Resolves with how its process ended. The master's pid stops
    /// the cluster, as [`stop_cluster`](Self::stop_cluster) does.
    ///
    /// # Errors
    /// [`AskError::NotPermitted`], [`AskError::NoSuchWorker`], [`AskError::Invalid`] for a pid
    /// that is no worker's, [`AskError::NotRunning`] when no process of it runs, and as
    /// [`join`](Self::join).
    pub async fn end_worker(
        &self,
        target: crate::Target,
        ending: crate::Ending,
        timeout: Duration,
    ) -> Result<crate::ExitReason, AskError> {
        self.system(SystemOp::End { target, ending }, timeout).await
    }

    /// Stops the whole cluster gracefully (this worker too), where the cluster permits it
    /// ([`ClusterConfig::worker_control`](crate::ClusterConfig::worker_control)); resolves once
    /// the stop has begun.
    ///
    /// # Errors
    /// [`AskError::NotPermitted`], and as [`join`](Self::join).
    pub async fn stop_cluster(&self) -> Result<(), AskError> {
        self.system(SystemOp::StopCluster, Duration::from_secs(30))
            .await
    }

    /// Replaces worker `id` with a new process, gracefully and with no gap, where the cluster
    /// permits it ([`ClusterConfig::worker_control`](crate::ClusterConfig::worker_control)).
    ///
    /// # Errors
    /// As [`kill_worker`](Self::kill_worker), and [`AskError::Failed`] when the replacement
    /// failed (the old process still serves).
    pub async fn restart_worker(&self, id: WorkerId, timeout: Duration) -> Result<(), AskError> {
        self.system(SystemOp::Restart(id as u64), timeout).await
    }

    /// As [`WorkerContext::request_reload`](crate::WorkerContext::request_reload): asks for a
    /// rolling reload and returns once the master has accepted or refused it.
    ///
    /// # Errors
    /// As [`WorkerContext::request_reload`](crate::WorkerContext::request_reload).
    pub async fn request_reload(&self) -> Result<(), AskError> {
        self.system(SystemOp::RequestReload, Duration::from_secs(10))
            .await
    }

    /// Reloads the whole cluster (rolling) and awaits the outcome, where the cluster permits
    /// it ([`ClusterConfig::worker_reload`](crate::ClusterConfig::worker_reload)). This worker
    /// is replaced too: call it from a task, not from a handler that must return first.
    ///
    /// # Errors
    /// [`AskError::NotPermitted`], [`AskError::Failed`] with the reload's error.
    pub async fn reload_cluster(&self, timeout: Duration) -> Result<(), AskError> {
        self.system(SystemOp::Reload, timeout).await
    }
}

impl<A: WorkerActor> CacheTransport for WorkerHandle<A> {
    async fn call(&self, op: CacheOp) -> Result<CacheAnswer, CacheError> {
        // No timer per operation: the master serves every cache operation (a lock's wait is
        // bounded by the master), and a closed channel fails them all.
        let bytes = self
            .ask_with(Duration::MAX, |id, push| {
                push(&Envelope::System {
                    id,
                    op: SystemOp::Cache(op),
                })
            })
            .await
            .map_err(|e| CacheError::Unreachable(e.to_string()))?;
        decode_value::<Result<CacheAnswer, CacheError>>(&bytes)
            .map_err(|e| CacheError::Codec(e.to_string()))?
    }

    async fn subscribe(
        &self,
        collection: &str,
        prefix: &str,
    ) -> Result<Subscription<Self>, CacheError> {
        let (id, rx) = self.asks.subscribe();
        let op = CacheOp::Subscribe {
            id,
            collection: collection.into(),
            prefix: prefix.into(),
        };
        if let Err(e) = self.call(op).await {
            self.asks.unsubscribe(id);
            return Err(e);
        }
        Ok(Subscription::new(self.clone(), id, rx))
    }

    fn send_and_forget(&self, op: CacheOp) {
        if let CacheOp::Unsubscribe { id } = &op {
            self.asks.unsubscribe(*id);
        }
        // An id nobody waits on: the answer is dropped when it comes.
        let (id, _rx) = self.asks.open();
        self.asks.close(id);
        let _ = self.push(&Envelope::System {
            id,
            op: SystemOp::Cache(op),
        });
    }
}
