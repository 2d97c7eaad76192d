//! The signals a master obeys: SIGTERM and SIGINT stop the cluster gracefully, SIGHUP starts a
//! rolling reload — of the whole cluster when it has a backend (of this node only, with a
//! warning, when Redis cannot be reached then; `supervisor/rollout.rs`). Installed when [`ClusterConfig::handle_signals`](crate::ClusterConfig) is on
//! (the default); a program that handles signals itself turns it off.

use actix::prelude::*;
use tokio::signal::unix::{signal, SignalKind};

use super::{ClusterSupervisor, Control, StopAll};

/// Turns the master's signals into supervisor messages until a stop signal arrives.
pub(super) async fn watch(me: Addr<ClusterSupervisor>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install SIGTERM/SIGINT/SIGHUP handlers");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                tracing::info!(signal = "SIGHUP", "rolling reload requested");
                // With a backend: the whole cluster (the supervisor routes it).
                me.do_send(Control::Reload(None));
                continue;
            }
        };
        tracing::info!(signal = name, "stopping the cluster");
        me.do_send(StopAll);
        return;
    }
}
