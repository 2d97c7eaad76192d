//! One endpoint over any number of clusters ([`Exporter`]); a cluster's own endpoint
//! ([`ClusterConfig::metrics`](crate::ClusterConfig::metrics)) is the same scrape over its one
//! cluster.
//!
//! A scrape asks every cluster for its figures at once (one message to each supervisor, which
//! asks its proxies), within one deadline, then encodes them together: each family once, its
//! samples from every cluster. A cluster's own endpoint answers 503 once its cluster has
//! stopped; an exporter forgets a stopped cluster (it watches each for its end) and goes on with
//! the others.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use actix::WeakAddr;
use prometheus_client::collector::Collector;
use prometheus_client::registry::{Metric, Registry};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use super::collect::{Exposition, Labels, Master, Membership, Part};
use super::flights::{Answer, Flights, Joined};
use super::http::{Endpoint, Format, Limits, Scrape};
use crate::backend::NodeView;
use crate::cache::SharedCache;
use crate::error::{ConfigError, Error};
use crate::logger::LogLink;
use crate::supervisor::{ClusterFigures, ClusterSupervisor, Control, GetClusterFigures};

/// What a scrape reads of one cluster: the supervisor (and through it every proxy), the cache,
/// the logger, and the node's membership when the cluster spans hosts (its configured name and
/// its view).
#[derive(Clone)]
pub(crate) struct Sources {
    pub(crate) supervisor: WeakAddr<ClusterSupervisor>,
    pub(crate) cache: SharedCache,
    pub(crate) log: LogLink,
    pub(crate) node: Option<(String, NodeView)>,
}

/// How long a scrape waits for the supervisors and the proxies before it is answered 503.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);

/// The answer to a scrape of a cluster's own endpoint when the cluster has stopped.
const GONE: &str = "the cluster is not running";

/// Binds `addr` and serves the cluster's metrics there, on the current thread, until the
/// returned endpoint is dropped or stopped: an exporter of this one cluster, whose series are
/// labelled as a lone cluster's and whose end ends the scrapes (503).
///
/// # Errors
/// When `addr` cannot be bound (in use, not an address of this host).
pub(crate) fn serve(addr: &str, sources: Sources) -> std::io::Result<Endpoint> {
    let scraped = Scraped::new(true);
    let lone = Entry {
        id: 0,
        sources,
        watch: None,
    };
    scraped.clusters.borrow_mut().insert(String::new(), lone);
    start(addr, scraped)
}

/// Binds `addr` and serves what `scraped` holds at each scrape.
fn start(addr: &str, scraped: Rc<Scraped>) -> std::io::Result<Endpoint> {
    let listener = Endpoint::bind(addr)?;
    let scrape: Scrape =
        Rc::new(move |format: Format| Box::pin(answer(Rc::clone(&scraped), format)));
    Endpoint::serve(listener, scrape, Limits::default())
}

/// What one endpoint scrapes; its scrape closure and its [`Exporter`] share it.
struct Scraped {
    started: SystemTime,
    /// A cluster's own endpoint: its one cluster's end ends the scrapes (503), and its series
    /// carry no `group` on the cluster-wide families (there is only one cluster).
    lone: bool,
    /// The clusters by the name they were added under, in name order (the lone one's is empty).
    clusters: RefCell<BTreeMap<String, Entry>>,
    /// The embedding program's families (exporters only).
    registry: RefCell<Registry>,
    flights: Rc<Flights>,
    next_id: Cell<u64>,
}

/// One cluster of an endpoint.
struct Entry {
    /// Tells this entry from a later one under the same name.
    id: u64,
    sources: Sources,
    /// Forgets the entry once its cluster has stopped (exporters only); ends with the entry.
    watch: Option<JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(watch) = &self.watch {
            watch.abort();
        }
    }
}

impl Scraped {
    fn new(lone: bool) -> Rc<Self> {
        Rc::new(Self {
            started: SystemTime::now(),
            lone,
            clusters: RefCell::default(),
            registry: RefCell::default(),
            flights: Rc::default(),
            next_id: Cell::new(1),
        })
    }

    /// Drops the entry `name` if it is still the one numbered `id`.
    fn forget(&self, name: &str, id: u64) {
        let mut clusters = self.clusters.borrow_mut();
        let gone = match clusters.get(name) {
            Some(entry) if entry.id == id => clusters.remove(name),
            _ => None,
        };
        drop(clusters);
        drop(gone);
    }

    /// Every cluster's figures now, asked of all at once and awaited within one deadline.
    ///
    /// # Errors
    /// Why there is no scrape: a cluster did not answer in time, or the lone cluster stopped.
    async fn collect(&self) -> Result<Exposition, String> {
        let asked: Vec<_> = self
            .clusters
            .borrow()
            .iter()
            .map(|(name, entry)| {
                let supervisor = entry.sources.supervisor.upgrade();
                let ask = supervisor.map(|s| s.send(GetClusterFigures));
                (name.clone(), entry.id, entry.sources.clone(), ask)
            })
            .collect();
        let deadline = Instant::now() + SCRAPE_DEADLINE;
        let mut parts = Vec::with_capacity(asked.len());
        for (name, id, sources, ask) in asked {
            let figures = match ask {
                Some(ask) => timeout_at(deadline, ask).await.map(Result::ok),
                None => Ok(None),
            };
            match figures {
                Ok(Some(cluster)) => parts.push(self.part(name, sources, cluster)),
                Ok(None) if self.lone => return Err(GONE.to_owned()),
                Ok(None) => self.forget(&name, id),
                Err(_) => {
                    let which = if self.lone {
                        String::new()
                    } else {
                        format!(" {name}")
                    };
                    let late =
                        format!("the cluster{which} did not answer within {SCRAPE_DEADLINE:?}");
                    return Err(late);
                }
            }
        }
        exclusive(&mut parts);
        let master_labels = match (self.lone, parts.first()) {
            (true, Some(part)) => part.labels.clone(),
            _ => Labels::new(),
        };
        Ok(Exposition {
            master: Master::read(self.started),
            master_labels,
            clusters: parts,
        })
    }

    /// One cluster's part of the scrape, labelled: its node on every series; in an exporter,
    /// also the name it was added under as `group` on its cluster-wide series.
    fn part(&self, name: String, sources: Sources, cluster: ClusterFigures) -> Part {
        let labels: Labels = sources
            .node
            .as_ref()
            .map(|(node, _)| ("node", node.clone()))
            .into_iter()
            .collect();
        let mut scope = labels.clone();
        if !self.lone {
            scope.push(("group", name));
        }
        Part {
            labels,
            scope,
            cluster,
            cache: sources.cache.stats(),
            logs: sources.log.stats(),
            node: sources.node.map(|(_, view)| Membership {
                me: view.id(),
                nodes: view.nodes(),
                stats: view.stats(),
            }),
        }
    }
}

/// Leaves out the slots of a group an earlier cluster (by name) already reports with the same
/// labels: two clusters with a group of the same name would write the same series twice.
fn exclusive(parts: &mut [Part]) {
    let mut taken: HashSet<(Labels, String)> = HashSet::new();
    for part in parts {
        let labels = &part.labels;
        let slots = &mut part.cluster.slots;
        let theirs: HashSet<String> = slots
            .iter()
            .map(|slot| slot.group.clone())
            .filter(|group| taken.contains(&(labels.clone(), group.clone())))
            .collect();
        if !theirs.is_empty() {
            tracing::warn!(groups = ?theirs, "metrics: another exported cluster has groups of these names; this one's workers are left out of the scrape");
            slots.retain(|slot| !theirs.contains(&slot.group));
        }
        taken.extend(
            slots
                .iter()
                .map(|slot| (labels.clone(), slot.group.clone())),
        );
    }
}

/// One scrape's answer: joins the one running for `format`, or runs it.
async fn answer(scraped: Rc<Scraped>, format: Format) -> Answer {
    let leader = match Flights::join(&scraped.flights, format) {
        Joined::Follower(answer) => {
            let cut = || "the scrape this request joined was cut short".to_owned();
            return answer.await.unwrap_or_else(|_| Err(cut()));
        }
        Joined::Leader(leader) => leader,
    };
    let exposition = scraped.collect().await;
    let body = exposition.map(|e| e.encode(format, &scraped.registry.borrow()));
    leader.done(body)
}

/// One `/metrics` endpoint over several clusters, for a program that runs more than one (the
/// `procactor` daemon runs one per app): one address for Prometheus to scrape, each metric
/// family once in the scrape with every cluster's series, one set of `process_*` series and one
/// `procactor_build_info`, and the program's own families next to them.
///
/// ```no_run
/// # use procactor::prelude::*;
/// # use procactor::actors::echo::Echo;
/// use procactor::metrics::prometheus_client::metrics::counter::Counter;
/// use procactor::metrics::Exporter;
///
/// # async fn f() -> Result<(), procactor::Error> {
/// let exporter = Exporter::bind("127.0.0.1:9464")?;
/// let mut web = ClusterSupervisor::with_groups(ClusterConfig::new());
/// let key = web.group::<Echo>(GroupConfig::new("web").workers(2));
/// let web = web.start().await?;
/// exporter.add(web.get(key)?); // its series: group="web"
/// let restarts = Counter::<u64>::default();
/// exporter.register("myapp_restarts", "Apps restarted by hand.", restarts.clone());
/// // curl http://127.0.0.1:9464/metrics
/// web.stop().await?; // its series leave the scrape
/// # Ok(())
/// # }
/// ```
///
/// Each cluster is known by the name of the group whose [`Cluster`](crate::Cluster) handle
/// was added. Its workers' series carry their `group` label as always; its cluster-wide series
/// (reloads, cache, logs and, across hosts, membership), which have no `group` of their own,
/// get `group` = that name, so two clusters' never collide. Give the groups of different
/// clusters different names (a lone cluster's group is
/// [`DEFAULT_GROUP`](crate::DEFAULT_GROUP)): adding a cluster under a name taken replaces the
/// one there, and if two clusters still have a group of one name, the first by name keeps its
/// series and the other's are left out (with a warning) rather than written twice.
///
/// A cluster that stops leaves the scrape by itself; one that does not answer within 10 s
/// fails the whole scrape (503, naming it), as a cluster's own endpoint does: a scrape is never
/// a body with some workers missing. The endpoint, its limits and its formats are those of
/// [`ClusterConfig::metrics`](crate::ClusterConfig::metrics) (see the [module](crate::metrics)); it runs
/// on the thread that bound it, which must be the actix system's (where the clusters run).
/// Dropping the exporter stops it.
pub struct Exporter {
    scraped: Rc<Scraped>,
    endpoint: Endpoint,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("addr", &self.local_addr())
            .field("clusters", &self.names())
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Binds `addr` (`host:port`; port 0 picks a free one, see
    /// [`local_addr`](Self::local_addr)) and serves `GET /metrics` there, with no cluster yet:
    /// the process's series only.
    ///
    /// # Errors
    /// [`Error::Config`] naming the `metrics` field when `addr` cannot be bound (in use, not an
    /// address of this host), as [`ClusterConfig::metrics`](crate::ClusterConfig::metrics) does.
    ///
    /// # Panics
    /// Outside the actix system's thread (a tokio `LocalSet`), where the endpoint's tasks run.
    pub fn bind(addr: &str) -> Result<Exporter, Error> {
        let scraped = Scraped::new(false);
        let endpoint = start(addr, Rc::clone(&scraped)).map_err(|e| ConfigError {
            field: "metrics",
            reason: format!("cannot serve metrics at {addr}: {e}"),
        })?;
        Ok(Exporter { scraped, endpoint })
    }

    /// The address it listens on (the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Adds the cluster of `sources` under `name`, replacing one added under it before, and
    /// watches it: once it has stopped, it is forgotten.
    pub(crate) fn add_sources(&self, name: &str, sources: Sources) {
        let Some(supervisor) = sources.supervisor.upgrade() else {
            return; // stopped and gone already: nothing to scrape
        };
        let id = self.scraped.next_id.get();
        self.scraped.next_id.set(id + 1);
        let (tx, stopped) = oneshot::channel();
        supervisor.do_send(Control::Wait(tx));
        let scraped = Rc::downgrade(&self.scraped);
        let owned = name.to_owned();
        let watch = tokio::task::spawn_local(async move {
            // Its outcome, or the supervisor gone without one: the cluster has stopped.
            let _ = stopped.await;
            if let Some(scraped) = scraped.upgrade() {
                scraped.forget(&owned, id);
            }
        });
        let entry = Entry {
            id,
            sources,
            watch: Some(watch),
        };
        let replaced = self
            .scraped
            .clusters
            .borrow_mut()
            .insert(name.to_owned(), entry);
        drop(replaced);
    }

    /// Takes the cluster added under `group` out of the scrape; false when there is none (it
    /// was never added, was removed, or has stopped).
    pub fn remove(&self, group: &str) -> bool {
        let removed = self.scraped.clusters.borrow_mut().remove(group);
        removed.is_some()
    }

    /// The names of the clusters in the scrape, in order: each the group it was added by.
    pub fn names(&self) -> Vec<String> {
        self.scraped.clusters.borrow().keys().cloned().collect()
    }

    /// Adds a family of the embedding program to every scrape, after the clusters' (as
    /// prometheus-client's [`Registry::register`] does: `name` without its `_total` suffix or
    /// unit). Its name must be none of procactor's (`procactor_*`, `process_*`).
    pub fn register(&self, name: impl Into<String>, help: impl Into<String>, metric: impl Metric) {
        self.scraped
            .registry
            .borrow_mut()
            .register(name, help, metric);
    }

    /// Adds a collector of the embedding program, which encodes its families at each scrape
    /// (prometheus-client's [`Registry::register_collector`]); the same rule for names holds.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.scraped
            .registry
            .borrow_mut()
            .register_collector(collector);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // The watches end with their entries; the endpoint stops when dropped.
        let clusters = std::mem::take(&mut *self.scraped.clusters.borrow_mut());
        drop(clusters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::SlotFigures;
    use crate::state::WorkerState;

    fn part(labels: Labels, groups: &[&str]) -> Part {
        let slots = groups.iter().enumerate().map(|(id, group)| SlotFigures {
            id,
            group: (*group).to_owned(),
            state: WorkerState::Ready,
            pid: None,
            generation: 1,
            started: None,
            cpu: Duration::ZERO,
            rss_bytes: 0,
            outbox_bytes: 0,
            in_flight: 0,
            counters: Default::default(),
            abandoned: 0,
        });
        let mut part = Part {
            labels,
            ..Part::default()
        };
        part.cluster.slots = slots.collect();
        part
    }

    fn groups(part: &Part) -> Vec<&str> {
        part.cluster
            .slots
            .iter()
            .map(|s| s.group.as_str())
            .collect()
    }

    #[test]
    fn a_group_name_two_clusters_share_is_reported_by_the_first_only() {
        let node = vec![("node", "n2".to_owned())];
        let mut parts = vec![
            part(Labels::new(), &["a", "a", "b"]),
            part(Labels::new(), &["b", "c"]),
            // Another node's series differ by their `node` label: no clash.
            part(node, &["a"]),
        ];
        exclusive(&mut parts);
        assert_eq!(groups(&parts[0]), ["a", "a", "b"]);
        assert_eq!(groups(&parts[1]), ["c"]);
        assert_eq!(groups(&parts[2]), ["a"]);
        let text = Exposition {
            clusters: parts,
            ..Exposition::default()
        }
        .encode(Format::Prometheus, &Registry::default());
        let up: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("procactor_worker_up{"))
            .collect();
        assert_eq!(up.len(), 5, "{up:?}");
        assert_eq!(text.matches("# TYPE procactor_worker_up ").count(), 1);
    }
}
