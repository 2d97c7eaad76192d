//! The daemon's Prometheus endpoint (`[daemon] metrics = "host:port"`): every app's cluster
//! families through one [`Exporter`] (each app is its own group, so the `group` label is the
//! app's name), and the daemon's own counters.
//!
//! The endpoint is bound when the daemon first runs a file that asks for it; a later change of
//! the address takes effect at the daemon's next start (the plan of `apply` says so).

use procactor::metrics::prometheus_client::metrics::counter::Counter;
use procactor::metrics::prometheus_client::metrics::family::Family;
use procactor::metrics::prometheus_client::metrics::gauge::Gauge;
use procactor::metrics::Exporter;

/// The endpoint and the daemon's own families.
#[derive(Debug)]
pub(crate) struct DaemonMetrics {
    exporter: Exporter,
    requests: Family<Vec<(String, String)>, Counter>,
    apps: Gauge,
    state_writes: Family<Vec<(String, String)>, Counter>,
}

impl DaemonMetrics {
    /// Serves `/metrics` at `addr`.
    ///
    /// # Errors
    /// The address cannot be bound, as text.
    pub(crate) fn bind(addr: &str) -> Result<Self, String> {
        let exporter = Exporter::bind(addr).map_err(|e| format!("[daemon] metrics: {e}"))?;
        let metrics = DaemonMetrics {
            exporter,
            requests: Family::default(),
            apps: Gauge::default(),
            state_writes: Family::default(),
        };
        metrics.exporter.register(
            "procactor_daemon_control_requests",
            "Requests the daemon answered, by command and result",
            metrics.requests.clone(),
        );
        metrics.exporter.register(
            "procactor_daemon_apps",
            "Apps the daemon runs",
            metrics.apps.clone(),
        );
        metrics.exporter.register(
            "procactor_daemon_state_writes",
            "Writes of the state file, by result",
            metrics.state_writes.clone(),
        );
        Ok(metrics)
    }

    /// Where it serves.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.exporter.local_addr()
    }

    /// The app `cluster` now runs (added or replaced).
    pub(crate) fn add(&self, cluster: &procactor::Cluster<super::app::Plain>) {
        self.exporter.add(cluster);
    }

    /// The app `name` no longer runs.
    pub(crate) fn remove(&self, name: &str) {
        self.exporter.remove(name);
    }

    /// One request of `command` answered, `ok` or not.
    pub(crate) fn request(&self, command: &str, ok: bool) {
        let labels = vec![
            ("command".to_owned(), command.to_owned()),
            (
                "result".to_owned(),
                if ok { "ok" } else { "failed" }.to_owned(),
            ),
        ];
        self.requests.get_or_create(&labels).inc();
    }

    /// The number of apps that run.
    pub(crate) fn apps(&self, n: usize) {
        self.apps.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One write of the state file.
    pub(crate) fn state_write(&self, ok: bool) {
        let labels = vec![(
            "result".to_owned(),
            if ok { "ok" } else { "failed" }.to_owned(),
        )];
        self.state_writes.get_or_create(&labels).inc();
    }
}
