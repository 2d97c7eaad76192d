//! The relay's cache commands: counters, bursts of writes, locks, subscriptions, a replica and
//! a throughput run, through this worker's cache client.

use std::fmt::Write;
use std::time::{Duration, Instant};

use procactor::cache::{CacheClient, CacheError, Change, NearLimits};

use super::{invalid, Handle, Relay, RelayMsg, RelayReply, TIMEOUT};

type Cache = CacheClient<Handle>;

impl Relay {
    /// Runs one cache command with this worker's handle.
    pub(super) async fn cache(&mut self, msg: RelayMsg, peers: &Handle) -> RelayReply {
        let cache = peers.cache();
        let result = match msg {
            RelayMsg::CacheIncrement {
                collection,
                key,
                times,
            } => increment(&cache, &collection, &key, times).await,
            RelayMsg::CacheSet {
                collection,
                key,
                value,
                ttl_ms,
            } => cache
                .set(&collection, &key, &value, ttl_ms.map(Duration::from_millis))
                .await
                .map(|()| RelayReply::Done),
            RelayMsg::CacheBurst {
                collection,
                prefix,
                count,
            } => burst(&cache, &collection, &prefix, count).await,
            RelayMsg::CacheLockedIncrement {
                lock,
                collection,
                key,
                times,
            } => locked_increment(&cache, &lock, &collection, &key, times).await,
            RelayMsg::CacheHoldLock(lock) => cache
                .lock(&lock, Duration::from_secs(60), TIMEOUT)
                .await
                .map(|guard| {
                    self.locks.push(guard);
                    RelayReply::Done
                }),
            RelayMsg::CacheLockWait { lock, wait_ms } => lock_wait(&cache, &lock, wait_ms).await,
            RelayMsg::CacheSubscribe { collection, prefix } => {
                cache.subscribe(&collection, &prefix).await.map(|sub| {
                    self.subscription = Some(sub);
                    RelayReply::Done
                })
            }
            RelayMsg::CacheEvents => Ok(self.events()),
            RelayMsg::CacheReplica(collection) => {
                cache.replica(&collection, "").await.map(|replica| {
                    self.replica = Some(replica);
                    RelayReply::Done
                })
            }
            RelayMsg::CacheReplicaState => Ok(RelayReply::Entries(
                self.replica
                    .as_mut()
                    .map(|r| r.current().clone())
                    .unwrap_or_default(),
            )),
            msg @ (RelayMsg::NearOpen { .. }
            | RelayMsg::NearGet(_)
            | RelayMsg::NearSet { .. }
            | RelayMsg::NearStats
            | RelayMsg::NearCheck { .. }) => self.near(msg, &cache).await,
            RelayMsg::SetThenTell {
                collection,
                key,
                from,
                count,
                to,
            } => set_then_tell(&cache, peers, &collection, &key, from..from + count, to).await,
            RelayMsg::CacheBench {
                collection,
                count,
                window,
                near: false,
            } => bench(&cache, &collection, count, window).await,
            RelayMsg::CacheBench {
                collection,
                count,
                window,
                near: true,
            } => near_bench(&cache, &collection, count, window).await,
            other => Ok(invalid(other)),
        };
        result.unwrap_or_else(cache_err)
    }

    /// The near-cache commands.
    async fn near(&mut self, msg: RelayMsg, cache: &Cache) -> Result<RelayReply, CacheError> {
        if let RelayMsg::NearOpen {
            collection,
            max_entries,
        } = msg
        {
            let limits = NearLimits {
                max_entries,
                ..NearLimits::default()
            };
            self.near = Some(cache.near_cache(&collection, limits).await?);
            return Ok(RelayReply::Done);
        }
        let Some(near) = self.near.as_ref() else {
            return Err(CacheError::Unreachable("no near-cache opened".into()));
        };
        match msg {
            RelayMsg::NearGet(key) => {
                let hits = near.stats().hits;
                let value = near.get::<u64>(&key).await?;
                let local = near.stats().hits > hits;
                Ok(RelayReply::NearRead { value, local })
            }
            RelayMsg::NearSet { key, value, ttl_ms } => {
                let ttl = ttl_ms.map(Duration::from_millis);
                near.set(&key, &value, ttl).await.map(|()| RelayReply::Done)
            }
            RelayMsg::NearStats => {
                let s = near.stats();
                let figures = [
                    s.hits,
                    s.misses,
                    s.entries as u64,
                    s.invalidations,
                    s.resets,
                ];
                Ok(RelayReply::NearStats(figures))
            }
            RelayMsg::NearCheck { key, at_least } => {
                let hits = near.stats().hits;
                let value = near.get::<u64>(&key).await?.unwrap_or(0);
                let how = if near.stats().hits > hits {
                    "local"
                } else {
                    "fetched"
                };
                Ok(RelayReply::Text(if value >= at_least {
                    format!("ok {value} {how}")
                } else {
                    format!("stale {value} < {at_least} {how}")
                }))
            }
            other => Ok(invalid(other)),
        }
    }

    /// The events received on the subscription so far, as (key, change) texts.
    fn events(&mut self) -> RelayReply {
        let mut events = Vec::new();
        if let Some(sub) = self.subscription.as_mut() {
            while let Some(event) = sub.try_recv() {
                let change = match event.change {
                    Change::Set(v) => {
                        let value: Result<String, _> = procactor::wire::decode_value(&v);
                        format!("set {}", value.unwrap_or_default())
                    }
                    other => format!("{other:?}").to_lowercase(),
                };
                events.push((event.key, change));
            }
        }
        RelayReply::Events(events)
    }
}

fn cache_err(e: CacheError) -> RelayReply {
    RelayReply::Failed(procactor::AskError::Failed(e.to_string()))
}

/// Increments `key` `times` times, one after another.
async fn increment(
    cache: &Cache,
    collection: &str,
    key: &str,
    times: u64,
) -> Result<RelayReply, CacheError> {
    for _ in 0..times {
        cache.increment(collection, key, 1).await?;
    }
    Ok(RelayReply::Done)
}

/// Writes `count` keys `<prefix><n>` = n, then deletes every tenth.
async fn burst(
    cache: &Cache,
    collection: &str,
    prefix: &str,
    count: u64,
) -> Result<RelayReply, CacheError> {
    for n in 0..count {
        cache
            .set(collection, &format!("{prefix}{n}"), &n, None)
            .await?;
    }
    for n in (0..count).step_by(10) {
        cache.delete(collection, &format!("{prefix}{n}")).await?;
    }
    Ok(RelayReply::Done)
}

/// `times` times: takes `lock`, reads the number at `key`, writes it plus one, releases.
async fn locked_increment(
    cache: &Cache,
    lock: &str,
    collection: &str,
    key: &str,
    times: u64,
) -> Result<RelayReply, CacheError> {
    for _ in 0..times {
        let guard = cache.lock(lock, TIMEOUT, TIMEOUT).await?;
        let n: u64 = cache.get(collection, key).await?.unwrap_or(0);
        // Let the others try while the lock is held.
        tokio::task::yield_now().await;
        cache.set(collection, key, &(n + 1), None).await?;
        guard.release().await?;
    }
    Ok(RelayReply::Done)
}

/// Waits for `lock` at most `wait_ms`, then releases it; answers how long it waited (ms).
async fn lock_wait(cache: &Cache, lock: &str, wait_ms: u64) -> Result<RelayReply, CacheError> {
    let t = Instant::now();
    let guard = cache
        .lock(lock, TIMEOUT, Duration::from_millis(wait_ms))
        .await?;
    let waited = t.elapsed().as_millis() as i64;
    guard.release().await?;
    Ok(RelayReply::Int(waited))
}

/// Sets `key` to each of `values` in turn and, once each write is answered, tells worker `to`
/// to check that its near-cache sees it.
async fn set_then_tell(
    cache: &Cache,
    peers: &Handle,
    collection: &str,
    key: &str,
    values: std::ops::Range<u64>,
    to: procactor::WorkerId,
) -> Result<RelayReply, CacheError> {
    for value in values {
        cache.set(collection, key, &value, None).await?;
        let check = RelayMsg::NearCheck {
            key: key.to_owned(),
            at_least: value,
        };
        if let Err(e) = peers.tell_worker(to, &check) {
            return Ok(RelayReply::Failed(e));
        }
    }
    Ok(RelayReply::Done)
}

/// `count` operations (3 gets to 1 set, on 1 000 keys), `window` of them in flight at once
/// as one batch (as a Redis client pipelines them), every answer read; answers operations per
/// second.
async fn bench(
    cache: &Cache,
    collection: &str,
    count: u64,
    window: usize,
) -> Result<RelayReply, CacheError> {
    let t = Instant::now();
    let mut key = String::new();
    let (mut gets, mut sets) = (Vec::with_capacity(window), Vec::with_capacity(window));
    let mut next = 0u64;
    while next < count {
        let mut batch = cache.batch();
        let end = count.min(next + window as u64);
        for n in next..end {
            key.clear();
            let _ = write!(key, "k{}", n % 1000);
            if n % 4 == 0 {
                sets.push(batch.set(collection, &key, &n, None)?);
            } else {
                gets.push(batch.get::<u64>(collection, &key));
            }
        }
        next = end;
        let answers = batch.run().await?;
        for set in sets.drain(..) {
            answers.take(set)?;
        }
        for get in gets.drain(..) {
            answers.take(get)?;
        }
    }
    let rate = count as f64 / t.elapsed().as_secs_f64();
    Ok(RelayReply::Int(rate as i64))
}

/// As [`bench()`], through a near-cache: a read it holds is answered at once, and only what it
/// cannot answer is in flight, `window` operations to a batch.
async fn near_bench(
    cache: &Cache,
    collection: &str,
    count: u64,
    window: usize,
) -> Result<RelayReply, CacheError> {
    let t = Instant::now();
    let near = cache.near_cache(collection, NearLimits::default()).await?;
    let mut key = String::new();
    let (mut gets, mut sets) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    while n < count {
        let mut batch = near.batch();
        while n < count && batch.len() < window {
            key.clear();
            let _ = write!(key, "k{}", n % 1000);
            if n % 4 == 0 {
                sets.push(batch.set(&key, &n, None)?);
            } else {
                gets.push(batch.get::<u64>(&key));
            }
            n += 1;
        }
        let answers = batch.run().await?;
        for set in sets.drain(..) {
            answers.take(set)?;
        }
        for get in gets.drain(..) {
            answers.take(get)?;
        }
    }
    let rate = count as f64 / t.elapsed().as_secs_f64();
    Ok(RelayReply::Int(rate as i64))
}
