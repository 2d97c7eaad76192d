//! What a proxy is connected to in the master (the supervisor, the routing table, the cache, the
//! logger, the master's handlers), and the messages it hands to the master's handlers.

use std::rc::Rc;

use actix::prelude::*;

use crate::error::AskError;
use crate::event::WorkerEvent;
use crate::messaging::system::SystemLink;
use crate::messaging::table::SharedRouting;
use crate::state::WorkerId;
use crate::worker::WorkerActor;

/// A one-way message from a worker to the master, delivered to the recipients registered with
/// [`ClusterBuilder::on_message`](crate::ClusterBuilder::on_message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromWorker<E> {
    /// The sending worker's slot; stamped by the master, not claimed by the worker.
    pub worker: WorkerId,
    /// The sending process.
    pub pid: u32,
    /// The sending process's generation.
    pub generation: u64,
    /// The message.
    pub msg: E,
}

impl<E: 'static> Message for FromWorker<E> {
    type Result = ();
}

/// A request from a worker to the master
/// ([`WorkerHandle::ask_master`](crate::WorkerHandle::ask_master)), delivered to the recipient
/// registered with [`ClusterBuilder::on_request`](crate::ClusterBuilder::on_request), whose
/// answer (`R`) goes back to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRequest<E, R> {
    /// The asking worker's slot, stamped by the master.
    pub worker: WorkerId,
    /// The asking process.
    pub pid: u32,
    /// Its generation.
    pub generation: u64,
    /// The request.
    pub msg: E,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<E, R> WorkerRequest<E, R> {
    pub(crate) fn new(from: FromWorker<()>, msg: E) -> Self {
        Self {
            worker: from.worker,
            pid: from.pid,
            generation: from.generation,
            msg,
            _reply: std::marker::PhantomData,
        }
    }
}

impl<E: 'static, R: 'static> Message for WorkerRequest<E, R> {
    type Result = R;
}

/// What a proxy is connected to in the master.
pub(crate) struct Links<A: WorkerActor> {
    /// The supervisor, for lifecycle events.
    pub(crate) events: Recipient<WorkerEvent>,
    /// The supervisor, for system operations.
    pub(crate) system: SystemLink,
    /// The cluster's routing table.
    pub(crate) routing: SharedRouting,
    /// The cluster's cache, served inline.
    pub(crate) cache: crate::cache::SharedCache,
    /// The cluster's logger.
    pub(crate) log: crate::logger::LogLink,
    /// The master's handlers for what workers send it.
    pub(crate) handlers: Rc<Handlers<A>>,
}

impl<A: WorkerActor> Clone for Links<A> {
    fn clone(&self) -> Self {
        Self {
            events: self.events.clone(),
            system: self.system.clone(),
            routing: Rc::clone(&self.routing),
            cache: self.cache.clone(),
            log: self.log.clone(),
            handlers: Rc::clone(&self.handlers),
        }
    }
}

/// The master's handler for requests from workers: decodes, asks the user's recipient, encodes.
pub(crate) type RequestHandler = Rc<
    dyn Fn(
        FromWorker<()>,
        &[u8],
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bytes::Bytes, AskError>>>>,
>;

/// The master's handlers for what workers of type `A` send it.
pub(crate) struct Handlers<A: WorkerActor> {
    pub(crate) listeners: Vec<Recipient<FromWorker<A::Event>>>,
    pub(crate) requests: Option<RequestHandler>,
}
