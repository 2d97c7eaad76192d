//! The relay's own process: its pid, environment, group and arguments; writing to stderr,
//! blocking and dying on command; the crash loop and the cluster of its own workers (a
//! supervision tree) that environment variables ask for at start.

use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use procactor::{
    AskError, Backoff, Cluster, ClusterConfig, ClusterSupervisor, Intensity, RestartPolicy,
    WorkerContext,
};

use super::{invalid, Relay, RelayMsg, RelayReply, CRASH_FROM_ENV, LEAVES_ENV};

impl Relay {
    /// Runs one command about this process or its own workers.
    pub(super) async fn process(&self, msg: RelayMsg, ctx: &WorkerContext<Relay>) -> RelayReply {
        match msg {
            RelayMsg::Pid => RelayReply::Pid(std::process::id()),
            RelayMsg::Env(name) => RelayReply::Events(
                std::env::var(&name)
                    .map(|v| vec![(name, v)])
                    .unwrap_or_default(),
            ),
            RelayMsg::Identity => RelayReply::Events(
                std::iter::once(("group".to_string(), ctx.group().to_string()))
                    .chain(std::env::args().skip(1).map(|a| ("arg".to_string(), a)))
                    .collect(),
            ),
            msg @ (RelayMsg::LeafPids | RelayMsg::KillLeaf(_)) => self.leaf(msg).await,
            RelayMsg::Block(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                RelayReply::Done
            }
            RelayMsg::Die => std::process::exit(1),
            RelayMsg::DieWhileHandling => std::process::exit(3),
            msg @ (RelayMsg::StderrFlood { .. }
            | RelayMsg::Stderr(_)
            | RelayMsg::StderrThenAbort(_)) => stderr(msg),
            other => invalid(other),
        }
    }

    /// The commands about this worker's own workers.
    async fn leaf(&self, msg: RelayMsg) -> RelayReply {
        let Some(leaves) = &self.leaves else {
            return RelayReply::Failed(AskError::Invalid("no workers of its own".into()));
        };
        let failed = |e: procactor::Error| RelayReply::Failed(AskError::Failed(e.to_string()));
        match msg {
            RelayMsg::LeafPids => match leaves.workers().await {
                Ok(infos) => RelayReply::Entries(
                    infos
                        .iter()
                        .map(|i| (i.id.to_string(), u64::from(i.pid.unwrap_or(0))))
                        .collect(),
                ),
                Err(e) => failed(e),
            },
            RelayMsg::KillLeaf(id) => match leaves.kill(id).await {
                Ok(_) => RelayReply::Done,
                Err(e) => failed(e),
            },
            other => invalid(other),
        }
    }
}

/// The commands that write to stderr.
fn stderr(msg: RelayMsg) -> RelayReply {
    let mut stderr = std::io::stderr().lock();
    match msg {
        RelayMsg::StderrFlood { mb } => {
            let line = format!("{}\n", "f".repeat(99));
            for _ in 0..mb * 10_000 {
                if stderr.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        }
        RelayMsg::Stderr(bytes) => {
            let _ = stderr.write_all(&bytes);
            let _ = stderr.flush();
        }
        RelayMsg::StderrThenAbort(line) => {
            let _ = writeln!(stderr, "{line}");
            std::process::abort()
        }
        other => return invalid(other),
    }
    RelayReply::Done
}

/// Exits with status 2 when this worker's generation is at least [`CRASH_FROM_ENV`]'s.
pub(super) fn crash_if_asked(generation: u64) {
    if env_number(CRASH_FROM_ENV).is_some_and(|g| generation >= g) {
        eprintln!("relay: generation {generation} crashes as asked");
        std::process::exit(2);
    }
}

/// Starts the cluster of relay workers of its own that [`LEAVES_ENV`] asks for, if any, and
/// watches it: when it gives up, this process exits with status 1 (escalation). Exits with
/// status 1 too when it cannot start it.
pub(super) async fn start_leaves() -> Option<Rc<Cluster<Relay>>> {
    let n = env_number(LEAVES_ENV).filter(|&n| n > 0)?;
    let Ok(program) = std::env::current_exe() else {
        std::process::exit(1);
    };
    let config = ClusterConfig::new()
        .workers(n as usize)
        .exec(program)
        .env(LEAVES_ENV, "0")
        .handle_signals(false)
        .restart(RestartPolicy {
            intensity: Intensity {
                max_restarts: 2,
                period: Duration::from_secs(60),
            },
            backoff: Backoff::none(),
            ..RestartPolicy::default()
        });
    let leaves = match ClusterSupervisor::start::<Relay>(config).await {
        Ok(leaves) => Rc::new(leaves),
        Err(e) => {
            eprintln!("relay: cannot start its workers: {e}");
            std::process::exit(1);
        }
    };
    let watched = Rc::clone(&leaves);
    actix_rt::spawn(async move {
        if let Err(e) = watched.wait().await {
            // Escalate: this worker's supervisor sees an abnormal exit.
            eprintln!("relay: its own workers failed: {e}");
            std::process::exit(1);
        }
    });
    Some(leaves)
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse::<u64>().ok()
}
