//! Traces: every event of a worker process is inside one `worker` span (worker, group,
//! generation, pid), and every step of a rolling reload inside one `reload` span.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::cluster::{echo_config, within};
use procactor::logger::LogConfig;
use procactor::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Fields of a span or an event, as text.
#[derive(Debug, Default, Clone)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

/// One event seen: its message and the spans it was inside, innermost first.
#[derive(Debug, Clone)]
struct Seen {
    message: String,
    spans: Vec<(&'static str, Fields)>,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

struct Recorder;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .cloned()
                            .unwrap_or_default();
                        (span.name(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let message = fields.0.remove("message").unwrap_or_default();
        SEEN.lock().unwrap().push(Seen { message, spans });
    }
}

fn seen(message: &str) -> Vec<Seen> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|s| s.message == message)
        .cloned()
        .collect()
}

fn span<'a>(seen: &'a Seen, name: &str) -> Option<&'a Fields> {
    seen.spans.iter().find(|(n, _)| *n == name).map(|(_, f)| f)
}

#[actix::test]
async fn a_worker_process_s_events_are_inside_its_span_and_a_reload_s_inside_one_span() {
    let subscriber = tracing_subscriber::registry().with(Recorder);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    within(120, async {
        let config = echo_config(2).log(LogConfig {
            dir: None,
            tracing: false,
            ..LogConfig::default()
        });
        let cluster = ClusterSupervisor::start::<procactor::actors::echo::Echo>(config)
            .await
            .unwrap();
        let before = cluster.workers().await.unwrap();
        cluster.kill(1).await.unwrap();
        common::eventually(
            Duration::from_secs(20),
            "the killed worker's exit",
            || async { !seen("worker exited").is_empty() },
        )
        .await;
        let killed = before[1].pid.unwrap().to_string();
        let exit = seen("worker exited");
        let worker = span(&exit[0], "worker").expect("the exit is inside the worker span");
        assert_eq!(worker.0.get("worker").map(String::as_str), Some("1"));
        assert_eq!(worker.0.get("pid"), Some(&killed));
        assert_eq!(worker.0.get("generation").map(String::as_str), Some("1"));
        assert_eq!(worker.0.get("group").map(String::as_str), Some("workers"));
        let kill = seen("killing worker");
        assert!(kill
            .iter()
            .all(|s| span(s, "worker").and_then(|w| w.0.get("pid")) == Some(&killed)));

        // The restarted worker's process is a span of its own; a reload is one span.
        common::eventually(Duration::from_secs(20), "the respawn", || async {
            cluster.workers().await.unwrap()[1].state == procactor::WorkerState::Ready
        })
        .await;
        cluster.reload().await.unwrap();
        let started = seen("rolling reload started");
        let done = seen("rolling reload done");
        let replaced = seen("worker replaced");
        assert_eq!(replaced.len(), 2);
        let reload_of = |s: &Seen| span(s, "reload").and_then(|r| r.0.get("reload").cloned());
        let id = reload_of(&started[0]).expect("the start is inside the reload span");
        assert!(replaced
            .iter()
            .chain(&done)
            .all(|s| reload_of(s) == Some(id.clone())));
        let ready: Vec<String> = seen("worker spawned")
            .iter()
            .filter_map(|s| span(s, "worker")?.0.get("generation").cloned())
            .collect();
        assert!(
            ready.contains(&"3".to_owned()),
            "replacements have spans of their own: {ready:?}"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}
