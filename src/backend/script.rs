//! What the backend asks of Redis: three Lua scripts (join, beat, leave), each one atomic step
//! and one round trip, and the shapes of their answers.
//!
//! Scripts rather than `MULTI`: a beat writes this node's key only while the key still holds
//! this boot's id (a `MULTI` cannot make a write depend on a read), and tells in the same step
//! whether the key had expired — Sidekiq's `EXISTS` in its heartbeat, made a condition. A
//! script also reads every member of the cluster in the same step, skipping (and reporting)
//! any value of the wrong type instead of failing the whole call, and keeps time by the
//! server's clock (`TIME`), so that no two hosts' clocks are compared. redis-rs loads a script
//! on `NOSCRIPT` (after a Redis restart) by itself.
//!
//! The scripts read member keys they were not given as `KEYS`: every key of a cluster shares
//! the hash tag `{<cluster>}`, so on a Redis Cluster they all live in one slot.

use std::sync::Arc;

use redis::{FromRedisValue, RedisResult, Script, Value};

use super::conn::Redis;

/// The keys of one cluster: `procactor:{<cluster>}:…`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("procactor:{{{cluster}}}:"),
        }
    }

    /// The epoch counter (a string holding an integer).
    pub(crate) fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// The members' index: a sorted set of node names, scored by their last beat (server ms).
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// A node's heartbeat key (a hash with a time to live).
    pub(crate) fn node(&self, name: &str) -> String {
        format!("{}{}", self.node_prefix(), name)
    }

    /// The cluster's channel: broadcasts, group publishes and confirmations, for every node.
    pub(crate) fn everyone(&self) -> String {
        format!("{}all", self.prefix)
    }

    /// A node's inbox: the pub/sub channel its frames are published on.
    pub(crate) fn inbox(&self, name: &str) -> String {
        format!("{}in:{}", self.prefix, name)
    }

    fn node_prefix(&self) -> String {
        format!("{}node:", self.prefix)
    }
}

/// Shared by the scripts: the server's clock in ms, and a `ZADD` that first replaces a
/// value of another type under the index (counted in `bad`).
const PRELUDE: &str = r"
local bad = 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function index(key, score, member)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', key); bad = bad + 1 end
  if member then redis.call('ZADD', key, score, member) end
end
local function write(key, boot, epoch, ttl, listed, fields)
  redis.call('HSET', key, 'boot', boot, 'epoch', epoch, 'beat', string.format('%.0f', now),
    'listed', listed, unpack(fields))
  redis.call('PEXPIRE', key, ttl)
end
";

/// KEYS: node, nodes, epoch. ARGV: boot, ttl ms, name, visible (`1`/`0`), field, value, …
/// Takes the node's name unless another boot's hash holds it (then answers who holds it),
/// with a new epoch; the counter starts at the server's clock in ms, so that a Redis that lost
/// its data never hands out an epoch again.
const JOIN: &str = r"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'hash' then
  local holder = redis.call('HGET', KEYS[1], 'boot')
  if holder and holder ~= ARGV[1] then
    local h = redis.call('HMGET', KEYS[1], 'beat', 'pid', 'host')
    return {'taken', holder, redis.call('PTTL', KEYS[1]), h[1] or '', h[2] or '', h[3] or ''}
  end
elseif kind ~= 'none' then
  bad = bad + 1
end
redis.call('DEL', KEYS[1])
if redis.call('TYPE', KEYS[3]).ok ~= 'string' then
  if redis.call('EXISTS', KEYS[3]) == 1 then bad = bad + 1 end
  redis.call('SET', KEYS[3], string.format('%.0f', now))
end
local epoch = redis.pcall('INCR', KEYS[3])
if type(epoch) ~= 'number' then
  bad = bad + 1
  redis.call('SET', KEYS[3], string.format('%.0f', now))
  epoch = redis.call('INCR', KEYS[3])
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
write(KEYS[1], ARGV[1], string.format('%.0f', epoch), ARGV[2], ARGV[4], fields)
if ARGV[4] == '1' then index(KEYS[2], now, ARGV[3]) end
return {'ok', epoch, bad}
";

/// KEYS: node, nodes. ARGV: mode (`beat`/`read`), boot, epoch, ttl ms, name, visible,
/// node key prefix, prune after ms, field, value, …
/// A beat refreshes this node's key if it still holds this boot (`gone`: it expired;
/// `taken`: another boot holds the name; `wrongtype`: something else is there). Both modes
/// then read every member: its hash and time to live, `gone` (its key expired; pruned from the
/// index once it has been gone long enough for every reader to have seen it gone), or the
/// type found instead of a hash.
const BEAT: &str = r"
local status = 'ok'
if ARGV[1] == 'beat' then
  local kind = redis.call('TYPE', KEYS[1]).ok
  if kind == 'none' then status = 'gone'
  elseif kind ~= 'hash' then status = 'wrongtype'
  elseif redis.call('HGET', KEYS[1], 'boot') ~= ARGV[2] then status = 'taken'
  elseif redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[3] then status = 'gone'
  else
    local fields = {}
    for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
    write(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[6], fields)
    if ARGV[6] == '1' then index(KEYS[2], now, ARGV[5]) end
  end
end
index(KEYS[2], 0, nil)
local members = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #members, 2 do
  local name = members[i]
  local key = ARGV[7] .. name
  local kind = redis.call('TYPE', key).ok
  local score = tonumber(members[i + 1])
  if kind == 'hash' and redis.call('HGET', key, 'listed') == '0' then
    -- A boot that took a dead node's name and is not listed yet: not a member yet.
    out[#out + 1] = {name, 'gone'}
  elseif kind == 'hash' then
    out[#out + 1] = {name, 'hash', redis.call('PTTL', key), redis.call('HGETALL', key)}
  elseif kind == 'none' then
    -- Gone long enough for every reader to have seen it gone (or scored in the future, which
    -- no beat of ours writes).
    if now - score > tonumber(ARGV[8]) or score > now + tonumber(ARGV[8]) then
      redis.call('ZREM', KEYS[2], name)
    else
      out[#out + 1] = {name, 'gone'}
    end
  else
    out[#out + 1] = {name, kind}
  end
end
return {status, bad, out}
";

/// KEYS: node, nodes. ARGV: boot, name. Deletes this node's key and index entry, if the key
/// is still this boot's.
const LEAVE: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'hash' and redis.call('HGET', KEYS[1], 'boot') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('TYPE', KEYS[2]).ok == 'zset' then redis.call('ZREM', KEYS[2], ARGV[2]) end
  return 1
end
return 0
";

/// The compiled scripts (their SHA1s are computed once).
pub(crate) struct Scripts {
    join: Arc<Script>,
    beat: Arc<Script>,
    leave: Arc<Script>,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripts")
    }
}

/// What this node writes into its hash besides `boot`, `epoch` and `beat`.
pub(crate) type Fields = Vec<(&'static str, String)>;

/// Who this node is, as the scripts need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Me<'a> {
    pub(crate) keys: &'a Keys,
    pub(crate) name: &'a str,
    pub(crate) boot: &'a str,
    pub(crate) ttl_ms: u64,
    /// Listed in the index (once its workers are ready).
    pub(crate) visible: bool,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The name is this node's, with this epoch; `bad` values of the wrong type were replaced.
    Ok { epoch: u64, bad: u64 },
    /// Another boot's hash holds the name.
    Taken(Holder),
}

/// The boot that holds a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) boot: String,
    /// Its key's time to live in ms (-1: none).
    pub(crate) pttl: i64,
    /// Its last beat (server ms), as written.
    pub(crate) beat: String,
    pub(crate) pid: String,
    pub(crate) host: String,
}

/// How this node's own key was found by a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Own {
    /// Refreshed (or not looked at: a read).
    Ok,
    /// Expired or deleted: this node must join again, with a new epoch.
    Gone,
    /// Another boot holds the name.
    Taken,
    /// A value of another type is there.
    WrongType,
}

/// One member of the index, as a beat read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Member {
    /// Its hash (field, value pairs) and its time to live in ms.
    Hash {
        name: String,
        pttl: i64,
        fields: Vec<(String, Vec<u8>)>,
    },
    /// Its key expired (or was deleted) and it is still in the index.
    Gone { name: String },
    /// A value of this other type is under its key.
    WrongType { name: String, kind: String },
}

/// What a beat (or a read) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Beat {
    pub(crate) own: Own,
    /// Values of the wrong type replaced under the cluster's own keys (the index).
    pub(crate) bad: u64,
    pub(crate) members: Vec<Member>,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            join: Arc::new(Script::new(&format!("{PRELUDE}{JOIN}"))),
            beat: Arc::new(Script::new(&format!("{PRELUDE}{BEAT}"))),
            leave: Arc::new(Script::new(LEAVE)),
        }
    }

    /// Takes the name for a new epoch.
    pub(crate) async fn join(
        &self,
        redis: &Redis,
        me: Me<'_>,
        fields: &Fields,
    ) -> RedisResult<Joined> {
        let keys = vec![me.keys.node(me.name), me.keys.nodes(), me.keys.epoch()];
        let mut args = vec![
            me.boot.to_owned(),
            me.ttl_ms.to_string(),
            me.name.to_owned(),
            flag(me.visible).to_owned(),
        ];
        for (field, value) in fields {
            args.extend([(*field).to_owned(), value.clone()]);
        }
        let reply: Vec<Value> = invoke(redis, &self.join, keys, args).await?;
        parse_join(reply).ok_or_else(|| unexpected("join"))
    }

    /// A beat (`write`: refresh this node's key first) and a read of every member.
    pub(crate) async fn beat(
        &self,
        redis: &Redis,
        me: Me<'_>,
        beat: Option<(u64, &Fields)>,
        prune_after_ms: u64,
    ) -> RedisResult<Beat> {
        let keys = vec![me.keys.node(me.name), me.keys.nodes()];
        let mode = if beat.is_some() { "beat" } else { "read" };
        let epoch = beat.map_or(0, |(epoch, _)| epoch);
        let mut args = vec![
            mode.to_owned(),
            me.boot.to_owned(),
            epoch.to_string(),
            me.ttl_ms.to_string(),
            me.name.to_owned(),
            flag(me.visible).to_owned(),
            me.keys.node_prefix(),
            prune_after_ms.to_string(),
        ];
        for (field, value) in beat.map_or(&[][..], |(_, fields)| &fields[..]) {
            args.extend([(*field).to_owned(), value.clone()]);
        }
        let reply: Vec<Value> = invoke(redis, &self.beat, keys, args).await?;
        parse_beat(reply).ok_or_else(|| unexpected("beat"))
    }

    /// Deletes this node's key and index entry if they are still this boot's.
    pub(crate) async fn leave(&self, redis: &Redis, me: Me<'_>) -> RedisResult<()> {
        let keys = vec![me.keys.node(me.name), me.keys.nodes()];
        let args = vec![me.boot.to_owned(), me.name.to_owned()];
        let _: i64 = invoke(redis, &self.leave, keys, args).await?;
        Ok(())
    }
}

/// Runs `script` on the Redis thread (loading it on `NOSCRIPT`); the rollout's scripts too.
pub(crate) async fn invoke<T: FromRedisValue + Send + 'static>(
    redis: &Redis,
    script: &Arc<Script>,
    keys: Vec<String>,
    args: Vec<String>,
) -> RedisResult<T> {
    let script = Arc::clone(script);
    redis
        .run(move |mut conn| async move {
            let mut call = script.prepare_invoke();
            for key in keys {
                call.key(key);
            }
            for arg in args {
                call.arg(arg);
            }
            call.invoke_async(&mut conn).await
        })
        .await
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

fn unexpected(script: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected answer from the backend's script",
        script.to_owned(),
    ))
}

/// A string, bytes or integer reply as text; `None` for another type or bytes not UTF-8.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn parse_join(reply: Vec<Value>) -> Option<Joined> {
    match text(reply.first()?)?.as_str() {
        "ok" => Some(Joined::Ok {
            epoch: u64::try_from(int(reply.get(1)?)?).ok()?,
            bad: u64::try_from(int(reply.get(2)?)?).ok()?,
        }),
        "taken" => Some(Joined::Taken(Holder {
            boot: text(reply.get(1)?)?,
            pttl: int(reply.get(2)?)?,
            beat: text(reply.get(3)?)?,
            pid: text(reply.get(4)?)?,
            host: text(reply.get(5)?)?,
        })),
        _ => None,
    }
}

fn parse_beat(reply: Vec<Value>) -> Option<Beat> {
    let own = match text(reply.first()?)?.as_str() {
        "ok" => Own::Ok,
        "gone" => Own::Gone,
        "taken" => Own::Taken,
        "wrongtype" => Own::WrongType,
        _ => return None,
    };
    let bad = u64::try_from(int(reply.get(1)?)?).ok()?;
    let Value::Array(items) = reply.get(2)? else {
        // Lua's empty table comes back as an empty array; anything else is not ours.
        return None;
    };
    // A member that does not parse (nothing of ours writes one) is skipped and counted, not
    // taken for a failed beat: one bad entry must not blind every node.
    let members: Vec<Member> = items.iter().filter_map(parse_member).collect();
    let skipped = (items.len() - members.len()) as u64;
    Some(Beat {
        own,
        bad: bad + skipped,
        members,
    })
}

fn parse_member(item: &Value) -> Option<Member> {
    let Value::Array(parts) = item else {
        return None;
    };
    let name = match parts.first()? {
        // Names are ours, but the index may hold anything: not UTF-8 is shown lossily.
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => text(other)?,
    };
    match text(parts.get(1)?)?.as_str() {
        "hash" => {
            let pttl = int(parts.get(2)?)?;
            let Value::Array(flat) = parts.get(3)? else {
                return None;
            };
            let fields = flat
                .chunks(2)
                .map(|pair| match pair {
                    [Value::BulkString(f), Value::BulkString(v)] => {
                        Some((String::from_utf8_lossy(f).into_owned(), v.clone()))
                    }
                    _ => None,
                })
                .collect::<Option<_>>()?;
            Some(Member::Hash { name, pttl, fields })
        }
        "gone" => Some(Member::Gone { name }),
        kind => Some(Member::WrongType {
            name,
            kind: kind.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn keys_share_the_clusters_hash_tag() {
        let keys = Keys::new("shop");
        assert_eq!(keys.epoch(), "procactor:{shop}:epoch");
        assert_eq!(keys.nodes(), "procactor:{shop}:nodes");
        assert_eq!(keys.node("a-1"), "procactor:{shop}:node:a-1");
    }

    #[test]
    fn a_beat_answer_parses_every_kind_of_member() {
        let reply = vec![
            bulk("ok"),
            Value::Int(1),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("a"),
                    bulk("hash"),
                    Value::Int(2500),
                    Value::Array(vec![bulk("epoch"), bulk("7")]),
                ]),
                Value::Array(vec![bulk("b"), bulk("gone")]),
                Value::Array(vec![bulk("x"), bulk("string")]),
            ]),
        ];
        let beat = parse_beat(reply).unwrap();
        assert_eq!(beat.own, Own::Ok);
        assert_eq!(beat.bad, 1);
        assert_eq!(
            beat.members,
            vec![
                Member::Hash {
                    name: "a".into(),
                    pttl: 2500,
                    fields: vec![("epoch".into(), b"7".to_vec())],
                },
                Member::Gone { name: "b".into() },
                Member::WrongType {
                    name: "x".into(),
                    kind: "string".into()
                },
            ]
        );
    }

    #[test]
    fn join_answers_parse() {
        let ok = vec![bulk("ok"), Value::Int(1_700_000_000_001), Value::Int(0)];
        assert_eq!(
            parse_join(ok),
            Some(Joined::Ok {
                epoch: 1_700_000_000_001,
                bad: 0
            })
        );
        let taken = vec![
            bulk("taken"),
            bulk("b00t"),
            Value::Int(1800),
            bulk("17"),
            bulk("4242"),
            bulk("h"),
        ];
        assert!(matches!(parse_join(taken), Some(Joined::Taken(h)) if h.pid == "4242"));
        assert_eq!(parse_join(vec![bulk("what")]), None);
        assert_eq!(
            parse_beat(vec![bulk("ok"), Value::Int(0), Value::Nil]),
            None
        );
    }
}
