//! Batches: many key-value operations sent as one, served back to back, answered as one.
//!
//! One operation at a time costs a frame each way, an ask to correlate and a future per
//! operation in the caller; a batch pays these once for all its operations, as a Redis
//! pipeline does. [`CacheBatch`] encodes each operation as it is added, borrowing its strings,
//! into one buffer; the master decodes them borrowed from the frame (nothing is allocated per
//! operation but what the store keeps), serves them in order and writes their answers one after
//! another into one buffer, which [`BatchAnswers`] reads each from in place.
//!
//! The bytes of [`CacheOp::Batch`] and [`CacheAnswer::Batch`] are postcard `BatchOp`s, one
//! after another, and as many postcard `Result<Answer, CacheError>`s (both in `ops.rs`). The
//! encoding is private to this crate; a batch is built only by [`CacheBatch`].

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::client::{CacheClient, CacheTransport};
use crate::cache::ops::{Answer, BatchOp, CacheAnswer, CacheError, CacheOp};

/// The id of the next batch: a [`Pending`] is read only from the answers of its own.
static NEXT_BATCH: AtomicU64 = AtomicU64::new(1);

/// Operations to send to the cache together; see [`CacheClient::batch`].
///
/// Each method adds one operation and returns the [`Pending`] answer that
/// [`BatchAnswers::take`] reads once the batch has [`run`](Self::run).
#[derive(Debug)]
pub struct CacheBatch<T> {
    transport: T,
    id: u64,
    ops: Vec<u8>,
    count: usize,
    /// A value being encoded, before its operation is.
    scratch: Vec<u8>,
}

/// The answer to one operation of a [`CacheBatch`] (or a [`NearBatch`](crate::cache::NearBatch)),
/// typed, to read with [`BatchAnswers::take`].
#[must_use = "an answer is read with BatchAnswers::take"]
pub struct Pending<V> {
    batch: u64,
    index: usize,
    read: fn(&[u8], Slot) -> Result<V, CacheError>,
    /// Answered already, without the master (a near-cache's hit).
    ready: Option<Result<V, CacheError>>,
}

impl<V> Pending<V> {
    /// An answer known without asking the master.
    pub(super) fn ready(answer: Result<V, CacheError>) -> Self {
        Self {
            batch: 0,
            index: usize::MAX,
            read: |_, slot| Err(unexpected(slot)),
            ready: Some(answer),
        }
    }
}

impl<V> std::fmt::Debug for Pending<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("batch", &self.batch)
            .field("index", &self.index)
            .field("ready", &self.ready.is_some())
            .finish()
    }
}

/// The answers of a batch that has run, each read in place by [`take`](Self::take).
#[derive(Debug)]
pub struct BatchAnswers {
    batch: u64,
    bytes: Vec<u8>,
    slots: Vec<Result<Slot, CacheError>>,
}

/// The answer to a near-cache's tracked get.
#[derive(Debug)]
pub(super) struct Tracked<'a> {
    /// The value.
    pub(super) value: Option<&'a [u8]>,
    /// The time it had left.
    pub(super) ttl: Option<Duration>,
    /// The invalidations sent to the near-cache before it.
    pub(super) position: u64,
}

/// An answer, its value as a range of the answers' bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Slot {
    Done,
    Value(Option<Range<usize>>),
    Bool(bool),
    Ttl(Option<Option<Duration>>),
    Int(i64),
    Tracked {
        value: Option<Range<usize>>,
        ttl: Option<Duration>,
        position: Option<u64>,
    },
}

impl<T: CacheTransport> CacheClient<T> {
    /// An empty batch: operations added to it are sent together by
    /// [`CacheBatch::run`], in one message each way, and served in the order they were added,
    /// one after another with no other caller's operation between them (each applied whole or
    /// not at all, as alone; one that fails does not undo those before it). As a Redis
    /// pipeline, this is for many operations at once: per operation, it costs a fraction of
    /// one [`get`](Self::get) or [`set`](Self::set).
    ///
    /// A batch carries the key-value operations; locks, subscriptions and scans are not
    /// batched. Its encoded operations, and its answers, must each fit in one frame
    /// ([`ClusterConfig::max_frame_bytes`](crate::ClusterConfig::max_frame_bytes)); a large
    /// batch holds up every other operation while the master serves it.
    ///
    /// # Example
    /// ```no_run
    /// use procactor::cache::{CacheClient, CacheError, CacheTransport};
    ///
    /// async fn visit<T: CacheTransport>(cache: &CacheClient<T>) -> Result<(), CacheError> {
    ///     let mut batch = cache.batch();
    ///     let set = batch.set("sessions", "s1", &"alice", None)?;
    ///     let user = batch.get::<String>("sessions", "s1");
    ///     let visits = batch.increment("counters", "visits", 1);
    ///     let answers = batch.run().await?;
    ///     answers.take(set)?;
    ///     assert_eq!(answers.take(user)?.as_deref(), Some("alice"));
    ///     assert!(answers.take(visits)? >= 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn batch(&self) -> CacheBatch<T> {
        CacheBatch {
            transport: self.transport().clone(),
            id: NEXT_BATCH.fetch_add(1, Ordering::Relaxed),
            ops: Vec::with_capacity(1024),
            count: 0,
            scratch: Vec::new(),
        }
    }
}

impl<T: CacheTransport> CacheBatch<T> {
    /// Operations added so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no operation has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(super) fn push<V>(
        &mut self,
        op: BatchOp<'_>,
        read: fn(&[u8], Slot) -> Result<V, CacheError>,
    ) -> Pending<V> {
        // Into a `Vec`, a `BatchOp` always encodes.
        let _ = postcard::to_io(&op, &mut self.ops);
        self.count += 1;
        Pending {
            batch: self.id,
            index: self.count - 1,
            read,
            ready: None,
        }
    }

    /// Adds [`CacheClient::get`]: the value of `key`, decoded as a `V`.
    pub fn get<V: DeserializeOwned>(&mut self, collection: &str, key: &str) -> Pending<Option<V>> {
        self.push(BatchOp::Get { collection, key }, read_value::<V>)
    }

    /// Adds [`CacheClient::set`].
    ///
    /// # Errors
    /// [`CacheError::Codec`] when `value` does not encode; nothing is added then.
    pub fn set<V: Serialize + ?Sized>(
        &mut self,
        collection: &str,
        key: &str,
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<Pending<()>, CacheError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let encoded = crate::codec::encode_value(&mut scratch, value);
        let pending = encoded
            .map_err(|e| CacheError::Codec(e.to_string()))
            .map(|()| {
                let value = &scratch[..];
                self.push(
                    BatchOp::Set {
                        collection,
                        key,
                        value,
                        ttl,
                    },
                    read_done,
                )
            });
        self.scratch = scratch;
        pending
    }

    /// Adds [`CacheClient::delete`].
    pub fn delete(&mut self, collection: &str, key: &str) -> Pending<bool> {
        self.push(BatchOp::Delete { collection, key }, read_bool)
    }

    /// Adds [`CacheClient::exists`].
    pub fn exists(&mut self, collection: &str, key: &str) -> Pending<bool> {
        self.push(BatchOp::Exists { collection, key }, read_bool)
    }

    /// Adds [`CacheClient::expire`].
    pub fn expire(&mut self, collection: &str, key: &str, ttl: Option<Duration>) -> Pending<bool> {
        self.push(
            BatchOp::Expire {
                collection,
                key,
                ttl,
            },
            read_bool,
        )
    }

    /// Adds [`CacheClient::ttl`].
    pub fn ttl(&mut self, collection: &str, key: &str) -> Pending<Option<Option<Duration>>> {
        self.push(BatchOp::Ttl { collection, key }, read_ttl)
    }

    /// Adds [`CacheClient::increment`].
    pub fn increment(&mut self, collection: &str, key: &str, by: i64) -> Pending<i64> {
        self.push(
            BatchOp::Increment {
                collection,
                key,
                by,
            },
            read_int,
        )
    }

    /// Adds [`CacheClient::compare_and_set`].
    ///
    /// # Errors
    /// [`CacheError::Codec`] when a value does not encode; nothing is added then.
    pub fn compare_and_set<V: Serialize + ?Sized>(
        &mut self,
        collection: &str,
        key: &str,
        expected: Option<&V>,
        new: Option<&V>,
        ttl: Option<Duration>,
    ) -> Result<Pending<bool>, CacheError> {
        let encode = |v: &V| {
            let mut buf = Vec::new();
            crate::codec::encode_value(&mut buf, v)
                .map(|()| buf)
                .map_err(|e| CacheError::Codec(e.to_string()))
        };
        let expected = expected.map(encode).transpose()?;
        let new = new.map(encode).transpose()?;
        let op = BatchOp::CompareAndSet {
            collection,
            key,
            expected: expected.as_deref(),
            new: new.as_deref(),
            ttl,
        };
        Ok(self.push(op, read_bool))
    }

    /// Sends the operations, and resolves with their answers once the master has served them
    /// all. An empty batch resolves at once.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`] when the batch could not be sent or answered (it may have
    /// been served, or not), [`CacheError::Codec`] for an answer that does not read,
    /// [`CacheError::Limit`] for a batch of more than 65 536 operations (none served). The
    /// errors of single operations are their answers' — among them `Limit` for the operations
    /// after the batch's answers passed 8 MiB, which the master does not serve.
    pub async fn run(self) -> Result<BatchAnswers, CacheError> {
        let (batch, count) = (self.id, self.count);
        if count == 0 {
            return Ok(BatchAnswers {
                batch,
                bytes: Vec::new(),
                slots: Vec::new(),
            });
        }
        match self.transport.call(CacheOp::Batch(self.ops)).await? {
            CacheAnswer::Batch(bytes) => {
                let slots = read_slots(&bytes, count)?;
                Ok(BatchAnswers {
                    batch,
                    bytes,
                    slots,
                })
            }
            other => Err(CacheError::Codec(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Reads the `count` answers of a batch, their values as ranges of `bytes`.
fn read_slots(bytes: &[u8], count: usize) -> Result<Vec<Result<Slot, CacheError>>, CacheError> {
    let start = bytes.as_ptr() as usize;
    let range = |v: &[u8]| {
        let from = v.as_ptr() as usize - start;
        from..from + v.len()
    };
    let mut slots = Vec::with_capacity(count);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (answer, tail) = postcard::take_from_bytes::<Result<Answer<'_>, CacheError>>(rest)
            .map_err(|e| CacheError::Codec(format!("batch answer {}: {e}", slots.len())))?;
        slots.push(answer.map(|a| match a {
            Answer::Done => Slot::Done,
            Answer::Value(v) => Slot::Value(v.map(range)),
            Answer::Bool(b) => Slot::Bool(b),
            Answer::Ttl(t) => Slot::Ttl(t),
            Answer::Int(n) => Slot::Int(n),
            Answer::Tracked {
                value,
                ttl,
                position,
            } => Slot::Tracked {
                value: value.map(range),
                ttl,
                position,
            },
        }));
        rest = tail;
    }
    if slots.len() != count {
        return Err(CacheError::Codec(format!(
            "{} answers to a batch of {count}",
            slots.len()
        )));
    }
    Ok(slots)
}

impl BatchAnswers {
    /// The answer `pending` stands for, as its operation alone would have answered.
    ///
    /// # Errors
    /// The operation's own ([`CacheError::TooLarge`], [`CacheError::NotAnInteger`], ...);
    /// [`CacheError::Codec`] when a value is not a `V`, or `pending` is of another batch.
    pub fn take<V>(&self, pending: Pending<V>) -> Result<V, CacheError> {
        if let Some(answer) = pending.ready {
            return answer;
        }
        let slot = (pending.batch == self.batch)
            .then(|| self.slots.get(pending.index))
            .flatten()
            .ok_or_else(|| CacheError::Codec("the answer of another batch".into()))?;
        (pending.read)(&self.bytes, slot.clone()?)
    }

    /// The first error among the answers, if any: to check a batch of writes at once.
    ///
    /// # Errors
    /// The first operation's error, in the order they were added.
    pub fn check(&self) -> Result<(), CacheError> {
        match self.slots.iter().find_map(|s| s.as_ref().err()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// How many answers there are: one per operation.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The answer to the operation at `index` if it is a tracked get's, for a near-cache.
    pub(super) fn tracked(&self, index: usize) -> Option<Tracked<'_>> {
        match self.slots.get(index)? {
            Ok(Slot::Tracked {
                value,
                ttl,
                position: Some(position),
            }) => Some(Tracked {
                value: value.clone().map(|r| &self.bytes[r]),
                ttl: *ttl,
                position: *position,
            }),
            _ => None,
        }
    }
}

fn unexpected(slot: Slot) -> CacheError {
    CacheError::Codec(format!("unexpected answer {slot:?}"))
}

pub(super) fn read_value<V: DeserializeOwned>(
    bytes: &[u8],
    slot: Slot,
) -> Result<Option<V>, CacheError> {
    match slot {
        Slot::Value(Some(range))
        | Slot::Tracked {
            value: Some(range), ..
        } => decode(&bytes[range]).map(Some),
        Slot::Value(None) | Slot::Tracked { value: None, .. } => Ok(None),
        other => Err(unexpected(other)),
    }
}

/// A value as it is stored, decoded as a `V`.
pub(super) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, CacheError> {
    crate::codec::decode_value(bytes).map_err(|e| CacheError::Codec(e.to_string()))
}

fn read_done(_: &[u8], slot: Slot) -> Result<(), CacheError> {
    match slot {
        Slot::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn read_bool(_: &[u8], slot: Slot) -> Result<bool, CacheError> {
    match slot {
        Slot::Bool(b) => Ok(b),
        other => Err(unexpected(other)),
    }
}

fn read_ttl(_: &[u8], slot: Slot) -> Result<Option<Option<Duration>>, CacheError> {
    match slot {
        Slot::Ttl(t) => Ok(t),
        other => Err(unexpected(other)),
    }
}

fn read_int(_: &[u8], slot: Slot) -> Result<i64, CacheError> {
    match slot {
        Slot::Int(n) => Ok(n),
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::config::CacheConfig;
    use crate::cache::direct::{block_on, client};
    use crate::cache::store::Limits;

    #[test]
    fn a_batch_answers_each_operation_as_it_would_alone_in_one_call() {
        let (cache, direct) = client(&CacheConfig::default());
        block_on(async {
            let mut batch = cache.batch();
            let set = batch.set("c", "a", &7u32, None).unwrap();
            let get = batch.get::<u32>("c", "a");
            let missing = batch.get::<u32>("c", "nothing");
            let exists = batch.exists("c", "a");
            let counted = batch.increment("c", "n", 5);
            let again = batch.increment("c", "n", 2);
            let expire = batch.expire("c", "a", Some(Duration::from_secs(60)));
            let ttl = batch.ttl("c", "a");
            let swapped = batch
                .compare_and_set("c", "a", Some(&7u32), Some(&8u32), None)
                .unwrap();
            let not_swapped = batch
                .compare_and_set("c", "a", Some(&7u32), Some(&9u32), None)
                .unwrap();
            let after = batch.get::<u32>("c", "a");
            let deleted = batch.delete("c", "a");
            let gone = batch.delete("c", "a");
            assert_eq!(batch.len(), 13);
            let answers = batch.run().await.unwrap();
            assert_eq!(answers.len(), 13);
            answers.check().unwrap();
            answers.take(set).unwrap();
            assert_eq!(answers.take(get).unwrap(), Some(7));
            assert_eq!(answers.take(missing).unwrap(), None);
            assert!(answers.take(exists).unwrap());
            assert_eq!(answers.take(counted).unwrap(), 5);
            assert_eq!(answers.take(again).unwrap(), 7);
            assert!(answers.take(expire).unwrap());
            let left = answers.take(ttl).unwrap().unwrap().unwrap();
            assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
            assert!(answers.take(swapped).unwrap());
            assert!(!answers.take(not_swapped).unwrap());
            assert_eq!(answers.take(after).unwrap(), Some(8));
            assert!(answers.take(deleted).unwrap());
            assert!(!answers.take(gone).unwrap());
            // Alone, the same store answers the same.
            assert_eq!(cache.get::<i64>("c", "n").await.unwrap(), Some(7));
        });
        assert_eq!(
            *direct.calls.borrow(),
            2,
            "one call for the batch, one for the get"
        );
    }

    #[test]
    fn a_failing_operation_is_its_own_answer_and_the_others_still_apply() {
        let config = CacheConfig {
            collections: vec![(
                "small".into(),
                Limits {
                    max_entries: None,
                    max_bytes: Some(16),
                },
            )],
            ..CacheConfig::default()
        };
        let (cache, _) = client(&config);
        block_on(async {
            let mut batch = cache.batch();
            let first = batch.set("small", "a", "text", None).unwrap();
            let too_large = batch.set("small", "b", &"x".repeat(64), None).unwrap();
            let not_int = batch.increment("small", "a", 1);
            let as_number = batch.get::<u8>("small", "a");
            let last = batch.set("small", "c", &3u8, None).unwrap();
            let answers = batch.run().await.unwrap();
            assert!(matches!(answers.check(), Err(CacheError::TooLarge(_))));
            answers.take(first).unwrap();
            assert!(matches!(
                answers.take(too_large),
                Err(CacheError::TooLarge(_))
            ));
            let not_int = answers.take(not_int);
            assert!(
                matches!(not_int, Err(CacheError::NotAnInteger(_))),
                "{not_int:?}"
            );
            assert!(matches!(answers.take(as_number), Err(CacheError::Codec(_))));
            answers.take(last).unwrap();
            assert_eq!(cache.get::<u8>("small", "c").await.unwrap(), Some(3));
            assert_eq!(cache.get::<u8>("small", "b").await.unwrap(), None);
        });
    }

    #[test]
    fn an_answer_is_read_only_from_its_own_batch_and_an_empty_batch_sends_nothing() {
        let (cache, direct) = client(&CacheConfig::default());
        block_on(async {
            let mut one = cache.batch();
            let from_one = one.get::<u8>("c", "k");
            let mut two = cache.batch();
            let _ = two.get::<u8>("c", "k");
            let answers = two.run().await.unwrap();
            assert!(matches!(answers.take(from_one), Err(CacheError::Codec(_))));
            let empty = cache.batch().run().await.unwrap();
            assert!(empty.is_empty());
            empty.check().unwrap();
        });
        assert_eq!(*direct.calls.borrow(), 1);
    }

    #[test]
    fn a_batch_that_does_not_decode_is_refused_whole_and_changes_nothing() {
        let (cache, direct) = client(&CacheConfig::default());
        let mut batch = cache.batch();
        let _ = batch.set("c", "a", &1u8, None).unwrap();
        let mut bytes = std::mem::take(&mut batch.ops);
        bytes.push(0xff);
        let answer = block_on(direct.call(CacheOp::Batch(bytes)));
        assert!(matches!(answer, Err(CacheError::Codec(_))), "{answer:?}");
        assert!(!block_on(cache.exists("c", "a")).unwrap());
    }

    #[test]
    fn a_batch_builds_no_more_than_its_bound_of_answers_nor_holds_more_operations() {
        let (cache, direct) = client(&CacheConfig::default());
        block_on(async {
            // 1 MiB a value: the answers pass 8 MiB after 8 of 20 gets.
            cache
                .set("c", "big", &vec![1u8; 1 << 20], None)
                .await
                .unwrap();
            let mut batch = cache.batch();
            let gets: Vec<_> = (0..20).map(|_| batch.get::<Vec<u8>>("c", "big")).collect();
            let answers = batch.run().await.unwrap();
            let served = gets
                .into_iter()
                .map(|get| answers.take(get))
                .take_while(Result::is_ok)
                .count();
            assert!((8..20).contains(&served), "{served} served");
            assert!(matches!(answers.check(), Err(CacheError::Limit(_))));
        });
        // One operation past the bound: refused whole.
        let mut batch = cache.batch();
        for _ in 0..=crate::cache::ops::MAX_BATCH_OPS {
            let _ = batch.exists("c", "k");
        }
        let bytes = std::mem::take(&mut batch.ops);
        let answer = block_on(direct.call(CacheOp::Batch(bytes)));
        assert!(matches!(answer, Err(CacheError::Limit(_))), "{answer:?}");
    }
}
