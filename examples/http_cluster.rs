//! An HTTP cluster: N workers serving one port, reloaded with no dropped request.
//!
//! ```text
//! cargo run --release --example http_cluster -- --listen 127.0.0.1:8080 --workers 4 \
//!     --metrics 127.0.0.1:9464
//! curl http://127.0.0.1:8080/          # pid <n>: the worker that answered
//! curl http://127.0.0.1:9464/metrics   # Prometheus metrics (with --metrics)
//! kill -HUP <master pid>               # rolling reload: every worker replaced, one at a time
//!                                      # (more SIGHUPs during a reload: one more reload)
//! kill -TERM <master pid>              # graceful stop (or Ctrl-C); exits 0
//! ```
//!
//! The master binds the port once and hands it to every worker ([`HttpWorker`], this same
//! executable re-run in worker role). It prints a line when a worker comes up or goes down and
//! the progress of every reload, with how long each worker's replacement took. A deploy is:
//! replace the binary, send SIGHUP. A replaced worker drains beside the next replacements (its
//! idle keep-alive connections stay open for a grace, `PROCACTOR_HTTP_DRAIN_GRACE_MS`, and every
//! response tells the client to reconnect): no request fails, even of a client that never
//! resends one.

use std::time::Duration;

use actix::prelude::*;
use procactor::actors::http::HttpWorker;
use procactor::prelude::*;
use procactor::{ListenAddr, ReloadEvent};

/// Prints lifecycle events and reload progress, one line each.
struct Printer;

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent> for Printer {
    type Result = ();

    fn handle(&mut self, e: WorkerEvent, _: &mut Context<Self>) {
        let who = format!("worker {} (pid {})", e.worker, e.pid.unwrap_or_default());
        match e.kind {
            WorkerEventKind::Ready => println!("up      {who}, generation {}", e.generation),
            WorkerEventKind::Exited { reason, .. } => println!("down    {who}: {reason}"),
            WorkerEventKind::Retired { reason, .. } => println!("retired {who}: {reason}"),
            WorkerEventKind::Restarting { delay } => {
                println!("restart worker {} in {delay:?}", e.worker)
            }
            WorkerEventKind::GaveUp { reason, .. } => println!("gave up {who}: {reason}"),
            _ => {}
        }
    }
}

impl Handler<ReloadEvent> for Printer {
    type Result = ();

    fn handle(&mut self, e: ReloadEvent, _: &mut Context<Self>) {
        match e {
            ReloadEvent::Started { workers } => println!("reload  started: {workers} workers"),
            ReloadEvent::Replaced { replaced, done, of } => println!(
                "reload  {done}/{of}: worker {} pid {} -> {} in {} ms",
                replaced.worker,
                replaced.old_pid.unwrap_or_default(),
                replaced.new_pid.unwrap_or_default(),
                replaced.ready_in.as_millis()
            ),
            ReloadEvent::Done { replaced, elapsed } => {
                println!("reload  done: {replaced} workers in {elapsed:?}")
            }
            ReloadEvent::Failed { error } => println!("reload  failed: {error}"),
            _ => {}
        }
    }
}

/// An HTTP cluster: N workers serving one port, reloaded with no dropped request.
#[derive(clap::Parser, Debug)]
#[command(name = "http_cluster")]
struct Args {
    /// The address the workers serve (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    listen: String,
    /// How many workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    workers: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
}

fn main() -> std::process::ExitCode {
    let result = if procactor::is_worker() {
        procactor::run_worker(HttpWorker::default())
    } else {
        master(<Args as clap::Parser>::parse())
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_cluster: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn master(args: Args) -> Result<(), procactor::Error> {
    let mut config = ClusterConfig::new()
        .workers(args.workers as usize)
        .listen("http", args.listen)
        // Workers re-run this executable without the master's arguments.
        .args(Vec::<String>::new())
        .shutdown_timeout(Duration::from_secs(35));
    if let Some(addr) = args.metrics {
        config = config.metrics(addr);
    }
    actix::System::new().block_on(async move {
        let printer = Printer.start();
        let cluster = ClusterSupervisor::builder::<HttpWorker>(config)
            .subscribe(printer.clone().recipient())
            .on_reload(printer.recipient())
            .start()
            .await?;
        if let Some(ListenAddr::Tcp(addr)) = cluster.local_addr("http") {
            let n = cluster.len();
            println!(
                "serving http://{addr}/ with {n} worker{}; master pid {} (SIGHUP reloads, SIGTERM stops)",
                if n == 1 { "" } else { "s" },
                std::process::id()
            );
        }
        if let Some(addr) = cluster.metrics_addr() {
            println!("metrics at http://{addr}/metrics");
        }
        let result = cluster.wait().await;
        println!("stopped");
        result
    })
}
