//! A cluster inside a worker (a supervision tree) sends its records up to the master above,
//! which writes them with everyone else's: one writer per file.
//!
//! This runs on the arbiter as records are queued, not on the writer thread: on the worker
//! runtime's thread a record goes straight into the frames for the master above (an in-memory
//! append, no I/O, never dropped), while from any other thread it would cross a bounded
//! channel that drops when full.

use super::record::Record;

/// Whether this process is a worker, so that its cluster's records go up.
pub(crate) fn nested() -> bool {
    crate::worker::parent_log().is_some()
}

/// Sends `record` to the master of the worker this cluster runs in, with where it came from
/// in this cluster (`origin`), since the master above stamps it as this worker's.
pub(crate) fn forward(record: &Record) {
    let Some(parent) = crate::worker::parent_log() else {
        return;
    };
    let mut fields = record.fields.clone();
    fields.insert(
        "origin".into(),
        serde_json::json!({
            "worker": record.worker,
            "pid": record.pid,
            "generation": record.generation,
            "group": record.group,
        }),
    );
    parent.record(record.kind, fields);
}
