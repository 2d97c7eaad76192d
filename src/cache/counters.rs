//! The cache's running counts, for [`CacheStats`](crate::cache::CacheStats) and the master's
//! metrics: operations by kind and outcome, and how locks were granted, waited for and lost.
//!
//! Everything here is counted on the master's thread, as the operations are served, with plain
//! integer adds into fixed arrays: no atomics, no allocation per operation. Building the report
//! ([`OpCounters::report`], [`LockCounters::report`]) allocates, and happens only when the
//! figures are asked for.
//!
//! # Limits
//! - The counts are cumulative since the cache started and are not kept in a snapshot: a new
//!   cluster starts them from zero.
//! - A read a near-cache answers itself never reaches the master and is not counted; its
//!   fetches are (as `get`s).
//! - A lock counts when it is answered (granted, or its wait ran out), not when asked for: one
//!   still in line is in no count yet.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cache::ops::{BatchOp, CacheOp, LockStats, OpCounts, WaitHistogram, WAIT_BOUNDS};

/// The kinds of operation counted: one per [`CacheOp`] variant, named as it is in snake case.
/// A batch counts once as `batch` and each of its operations as its own kind; a near-cache's
/// fetch counts as a `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Get,
    Set,
    Delete,
    Exists,
    Expire,
    Ttl,
    Increment,
    CompareAndSet,
    Keys,
    Entries,
    Subscribe,
    Unsubscribe,
    Lock,
    Unlock,
    Stats,
    Batch,
    Track,
}

impl OpKind {
    /// Every kind, in the order of [`OpCounters::counts`].
    const ALL: [OpKind; 17] = [
        OpKind::Get,
        OpKind::Set,
        OpKind::Delete,
        OpKind::Exists,
        OpKind::Expire,
        OpKind::Ttl,
        OpKind::Increment,
        OpKind::CompareAndSet,
        OpKind::Keys,
        OpKind::Entries,
        OpKind::Subscribe,
        OpKind::Unsubscribe,
        OpKind::Lock,
        OpKind::Unlock,
        OpKind::Stats,
        OpKind::Batch,
        OpKind::Track,
    ];

    /// Its name in [`CacheStats::operations`](crate::cache::CacheStats::operations).
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Delete => "delete",
            OpKind::Exists => "exists",
            OpKind::Expire => "expire",
            OpKind::Ttl => "ttl",
            OpKind::Increment => "increment",
            OpKind::CompareAndSet => "compare_and_set",
            OpKind::Keys => "keys",
            OpKind::Entries => "entries",
            OpKind::Subscribe => "subscribe",
            OpKind::Unsubscribe => "unsubscribe",
            OpKind::Lock => "lock",
            OpKind::Unlock => "unlock",
            OpKind::Stats => "stats",
            OpKind::Batch => "batch",
            OpKind::Track => "track",
        }
    }

    /// The kind of `op`.
    pub(crate) fn of(op: &CacheOp) -> Self {
        match op {
            CacheOp::Get { .. } => OpKind::Get,
            CacheOp::Set { .. } => OpKind::Set,
            CacheOp::Delete { .. } => OpKind::Delete,
            CacheOp::Exists { .. } => OpKind::Exists,
            CacheOp::Expire { .. } => OpKind::Expire,
            CacheOp::Ttl { .. } => OpKind::Ttl,
            CacheOp::Increment { .. } => OpKind::Increment,
            CacheOp::CompareAndSet { .. } => OpKind::CompareAndSet,
            CacheOp::Keys { .. } => OpKind::Keys,
            CacheOp::Entries { .. } => OpKind::Entries,
            CacheOp::Subscribe { .. } => OpKind::Subscribe,
            CacheOp::Unsubscribe { .. } => OpKind::Unsubscribe,
            CacheOp::Lock { .. } => OpKind::Lock,
            CacheOp::Unlock { .. } => OpKind::Unlock,
            CacheOp::Stats => OpKind::Stats,
            CacheOp::Batch(_) => OpKind::Batch,
            CacheOp::Track { .. } => OpKind::Track,
        }
    }

    /// The kind of an operation of a batch.
    pub(crate) fn of_batch(op: &BatchOp<'_>) -> Self {
        match op {
            BatchOp::Get { .. } | BatchOp::TrackedGet { .. } => OpKind::Get,
            BatchOp::Set { .. } => OpKind::Set,
            BatchOp::Delete { .. } => OpKind::Delete,
            BatchOp::Exists { .. } => OpKind::Exists,
            BatchOp::Expire { .. } => OpKind::Expire,
            BatchOp::Ttl { .. } => OpKind::Ttl,
            BatchOp::Increment { .. } => OpKind::Increment,
            BatchOp::CompareAndSet { .. } => OpKind::CompareAndSet,
        }
    }
}

/// Operations served, by kind and outcome. Locks are counted by the lock table, which answers
/// them, and joined in at [`report`](Self::report).
#[derive(Debug, Default)]
pub(crate) struct OpCounters {
    counts: [OpCounts; OpKind::ALL.len()],
}

impl OpCounters {
    /// One operation of `kind` was served, successfully or not.
    pub(crate) fn count(&mut self, kind: OpKind, ok: bool) {
        let counts = &mut self.counts[kind as usize];
        if ok {
            counts.ok += 1;
        } else {
            counts.error += 1;
        }
    }

    /// Every kind by name, zeros included, with `locks`' answers as the `lock` kind.
    pub(crate) fn report(&self, locks: &LockCounters) -> BTreeMap<String, OpCounts> {
        OpKind::ALL
            .iter()
            .map(|&kind| {
                let counts = match kind {
                    OpKind::Lock => locks.answered(),
                    _ => self.counts[kind as usize],
                };
                (kind.name().to_owned(), counts)
            })
            .collect()
    }
}

/// The lock table's counts; see [`LockStats`].
#[derive(Debug, Default)]
pub(crate) struct LockCounters {
    grants: u64,
    waits: u64,
    wait_time: Duration,
    /// Grants per bucket of [`WAIT_BOUNDS`], not cumulative; the last is past every bound.
    buckets: [u64; WAIT_BOUNDS.len() + 1],
    timeouts: u64,
    lease_expiries: u64,
    freed_by_exit: u64,
    /// Callers that left the line because their process ended: never answered.
    waiters_gone: u64,
}

impl LockCounters {
    /// A lock was granted after `waited` in line; `queued`: it was held when asked for.
    pub(crate) fn granted(&mut self, waited: Duration, queued: bool) {
        self.grants += 1;
        self.waits += u64::from(queued);
        self.wait_time = self.wait_time.saturating_add(waited);
        let bucket = WAIT_BOUNDS.partition_point(|&le| le < waited);
        self.buckets[bucket] += 1;
    }

    /// A wait ran out.
    pub(crate) fn timed_out(&mut self) {
        self.timeouts += 1;
    }

    /// A lease ran out while held.
    pub(crate) fn lease_expired(&mut self) {
        self.lease_expiries += 1;
    }

    /// A holder's process ended, and its lock was released.
    pub(crate) fn freed_by_exit(&mut self) {
        self.freed_by_exit += 1;
    }

    /// A caller in line left it because its process ended.
    pub(crate) fn waiter_gone(&mut self) {
        self.waiters_gone += 1;
    }

    /// `Lock` operations by outcome: granted, or not (the wait ran out, the caller's process
    /// ended in line).
    fn answered(&self) -> OpCounts {
        OpCounts {
            ok: self.grants,
            error: self.timeouts + self.waiters_gone,
        }
    }

    pub(crate) fn report(&self) -> LockStats {
        let mut below = 0;
        let buckets = WAIT_BOUNDS
            .iter()
            .zip(self.buckets)
            .map(|(&le, n)| {
                below += n;
                (le, below)
            })
            .collect();
        LockStats {
            grants: self.grants,
            waits: self.waits,
            wait_time: self.wait_time,
            wait_histogram: WaitHistogram {
                buckets,
                count: self.grants,
                sum: self.wait_time,
            },
            timeouts: self.timeouts,
            lease_expiries: self.lease_expiries,
            freed_by_exit: self.freed_by_exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::sync::oneshot;

    use super::*;
    use crate::cache::client::CacheTransport;
    use crate::cache::config::CacheConfig;
    use crate::cache::core::{CacheCore, Served};
    use crate::cache::direct::{block_on, client};
    use crate::cache::locks::Reply;
    use crate::cache::near::NearLimits;
    use crate::cache::ops::{CacheAnswer, CacheError};
    use crate::cache::store::Limits;
    use crate::messaging::Peer;

    type Answer = oneshot::Receiver<Result<CacheAnswer, CacheError>>;

    /// `operations` as expected: the kinds named `counts`, and zeros for every other.
    fn expected(counts: &[(&str, u64, u64)]) -> BTreeMap<String, OpCounts> {
        let mut all: BTreeMap<_, _> = OpKind::ALL
            .iter()
            .map(|k| (k.name().to_owned(), OpCounts::default()))
            .collect();
        for &(name, ok, error) in counts {
            assert!(all.contains_key(name), "{name} is a kind");
            all.insert(name.to_owned(), OpCounts { ok, error });
        }
        all
    }

    fn worker(id: usize) -> Peer {
        Peer::Worker {
            id,
            pid: 2000 + id as u32,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Asks for lock `name` as a worker's proxy does: served, then handed to the lock table.
    fn lock(
        core: &mut CacheCore,
        who: Peer,
        name: &str,
        lease: u64,
        wait: u64,
        at: Instant,
    ) -> Answer {
        let op = CacheOp::Lock {
            name: name.into(),
            lease: ms(lease),
            wait: ms(wait),
        };
        let Served::NeedsReply(crate::cache::core::Later::Lock(request)) = core.serve(who, op, at)
        else {
            panic!("a lock is answered by the lock table");
        };
        let (tx, rx) = oneshot::channel();
        core.lock(request, Reply::Master(tx), at);
        rx
    }

    fn token(rx: &mut Answer) -> u64 {
        match rx.try_recv() {
            Ok(Ok(CacheAnswer::Locked(token))) => token,
            other => panic!("expected the lock, got {other:?}"),
        }
    }

    fn unlock(core: &mut CacheCore, who: Peer, name: &str, token: u64, at: Instant) -> bool {
        let op = CacheOp::Unlock {
            name: name.into(),
            token,
        };
        match core.serve(who, op, at) {
            Served::Answer(answer) => answer.is_ok(),
            Served::NeedsReply(_) => panic!("an unlock is answered at once"),
        }
    }

    #[test]
    fn every_kind_has_its_own_slot_and_name() {
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
        let names: std::collections::BTreeSet<_> = OpKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), OpKind::ALL.len());
    }

    #[test]
    fn operations_are_counted_by_kind_and_outcome_each_of_a_batch_as_its_own() {
        let small = Limits {
            max_entries: None,
            max_bytes: Some(16),
        };
        let config = CacheConfig {
            collections: vec![("small".into(), small)],
            ..CacheConfig::default()
        };
        let (cache, direct) = client(&config);
        block_on(async {
            cache.set("small", "a", &"text", None).await.unwrap();
            assert_eq!(
                cache.get::<String>("small", "a").await.unwrap().unwrap(),
                "text"
            );
            assert_eq!(
                cache.get::<String>("small", "none").await.unwrap(),
                None,
                "a miss is ok"
            );
            assert!(cache
                .set("small", "b", &"x".repeat(64), None)
                .await
                .is_err());
            assert!(cache.increment("small", "a", 1).await.is_err());
            assert_eq!(cache.increment("c", "n", 2).await.unwrap(), 2);
            assert!(cache.delete("small", "a").await.unwrap());

            let mut batch = cache.batch();
            let _ = batch.set("c", "k", &1u8, None).unwrap();
            let _ = batch.get::<u8>("c", "k");
            let _ = batch.get::<u8>("c", "absent");
            let _ = batch.set("small", "big", &"y".repeat(64), None).unwrap();
            let _ = batch.increment("c", "n", 1);
            let _ = batch
                .compare_and_set("c", "k", Some(&1u8), Some(&2u8), None)
                .unwrap();
            let answers = batch.run().await.unwrap();
            assert!(matches!(answers.check(), Err(CacheError::TooLarge(_))));
            // Bytes that are not a batch: one failed batch, nothing inside it counted.
            let refused = direct.call(CacheOp::Batch(vec![0xff; 4])).await;
            assert!(matches!(refused, Err(CacheError::Codec(_))), "{refused:?}");

            // A near-cache: its subscription, its tracking, one fetch; the second read is its own.
            let near = cache.near_cache("c", NearLimits::default()).await.unwrap();
            assert_eq!(near.get::<u8>("k").await.unwrap(), Some(2));
            assert_eq!(near.get::<u8>("k").await.unwrap(), Some(2));
            drop(near);
            let stats = cache.stats().await.unwrap();
            assert_eq!(
                stats.operations["stats"],
                OpCounts::default(),
                "counted once answered"
            );
        });
        let stats = direct.core.borrow().stats();
        let want = expected(&[
            ("set", 2, 2),
            ("get", 5, 0),
            ("increment", 2, 1),
            ("delete", 1, 0),
            ("compare_and_set", 1, 0),
            ("batch", 2, 1),
            ("subscribe", 1, 0),
            ("unsubscribe", 1, 0),
            ("track", 1, 0),
            ("stats", 1, 0),
        ]);
        assert_eq!(stats.operations, want);
        let c = stats.collections.iter().find(|c| c.name == "c").unwrap();
        let small = stats
            .collections
            .iter()
            .find(|c| c.name == "small")
            .unwrap();
        assert_eq!((c.hits, c.misses, small.hits, small.misses), (2, 1, 1, 1));
    }

    #[test]
    fn locks_count_grants_waits_their_time_timeouts_lease_expiries_and_exits() {
        let (_cache, direct) = client(&CacheConfig::default());
        let mut core = direct.core.borrow_mut();
        let t0 = Instant::now();
        // L: the first holder's lease runs out at 5 s; the second waits that long for it; the
        // third gives up after 1 s.
        let mut first = lock(&mut core, worker(0), "L", 5_000, 0, t0);
        let first = token(&mut first);
        let mut second = lock(&mut core, worker(1), "L", 60_000, 30_000, t0);
        let mut third = lock(&mut core, worker(2), "L", 60_000, 1_000, t0);
        core.tick(t0 + ms(1_000));
        assert!(matches!(
            third.try_recv(),
            Ok(Err(CacheError::LockTimeout(_)))
        ));
        assert!(second.try_recv().is_err(), "still in line");
        core.tick(t0 + ms(5_000));
        let second = token(&mut second);
        assert!(
            !unlock(&mut core, worker(0), "L", first, t0 + ms(5_000)),
            "lost by time"
        );
        // M: its holder's process ends 20 ms on, before one in line and after another's.
        let t5 = t0 + ms(5_000);
        let mut holder = lock(&mut core, worker(3), "M", 60_000, 0, t5);
        token(&mut holder);
        let mut next = lock(&mut core, worker(4), "M", 60_000, 60_000, t5);
        let _gone = lock(&mut core, worker(5), "M", 60_000, 60_000, t5);
        core.process_gone(worker(5), t5 + ms(10));
        core.process_gone(worker(3), t5 + ms(20));
        let next = token(&mut next);
        assert!(unlock(&mut core, worker(1), "L", second, t5 + ms(30)));
        assert!(unlock(&mut core, worker(4), "M", next, t5 + ms(30)));

        let stats = core.stats();
        let want = expected(&[("lock", 4, 2), ("unlock", 2, 1)]);
        assert_eq!(stats.operations, want);
        let waited = ms(5_020);
        let cumulative = [2, 2, 2, 3, 3, 3, 3, 4, 4];
        let histogram = WaitHistogram {
            buckets: WAIT_BOUNDS.iter().copied().zip(cumulative).collect(),
            count: 4,
            sum: waited,
        };
        let locks = LockStats {
            grants: 4,
            waits: 2,
            wait_time: waited,
            wait_histogram: histogram,
            timeouts: 1,
            lease_expiries: 1,
            freed_by_exit: 1,
        };
        assert_eq!(stats.locks, locks);
        assert_eq!((stats.locks_held, stats.lock_waiters), (0, 0));
    }

    #[test]
    fn a_wait_on_a_bound_is_in_its_bucket_and_one_past_every_bound_only_in_the_count() {
        let mut counters = LockCounters::default();
        counters.granted(ms(1), true);
        counters.granted(ms(11_000), true);
        let report = counters.report().wait_histogram;
        assert_eq!(report.buckets[0], (ms(1), 1));
        assert_eq!(report.buckets[8], (ms(10_000), 1));
        assert_eq!((report.count, report.sum), (2, ms(11_001)));
    }

    #[test]
    fn the_master_subscribing_as_a_worker_does_is_an_error_of_its_kind() {
        let (_cache, direct) = client(&CacheConfig::default());
        let mut core = direct.core.borrow_mut();
        let op = CacheOp::Subscribe {
            id: 1,
            collection: "c".into(),
            prefix: String::new(),
        };
        assert!(matches!(
            core.serve(Peer::Master, op, Instant::now()),
            Served::Answer(Err(_))
        ));
        assert_eq!(core.stats().operations, expected(&[("subscribe", 0, 1)]));
    }
}
