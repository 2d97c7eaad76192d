//! Who a worker is, from the environment its master gave it.

use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::error::Error;
use crate::state::WorkerId;
use crate::worker::env;

/// Who this worker is, from the environment the master gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub(crate) worker: WorkerId,
    pub(crate) generation: u64,
    pub(crate) master_pid: u32,
    pub(crate) max_frame_bytes: usize,
}

/// The `tracing` level of worker code that becomes log records, from the master.
pub(crate) fn log_level() -> String {
    std::env::var(env::LOG_LEVEL).unwrap_or_else(|_| "info".into())
}

impl Identity {
    pub(crate) fn from_env() -> Result<Self, Error> {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            std::env::var(name).ok()?.parse().ok()
        }
        Ok(Self {
            worker: var(env::WORKER_ID).ok_or(Error::NotAWorker)?,
            generation: var(env::GENERATION).unwrap_or(1),
            master_pid: var(env::MASTER_PID).unwrap_or_else(nix_getppid),
            max_frame_bytes: var(env::MAX_FRAME_BYTES).unwrap_or(DEFAULT_MAX_FRAME_BYTES),
        })
    }
}

fn nix_getppid() -> u32 {
    nix::unistd::getppid().as_raw() as u32
}
