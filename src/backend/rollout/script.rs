//! The rollout's keys and its Lua scripts: take the lock with a new fencing token, renew and
//! release it by comparison, and write the progress record only under the current fence.
//! Each is one atomic step; a value of another type under one of these keys is replaced (the
//! lock, the record) or seeded anew (the fence), never a failed call.

use std::sync::Arc;

use redis::{RedisResult, Script, Value};

use crate::backend::conn::Redis;
use crate::backend::script::{invoke, text};

/// How long a finished rollout's report is kept for the requests that joined it.
const REPORT_TTL_MS: u64 = 600_000;

/// The keys of one cluster's reloads: `procactor:{<cluster>}:reload:…`.
#[derive(Debug, Clone)]
pub(crate) struct RolloutKeys {
    prefix: String,
}

impl RolloutKeys {
    pub(crate) fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("procactor:{{{cluster}}}:reload"),
        }
    }

    /// The pub/sub channel of commands, answers and events.
    pub(crate) fn channel(&self) -> String {
        self.prefix.clone()
    }

    fn fence(&self) -> String {
        format!("{}:fence", self.prefix)
    }

    pub(crate) fn lock(&self) -> String {
        format!("{}:lock", self.prefix)
    }

    fn state(&self) -> String {
        format!("{}:state", self.prefix)
    }

    fn report(&self, token: u64) -> String {
        format!("{}:report:{token}", self.prefix)
    }
}

/// The lock's value: `<token>:<node>`.
pub(crate) fn holder(token: u64, node: &str) -> String {
    format!("{token}:{node}")
}

/// KEYS: fence, lock. ARGV: node, lease ms. Takes the lock with a new token, or answers who
/// holds it.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kind = redis.call('TYPE', KEYS[2]).ok
if kind == 'string' then return {'held', redis.call('GET', KEYS[2])} end
if kind ~= 'none' then redis.call('DEL', KEYS[2]) end
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], string.format('%.0f', now))
end
local token = redis.pcall('INCR', KEYS[1])
if type(token) ~= 'number' then
  redis.call('SET', KEYS[1], string.format('%.0f', now))
  token = redis.call('INCR', KEYS[1])
end
redis.call('SET', KEYS[2], string.format('%.0f', token) .. ':' .. ARGV[1], 'PX', ARGV[2], 'NX')
return {'ok', token}
";

/// KEYS: lock. ARGV: holder, lease ms (`0`: release). Renews (or deletes) the lock if this
/// holder has it.
const RENEW: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// KEYS: fence, state, report. ARGV: token, report ttl ms, report (`` for none), field,
/// value, … Writes the record (and the report) only if the token is the current fence.
const RECORD: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('TYPE', KEYS[2]).ok ~= 'hash' then redis.call('DEL', KEYS[2]) end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], 'token', ARGV[1], unpack(fields))
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2]) end
return 1
";

/// KEYS: key. A string's value, or nil (for a value of another type too).
const GET: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'string' then return redis.call('GET', KEYS[1]) end
return false
";

/// The answer to a try for the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Taken, with this token.
    Token(u64),
    /// Held by this value (`<token>:<node>`).
    Held(String),
}

/// The compiled scripts.
pub(crate) struct Scripts {
    acquire: Arc<Script>,
    renew: Arc<Script>,
    record: Arc<Script>,
    get: Arc<Script>,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripts")
    }
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: Arc::new(Script::new(ACQUIRE)),
            renew: Arc::new(Script::new(RENEW)),
            record: Arc::new(Script::new(RECORD)),
            get: Arc::new(Script::new(GET)),
        }
    }

    /// Tries to take the lock for `node`.
    pub(crate) async fn acquire(
        &self,
        redis: &Redis,
        keys: &RolloutKeys,
        node: &str,
        lease: std::time::Duration,
    ) -> RedisResult<Acquired> {
        let reply: Vec<Value> = invoke(
            redis,
            &self.acquire,
            vec![keys.fence(), keys.lock()],
            vec![node.to_owned(), lease.as_millis().to_string()],
        )
        .await?;
        let parsed = match (reply.first().and_then(text).as_deref(), reply.get(1)) {
            (Some("ok"), Some(Value::Int(token))) => {
                u64::try_from(*token).ok().map(Acquired::Token)
            }
            (Some("held"), Some(value)) => text(value).map(Acquired::Held),
            _ => None,
        };
        parsed.ok_or_else(|| unexpected("acquire"))
    }

    /// Renews the lock for `lease` (`None`: releases it); false when `holder` no longer has it.
    pub(crate) async fn renew(
        &self,
        redis: &Redis,
        keys: &RolloutKeys,
        holder: &str,
        lease: Option<std::time::Duration>,
    ) -> RedisResult<bool> {
        let ms = lease.map_or(0, |l| l.as_millis().max(1));
        let held: i64 = invoke(
            redis,
            &self.renew,
            vec![keys.lock()],
            vec![holder.to_owned(), ms.to_string()],
        )
        .await?;
        Ok(held == 1)
    }

    /// Writes the progress record (and the final report, if given) under `token`; false when
    /// `token` is no longer the current fence.
    pub(crate) async fn record(
        &self,
        redis: &Redis,
        keys: &RolloutKeys,
        token: u64,
        fields: &[(&str, String)],
        report: Option<String>,
    ) -> RedisResult<bool> {
        let mut args = vec![
            token.to_string(),
            REPORT_TTL_MS.to_string(),
            report.unwrap_or_default(),
        ];
        for (field, value) in fields {
            args.extend([(*field).to_owned(), value.clone()]);
        }
        let keys = vec![keys.fence(), keys.state(), keys.report(token)];
        let written: i64 = invoke(redis, &self.record, keys, args).await?;
        Ok(written == 1)
    }
}

impl Scripts {
    /// The lock's value now (`None`: free; a value of another type reads as free).
    pub(crate) async fn lock_value(
        &self,
        redis: &Redis,
        keys: &RolloutKeys,
    ) -> RedisResult<Option<String>> {
        Ok(self
            .get(redis, keys.lock())
            .await?
            .and_then(|b| String::from_utf8(b).ok()))
    }

    /// Rollout `token`'s final report, once written (JSON).
    pub(crate) async fn report(
        &self,
        redis: &Redis,
        keys: &RolloutKeys,
        token: u64,
    ) -> RedisResult<Option<Vec<u8>>> {
        self.get(redis, keys.report(token)).await
    }

    async fn get(&self, redis: &Redis, key: String) -> RedisResult<Option<Vec<u8>>> {
        let value: Value = invoke(redis, &self.get, vec![key], Vec::new()).await?;
        Ok(match value {
            Value::BulkString(bytes) => Some(bytes),
            _ => None,
        })
    }
}

fn unexpected(script: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected answer from the rollout's script",
        script.to_owned(),
    ))
}

/// A lock value read back: (token, node), or `None` when it is not ours.
pub(crate) fn parse_holder(value: &str) -> Option<(u64, String)> {
    let (token, node) = value.split_once(':')?;
    Some((token.parse().ok()?, node.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_clusters_hash_tag() {
        let keys = RolloutKeys::new("shop");
        assert_eq!(keys.channel(), "procactor:{shop}:reload");
        assert_eq!(keys.lock(), "procactor:{shop}:reload:lock");
        assert_eq!(keys.fence(), "procactor:{shop}:reload:fence");
        assert_eq!(keys.state(), "procactor:{shop}:reload:state");
        assert_eq!(keys.report(7), "procactor:{shop}:reload:report:7");
    }

    #[test]
    fn lock_values_read_back() {
        assert_eq!(parse_holder(&holder(42, "a-1")), Some((42, "a-1".into())));
        assert_eq!(parse_holder("junk"), None);
        assert_eq!(parse_holder("x:a"), None);
    }
}
