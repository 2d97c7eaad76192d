//! The master's own records in the cluster's log pipeline (sicarii logs from the master too).

use std::time::Duration;

use super::Cluster;
use crate::logger::{Fields, Record, Source};
use crate::worker::WorkerActor;

impl<A: WorkerActor> Cluster<A> {
    /// Writes `record` into the cluster's log pipeline, as the workers' records are: the files
    /// of its kind, the in-memory ring, the sinks and the master's `tracing`. Build it with
    /// [`Record::ip`], [`Record::history`] or [`Record::error`] and [`Source::master`].
    pub fn log(&self, record: Record) {
        self.links.log.send_always(record);
    }

    /// An `ip` record of the master: a request from `client` served with `status` in
    /// `duration` (see [`Record::ip`]).
    pub fn log_ip(&self, client: &str, method: &str, path: &str, status: u16, duration: Duration) {
        self.log(Record::ip(
            self.master_source(),
            client,
            method,
            path,
            status,
            duration,
        ));
    }

    /// A `history` record of the master: `event` with `fields`.
    pub fn log_history(&self, event: &str, fields: Fields) {
        self.log(Record::history(self.master_source(), event, fields));
    }

    /// An `error` record of the master: `message`, its causes (outermost first), where.
    pub fn log_error(&self, message: &str, causes: Vec<String>, location: Option<&str>) {
        let location = location.map(str::to_owned);
        self.log(Record::error(
            self.master_source(),
            message,
            causes,
            location,
        ));
    }

    /// This process, as the master of this group.
    fn master_source(&self) -> Source {
        Source::master(self.group_name())
    }
}
