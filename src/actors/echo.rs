//! The reference worker: answers pings, echoes bytes, counts one-way messages, and can be asked
//! to sleep, print to stdout, exit or message the master, so that tests and benchmarks can drive
//! every path of the runtime with it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::worker::{WorkerActor, WorkerContext};

/// What [`Echo`] accepts, as a request or as a one-way message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EchoMsg {
    /// Answers [`EchoReply::Pong`].
    Ping,
    /// Answers the same bytes.
    Echo(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Checks that sequence numbers arrive in order (per worker, requests and one-way alike).
    Seq(u64),
    /// Answers [`EchoReply::Stats`].
    Stats,
    /// Tells the master `"sleeping"` (an event), sleeps (asynchronously) for this many
    /// milliseconds, then answers `Done`.
    Sleep(u64),
    /// Writes the text to stdout with `println!`, then answers `Done`.
    Print(String),
    /// Sends the text to the master as an event, then answers `Done`.
    Emit(String),
    /// Answers its process id.
    Pid,
    /// Exits the process at once with this status.
    Exit(i32),
    /// Asks the master for a rolling reload of the cluster; answers `Done` when the master
    /// accepted, [`EchoReply::Error`] when it refused.
    RequestReload,
    /// Asks worker `to` `Ping` this many times, one after another, and answers the time each
    /// round trip took ([`EchoReply::Nanos`]), or the first error as [`EchoReply::Error`].
    PeerRoundTrips {
        /// The worker asked.
        to: crate::WorkerId,
        /// How many round trips.
        count: u32,
    },
    /// Answers this process's [`Role`](crate::Role) ([`EchoReply::Role`]).
    Role,
    /// Starts a cluster of its own (a supervision tree) of this many echo workers, this same
    /// program re-run, then answers `Done`; it stops them in `stopping`.
    Nest(usize),
    /// Asks worker `worker` of its own cluster ([`Nest`](EchoMsg::Nest)) `msg` and answers its
    /// reply.
    ToNested {
        /// The worker of its own cluster.
        worker: crate::WorkerId,
        /// What to ask it.
        msg: Box<EchoMsg>,
    },
    /// Asks worker `worker` of node `node` (a cluster that spans hosts) `msg` with
    /// [`ask_worker_on`](crate::WorkerHandle::ask_worker_on) (`timeout_ms`) and answers its
    /// reply, or the error as [`EchoReply::Error`]; with `tell`, sends it one-way
    /// ([`tell_worker_on`](crate::WorkerHandle::tell_worker_on)) and answers `Done`.
    OnNode {
        /// The node's name.
        node: String,
        /// The worker on it.
        worker: crate::WorkerId,
        /// What to send.
        msg: Box<EchoMsg>,
        /// Send one-way instead of asking.
        tell: bool,
        /// The request's timeout.
        timeout_ms: u64,
    },
    /// Confirms the key ([`confirm`](crate::WorkerHandle::confirm)), then answers `Done`.
    Confirm(String),
    /// Sends `msg` one-way to every other worker (`group: None`,
    /// [`broadcast`](crate::WorkerHandle::broadcast)) or to every member of `group`
    /// ([`publish`](crate::WorkerHandle::publish)), then answers `Done`.
    Fanout {
        /// The group, if any.
        group: Option<String>,
        /// What to send.
        msg: Box<EchoMsg>,
    },
}

/// What [`Echo`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EchoReply {
    /// To `Ping`.
    Pong,
    /// To `Echo`.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// To `Seq(n)`: `n` back, and whether it was the number expected next.
    Seq {
        /// The number received.
        n: u64,
        /// Whether it was one more than the previous one (or the first one seen).
        in_order: bool,
    },
    /// To `Stats`.
    Stats {
        /// One-way messages received so far.
        tells: u64,
        /// Payload bytes of one-way `Echo` messages received so far.
        bytes: u64,
        /// `Seq` numbers that arrived out of order so far.
        out_of_order: u64,
    },
    /// To `Sleep`, `Print` and `Emit`.
    Done,
    /// To `Pid`.
    Pid(u32),
    /// To `PeerRoundTrips`: each round trip, in nanoseconds.
    Nanos(Vec<u64>),
    /// To `Role`.
    Role(crate::Role),
    /// A command failed.
    Error(String),
}

/// The reference worker.
#[derive(Debug, Default)]
pub struct Echo {
    tells: u64,
    bytes: u64,
    next_seq: Option<u64>,
    out_of_order: u64,
    /// Its own cluster, once asked to start one ([`EchoMsg::Nest`]).
    nested: Option<crate::Cluster<Echo>>,
}

impl Echo {
    /// Answers a request as [`Echo`] does, for a worker of another type that keeps an `Echo`
    /// inside and adds behaviour around it (the fault-injection worker of the tests does): `ctx`
    /// is that worker's context.
    pub async fn answer<A>(&mut self, msg: EchoMsg, ctx: &mut WorkerContext<A>) -> EchoReply
    where
        A: WorkerActor<Msg = EchoMsg, Reply = EchoReply, Event = String>,
    {
        match msg {
            EchoMsg::Ping => EchoReply::Pong,
            EchoMsg::Echo(bytes) => EchoReply::Bytes(bytes),
            EchoMsg::Seq(n) => EchoReply::Seq {
                n,
                in_order: self.seq(n),
            },
            EchoMsg::Stats => EchoReply::Stats {
                tells: self.tells,
                bytes: self.bytes,
                out_of_order: self.out_of_order,
            },
            EchoMsg::Sleep(ms) => {
                let _ = ctx.send_master(&"sleeping".to_string());
                tokio::time::sleep(Duration::from_millis(ms)).await;
                EchoReply::Done
            }
            EchoMsg::Print(text) => {
                println!("{text}");
                EchoReply::Done
            }
            EchoMsg::Emit(text) => {
                if let Err(e) = ctx.send_master(&text) {
                    eprintln!("echo: cannot emit: {e}");
                }
                EchoReply::Done
            }
            EchoMsg::Pid => EchoReply::Pid(std::process::id()),
            EchoMsg::Exit(code) => std::process::exit(code),
            EchoMsg::PeerRoundTrips { to, count } => {
                let peers = ctx.peers();
                let mut nanos = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let t = std::time::Instant::now();
                    match peers
                        .ask_worker(to, &EchoMsg::Ping, Duration::from_secs(10))
                        .await
                    {
                        Ok(_) => nanos.push(t.elapsed().as_nanos() as u64),
                        Err(e) => return EchoReply::Error(e.to_string()),
                    }
                }
                EchoReply::Nanos(nanos)
            }
            EchoMsg::RequestReload => match ctx.request_reload().await {
                Ok(()) => EchoReply::Done,
                Err(e) => EchoReply::Error(e.to_string()),
            },
            EchoMsg::Role => EchoReply::Role(crate::role()),
            EchoMsg::Nest(n) => self.nest(n).await,
            EchoMsg::ToNested { worker, msg } => self.to_nested(worker, *msg).await,
            msg @ (EchoMsg::OnNode { .. } | EchoMsg::Confirm(_) | EchoMsg::Fanout { .. }) => {
                Self::others(msg, ctx).await
            }
        }
    }

    /// The messages that reach other workers (of this node or of others).
    async fn others<A>(msg: EchoMsg, ctx: &mut WorkerContext<A>) -> EchoReply
    where
        A: WorkerActor<Msg = EchoMsg, Reply = EchoReply, Event = String>,
    {
        let peers = ctx.peers();
        let sent = match msg {
            EchoMsg::OnNode {
                node,
                worker,
                msg,
                tell: true,
                ..
            } => peers
                .tell_worker_on(&node, worker, &msg)
                .map(|()| EchoReply::Done),
            EchoMsg::OnNode {
                node,
                worker,
                msg,
                timeout_ms,
                ..
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                peers.ask_worker_on(&node, worker, &msg, timeout).await
            }
            EchoMsg::Confirm(key) => peers.confirm(&key).await.map(|()| EchoReply::Done),
            EchoMsg::Fanout {
                group: Some(group),
                msg,
            } => peers.publish(&group, &msg).map(|()| EchoReply::Done),
            EchoMsg::Fanout { group: None, msg } => peers.broadcast(&msg).map(|()| EchoReply::Done),
            other => Ok(EchoReply::Error(format!(
                "not a message to others: {other:?}"
            ))),
        };
        sent.unwrap_or_else(|e| EchoReply::Error(e.to_string()))
    }

    /// Takes a one-way message as [`Echo`] does (counts it; an `Echo` only adds its bytes, any
    /// other message is handled as a request whose reply is dropped), for a worker of another
    /// type that keeps an `Echo` inside; see [`Echo::answer`].
    pub async fn take<A>(&mut self, msg: EchoMsg, ctx: &mut WorkerContext<A>)
    where
        A: WorkerActor<Msg = EchoMsg, Reply = EchoReply, Event = String>,
    {
        self.tells += 1;
        match msg {
            EchoMsg::Echo(bytes) => self.bytes += bytes.len() as u64,
            other => {
                let _ = self.answer(other, ctx).await;
            }
        }
    }

    /// Starts its own cluster of `n` workers of this program.
    async fn nest(&mut self, n: usize) -> EchoReply {
        if self.nested.is_some() {
            return EchoReply::Error("it runs a cluster already".into());
        }
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(e) => return EchoReply::Error(e.to_string()),
        };
        let config = crate::ClusterConfig::new()
            .workers(n)
            .exec(program)
            .handle_signals(false);
        match crate::ClusterSupervisor::start::<Echo>(config).await {
            Ok(cluster) => {
                self.nested = Some(cluster);
                EchoReply::Done
            }
            Err(e) => EchoReply::Error(e.to_string()),
        }
    }

    /// Asks worker `worker` of its own cluster.
    async fn to_nested(&self, worker: crate::WorkerId, msg: EchoMsg) -> EchoReply {
        let Some(cluster) = &self.nested else {
            return EchoReply::Error("it runs no cluster of its own".into());
        };
        let addr = match cluster.try_worker(worker) {
            Ok(addr) => addr,
            Err(e) => return EchoReply::Error(e.to_string()),
        };
        match addr.send(crate::Call(msg)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => EchoReply::Error(e.to_string()),
            Err(e) => EchoReply::Error(e.to_string()),
        }
    }

    fn seq(&mut self, n: u64) -> bool {
        let in_order = self.next_seq.is_none_or(|next| next == n);
        if !in_order {
            self.out_of_order += 1;
        }
        self.next_seq = Some(n + 1);
        in_order
    }
}

impl WorkerActor for Echo {
    type Msg = EchoMsg;
    type Reply = EchoReply;
    type Event = String;
    type MasterReply = String;

    async fn handle(&mut self, msg: EchoMsg, ctx: &mut WorkerContext<Self>) -> EchoReply {
        self.answer(msg, ctx).await
    }

    async fn tell(&mut self, msg: EchoMsg, ctx: &mut WorkerContext<Self>) {
        self.take(msg, ctx).await;
    }

    async fn stopping(&mut self, _ctx: &mut WorkerContext<Self>) {
        eprintln!("echo: stopping after {} one-way messages", self.tells);
        if let Some(nested) = self.nested.take() {
            if let Err(e) = nested.stop().await {
                eprintln!("echo: its own cluster did not stop cleanly: {e}");
            }
        }
    }
}
