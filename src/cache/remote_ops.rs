//! The key-value operations of the cluster-wide cache as Redis commands, and Redis's answers
//! as the cache's; see `backend/store.rs` for the layout.

use std::time::Duration;

use redis::{Cmd, Value};
use serde_bytes::ByteBuf;

use crate::backend::{counter_text, event_header, from_stored, px, to_stored, Lua, StoreLink};
use crate::cache::ops::{self, BatchOp, CacheAnswer, CacheError, CacheOp};

/// What an operation's answers are read as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    Done,
    Value,
    Bool,
    Ttl,
    Int,
    Tracked,
}

/// An answer read from Redis, owned.
#[derive(Debug)]
pub(crate) enum Got {
    Done,
    Value(Option<Vec<u8>>),
    Bool(bool),
    Ttl(Option<Option<Duration>>),
    Int(i64),
    /// A near-cache's fetch: not tracked (the near-cache keeps nothing, asks every time).
    Tracked(Option<Vec<u8>>, Option<Duration>),
}

impl Got {
    /// As it travels in a batch.
    pub(crate) fn wire(&self) -> ops::Answer<'_> {
        match self {
            Got::Done => ops::Answer::Done,
            Got::Value(v) => ops::Answer::Value(v.as_deref()),
            Got::Bool(b) => ops::Answer::Bool(*b),
            Got::Ttl(t) => ops::Answer::Ttl(*t),
            Got::Int(n) => ops::Answer::Int(*n),
            Got::Tracked(value, ttl) => ops::Answer::Tracked {
                value: value.as_deref(),
                ttl: *ttl,
                position: None,
            },
        }
    }
}

impl From<Got> for CacheAnswer {
    fn from(got: Got) -> Self {
        match got {
            Got::Done => CacheAnswer::Done,
            Got::Value(v) | Got::Tracked(v, _) => CacheAnswer::Value(v.map(ByteBuf::from)),
            Got::Bool(b) => CacheAnswer::Bool(b),
            Got::Ttl(t) => CacheAnswer::Ttl(t),
            Got::Int(n) => CacheAnswer::Int(n),
        }
    }
}

/// A key-value operation alone, as a batch carries it.
pub(crate) fn key_value(op: &CacheOp) -> Option<BatchOp<'_>> {
    Some(match op {
        CacheOp::Set {
            collection,
            key,
            value,
            ttl,
        } => BatchOp::Set {
            collection,
            key,
            value,
            ttl: *ttl,
        },
        CacheOp::CompareAndSet {
            collection,
            key,
            expected,
            new,
            ttl,
        } => BatchOp::CompareAndSet {
            collection,
            key,
            expected: expected.as_deref().map(|v| &v[..]),
            new: new.as_deref().map(|v| &v[..]),
            ttl: *ttl,
        },
        other => other.key_value()?,
    })
}

/// Appends the commands of `op` to `cmds`; what its answers are read as.
pub(crate) fn plan(link: &StoreLink, op: &BatchOp<'_>, cmds: &mut Vec<Cmd>) -> Want {
    let events = link.events();
    let ch = events.as_bytes();
    let ttl_arg = |ttl: Option<Duration>| ttl.map(px).unwrap_or_default();
    match *op {
        BatchOp::Get { collection, key } => {
            cmds.push(redis::cmd("GET").arg(link.key(collection, key)).clone());
            Want::Value
        }
        BatchOp::TrackedGet {
            collection, key, ..
        } => {
            let k = link.key(collection, key);
            cmds.push(redis::cmd("GET").arg(&k).clone());
            cmds.push(redis::cmd("PTTL").arg(&k).clone());
            Want::Tracked
        }
        BatchOp::Set {
            collection,
            key,
            value,
            ttl,
        } => {
            let header = event_header(b'S', collection, key);
            let (stored, ms) = (to_stored(value), ttl_arg(ttl));
            let args: [&[u8]; 4] = [ch, &header, &stored, ms.as_bytes()];
            cmds.push(Lua::Set.call(&[&link.key(collection, key)], &args));
            Want::Done
        }
        BatchOp::Delete { collection, key } => {
            let header = event_header(b'D', collection, key);
            cmds.push(Lua::Delete.call(&[&link.key(collection, key)], &[ch, &header]));
            Want::Bool
        }
        BatchOp::Exists { collection, key } => {
            cmds.push(redis::cmd("EXISTS").arg(link.key(collection, key)).clone());
            Want::Bool
        }
        BatchOp::Expire {
            collection,
            key,
            ttl,
        } => {
            let header = event_header(b'X', collection, key);
            let ms = match ttl {
                Some(t) if t.is_zero() => "0".to_owned(),
                other => ttl_arg(other),
            };
            let args: [&[u8]; 3] = [ch, &header, ms.as_bytes()];
            cmds.push(Lua::Expire.call(&[&link.key(collection, key)], &args));
            Want::Bool
        }
        BatchOp::Ttl { collection, key } => {
            cmds.push(redis::cmd("PTTL").arg(link.key(collection, key)).clone());
            Want::Ttl
        }
        BatchOp::Increment {
            collection,
            key,
            by,
        } => {
            let header = event_header(b'S', collection, key);
            let by = by.to_string();
            let args: [&[u8]; 3] = [ch, &header, by.as_bytes()];
            cmds.push(Lua::Increment.call(&[&link.key(collection, key)], &args));
            Want::Int
        }
        BatchOp::CompareAndSet {
            collection,
            key,
            expected,
            new,
            ttl,
        } => {
            cmds.push(compare_and_set(link, collection, key, expected, new, ttl));
            Want::Bool
        }
    }
}

/// The compare-and-set script's call.
fn compare_and_set(
    link: &StoreLink,
    collection: &str,
    key: &str,
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
    ttl: Option<Duration>,
) -> Cmd {
    let events = link.events();
    let ch = events.as_bytes();
    let set = event_header(b'S', collection, key);
    let del = event_header(b'D', collection, key);
    let (want, exp, alt) = match expected {
        None => ("0", Vec::new(), String::new()),
        Some(v) => ("1", to_stored(v), counter_text(v).unwrap_or_default()),
    };
    let new = new.map(to_stored).unwrap_or_default();
    let ms = ttl.map(px).unwrap_or_default();
    let args: [&[u8]; 8] = [
        ch,
        &set,
        &del,
        want.as_bytes(),
        &exp,
        alt.as_bytes(),
        &new,
        ms.as_bytes(),
    ];
    Lua::CompareAndSet.call(&[&link.key(collection, key)], &args)
}

/// Reads the answer to one operation from `values`.
///
/// # Errors
/// [`CacheError::NotAnInteger`], or [`CacheError::Storage`] for a value this crate did not
/// write (another type under the key, or bytes of another layout) and other errors of Redis.
pub(crate) fn read(
    want: Want,
    values: &mut impl Iterator<Item = Value>,
) -> Result<Got, CacheError> {
    let mut next = || match values.next() {
        Some(Value::ServerError(e)) => Err(server_error(&e)),
        Some(value) => Ok(value),
        None => Err(CacheError::Storage(
            "Redis gave fewer answers than asked".into(),
        )),
    };
    Ok(match want {
        Want::Done => {
            next()?;
            Got::Done
        }
        Want::Value => Got::Value(value(next()?)?),
        Want::Bool => Got::Bool(matches!(next()?, Value::Int(n) if n != 0)),
        Want::Ttl => Got::Ttl(ttl(next()?)),
        Want::Int => {
            let text = match next()? {
                Value::BulkString(b) => String::from_utf8(b).ok(),
                _ => None,
            };
            let n = text.and_then(|t| t.parse().ok());
            Got::Int(n.ok_or_else(|| CacheError::NotAnInteger("the counter's answer".into()))?)
        }
        Want::Tracked => {
            let v = value(next()?)?;
            let t = ttl(next()?).flatten();
            Got::Tracked(v, t)
        }
    })
}

/// A stored value as the client reads it.
pub(crate) fn value(v: Value) -> Result<Option<Vec<u8>>, CacheError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => from_stored(&b).map(Some).ok_or_else(bad_value),
        other => Err(CacheError::Storage(format!("unexpected answer {other:?}"))),
    }
}

fn ttl(v: Value) -> Option<Option<Duration>> {
    match v {
        Value::Int(-2) => None,
        Value::Int(ms) if ms < 0 => Some(None),
        Value::Int(ms) => Some(Some(Duration::from_millis(ms.unsigned_abs()))),
        _ => None,
    }
}

/// A value under one of the cache's keys that this crate did not write.
pub(crate) fn bad_value() -> CacheError {
    CacheError::Storage(BAD_VALUE.into())
}

/// The start of the reason of [`bad_value`], to count them.
pub(crate) const BAD_VALUE: &str = "a value this crate did not write is under the key";

fn server_error(e: &redis::ServerError) -> CacheError {
    let detail = e.details().unwrap_or_default().to_owned();
    match e.code() {
        "NOTINT" => CacheError::NotAnInteger(detail),
        "WRONGTYPE" => CacheError::Storage(format!("{BAD_VALUE} (another type: {detail})")),
        "NOSCRIPT" => CacheError::Unavailable("Redis lost the cache's scripts; try again".into()),
        code => CacheError::Storage(format!("Redis: {code} {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read() {
        let mut it = vec![Value::Int(-2), Value::Int(-1), Value::Int(1500)].into_iter();
        assert!(matches!(read(Want::Ttl, &mut it), Ok(Got::Ttl(None))));
        assert!(matches!(read(Want::Ttl, &mut it), Ok(Got::Ttl(Some(None)))));
        assert!(matches!(
            read(Want::Ttl, &mut it),
            Ok(Got::Ttl(Some(Some(d)))) if d == Duration::from_millis(1500)
        ));
        let mut it = vec![Value::BulkString(b"42".to_vec()), Value::Nil].into_iter();
        assert!(matches!(read(Want::Int, &mut it), Ok(Got::Int(42))));
        assert!(matches!(read(Want::Value, &mut it), Ok(Got::Value(None))));
        let mut it = vec![Value::BulkString(b"\x01odd".to_vec())].into_iter();
        assert!(matches!(
            read(Want::Value, &mut it),
            Err(CacheError::Storage(_))
        ));
        assert!(matches!(
            read(Want::Done, &mut it),
            Err(CacheError::Storage(_))
        ));
    }
}
