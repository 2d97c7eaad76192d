//! The ceiling of any proxy built on actix: the bench's own request and one-way loops, as
//! written for procactor (`send(..).await` with the same windows, from a task of the system),
//! against an actor in this process that answers at once. What a call to a worker costs above
//! this is procactor's; this much is actix's and the harness's.

use std::time::Instant;

use actix::prelude::*;
use futures_util::stream::{FuturesUnordered, StreamExt};

/// Answers at once.
struct Nop;

impl Actor for Nop {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // As the proxies' mailboxes are (`ClusterConfig::mailbox_capacity`'s default).
        ctx.set_mailbox_capacity(4096);
    }
}

/// A request: the answer is its number.
struct Ask(u64);

impl Message for Ask {
    type Result = u64;
}

impl Handler<Ask> for Nop {
    type Result = u64;

    fn handle(&mut self, Ask(n): Ask, _: &mut Context<Self>) -> u64 {
        n
    }
}

/// Requests per second to an in-process actor with `in_flight` awaited at once.
pub(crate) async fn calls_per_s(count: usize, in_flight: usize) -> f64 {
    let nop = Nop.start();
    let t = Instant::now();
    tokio::task::unconstrained(async {
        let mut window = FuturesUnordered::new();
        let (mut sent, mut answered) = (0, 0);
        while answered < count {
            while sent < count && window.len() < in_flight {
                window.push(nop.send(Ask(sent as u64)));
                sent += 1;
            }
            window
                .next()
                .await
                .expect("window is not empty")
                .expect("the actor is running");
            answered += 1;
        }
    })
    .await;
    count as f64 / t.elapsed().as_secs_f64()
}
