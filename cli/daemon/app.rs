//! One app of the daemon: its own cluster of plain programs (why one cluster per app:
//! `mapping.rs`), the events it reports, its log lines, and its instances as `list` shows them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use actix::Actor;
use procactor::{Cluster, ClusterSupervisor, GroupKey, Groups, WorkerActor, WorkerContext};
use tokio::sync::broadcast;

use super::monitor::{Exits, FollowSink, Monitor};
use crate::file::AppSpec;
use crate::proto::Line;
use crate::proto::{Event, Instance};

/// The worker type of every app: a plain program, which the daemon never runs as a procactor
/// worker (no protocol, so no messages of any type).
pub(crate) struct Plain;

impl WorkerActor for Plain {
    type Msg = ();
    type Reply = ();
    type Event = ();
    type MasterReply = ();

    async fn handle(&mut self, (): (), _: &mut WorkerContext<Self>) {}
}

/// Why an app did not start.
#[derive(Debug, Clone)]
pub(crate) struct Unstarted {
    /// Why, for the operator.
    pub(crate) message: String,
    /// The file's settings are at fault (exit status 2), not the program or the machine.
    pub(crate) config: bool,
}

impl From<Unstarted> for String {
    fn from(u: Unstarted) -> String {
        u.message
    }
}

/// A running app.
pub(crate) struct App {
    /// Its name in the file.
    pub(crate) name: String,
    /// What the file says of it, as it was started (or last applied), with the instances in
    /// effect (an operator's `scale` since).
    pub(crate) spec: RefCell<AppSpec>,
    groups: Groups,
    key: GroupKey<Plain>,
    /// The last exit of each instance.
    pub(crate) exits: Exits,
    /// The `http` liveness probe's task, if the app has one.
    probe: RefCell<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(task) = self.probe.take() {
            task.abort();
        }
    }
}

impl App {
    /// Starts `name` as `spec` says, with `file_dir` the directory its file is in and its logs
    /// under `state_dir/logs/<name>`; resolves once every instance is ready.
    ///
    /// # Errors
    /// Why, as text, when an instance fails to start or to become ready; `config` when the
    /// settings are at fault (a program that is not there, an address taken).
    pub(crate) async fn start(
        name: &str,
        spec: &AppSpec,
        file_dir: &Path,
        state_dir: &Path,
        events: broadcast::Sender<Event>,
        lines: broadcast::Sender<Line>,
    ) -> Result<App, Unstarted> {
        let (config, group) =
            settings(name, spec, file_dir, state_dir).map_err(|message| Unstarted {
                message,
                config: true,
            })?;
        let exits = Exits::default();
        let monitor = Monitor::new(name, events, exits.clone()).start();
        let mut builder = ClusterSupervisor::with_groups(config);
        let key = builder.group::<Plain>(group);
        builder
            .subscribe(monitor.clone().recipient())
            .on_reload(monitor.recipient())
            .log_sink(Box::new(FollowSink::new(name, lines)));
        let groups = builder.start().await.map_err(|e| Unstarted {
            config: matches!(e, procactor::Error::Config(_)),
            message: e.to_string(),
        })?;
        Ok(App {
            name: name.to_owned(),
            spec: RefCell::new(spec.clone()),
            groups,
            key,
            exits,
            probe: RefCell::default(),
        })
    }

    /// Starts the app's `http` liveness probe, if its file asks for one.
    pub(crate) fn watch_liveness(self: &std::rc::Rc<Self>, events: broadcast::Sender<Event>) {
        let spec = self.spec.borrow();
        let Some(liveness) = spec.liveness.as_ref().map(|l| l.get_ref()) else {
            return;
        };
        let Some(url) = &liveness.http else { return };
        let probe = super::liveness::Probe {
            url: url.clone(),
            every: liveness.every.map_or(Duration::from_secs(5), |d| d.0),
            failures: liveness.failures.unwrap_or(3),
        };
        let task = super::liveness::watch(std::rc::Rc::downgrade(self), probe, events);
        *self.probe.borrow_mut() = Some(task);
    }

    /// Replaces the app's instances one by one with `spec`'s program (command, args, env, cwd),
    /// as a rolling reload does; `spec` becomes the app's.
    ///
    /// # Errors
    /// Why not, as text: the new program cannot run, or a replacement failed (then every
    /// instance runs the old program again: the library rolls back).
    pub(crate) async fn reload_with(
        &self,
        spec: &AppSpec,
        file_dir: &Path,
        state_dir: &Path,
    ) -> Result<(), String> {
        let (config, _) = settings(&self.name, spec, file_dir, state_dir)?;
        let program = procactor::Program::of(&config);
        self.cluster()
            .reload_with(program)
            .await
            .map_err(|e| e.to_string())?;
        *self.spec.borrow_mut() = spec.clone();
        Ok(())
    }

    /// The app's cluster.
    pub(crate) fn cluster(&self) -> &Cluster<Plain> {
        self.groups
            .get(self.key)
            .expect("the key is of this app's own builder")
    }

    /// Stops every instance (SIGTERM, then SIGKILL after the shutdown timeout) and the cluster.
    pub(crate) async fn stop(&self) -> Result<(), String> {
        if let Some(task) = self.probe.take() {
            task.abort();
        }
        self.groups.stop().await.map_err(|e| e.to_string())
    }

    /// The app's instances, with CPU and memory; CPU against `samples` (borrowed only once
    /// the figures are in, so that concurrent requests share them).
    pub(crate) async fn instances(
        &self,
        samples: &RefCell<Samples>,
    ) -> Result<Vec<Instance>, String> {
        let cluster = self.cluster();
        let workers = cluster.workers().await.map_err(|e| e.to_string())?;
        let stats = cluster.stats().await.map_err(|e| e.to_string())?;
        let by_pid: HashMap<u32, (Duration, u64)> = stats
            .iter()
            .filter_map(|s| s.pid.map(|pid| (pid, (s.cpu, s.rss_bytes))))
            .collect();
        let mut samples = samples.borrow_mut();
        // Instances scaled away stay in the cluster as stopped slots above the count in effect:
        // gone for the operator, not exited.
        let wanted = self.spec.borrow().instances.count();
        Ok(workers
            .into_iter()
            .filter(|w| w.id < wanted || w.state != procactor::WorkerState::Exited)
            .map(|w| {
                let figures = w.pid.and_then(|pid| by_pid.get(&pid).map(|f| (pid, *f)));
                Instance {
                    app: self.name.clone(),
                    instance: w.id,
                    pid: w.pid,
                    state: format!("{:?}", w.state).to_lowercase(),
                    restarts: w.restarts,
                    uptime_s: w.uptime.as_secs_f64(),
                    cpu_pct: figures.map(|(pid, (cpu, _))| samples.cpu_pct(pid, cpu, w.uptime)),
                    memory_bytes: figures.map(|(_, (_, rss))| rss),
                    generation: w.generation,
                }
            })
            .collect())
    }
}

/// The library's settings of app `name`: its file's, with its logs under
/// `state_dir/logs/<name>` and its name in `PROCACTOR_APP`.
fn settings(
    name: &str,
    spec: &AppSpec,
    file_dir: &Path,
    state_dir: &Path,
) -> Result<(procactor::ClusterConfig, procactor::GroupConfig), String> {
    let log_dir = state_dir.join("logs").join(name);
    let (config, group) = crate::mapping::cluster_config(name, spec, file_dir, &log_dir)?;
    Ok((config.env("PROCACTOR_APP", name), group))
}

/// The last CPU time seen of each process, to turn CPU time into a percentage.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    seen: HashMap<u32, (Instant, Duration)>,
}

impl Samples {
    /// A sample older than this is replaced by the next one; a younger one is kept, so that
    /// two `list`s in quick succession still measure over a useful interval.
    const RENEW: Duration = Duration::from_secs(1);

    /// The CPU use of `pid`, whose CPU time is `cpu` after running `uptime`: since its last
    /// sample, or on average since it started when it has none.
    pub(crate) fn cpu_pct(&mut self, pid: u32, cpu: Duration, uptime: Duration) -> f64 {
        let now = Instant::now();
        let pct = match self.seen.get(&pid) {
            Some(&(at, before)) if now.duration_since(at) >= Duration::from_millis(100) => {
                percent(cpu.saturating_sub(before), now.duration_since(at))
            }
            _ => percent(cpu, uptime),
        };
        match self.seen.get(&pid) {
            Some(&(at, _)) if now.duration_since(at) < Self::RENEW => {}
            _ => {
                self.seen.insert(pid, (now, cpu));
            }
        }
        pct
    }

    /// Forgets processes not in `alive`, so that the map does not grow with restarts.
    pub(crate) fn keep_only(&mut self, alive: &[u32]) {
        self.seen.retain(|pid, _| alive.contains(pid));
    }
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        (cpu.as_secs_f64() / wall.as_secs_f64() * 100.0 * 10.0).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_measured_since_the_last_sample_or_the_start() {
        let mut s = Samples::default();
        // No sample: on average since the start.
        assert_eq!(
            s.cpu_pct(7, Duration::from_millis(500), Duration::from_secs(1)),
            50.0
        );
        s.seen
            .insert(7, (Instant::now() - Duration::from_secs(2), Duration::ZERO));
        let pct = s.cpu_pct(7, Duration::from_secs(1), Duration::from_secs(10));
        assert!((49.0..=50.1).contains(&pct), "{pct}");
        s.keep_only(&[8]);
        assert!(s.seen.is_empty());
    }
}
