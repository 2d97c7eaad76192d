//! What the relay worker and its master say to each other: the commands and messages it
//! accepts ([`RelayMsg`]), its answers ([`RelayReply`]) and the environment variables that
//! shape it at start.

use std::collections::BTreeMap;

use procactor::{AskError, ClusterInfo, Peer, Via, WorkerId, WorkerStats};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// With `n` in this variable, a relay worker starts a cluster of `n` relay workers of its own
/// when it starts (a supervision tree): they die with it, and when its cluster gives up, it
/// exits with status 1, which its own supervisor sees as an abnormal exit.
pub(crate) const LEAVES_ENV: &str = "PROCACTOR_RELAY_LEAVES";

/// With `g` in this variable, a relay worker of generation `g` or later exits with status 2 as
/// it starts (a crash loop, for escalation tests).
pub(crate) const CRASH_FROM_ENV: &str = "PROCACTOR_RELAY_CRASH_FROM";

/// What the relay worker accepts: commands from the master, and messages from its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RelayMsg {
    /// Command: tell worker `to` a [`Note`](RelayMsg::Note).
    TellPeer {
        /// The receiver.
        to: WorkerId,
        /// The note.
        text: String,
    },
    /// Command: tell `count` numbered notes `"<prefix><n>"` to worker `to`, in order.
    TellMany {
        /// The receiver.
        to: WorkerId,
        /// The text before each number.
        prefix: String,
        /// How many.
        count: u64,
    },
    /// Command: tell worker `to` a note and await its delivery acknowledgement.
    TellPeerAcked {
        /// The receiver.
        to: WorkerId,
        /// The note.
        text: String,
    },
    /// Command: ask worker `to` to [`Echo`](RelayMsg::Echo) `text`.
    AskPeer {
        /// The receiver.
        to: WorkerId,
        /// What it echoes.
        text: String,
        /// The request's timeout.
        timeout_ms: u64,
    },
    /// Command: ask worker `to` `count` requests of `bytes` bytes each, all at once; answers
    /// how many were refused with [`AskError::Backpressure`] and how many succeeded.
    Flood {
        /// The receiver.
        to: WorkerId,
        /// How many requests.
        count: usize,
        /// Payload size of each.
        bytes: usize,
    },
    /// Command: ask worker `to` a message it cannot decode ([`RelayMsg::Undecodable`]).
    AskGarbage {
        /// The receiver.
        to: WorkerId,
    },
    /// Command: ask the master (its `on_request` handler) with this text.
    AskMaster(String),
    /// Command: send a note to every other worker.
    Broadcast(String),
    /// Command: publish a note to a group.
    Publish {
        /// The group.
        group: String,
        /// The note.
        text: String,
    },
    /// Command: join a group.
    Join(String),
    /// Command: leave a group.
    Leave(String),
    /// Command: confirm a key.
    Confirm(String),
    /// Command: wait for `n` confirmations of a key.
    AwaitConfirmations {
        /// The key.
        key: String,
        /// How many.
        n: usize,
        /// The timeout.
        timeout_ms: u64,
    },
    /// Command: the cluster's info.
    Info,
    /// Command: every worker's stats.
    Stats,
    /// Command: kill worker `id`.
    Kill(WorkerId),
    /// Command: replace worker `id`.
    Restart(WorkerId),
    /// Command: end a worker (`WorkerHandle::end_worker`); answers `Done` or `Failed`.
    End {
        /// Which worker.
        target: procactor::Target,
        /// How.
        ending: procactor::Ending,
    },
    /// Command: stop the whole cluster (`WorkerHandle::stop_cluster`).
    StopCluster,
    /// Command: block this process's thread (no reading, no heartbeats) for this many ms.
    Block(u64),
    /// Command: exit the process at once with status 1.
    Die,
    /// From a peer: a one-way note, recorded.
    Note(String),
    /// From a peer: answer [`RelayReply::Echoed`].
    Echo(String),
    /// From a peer: exit at once while handling it.
    DieWhileHandling,
    /// What this worker has received so far.
    Log,
    /// Forget what this worker has received.
    Clear,
    /// This worker's pid.
    Pid,
    /// Cache: increments `key` `times` times, one after another.
    CacheIncrement {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// How many times.
        times: u64,
    },
    /// Cache: sets `key` to `value` (a string), for `ttl_ms` if given.
    CacheSet {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live.
        ttl_ms: Option<u64>,
    },
    /// Cache: writes `count` keys `<prefix><n>` = n, then deletes every tenth.
    CacheBurst {
        /// The collection.
        collection: String,
        /// The key prefix.
        prefix: String,
        /// How many.
        count: u64,
    },
    /// Cache: `times` times, takes lock `lock`, reads the number at `key`, writes it plus one
    /// (a read-modify-write that only the lock makes safe) and releases the lock.
    CacheLockedIncrement {
        /// The lock.
        lock: String,
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// How many times.
        times: u64,
    },
    /// Cache: takes lock `lock` (lease 60 s) and keeps it.
    CacheHoldLock(String),
    /// Cache: waits for lock `lock` at most `wait_ms`, answers how long it waited (`Int`, ms),
    /// then releases it.
    CacheLockWait {
        /// The lock.
        lock: String,
        /// The wait.
        wait_ms: u64,
    },
    /// Cache: subscribes to `collection` under `prefix`, keeping the subscription.
    CacheSubscribe {
        /// The collection.
        collection: String,
        /// The prefix.
        prefix: String,
    },
    /// Cache: the events received on the subscription so far, as (key, change) texts.
    CacheEvents,
    /// Cache: keeps a replica of `collection` (values are numbers).
    CacheReplica(String),
    /// Cache: the replica's current entries.
    CacheReplicaState,
    /// Logs: an `ip` record per text, `history` and `error` records, `tracing` events at info
    /// (with fields `user` and `n`) and at error level, each tagged with `tag`.
    LogAll {
        /// A tag in every record.
        tag: String,
        /// How many `ip` records.
        ips: u32,
    },
    /// The value of an environment variable of this process, as `Entries` of one (absent: none).
    Env(String),
    /// This worker's group and arguments, as `Events` of ("group", name) and ("arg", each).
    Identity,
    /// The pids of this worker's own workers (see [`LEAVES_ENV`]).
    LeafPids,
    /// Kills this worker's own worker `id` (its sub-cluster restarts it per policy).
    KillLeaf(WorkerId),
    /// Logs `count` `ip` records, as fast as it can.
    LogMany(u64),
    /// Writes `mb` megabytes of 100-byte lines to stderr, as fast as it can.
    StderrFlood {
        /// How many megabytes.
        mb: u64,
    },
    /// Writes these raw bytes to stderr (no newline added).
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Writes a line to stderr, then aborts the process at once.
    StderrThenAbort(String),
    /// Cache: `count` operations (3 gets to 1 set, on 1 000 keys), at most `window` of them
    /// in flight at once (sent to the master, in batches); with `near`, through a near-cache,
    /// which answers the reads it holds at once; answers operations per second (`Int`).
    CacheBench {
        /// The collection.
        collection: String,
        /// How many operations.
        count: u64,
        /// How many in flight.
        window: usize,
        /// Through a near-cache.
        near: bool,
    },
    /// Cache: opens a near-cache of `collection` of at most `max_entries` entries, kept for
    /// the `Near*` commands.
    NearOpen {
        /// The collection.
        collection: String,
        /// Its bound.
        max_entries: usize,
    },
    /// Cache: reads `key` (a number) through the near-cache; answers `NearRead`.
    NearGet(String),
    /// Cache: sets `key` to `value` through the near-cache, for `ttl_ms` if given.
    NearSet {
        /// The key.
        key: String,
        /// The value.
        value: u64,
        /// Its time to live.
        ttl_ms: Option<u64>,
    },
    /// Cache: the near-cache's figures; answers `NearStats`.
    NearStats,
    /// Cache: sets `key` of `collection` to `from`, `from + 1`, ... (`count` values), and
    /// after each write is answered tells worker `to` a [`NearCheck`](RelayMsg::NearCheck) of
    /// that value.
    SetThenTell {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The first value.
        from: u64,
        /// How many writes.
        count: u64,
        /// Who checks them.
        to: WorkerId,
    },
    /// From a peer: reads `key` through the near-cache and records a note: `ok <value>
    /// local|fetched` when it is at least `at_least`, else `stale <value> < <at_least>`.
    NearCheck {
        /// The key.
        key: String,
        /// What it must be at least.
        at_least: u64,
    },
    /// Encodes, but never decodes: what [`AskGarbage`](RelayMsg::AskGarbage) sends.
    Undecodable(Undecodable),
}

/// A note the relay worker received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Received {
    /// Who sent it, as stamped by the master.
    pub(crate) from: Peer,
    /// How it came.
    pub(crate) via: Via,
    /// The note.
    pub(crate) text: String,
}

/// What the relay worker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RelayReply {
    /// The command succeeded.
    Done,
    /// The command failed with this error.
    Failed(AskError),
    /// To `Echo`: who echoed, who asked (as stamped by the master) and the text.
    Echoed {
        /// The echoing worker.
        by: WorkerId,
        /// The asker.
        from: Peer,
        /// The text.
        text: String,
    },
    /// To `AskMaster`: the master's answer.
    Text(String),
    /// To `Flood`.
    Flooded {
        /// Answered requests.
        ok: usize,
        /// Requests refused with backpressure.
        backpressure: usize,
        /// Other failures.
        other: Vec<String>,
    },
    /// To `AwaitConfirmations`.
    Confirmed(Vec<WorkerId>),
    /// To `Info`.
    Info(Box<ClusterInfo>),
    /// To `Stats`.
    Stats(Vec<WorkerStats>),
    /// To `Log`.
    Log(Vec<Received>),
    /// To `Pid`.
    Pid(u32),
    /// A number.
    Int(i64),
    /// (key, change) pairs, to `CacheEvents`.
    Events(Vec<(String, String)>),
    /// To `CacheReplicaState`.
    Entries(BTreeMap<String, u64>),
    /// To `NearGet`: the value, and whether the near-cache answered it (not the master).
    NearRead {
        /// The value.
        value: Option<u64>,
        /// Answered by the near-cache.
        local: bool,
    },
    /// To `NearStats`: hits, misses, entries, invalidations, resets.
    NearStats([u64; 5]),
}

/// A message part that encodes as nothing and never decodes, so that a [`RelayMsg`] holding it
/// reaches its receiver as bytes that do not decode as the receiver's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Undecodable;

impl Serialize for Undecodable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("undecodable on purpose"))
    }
}
