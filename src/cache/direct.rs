//! For unit tests: a cache client whose transport serves on a core of its own, as the master's
//! proxies do, with every call counted.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::cache::client::{CacheClient, CacheTransport, Subscription};
use crate::cache::config::CacheConfig;
use crate::cache::core::{CacheCore, Served};
use crate::cache::ops::{CacheAnswer, CacheError, CacheOp};
use crate::messaging::Peer;

/// Serves every operation on its core at once, as the master's own (`Peer::Master`).
#[derive(Debug, Clone)]
pub(crate) struct Direct {
    pub(crate) core: Rc<RefCell<CacheCore>>,
    pub(crate) calls: Rc<RefCell<usize>>,
}

impl CacheTransport for Direct {
    async fn call(&self, op: CacheOp) -> Result<CacheAnswer, CacheError> {
        *self.calls.borrow_mut() += 1;
        match self
            .core
            .borrow_mut()
            .serve(Peer::Master, op, Instant::now())
        {
            Served::Answer(answer) => answer,
            Served::NeedsReply(_) => unreachable!("no locks in these tests"),
        }
    }

    async fn subscribe(
        &self,
        collection: &str,
        prefix: &str,
    ) -> Result<Subscription<Self>, CacheError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let (collection, prefix) = (collection.to_owned(), prefix.to_owned());
        self.core
            .borrow_mut()
            .subscribe_master(id, collection, prefix, tx);
        Ok(Subscription::new(self.clone(), id, rx))
    }

    fn send_and_forget(&self, op: CacheOp) {
        let _ = self
            .core
            .borrow_mut()
            .serve(Peer::Master, op, Instant::now());
    }
}

/// A client of a new cache set up as `config` says, and its transport.
pub(crate) fn client(config: &CacheConfig) -> (CacheClient<Direct>, Direct) {
    let store = Box::new(config.memory_store());
    let core = CacheCore::new(store, config, Default::default());
    let direct = Direct {
        core: Rc::new(RefCell::new(core)),
        calls: Default::default(),
    };
    (CacheClient::new(direct.clone()), direct)
}

/// Runs `f` to its end on a runtime of its own.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(f)
}
