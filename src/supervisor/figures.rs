//! The cluster's figures at one scrape of the metrics endpoint: every slot's (asked of its
//! proxy, one message each) and the reloads'. Nothing is polled between scrapes.

use std::time::Duration;

use actix::prelude::*;

use super::rolling::ReloadFigures;
use super::{answered, ClusterSupervisor};
use crate::proxy::{GetFigures, SlotFigures};

/// Asks the supervisor for [`ClusterFigures`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GetClusterFigures;

impl Message for GetClusterFigures {
    type Result = ClusterFigures;
}

/// Every slot's figures, in slot order, and the reloads'.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterFigures {
    pub(crate) slots: Vec<SlotFigures>,
    pub(crate) reloads: ReloadCounts,
}

/// Reloads since the cluster started, and the one under way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReloadCounts {
    pub(crate) started: u64,
    pub(crate) succeeded: u64,
    pub(crate) rolled_back: u64,
    pub(crate) stopped: u64,
    /// The running reload's workers replaced so far, and how many it replaces.
    pub(crate) current: Option<(usize, usize)>,
    /// How long the last finished reload took.
    pub(crate) last_duration: Option<Duration>,
}

impl ReloadFigures {
    fn counts(&self) -> ReloadCounts {
        ReloadCounts {
            started: self.started.get(),
            succeeded: self.succeeded.get(),
            rolled_back: self.rolled_back.get(),
            stopped: self.stopped.get(),
            current: self.current.get(),
            last_duration: self.last_duration.get(),
        }
    }
}

impl Handler<GetClusterFigures> for ClusterSupervisor {
    type Result = ResponseFuture<ClusterFigures>;

    fn handle(&mut self, _: GetClusterFigures, _ctx: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .slots
            .iter()
            .map(|slot| slot.figures.send(GetFigures))
            .collect();
        let reloads = self.reload.figures.counts();
        Box::pin(async move {
            ClusterFigures {
                slots: answered(asks).await,
                reloads,
            }
        })
    }
}
