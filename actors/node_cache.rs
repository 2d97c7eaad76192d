//! The cache commands of `procactor-node` (the cluster-wide cache on Redis), each answered on
//! one line of stdout:
//! - `cache-set <coll> <key> <i64> [ttl_ms]` → `{"cache-set":"ok"}`;
//! - `cache-get <coll> <key>` → `{"cache-get":<i64>|null}`;
//! - `cache-incr <coll> <key> <times>`: `times` increments by 1 → `{"cache-incr":<last>}`;
//! - `cache-sub <coll>`: from now on, a line `{"event":"cache","key":…,"change":…}` per change;
//! - `cache-lock-loop <name> <times> <lease_ms>`: `times` rounds of lock, read `counters/n`,
//!   write it + 1, release → `{"cache-lock-loop":"ok","tokens":[…]}`;
//! - `cache-hold <name> <lease_ms>`: takes the lock and keeps it → `{"cache-hold":<token>}`;
//! - `cache-try <name> <wait_ms>`: takes and releases the lock → `{"cache-try":"ok","ms":…}`.
//!
//! A failure answers `{"<command>":"error","error":…,"kind":…}` (`kind`: the
//! [`CacheError`] variant).

use std::time::{Duration, Instant};

use procactor::actors::echo::Echo;
use procactor::cache::{CacheError, Change};
use procactor::Cluster;
use serde_json::{json, Value};

fn failed(verb: &str, e: &CacheError) -> Value {
    let kind = format!("{e:?}");
    let kind = kind.split('(').next().unwrap_or_default().to_owned();
    json!({verb: "error", "error": e.to_string(), "kind": kind})
}

fn ms(arg: Option<&str>) -> Option<Duration> {
    arg.and_then(|a| a.parse().ok()).map(Duration::from_millis)
}

/// Answers a `cache-…` command.
pub(crate) async fn command(cluster: &Cluster<Echo>, line: &str) -> Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let cache = cluster.cache();
    let verb = words.first().copied().unwrap_or_default();
    let arg = |i: usize| words.get(i).copied().unwrap_or_default();
    let answer = match verb {
        "cache-set" => {
            let n: i64 = arg(3).parse().unwrap_or_default();
            let ttl = ms(words.get(4).copied());
            cache
                .set(arg(1), arg(2), &n, ttl)
                .await
                .map(|()| json!("ok"))
        }
        "cache-get" => cache.get::<i64>(arg(1), arg(2)).await.map(|v| json!(v)),
        "cache-incr" => {
            let times: u64 = arg(3).parse().unwrap_or(1);
            let mut last = Ok(0);
            for _ in 0..times {
                last = cache.increment(arg(1), arg(2), 1).await;
                if last.is_err() {
                    break;
                }
            }
            last.map(|n| json!(n))
        }
        "cache-sub" => match cache.subscribe(arg(1), "").await {
            Ok(mut sub) => {
                actix::spawn(async move {
                    while let Some(event) = sub.recv().await {
                        let change = match event.change {
                            Change::Set(v) => json!({"set": postcard::from_bytes::<i64>(&v).ok()}),
                            other => json!(format!("{other:?}")),
                        };
                        println!(
                            "{}",
                            json!({"event": "cache", "key": event.key, "change": change})
                        );
                    }
                });
                Ok(json!("ok"))
            }
            Err(e) => Err(e),
        },
        "cache-lock-loop" => {
            let times: u64 = arg(2).parse().unwrap_or(1);
            let lease = ms(Some(arg(3))).unwrap_or(Duration::from_secs(5));
            let mut tokens = Vec::new();
            let mut outcome = Ok(());
            for _ in 0..times {
                let round = async {
                    let guard = cache.lock(arg(1), lease, Duration::from_secs(60)).await?;
                    tokens.push(guard.fencing_token());
                    let n: i64 = cache.get("counters", "n").await?.unwrap_or(0);
                    cache.set("counters", "n", &(n + 1), None).await?;
                    guard.release().await
                };
                outcome = round.await;
                if outcome.is_err() {
                    break;
                }
            }
            outcome.map(|()| json!({"tokens": tokens}))
        }
        "cache-hold" => {
            let lease = ms(Some(arg(2))).unwrap_or(Duration::from_secs(5));
            match cache.lock(arg(1), lease, Duration::from_secs(10)).await {
                Ok(guard) => {
                    let token = guard.fencing_token();
                    std::mem::forget(guard);
                    Ok(json!(token))
                }
                Err(e) => Err(e),
            }
        }
        "cache-try" => {
            let wait = ms(Some(arg(2))).unwrap_or(Duration::from_secs(10));
            let began = Instant::now();
            match cache.lock(arg(1), Duration::from_secs(5), wait).await {
                Ok(guard) => {
                    let took = began.elapsed().as_millis();
                    guard.release().await.map(|()| json!({"ok": took}))
                }
                Err(e) => Err(e),
            }
        }
        other => return json!({"error": format!("unknown command {other:?}")}),
    };
    match answer {
        Ok(Value::Object(mut fields)) if verb == "cache-lock-loop" => {
            fields.insert(verb.into(), json!("ok"));
            Value::Object(fields)
        }
        Ok(value) => json!({verb: value}),
        Err(e) => failed(verb, &e),
    }
}
