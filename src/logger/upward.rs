//! A cluster inside a worker (a supervision tree) sends its records up to the master above,
//! which writes them with everyone else's: one writer per file.
//!
//! This runs on the arbiter as records are queued, not on the writer thread: on the worker
//! runtime's thread a record goes straight into the frames for the master above (an in-memory
//! append, no I/O, never dropped), while from any other thread it would cross a bounded
//! channel that drops when full.

use std::sync::OnceLock;

use super::record::{Fields, Kind, Record};

/// Where records go up: set by the worker runtime when this process is a worker (the logger
/// does not know the runtime; the runtime tells it).
type Parent = Box<dyn Fn(Kind, Fields) + Send + Sync>;

static PARENT: OnceLock<Parent> = OnceLock::new();

/// Makes this process's clusters send their records up through `parent` (the worker runtime
/// calls this once, at its start).
pub(crate) fn set_parent(parent: impl Fn(Kind, Fields) + Send + Sync + 'static) {
    let _ = PARENT.set(Box::new(parent));
}

/// Whether this process is a worker, so that its cluster's records go up.
pub(crate) fn nested() -> bool {
    PARENT.get().is_some()
}

/// Sends `record` to the master of the worker this cluster runs in, with where it came from
/// in this cluster (`origin`), since the master above stamps it as this worker's.
pub(crate) fn forward(record: &Record) {
    let Some(parent) = PARENT.get() else {
        return;
    };
    let mut fields = record.fields.clone();
    fields.0.insert(
        "origin".into(),
        serde_json::json!({
            "worker": record.worker,
            "pid": record.pid,
            "generation": record.generation,
            "group": record.group,
        }),
    );
    parent(record.kind, fields);
}
