//! Quick start: one program that is both the master and its workers.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The master starts three workers (this same executable, re-run in worker role), makes typed
//! calls, sends one-way messages both ways, prints what happened, and stops them cleanly.

use std::time::Duration;

use actix::prelude::*;
use procactor::prelude::*;
use serde::{Deserialize, Serialize};

/// What the master asks a worker.
#[derive(Debug, Serialize, Deserialize)]
enum Calc {
    Add(i64, i64),
    Fib(u32),
    /// One-way: remember a number, and tell the master the running total.
    Remember(i64),
}

/// A worker: typed messages in, typed replies and events out.
#[derive(Default)]
struct Calculator {
    total: i64,
}

impl WorkerActor for Calculator {
    type Msg = Calc;
    type Reply = i64;
    type Event = String;
    type MasterReply = ();

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        // A stray print goes to stderr, which the master logs; the channel is safe.
        println!("worker {} (pid {}) started", ctx.id(), std::process::id());
    }

    async fn handle(&mut self, msg: Calc, ctx: &mut WorkerContext<Self>) -> i64 {
        match msg {
            Calc::Add(a, b) => a + b,
            Calc::Fib(n) => {
                // Handlers are async: a worker can await I/O (here, a timer) while it works.
                tokio::time::sleep(Duration::from_millis(1)).await;
                (1..n).fold((0i64, 1i64), |(a, b), _| (b, a + b)).1
            }
            Calc::Remember(n) => {
                self.total += n;
                let note = format!("worker {} now holds {}", ctx.id(), self.total);
                let _ = ctx.send_master(&note);
                self.total
            }
        }
    }

    async fn stopping(&mut self, ctx: &mut WorkerContext<Self>) {
        eprintln!("worker {} stopping with total {}", ctx.id(), self.total);
    }
}

/// Receives what workers send to the master.
struct Inbox;

impl Actor for Inbox {
    type Context = Context<Self>;
}

impl Handler<FromWorker<String>> for Inbox {
    type Result = ();

    fn handle(&mut self, msg: FromWorker<String>, _: &mut Context<Self>) {
        println!(
            "master got from worker {} (pid {}): {}",
            msg.worker, msg.pid, msg.msg
        );
    }
}

impl Handler<WorkerEvent> for Inbox {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent, _: &mut Context<Self>) {
        println!(
            "event: worker {} pid {:?} generation {}: {:?}",
            event.worker, event.pid, event.generation, event.kind
        );
    }
}

fn main() -> Result<(), procactor::Error> {
    if procactor::is_worker() {
        return procactor::run_worker(Calculator::default());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "procactor=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    actix::System::new().block_on(async {
        let inbox = Inbox.start();
        let cluster = ClusterSupervisor::builder::<Calculator>(ClusterConfig::new().workers(3))
            .subscribe(inbox.clone().recipient())
            .on_message(inbox.recipient())
            .start()
            .await?;
        for info in cluster.workers().await? {
            println!("worker {} is pid {:?}, {:?}", info.id, info.pid, info.state);
        }

        let w: Addr<Worker<Calculator>> = cluster.worker(0);
        let sum = w.send(Call(Calc::Add(40, 2))).await??;
        println!("worker 0: 40 + 2 = {sum}");

        // One call per worker, all in flight at once.
        let calls: Vec<_> = (0..cluster.len())
            .map(|id| cluster.worker(id).send(Call(Calc::Fib(30 + id as u32))))
            .collect();
        for (id, call) in calls.into_iter().enumerate() {
            println!("worker {id}: fib({}) = {}", 30 + id, call.await??);
        }

        // One-way messages; each worker reports its total back as an event.
        for n in 1..=3 {
            cluster.worker(1).send(Tell(Calc::Remember(n))).await??;
        }
        let total = cluster.worker(1).send(Call(Calc::Remember(0))).await??;
        println!("worker 1 total after three one-way messages: {total}");

        cluster.stop().await?;
        for info in cluster.workers().await? {
            println!("worker {} {:?}", info.id, info.state);
        }
        println!("stopped cleanly");
        Ok(())
    })
}
