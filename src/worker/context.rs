//! What a worker's hooks can reach: its identity and the channel to the master.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use crate::error::FrameError;
use crate::messaging::{Peer, Via};
use crate::protocol::Envelope;
use crate::state::WorkerId;
use crate::worker::asks::Asks;
use crate::worker::identity::Identity;
use crate::worker::log::LogSender;
use crate::worker::uplink::Uplink;
use crate::worker::WorkerActor;

/// The context passed to every [`WorkerActor`] hook: who this worker is, who sent the message
/// being handled, and the way to everyone else ([`peers`](Self::peers)).
///
/// ```no_run
/// use std::time::Duration;
///
/// use procactor::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Msg { Hello, Relay(usize) }
///
/// struct Greeter;
///
/// impl WorkerActor for Greeter {
///     type Msg = Msg;
///     type Reply = String;
///     type Event = String;
///     type MasterReply = ();
///
///     async fn handle(&mut self, msg: Msg, ctx: &mut WorkerContext<Self>) -> String {
///         match msg {
///             Msg::Hello => format!("hello from worker {} of {}", ctx.id(), ctx.group()),
///             Msg::Relay(to) => {
///                 // Ask another worker; the master stamps who is asking.
///                 let peers = ctx.peers();
///                 match peers.ask_worker(to, &Msg::Hello, Duration::from_secs(1)).await {
///                     Ok(reply) => reply,
///                     Err(e) => {
///                         let _ = ctx.send_master(&format!("worker {to} did not answer: {e}"));
///                         String::new()
///                     }
///                 }
///             }
///         }
///     }
/// }
/// ```
pub struct WorkerContext<A> {
    outbox: Rc<Uplink>,
    peers: WorkerHandle<A>,
    sender: Peer,
    via: Via,
    group: String,
    identity: Identity,
    listeners: Vec<(String, OwnedFd)>,
    scratch: Vec<u8>,
    stop_requested: bool,
    _actor: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for WorkerContext<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerContext")
            .field("identity", &self.identity)
            .field("stop_requested", &self.stop_requested)
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> WorkerContext<A> {
    pub(crate) fn new(
        outbox: Rc<Uplink>,
        asks: Rc<Asks>,
        log: LogSender,
        identity: Identity,
        listeners: Vec<(String, OwnedFd)>,
    ) -> Self {
        Self {
            peers: WorkerHandle {
                outbox: Rc::clone(&outbox),
                asks,
                log,
                identity,
                _actor: PhantomData,
            },
            outbox,
            sender: Peer::Master,
            via: Via::Direct,
            group: std::env::var(crate::worker::env::GROUP)
                .unwrap_or_else(|_| crate::config::DEFAULT_GROUP.into()),
            identity,
            listeners,
            scratch: Vec::new(),
            stop_requested: false,
            _actor: PhantomData,
        }
    }

    /// This worker's slot id in its cluster.
    pub fn id(&self) -> WorkerId {
        self.identity.worker
    }

    /// Which process of its slot this is: 1 for the first, counting up at each respawn.
    pub fn generation(&self) -> u64 {
        self.identity.generation
    }

    /// The master's process id.
    pub fn master_pid(&self) -> u32 {
        self.identity.master_pid
    }

    /// The name of this worker's group ([`DEFAULT_GROUP`](crate::DEFAULT_GROUP) in a cluster
    /// started without groups).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Who sent the message being handled, as stamped by the master: [`Peer::Master`] for
    /// [`Call`](crate::Call) and [`Tell`](crate::Tell), the sending worker for messages from
    /// peers. A worker cannot claim to be another.
    pub fn sender(&self) -> Peer {
        self.sender
    }

    /// How the one-way message being handled came: directly, by broadcast, or to a group.
    pub fn via(&self) -> &Via {
        &self.via
    }

    /// Messaging with the master and the other workers: `tell_worker`, `ask_worker`,
    /// `ask_master`, `broadcast`, `publish`, `join`, `leave`, `confirm`,
    /// `await_confirmations`, `cluster_info`, `cluster_stats`, and the controls the cluster
    /// permits. See [`WorkerHandle`].
    pub fn peers(&self) -> &WorkerHandle<A> {
        &self.peers
    }

    pub(crate) fn set_origin(&mut self, sender: Peer, via: Via) {
        self.sender = sender;
        self.via = via;
    }

    /// The cluster's listening TCP socket `name` (see
    /// [`ClusterConfig::listen`](crate::ClusterConfig::listen)), shared with every other worker.
    ///
    /// Each call returns a new handle to the same socket. It is in blocking mode; for tokio, set
    /// it non-blocking and pass it to `tokio::net::TcpListener::from_std`; actix-web's
    /// `HttpServer::listen` takes it as it is.
    ///
    /// # Errors
    /// [`std::io::ErrorKind::NotFound`] when the cluster has no listener of that name,
    /// [`std::io::ErrorKind::InvalidInput`] when it is not a TCP socket.
    pub fn listener(&self, name: &str) -> std::io::Result<std::net::TcpListener> {
        let listener = std::net::TcpListener::from(self.listen_fd(name)?);
        match listener.local_addr() {
            Ok(_) => Ok(listener),
            Err(_) => Err(not_a(name, "TCP")),
        }
    }

    /// The cluster's listening Unix socket `name`, as [`listener`](Self::listener) for TCP.
    ///
    /// # Errors
    /// As [`listener`](Self::listener).
    pub fn unix_listener(&self, name: &str) -> std::io::Result<std::os::unix::net::UnixListener> {
        let listener = std::os::unix::net::UnixListener::from(self.listen_fd(name)?);
        match listener.local_addr() {
            Ok(addr) if addr.as_pathname().is_some() => Ok(listener),
            _ => Err(not_a(name, "Unix")),
        }
    }

    /// The names of the listening sockets this worker received, in order.
    pub fn listener_names(&self) -> Vec<&str> {
        self.listeners.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn listen_fd(&self, name: &str) -> std::io::Result<OwnedFd> {
        match self.listeners.iter().find(|(n, _)| n == name) {
            Some((_, fd)) => fd.try_clone(),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no listening socket named {name:?}"),
            )),
        }
    }

    /// Sends a one-way message to the master's handlers for this worker type.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the encoded event exceeds the frame limit,
    /// [`FrameError::Encode`] when it cannot be serialised, [`FrameError::Io`] when the channel to
    /// the master is closed. Nothing is sent then.
    pub fn send_master(&mut self, event: &A::Event) -> Result<(), FrameError> {
        self.outbox.push_event(&mut self.scratch, event)
    }

    /// Asks the master for a rolling reload of the whole cluster (cluster-rolling-restart's
    /// `/reload`), this worker included, and returns once the master has answered: `Ok` when it
    /// accepted (the reload starts, or queues behind the one running), an error when its config
    /// does not allow reloads from workers
    /// ([`ClusterConfig::worker_reload`](crate::ClusterConfig::worker_reload), off by default).
    ///
    /// It does not wait for the reload: this worker is replaced in it, after the handler that
    /// asked has returned. A process's requests after its first are the same request; to await
    /// the outcome, use [`WorkerHandle::reload_cluster`] from a task.
    ///
    /// # Errors
    /// [`AskError::NotPermitted`](crate::AskError::NotPermitted) saying that reloads from
    /// workers are off; [`AskError::Closed`](crate::AskError::Closed) when the master is gone;
    /// [`AskError::Timeout`](crate::AskError::Timeout) after 10 s without an answer.
    pub async fn request_reload(&self) -> Result<(), crate::error::AskError> {
        self.peers.request_reload().await
    }

    /// Log records for the cluster's logger (`ip`, `history`, `error`); the sender is `Send`,
    /// so threads of the worker (an HTTP server's) can keep a clone. `tracing` events of worker
    /// code become records too.
    pub fn log(&self) -> &LogSender {
        &self.peers.log
    }

    /// Ends the worker gracefully once the current hook returns: [`WorkerActor::stopping`] runs,
    /// then the process exits with status 0.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// A cloneable handle for tasks the worker spawns (e.g. to report from an HTTP handler, or
    /// to message other workers from a task).
    pub fn handle(&self) -> WorkerHandle<A> {
        self.peers.clone()
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    pub(crate) fn reply(&mut self, id: u64, reply: &A::Reply) {
        let result = self
            .outbox
            .push_value(&Envelope::Reply { id, payload: &[] }, reply)
            .or_else(|e| match e {
                FrameError::Io(_) => Err(e),
                e => self.outbox.push(&Envelope::Failed {
                    id,
                    error: &format!("reply not sent: {e}"),
                }),
            });
        if let Err(e) = result {
            tracing::debug!(id, error = %e, "reply not sent");
        }
    }

    pub(crate) fn fail(&mut self, id: u64, error: &str) {
        if let Err(e) = self.outbox.push(&Envelope::Failed { id, error }) {
            tracing::debug!(id, error = %e, "failure not sent");
        }
    }
}

/// A worker's link to the master and, through it, to the other workers: one-way messages,
/// requests, broadcast, groups, confirmations, cluster info. Cloneable, for tasks that a worker
/// spawns ([`WorkerContext::handle`]); not `Send`: it lives on the worker's thread.
pub struct WorkerHandle<A> {
    pub(crate) outbox: Rc<Uplink>,
    pub(crate) asks: Rc<Asks>,
    log: LogSender,
    identity: Identity,
    _actor: PhantomData<fn() -> A>,
}

impl<A> Clone for WorkerHandle<A> {
    fn clone(&self) -> Self {
        Self {
            outbox: Rc::clone(&self.outbox),
            asks: Rc::clone(&self.asks),
            log: self.log.clone(),
            identity: self.identity,
            _actor: PhantomData,
        }
    }
}

impl<A> WorkerHandle<A> {
    /// As [`WorkerContext::log`].
    pub fn log(&self) -> &LogSender {
        &self.log
    }
}

impl<A> fmt::Debug for WorkerHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> WorkerHandle<A> {
    /// This worker's slot id.
    pub fn id(&self) -> WorkerId {
        self.identity.worker
    }

    /// As [`WorkerContext::send_master`].
    ///
    /// # Errors
    /// As [`WorkerContext::send_master`].
    pub fn send_master(&self, event: &A::Event) -> Result<(), FrameError> {
        self.outbox.push_event(&mut Vec::new(), event)
    }
}

fn not_a(name: &str, kind: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("listening socket {name:?} is not a {kind} socket"),
    )
}
