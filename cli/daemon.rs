//! The daemon: one master process that runs the apps of one `procactor.toml`, each as its own
//! cluster (`daemon/app.rs`), and answers the CLI on a Unix socket (`daemon/server.rs`).
//!
//! Everything runs on one actix system thread: the clusters' supervisors and proxies, the
//! socket's connections, the signal handlers. Requests that change what runs (start, stop,
//! reload, restart, scale, apply) take [`Daemon::changing`] in turn, so two operators cannot
//! interleave a reload and a scale of the same app; reads (`list`, `describe`, `logs`) never
//! wait for them.
//!
//! What survives the daemon: the state file (`state.rs`), written after every change, from
//! which `procactor resurrect` starts the same apps at the same scale.

mod app;
mod commands;
mod liveness;
mod logs;
mod metrics;
mod monitor;
mod notify;
mod server;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use indexmap::IndexMap;
use tokio::sync::{broadcast, watch};

use app::{App, Samples};
use monitor::{EVENTS_KEPT, LINES_KEPT};

use crate::file::ConfigFile;
use crate::proto::{Event, Instance};

/// How the daemon was started.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The control socket.
    pub(crate) socket: crate::socket::SocketPath,
    /// Where the state file and the apps' logs live.
    pub(crate) state_dir: PathBuf,
    /// Whether to start the apps of the state file at once (`resurrect`).
    pub(crate) resurrect: bool,
    /// A file to start at once (`start --foreground`): its path and text.
    pub(crate) start: Option<(PathBuf, String)>,
}

/// The file the daemon runs: its path, its text and what it says.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// Where it was read.
    pub(crate) path: PathBuf,
    /// Its text, as the client read it.
    pub(crate) text: String,
    /// Parsed.
    pub(crate) file: ConfigFile,
}

impl Loaded {
    /// The directory relative paths of the file are taken from.
    pub(crate) fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// The daemon's state while it runs.
pub(crate) struct Daemon {
    /// Running apps, in start order.
    apps: RefCell<IndexMap<String, Rc<App>>>,
    /// The file it runs, once `start` (or `resurrect`) gave it one.
    loaded: RefCell<Option<Loaded>>,
    /// Apps stopped by an operator: kept stopped by `resurrect`.
    stopped: RefCell<Vec<String>>,
    /// Instances per app that differ from the file (`scale`).
    scales: RefCell<IndexMap<String, usize>>,
    state_dir: PathBuf,
    /// The state file.
    state: crate::state::StateDir,
    socket: PathBuf,
    events: broadcast::Sender<Event>,
    /// Every app's output lines, for `logs -f`.
    lines: broadcast::Sender<crate::proto::Line>,
    samples: RefCell<Samples>,
    /// The Prometheus endpoint, once a file asked for one.
    metrics: RefCell<Option<metrics::DaemonMetrics>>,
    /// Held by a request while it changes what runs.
    changing: tokio::sync::Mutex<()>,
    /// Set when the daemon should exit.
    exit: watch::Sender<bool>,
}

impl Daemon {
    fn new(options: &Options) -> Rc<Self> {
        let (events, _) = broadcast::channel(EVENTS_KEPT);
        let (lines, _) = broadcast::channel(LINES_KEPT);
        Rc::new(Daemon {
            apps: RefCell::default(),
            loaded: RefCell::default(),
            stopped: RefCell::default(),
            scales: RefCell::default(),
            state_dir: options.state_dir.clone(),
            state: crate::state::StateDir::new(&options.state_dir),
            socket: options.socket.path.clone(),
            events,
            lines,
            samples: RefCell::default(),
            metrics: RefCell::default(),
            changing: tokio::sync::Mutex::new(()),
            exit: watch::Sender::new(false),
        })
    }

    /// The running app called `name`.
    fn app(&self, name: &str) -> Option<Rc<App>> {
        self.apps.borrow().get(name).cloned()
    }

    /// `app` runs now.
    fn add_app(&self, app: Rc<App>) {
        if let Some(metrics) = self.metrics.borrow().as_ref() {
            metrics.add(app.cluster());
        }
        self.apps.borrow_mut().insert(app.name.clone(), app);
        self.count_apps();
    }

    /// The app `name` no longer runs.
    fn remove_app(&self, name: &str) {
        self.apps.borrow_mut().shift_remove(name);
        if let Some(metrics) = self.metrics.borrow().as_ref() {
            metrics.remove(name);
        }
        self.count_apps();
    }

    fn count_apps(&self) {
        if let Some(metrics) = self.metrics.borrow().as_ref() {
            metrics.apps(self.apps.borrow().len());
        }
    }

    /// Serves `/metrics` where `file` asks, unless an endpoint already runs (an address changed
    /// since takes effect at the daemon's next start).
    ///
    /// # Errors
    /// The address cannot be bound.
    fn serve_metrics(&self, file: &ConfigFile) -> Result<(), String> {
        let Some(addr) = &file.daemon.metrics else {
            return Ok(());
        };
        if self.metrics.borrow().is_some() {
            return Ok(());
        }
        let metrics = metrics::DaemonMetrics::bind(addr.get_ref())?;
        eprintln!(
            "procactor daemon: metrics at http://{}/metrics",
            metrics.addr()
        );
        for app in self.running() {
            metrics.add(app.cluster());
        }
        metrics.apps(self.apps.borrow().len());
        *self.metrics.borrow_mut() = Some(metrics);
        Ok(())
    }

    /// Counts one answered request.
    fn count_request(&self, command: &str, ok: bool) {
        if let Some(metrics) = self.metrics.borrow().as_ref() {
            metrics.request(command, ok);
        }
    }

    /// The running apps, in start order.
    fn running(&self) -> Vec<Rc<App>> {
        self.apps.borrow().values().cloned().collect()
    }

    /// Resolves once the daemon has been told to exit.
    async fn exiting(&self) {
        let mut exit = self.exit.subscribe();
        let _ = exit.wait_for(|&exit| exit).await;
    }

    /// Every instance of every running app.
    async fn instances(&self) -> Result<Vec<Instance>, String> {
        let mut rows = Vec::new();
        for app in self.running() {
            rows.extend(app.instances(&self.samples).await?);
        }
        let alive: Vec<u32> = rows.iter().filter_map(|r| r.pid).collect();
        self.samples.borrow_mut().keep_only(&alive);
        Ok(rows)
    }
}

/// Runs the daemon until `kill`, SIGTERM or SIGINT.
///
/// # Errors
/// Why it could not run: the socket could not be bound, the saved state or the file given to
/// start could not be started.
pub(crate) fn run(options: Options) -> Result<(), String> {
    let system = actix::System::new();
    let result = system.block_on(async move {
        let listener = crate::socket::bind(&options.socket).map_err(|e| e.to_string())?;
        let daemon = Daemon::new(&options);
        let pid_file = PidFile::write(&options.state_dir)?;
        // An app that fails to start is reported; the daemon serves the others (and the
        // operator, who sees the failure in `list` and the log).
        if options.resurrect {
            if let Err(e) = commands::resurrect(&daemon).await {
                eprintln!("procactor daemon: resurrect: {e}");
            }
        }
        if let Some((path, text)) = &options.start {
            let outcome = commands::start(&daemon, path, text).await;
            match outcome.error {
                Some(e) if e.kind == "config" => {
                    commands::stop_all(&daemon).await;
                    return Err(e.message);
                }
                Some(e) => eprintln!("procactor daemon: start: {}", e.message),
                None => {}
            }
        }
        notify::ready();
        let watchdog = notify::watchdog();
        let served = server::serve(Rc::clone(&daemon), listener).await;
        drop(watchdog);
        notify::stopping();
        commands::stop_all(&daemon).await;
        let _ = std::fs::remove_file(&daemon.socket);
        drop(pid_file);
        served
    });
    result
}

/// `<state>/daemon.pid` while the daemon runs (written once its socket is bound, so a second
/// daemon refused at the socket never touches the first one's), removed at its exit if it is
/// still ours.
struct PidFile(PathBuf);

impl PidFile {
    fn write(state_dir: &std::path::Path) -> Result<PidFile, String> {
        let path = state_dir.join("daemon.pid");
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
