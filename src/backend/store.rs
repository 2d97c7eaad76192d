//! The cluster-wide cache's side in Redis: its keys, its Lua scripts, how values and change
//! events are laid out, and the queue that sends the cache's operations to Redis in order.
//!
//! The cache (`cache/remote.rs`) turns each operation into commands and hands them to a
//! [`StoreQueue`]; one task on the master's loop takes what has queued up, sends it as one
//! pipeline through the `procactor-redis` thread ([`Redis::run`]) and hands each operation its
//! answers. One pipeline is in flight at a time, so the commands reach Redis in the order they
//! were queued: a worker's set then get sees its set. Under load the pipelines grow (up to
//! [`MAX_PIPELINE`] commands), so the cost per operation falls, as with ioredis's
//! auto-pipelining. Each pipeline is bounded by the cluster's heartbeat (Redis answering, or
//! the connection coming back): past it every operation in it fails with the reason, and the
//! connection is made anew for the next one.
//!
//! # Layout
//! | key | type | what |
//! |---|---|---|
//! | `procactor:{<cluster>}:cache:<collection>:<key>` | string, `PX` for a time to live | a value: `v` then its postcard bytes; a counter: its decimal text (Redis's `INCRBY` form) |
//! | `procactor:{<cluster>}:lock:<name>` | string, `PX` lease | `<fencing token>:<node>` |
//! | `procactor:{<cluster>}:fence` | string | the fencing counter: `INCR` at every grant; starts at the server's clock in µs |
//! | `procactor:{<cluster>}:cache:events` | pub/sub channel | one message per change (below) |
//!
//! In a collection's name `%` and `:` are written `%25` and `%3A`, so that no two
//! (collection, key) pairs share a key. A change event is one byte of kind (`S` set, `D`
//! deleted, `X` expired by `expire(…, 0)`), the collection and the key each as
//! `<length>:<bytes>`, then (for `S`) the value as stored; `L<name>` says a lock was released.
//! Every write publishes its event from the script that writes, in one atomic step.
//!
//! Counters are decimal text so that Redis adds them (`INCRBY`: exact over the whole `i64`
//! range, overflow refused); the cache converts them to and from the postcard `i64` its
//! client decodes, at this seam. An `increment` of a value `set` as a postcard integer turns
//! it into a counter first (in Lua, up to 2^49 in magnitude; beyond, `NotAnInteger`).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use redis::{Cmd, Script, Value};
use tokio::sync::{mpsc, oneshot};

use super::claim::Claim;
use super::config::Backend;
use super::conn::Redis;

/// Commands one pipeline holds at most.
pub(crate) const MAX_PIPELINE: usize = 1024;
/// Operations queued or in flight at most: past it, operations are refused.
pub(crate) const MAX_IN_FLIGHT: usize = 8192;

/// What the cache needs of the backend: the connection, the keys, this node's name.
#[derive(Debug, Clone)]
pub(crate) struct StoreLink {
    redis: Redis,
    prefix: String,
    node: String,
    /// How long one pipeline may take.
    bound: Duration,
}

impl StoreLink {
    /// The link for the cluster's cache, unless `backend` keeps the cache on this node.
    pub(crate) fn new(claim: &Claim, backend: &Backend) -> Option<Self> {
        if backend.redis_config().local_cache {
            return None;
        }
        Some(Self {
            redis: claim.redis.clone(),
            prefix: format!("procactor:{{{}}}:", claim.settings.cluster),
            node: claim.settings.name.clone(),
            bound: claim.settings.heartbeat.max(Duration::from_millis(500)),
        })
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// The key of `key` in `collection`.
    pub(crate) fn key(&self, collection: &str, key: &str) -> String {
        format!("{}{key}", self.collection_prefix(collection))
    }

    /// What every key of `collection` starts with.
    fn collection_prefix(&self, collection: &str) -> String {
        let escaped = collection.replace('%', "%25").replace(':', "%3A");
        format!("{}cache:{escaped}:", self.prefix)
    }

    /// A `SCAN … MATCH` pattern for the keys of `collection` that start with `prefix`, and
    /// what to strip from each key found.
    pub(crate) fn pattern(&self, collection: &str, prefix: &str) -> (String, usize) {
        let literal = self.collection_prefix(collection);
        let mut pattern = String::with_capacity(literal.len() + prefix.len() + 1);
        for c in literal.chars().chain(prefix.chars()) {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        (pattern, literal.len())
    }

    /// A lock's key.
    pub(crate) fn lock_key(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }

    /// The fencing counter.
    pub(crate) fn fence_key(&self) -> String {
        format!("{}fence", self.prefix)
    }

    /// The channel of change events.
    pub(crate) fn events(&self) -> String {
        format!("{}cache:events", self.prefix)
    }

    /// Subscribes to the change events, resubscribing after a loss.
    pub(crate) fn subscribe(
        &self,
        tx: mpsc::UnboundedSender<super::conn::Inbound>,
    ) -> super::conn::Subscription {
        self.redis.subscribe(self.events(), self.bound, tx)
    }

    /// Starts the queue's task on the current thread's `LocalSet` (the master's loop); it
    /// ends when the queue is dropped.
    pub(crate) fn start(&self) -> StoreQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_flight = Rc::new(Cell::new(0));
        tokio::task::spawn_local(dispatch(self.redis.clone(), self.bound, rx));
        StoreQueue { tx, in_flight }
    }
}

/// The commands of one operation, or a scan of keys (with their values).
#[derive(Debug)]
pub(crate) enum Job {
    /// Sent in a pipeline with others; answered with one value per command.
    Cmds(Vec<Cmd>),
    /// `SCAN` for the pattern, then (`values`) `MGET` of what it found: answered with two
    /// arrays, keys and values.
    Scan { pattern: String, values: bool },
}

/// Why Redis did not answer: the reason, for [`CacheError::Unavailable`](crate::cache::CacheError::Unavailable).
pub(crate) type JobAnswer = Result<Vec<Value>, String>;

type Queued = (Job, oneshot::Sender<JobAnswer>);

/// Where the cache queues its operations for Redis; see the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct StoreQueue {
    tx: mpsc::UnboundedSender<Queued>,
    in_flight: Rc<Cell<usize>>,
}

impl StoreQueue {
    /// Queues `job` now (so its place in line is taken now) and returns its answer to come;
    /// `None` when [`MAX_IN_FLIGHT`] operations are already queued or in flight.
    pub(crate) fn submit(
        &self,
        job: Job,
    ) -> Option<impl std::future::Future<Output = JobAnswer> + 'static> {
        if self.in_flight.get() >= MAX_IN_FLIGHT {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send((job, tx));
        self.in_flight.set(self.in_flight.get() + 1);
        // Counted out when answered or no longer awaited.
        let counted = InFlight(Rc::clone(&self.in_flight));
        Some(async move {
            let _counted = counted;
            rx.await
                .unwrap_or_else(|_| Err("the cache's Redis queue has stopped".into()))
        })
    }
}

/// One operation queued or in flight; dropped, it is counted out.
struct InFlight(Rc<Cell<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Takes what has queued up, sends it as one pipeline, answers each operation; a scan goes
/// alone, in its place in line.
async fn dispatch(mut redis: Redis, bound: Duration, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut next: VecDeque<Queued> = VecDeque::new();
    let mut loaded = false;
    loop {
        let first = match next.pop_front() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        if let Job::Scan { pattern, values } = first.0 {
            let answer = bounded(bound, scan(&redis, pattern, values)).await;
            settle(&mut redis, &answer, &mut loaded);
            let _ = first.1.send(answer);
            continue;
        }
        let mut batch = vec![first];
        let mut cmds = batch_len(&batch[0].0);
        while cmds < MAX_PIPELINE {
            match rx.try_recv() {
                Ok(job @ (Job::Scan { .. }, _)) => {
                    next.push_back(job);
                    break;
                }
                Ok(job) => {
                    cmds += batch_len(&job.0);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        send(&mut redis, bound, batch, &mut loaded).await;
    }
}

fn batch_len(job: &Job) -> usize {
    match job {
        Job::Cmds(cmds) => cmds.len(),
        Job::Scan { .. } => 1,
    }
}

/// Sends the operations of `batch` as one pipeline and hands each its answers.
async fn send(redis: &mut Redis, bound: Duration, batch: Vec<Queued>, loaded: &mut bool) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let skip = if *loaded { 0 } else { SCRIPTS.len() };
    if !*loaded {
        for source in SCRIPTS {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source);
        }
    }
    let mut sizes = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for (job, reply) in batch {
        if let Job::Cmds(cmds) = job {
            sizes.push(cmds.len());
            for cmd in cmds {
                pipe.add_command(cmd);
            }
        }
        replies.push(reply);
    }
    let answer = bounded(bound, async {
        redis
            .run(move |mut conn| async move { pipe.query_async::<Vec<Value>>(&mut conn).await })
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    settle(redis, &answer, loaded);
    match answer {
        Ok(values) => {
            let mut values = values.into_iter().skip(skip);
            for (size, reply) in sizes.into_iter().zip(replies) {
                let mine: Vec<Value> = values.by_ref().take(size).collect();
                if mine.iter().any(is_noscript) {
                    *loaded = false;
                }
                let _ = reply.send(Ok(mine));
            }
        }
        Err(reason) => {
            for reply in replies {
                let _ = reply.send(Err(reason.clone()));
            }
        }
    }
}

/// After an answer: the scripts are loaded; after a failure, they may not be (Redis may have
/// restarted), and the connection is made anew.
fn settle(redis: &mut Redis, answer: &JobAnswer, loaded: &mut bool) {
    match answer {
        Ok(_) => *loaded = true,
        Err(_) => {
            *loaded = false;
            let _ = redis.reconnect();
        }
    }
}

fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

async fn bounded(bound: Duration, call: impl std::future::Future<Output = JobAnswer>) -> JobAnswer {
    match tokio::time::timeout(bound, call).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("Redis did not answer within {bound:?}")),
    }
}

/// Keys that match `pattern`, and (`values`) their values.
async fn scan(redis: &Redis, pattern: String, values: bool) -> JobAnswer {
    redis
        .run(move |mut conn| async move {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(found);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            let mut got = Vec::new();
            if values {
                for chunk in keys.chunks(512) {
                    let part: Vec<Value> =
                        redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
                    got.extend(part);
                }
            }
            let keys = keys.into_iter().map(Value::BulkString).collect();
            Ok(vec![Value::Array(keys), Value::Array(got)])
        })
        .await
        .map_err(|e| e.to_string())
}

/// The scripts, in [`SCRIPTS`]' order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lua {
    Set,
    Delete,
    Expire,
    Increment,
    CompareAndSet,
    Lock,
    Renew,
    Unlock,
}

const SCRIPTS: [&str; 8] = [
    SET_LUA,
    DELETE_LUA,
    EXPIRE_LUA,
    INCREMENT_LUA,
    CAS_LUA,
    LOCK_LUA,
    RENEW_LUA,
    UNLOCK_LUA,
];

impl Lua {
    fn hash(self) -> &'static str {
        static HASHES: OnceLock<Vec<String>> = OnceLock::new();
        let hashes = HASHES.get_or_init(|| {
            SCRIPTS
                .iter()
                .map(|s| Script::new(s).get_hash().to_owned())
                .collect()
        });
        &hashes[self as usize]
    }

    /// `EVALSHA` of this script on `keys` with `args` (the queue loads the scripts first).
    pub(crate) fn call(self, keys: &[&str], args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.hash()).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }
}

const SET_LUA: &str = r"
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[3])
else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ARGV[3])
return 1";

const DELETE_LUA: &str = r"
local n = redis.call('DEL', KEYS[1])
if n == 1 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n";

const EXPIRE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] == '' then redis.call('PERSIST', KEYS[1])
elseif ARGV[3] == '0' then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[1], ARGV[2])
else redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1";

const INCREMENT_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) == 118 then
  local n, mul, len = 0, 1, string.len(v)
  if len < 2 or len > 8 then return redis.error_reply('NOTINT the value is not a small integer') end
  for i = 2, len do
    local b = string.byte(v, i)
    n = n + (b % 128) * mul
    mul = mul * 128
    if (b < 128) ~= (i == len) then return redis.error_reply('NOTINT the value is not an integer') end
  end
  if n % 2 == 0 then n = n / 2 else n = -(n + 1) / 2 end
  redis.call('SET', KEYS[1], string.format('%.0f', n), 'KEEPTTL')
end
local r = redis.pcall('INCRBY', KEYS[1], ARGV[3])
if type(r) == 'table' and r.err then return redis.error_reply('NOTINT ' .. r.err) end
local s = redis.call('GET', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. s)
return s";

const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[4] == '0' then
  if cur then return 0 end
elseif (not cur) or (cur ~= ARGV[5] and cur ~= ARGV[6]) then return 0 end
if ARGV[7] == '' then
  if cur then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', ARGV[1], ARGV[3])
  end
else
  if ARGV[8] == '' then redis.call('SET', KEYS[1], ARGV[7])
  else redis.call('SET', KEYS[1], ARGV[7], 'PX', ARGV[8]) end
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ARGV[7])
end
return 1";

const LOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) then return {0, redis.call('PTTL', KEYS[1])} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
end
redis.call('INCR', KEYS[2])
local token = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return {1, token}";

const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0";

/// The start of a change event: its kind, its collection and its key.
pub(crate) fn event_header(kind: u8, collection: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(collection.len() + key.len() + 12);
    out.push(kind);
    for part in [collection, key] {
        out.extend_from_slice(part.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A change event as published on the channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StoreEvent<'a> {
    /// `kind` (`S`, `D`, `X`) on a key; for `S`, the value as stored.
    Key {
        kind: u8,
        collection: &'a str,
        key: &'a str,
        stored: &'a [u8],
    },
    /// A lock was released.
    Released(&'a str),
}

/// Reads an event; `None` when it is not one.
pub(crate) fn parse_event(bytes: &[u8]) -> Option<StoreEvent<'_>> {
    let (&kind, mut rest) = bytes.split_first()?;
    if kind == b'L' {
        return std::str::from_utf8(rest).ok().map(StoreEvent::Released);
    }
    if !matches!(kind, b'S' | b'D' | b'X') {
        return None;
    }
    let mut part = || -> Option<&str> {
        let colon = rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let end = colon.checked_add(1)?.checked_add(len)?;
        let body = rest.get(colon + 1..end)?;
        rest = &rest[end..];
        std::str::from_utf8(body).ok()
    };
    let collection = part()?;
    let key = part()?;
    if kind != b'S' && !rest.is_empty() {
        return None;
    }
    Some(StoreEvent::Key {
        kind,
        collection,
        key,
        stored: rest,
    })
}

/// A value as stored: `v` then its postcard bytes.
pub(crate) fn to_stored(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(b'v');
    out.extend_from_slice(value);
    out
}

/// The value's postcard bytes from what is stored (a counter's decimal text becomes a postcard
/// `i64`); `None` when it is neither (not written by this crate).
pub(crate) fn from_stored(stored: &[u8]) -> Option<Vec<u8>> {
    match stored.first()? {
        b'v' => Some(stored[1..].to_vec()),
        b'-' | b'0'..=b'9' => {
            let n: i64 = std::str::from_utf8(stored).ok()?.parse().ok()?;
            Some(postcard_i64(n))
        }
        _ => None,
    }
}

/// `n` as the client encodes it (postcard).
pub(crate) fn postcard_i64(n: i64) -> Vec<u8> {
    postcard::to_allocvec(&n).unwrap_or_default()
}

/// `postcard` bytes of an `i64` as a counter's decimal text, if they are one.
pub(crate) fn counter_text(value: &[u8]) -> Option<String> {
    match postcard::take_from_bytes::<i64>(value) {
        Ok((n, [])) => Some(n.to_string()),
        _ => None,
    }
}

/// A time to live as Redis's `PX` (at least 1 ms).
pub(crate) fn px(ttl: Duration) -> String {
    let ms = ttl.as_millis().max(1);
    ms.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let mut set = event_header(b'S', "a:b", "k:1");
        set.extend_from_slice(b"v\x01\x02");
        assert_eq!(
            parse_event(&set),
            Some(StoreEvent::Key {
                kind: b'S',
                collection: "a:b",
                key: "k:1",
                stored: b"v\x01\x02",
            })
        );
        let del = event_header(b'D', "", "");
        assert!(matches!(
            parse_event(&del),
            Some(StoreEvent::Key { kind: b'D', .. })
        ));
        assert_eq!(parse_event(b"Lname"), Some(StoreEvent::Released("name")));
        let huge = b"S18446744073709551615:a";
        for bad in [
            &b""[..],
            b"Q1:a1:b",
            b"S9:a",
            b"Sx:a1:b",
            b"D1:a1:bjunk",
            huge,
        ] {
            assert_eq!(parse_event(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn values_and_counters_convert() {
        let seven = postcard_i64(7);
        assert_eq!(from_stored(&to_stored(&seven)), Some(seven.clone()));
        assert_eq!(from_stored(b"7"), Some(seven.clone()));
        assert_eq!(
            from_stored(b"-9223372036854775808"),
            Some(postcard_i64(i64::MIN))
        );
        assert_eq!(from_stored(b"\x01junk"), None);
        assert_eq!(from_stored(b""), None);
        assert_eq!(counter_text(&seven).as_deref(), Some("7"));
        assert_eq!(counter_text(b"\x02\x00\x00"), None);
        assert_eq!(px(Duration::ZERO), "1");
        assert_eq!(px(Duration::from_millis(1500)), "1500");
    }
}
