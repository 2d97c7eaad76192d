//! The cache's actor: it owns nothing, and does for the [`CacheCore`] what needs an actix
//! context.
//!
//! - It sleeps until the deadline the core names (an expiry, a lease, a wait) and calls
//!   [`CacheCore::tick`] then; an operation that brings the deadline forward sends [`Wake`].
//! - At the snapshot interval it exports the entries on the master's thread (the values are
//!   shared, not copied) and writes them on a blocking thread. At most one write runs at a time:
//!   an interval that comes while one runs is skipped and counted, and the next takes the state
//!   of its own time. [`CloseCache`] waits for a running write, then writes the last one.
//! - It is the mailbox of the master's [`CacheClient`](crate::cache::CacheClient)s, which may be
//!   used from other threads than the master's: their operations reach the core here, and get
//!   typed answers, not encoded ones.
//!
//! It holds the core by a weak reference: the cluster's shared context owns it.

use std::cell::RefCell;
use std::io;
use std::rc::Weak;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::cache::core::{CacheCore, Later, Served};
use crate::cache::locks::Reply;
use crate::cache::ops::{CacheAnswer, CacheError, CacheEvent, CacheOp};
use crate::cache::remote::Remote;
use crate::cache::snapshot;
use crate::messaging::Peer;

/// The core's next deadline moved forward to this instant.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Wake(pub(crate) Instant);

/// An operation from the master, answered as it is.
#[derive(Debug, Message)]
#[rtype(result = "Result<CacheAnswer, CacheError>")]
pub(crate) struct MasterCall(pub(crate) CacheOp);

/// A subscription from the master itself, whose events go to `tx`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct SubscribeMaster {
    pub(crate) id: u64,
    pub(crate) collection: String,
    pub(crate) prefix: String,
    pub(crate) tx: mpsc::UnboundedSender<CacheEvent>,
}

/// Writes the last snapshot (if the cache keeps one; after any write still running) and stops
/// the actor; answered when it is on disk. Sent when the cluster stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct CloseCache;

/// See the [module docs](self).
pub(crate) struct CacheActor {
    core: Weak<RefCell<CacheCore>>,
    /// The cluster-wide cache in Redis, if the cache is the cluster's.
    remote: Option<std::rc::Rc<crate::cache::remote::Remote>>,
    save_every: Option<Duration>,
    /// The timer for the core's next deadline.
    timer: Option<(Instant, SpawnHandle)>,
    /// A snapshot is being written.
    saving: bool,
    /// Closing: the last snapshot has been started, and who waits for it.
    closing: Option<Closing>,
}

struct Closing {
    last_started: bool,
    waiters: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for CacheActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheActor")
            .field("timer", &self.timer.map(|(at, _)| at))
            .field("saving", &self.saving)
            .finish_non_exhaustive()
    }
}

impl CacheActor {
    pub(crate) fn new(core: Weak<RefCell<CacheCore>>, save_every: Option<Duration>) -> Self {
        Self {
            core,
            remote: None,
            save_every,
            timer: None,
            saving: false,
            closing: None,
        }
    }

    /// Serves the operations of the cluster-wide cache through `remote`.
    pub(crate) fn with_remote(
        mut self,
        remote: Option<std::rc::Rc<crate::cache::remote::Remote>>,
    ) -> Self {
        self.remote = remote;
        self
    }

    /// Does what is due and sleeps until the next deadline.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let next = core.borrow_mut().tick(Instant::now());
        if let Some(at) = next {
            self.arm(at, ctx);
        }
    }

    /// Sets the timer for `at`, unless it is set for earlier.
    fn arm(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if let Some((armed, handle)) = self.timer {
            if armed <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| act.tick(ctx));
        self.timer = Some((at, handle));
    }

    /// The interval came round: a snapshot, unless one is still being written.
    fn save_due(&mut self, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        if self.saving {
            if let Some(core) = self.core.upgrade() {
                core.borrow_mut().snapshot_skipped();
            }
            return;
        }
        self.save(ctx);
    }

    /// Exports the entries now and writes them on a blocking thread; false when there is
    /// nothing to write to.
    fn save(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(core) = self.core.upgrade() else {
            return false;
        };
        let (path, entries, wall) = {
            let core = core.borrow();
            let Some(path) = core.snapshot_path() else {
                return false;
            };
            (
                path.to_owned(),
                core.export(Instant::now()),
                SystemTime::now(),
            )
        };
        self.saving = true;
        let job = tokio::task::spawn_blocking(move || {
            let written = snapshot::write(&path, &entries, wall);
            if let Err(e) = &written {
                tracing::error!(path = %path.display(), error = %e, "cache snapshot not written");
            }
            written
        });
        ctx.spawn(fut::wrap_future(job).map(|done, act: &mut Self, ctx| {
            act.saved(done.unwrap_or_else(|e| Err(io::Error::other(e))), ctx)
        }));
        true
    }

    fn saved(&mut self, written: io::Result<()>, ctx: &mut Context<Self>) {
        self.saving = false;
        if let (Ok(()), Some(core)) = (written, self.core.upgrade()) {
            core.borrow_mut().snapshot_written();
        }
        let Some(closing) = &self.closing else {
            return;
        };
        if closing.last_started {
            self.finish(ctx);
        } else {
            self.save_last(ctx);
        }
    }

    fn save_last(&mut self, ctx: &mut Context<Self>) {
        if let Some(closing) = &mut self.closing {
            closing.last_started = true;
        }
        if !self.save(ctx) {
            self.finish(ctx);
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        for waiter in self.closing.take().into_iter().flat_map(|c| c.waiters) {
            let _ = waiter.send(());
        }
        ctx.stop();
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        if let Some(every) = self.save_every {
            ctx.run_interval(every, |act, ctx| act.save_due(ctx));
        }
    }
}

impl Handler<Wake> for CacheActor {
    type Result = ();

    fn handle(&mut self, Wake(at): Wake, ctx: &mut Context<Self>) {
        self.arm(at, ctx);
    }
}

impl Handler<MasterCall> for CacheActor {
    type Result = ResponseFuture<Result<CacheAnswer, CacheError>>;

    fn handle(&mut self, MasterCall(op): MasterCall, ctx: &mut Context<Self>) -> Self::Result {
        let Some(core) = self.core.upgrade() else {
            return Box::pin(async { Err(gone()) });
        };
        if let Some(remote) = self.remote.as_ref().filter(|_| Remote::serves(&op)) {
            let (tx, rx) = oneshot::channel();
            remote.serve(Peer::Master, op, Reply::Master(tx));
            return Box::pin(async { rx.await.unwrap_or_else(|_| Err(gone())) });
        }
        let now = Instant::now();
        let mut core = core.borrow_mut();
        let answer: Self::Result = match core.serve(Peer::Master, op, now) {
            Served::Answer(answer) => Box::pin(async { answer }),
            Served::NeedsReply(Later::Remote(..)) => {
                Box::pin(async { Err(CacheError::Storage("no cluster-wide cache here".into())) })
            }
            Served::NeedsReply(Later::Lock(request)) => {
                let (tx, rx) = oneshot::channel();
                core.lock(request, Reply::Master(tx), now);
                Box::pin(async { rx.await.unwrap_or_else(|_| Err(gone())) })
            }
        };
        if let Some(at) = core.earlier_deadline() {
            self.arm(at, ctx);
        }
        answer
    }
}

impl Handler<SubscribeMaster> for CacheActor {
    type Result = ();

    fn handle(&mut self, sub: SubscribeMaster, _ctx: &mut Context<Self>) {
        if let Some(core) = self.core.upgrade() {
            let SubscribeMaster {
                id,
                collection,
                prefix,
                tx,
            } = sub;
            core.borrow_mut()
                .subscribe_master(id, collection, prefix, tx);
        }
    }
}

impl Handler<CloseCache> for CacheActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: CloseCache, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let closing = self.closing.get_or_insert_with(|| Closing {
            last_started: false,
            waiters: Vec::new(),
        });
        closing.waiters.push(tx);
        // A write still running finishes first; `saved` starts the last one then.
        if !self.saving && !closing.last_started {
            self.save_last(ctx);
        }
        Box::pin(async {
            let _ = rx.await;
        })
    }
}

fn gone() -> CacheError {
    CacheError::Unreachable("the cache has stopped".into())
}
