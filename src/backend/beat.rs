//! The heartbeat: one task on the master's loop that writes this node's key and reads the
//! others' every beat, turns what it reads into [`NodeEvent`]s, and leaves on a clean stop.
//!
//! One beat at a time: a beat (the supervisor asked for the local groups, then one script call)
//! is bounded by the heartbeat, and a beat that overran its slot makes the next one start late
//! rather than queue behind it. Between beats, when another node's key would expire before
//! the next beat, a read is made just after that moment, so that a dead node is seen gone
//! about `node_timeout` after its last beat rather than up to a heartbeat later.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Recipient, WeakRecipient};
use tokio::sync::{mpsc, oneshot};

use super::claim::{is_unreachable, wants_new_connection, Claim};
use super::node::{fields, NodeEvent};
use super::script::{Beat, Fields, Joined, Own};
use super::Shared;
use crate::messaging::system::GetClusterInfo;
use crate::messaging::ClusterInfo;
use crate::messaging::NodeId;

/// Asked of the task by the cluster.
#[derive(Debug)]
pub(crate) enum Command {
    /// List this node in the index (its workers are ready); answered after that beat, or at
    /// once when Redis is already unreachable.
    Announce(oneshot::Sender<()>),
    /// Delete this node's key and index entry and stop; answered when done (or failed).
    Leave(oneshot::Sender<()>),
}

/// How long after another node's key would expire the early read is made.
const EXPIRY_MARGIN: Duration = Duration::from_millis(20);

/// The task's state.
pub(crate) struct Beater {
    claim: Claim,
    supervisor: WeakRecipient<GetClusterInfo>,
    subscribers: Vec<Recipient<NodeEvent>>,
    /// The cross-node task, which ends the requests to a node that left (or all of them when
    /// Redis is lost).
    internal: mpsc::UnboundedSender<NodeEvent>,
    shared: Rc<RefCell<Shared>>,
    visible: bool,
    /// The error reported with `Disconnected`, while the outage lasts.
    outage: Option<String>,
    /// No beat failed since the last read.
    continuous: bool,
    /// The supervisor's last answer.
    info: Option<ClusterInfo>,
    next_beat: Instant,
    next_check: Option<Instant>,
}

impl Beater {
    pub(crate) fn new(
        claim: Claim,
        supervisor: WeakRecipient<GetClusterInfo>,
        subscribers: Vec<Recipient<NodeEvent>>,
        shared: Rc<RefCell<Shared>>,
        internal: mpsc::UnboundedSender<NodeEvent>,
    ) -> Self {
        let outage = claim.unreachable.clone();
        let next_beat = Instant::now() + claim.settings.heartbeat;
        if claim.bad > 0 {
            tracing::warn!(
                replaced = claim.bad,
                "a value of another type was under this node's key or the epoch counter; replaced"
            );
            shared.borrow_mut().stats.bad_entries += claim.bad;
        }
        let me = Self {
            claim,
            supervisor,
            subscribers,
            internal,
            shared,
            visible: false,
            outage,
            continuous: true,
            info: None,
            next_beat,
            next_check: None,
        };
        if let Some(error) = &me.outage {
            let (cluster, name) = (&me.claim.settings.cluster, &me.claim.settings.name);
            tracing::warn!(cluster, node = name, %error, "Redis unreachable at start; running locally and retrying at every beat");
            me.send(NodeEvent::Disconnected {
                error: error.clone(),
            });
        }
        me
    }

    /// Beats until told to leave, or until the supervisor is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self
                .next_check
                .map_or(self.next_beat, |c| c.min(self.next_beat));
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() < self.next_beat {
                        self.next_check = None;
                        self.check().await;
                        continue;
                    }
                    let heartbeat = self.claim.settings.heartbeat;
                    self.next_beat = (self.next_beat + heartbeat).max(Instant::now());
                    if !self.beat().await {
                        return;
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Announce(done)) => {
                        self.visible = true;
                        // Redis already did not answer: the start does not wait for it again.
                        let mut done = Some(done);
                        if self.outage.is_some() {
                            let _ = done.take().map(|done| done.send(()));
                        }
                        if !self.beat().await {
                            return;
                        }
                        let _ = done.map(|done| done.send(()));
                    }
                    Some(Command::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    /// One beat; false once the supervisor is gone.
    async fn beat(&mut self) -> bool {
        if !self.ask_supervisor().await {
            return false;
        }
        let settings = &self.claim.settings;
        let (fields, groups) = fields(self.info.as_ref(), &settings.host, settings.started);
        self.shared.borrow_mut().own_groups = groups;
        let deadline = settings.heartbeat * 2;
        let sent = Instant::now();
        match tokio::time::timeout(deadline, self.beat_once(&fields)).await {
            Ok(Ok(())) => self.shared.borrow_mut().acked = Some(sent),
            Ok(Err(e)) => self.failed(e.to_string(), wants_new_connection(&e)),
            Err(_) => self.failed("Redis did not answer in time".into(), true),
        }
        true
    }

    /// Refreshes the local groups from the supervisor; false once it is gone. One that is
    /// slow to answer leaves the last groups in place.
    async fn ask_supervisor(&mut self) -> bool {
        let Some(supervisor) = self.supervisor.upgrade() else {
            return false;
        };
        let ask = supervisor.send(GetClusterInfo);
        match tokio::time::timeout(self.claim.settings.heartbeat / 2, ask).await {
            Ok(Ok(info)) => self.info = Some(info),
            Ok(Err(_)) => return false,
            Err(_) => tracing::debug!("the supervisor was slow to list the groups"),
        }
        true
    }

    async fn beat_once(&mut self, fields: &Fields) -> redis::RedisResult<()> {
        let Some(epoch) = self.claim.epoch else {
            return self.rejoin(fields).await;
        };
        let Claim {
            settings,
            redis,
            scripts,
            ..
        } = &mut self.claim;
        let me = settings.me(self.visible);
        let prune = settings.prune_after_ms();
        let beat = scripts
            .beat(redis, me, Some((epoch, fields)), prune)
            .await?;
        let own = beat.own;
        self.absorb(beat);
        match own {
            Own::Ok => {
                if let Some(error) = self.outage.take() {
                    tracing::info!(node = %self.id(epoch), %error, "Redis answers again");
                    self.send(NodeEvent::Reconnected {
                        node: self.id(epoch),
                    });
                }
                Ok(())
            }
            Own::Gone | Own::WrongType | Own::Taken => {
                tracing::warn!(node = %self.id(epoch), ?own, "this node's key was lost; joining again");
                self.claim.epoch = None;
                self.shared.borrow_mut().me = None;
                self.rejoin(fields).await
            }
        }
    }

    /// Joins with a new epoch (the key was lost, or never taken).
    async fn rejoin(&mut self, fields: &Fields) -> redis::RedisResult<()> {
        let Claim {
            settings,
            redis,
            scripts,
            ..
        } = &mut self.claim;
        let me = settings.me(self.visible);
        match scripts.join(redis, me, fields).await? {
            Joined::Ok { epoch, bad } => {
                let node = self.id(epoch);
                self.claim.epoch = Some(epoch);
                let first = {
                    let mut shared = self.shared.borrow_mut();
                    let first = shared.joins == 0;
                    shared.joins += 1;
                    shared.stats.rejoins += u64::from(!first);
                    shared.stats.bad_entries += bad;
                    shared.me = Some(node.clone());
                    first
                };
                self.outage = None;
                if bad > 0 {
                    // Counted above: the join replaced them.
                    tracing::warn!(%node, replaced = bad, "a value of another type was under this node's key or the epoch counter; replaced");
                }
                tracing::info!(%node, first, "joined the cluster with a new epoch");
                self.send(NodeEvent::Rejoined { node });
                Ok(())
            }
            Joined::Taken(holder) => {
                let error = format!(
                    "node name {:?} is held by another master (pid {} on {})",
                    self.claim.settings.name, holder.pid, holder.host
                );
                self.failed(error, false);
                Ok(())
            }
        }
    }

    /// An early read, when another node's key is about to expire.
    async fn check(&mut self) {
        let Claim {
            settings,
            redis,
            scripts,
            ..
        } = &mut self.claim;
        let me = settings.me(self.visible);
        let read = scripts.beat(redis, me, None, settings.prune_after_ms());
        match tokio::time::timeout(settings.heartbeat, read).await {
            Ok(Ok(beat)) => self.absorb(beat),
            Ok(Err(e)) => self.failed(e.to_string(), wants_new_connection(&e)),
            Err(_) => self.failed("Redis did not answer in time".into(), true),
        }
    }

    /// Takes in what a beat read: the view, the figures, the events, the next early read.
    fn absorb(&mut self, beat: Beat) {
        {
            let mut shared = self.shared.borrow_mut();
            shared.stats.beats += 1;
            shared.stats.connected = true;
            shared.stats.bad_entries += beat.bad;
        }
        if beat.bad > 0 {
            // The index was just made anew: it lists only the nodes that beat since. The view
            // waits for the next read rather than see the others vanish.
            tracing::warn!(
                replaced = beat.bad,
                "a value of another type was under the cluster's index; replaced"
            );
            return;
        }
        let applied = self
            .shared
            .borrow_mut()
            .view
            .apply(beat.members, self.continuous);
        self.continuous = true;
        for (name, why) in &applied.bad {
            self.bad_entry(name, why);
        }
        self.next_check = applied
            .next_expiry_ms
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
            .filter(|&left| left < self.claim.settings.heartbeat)
            .map(|left| Instant::now() + left + EXPIRY_MARGIN);
        for event in applied.events {
            match &event {
                NodeEvent::Joined(node) => {
                    tracing::info!(node = %node.id, host = node.host, "node joined");
                }
                NodeEvent::Left { node, reason } => {
                    tracing::warn!(node = %node.id, ?reason, "node left");
                }
                _ => {}
            }
            self.send(event);
        }
    }

    fn bad_entry(&self, name: &str, why: &str) {
        let cluster = &self.claim.settings.cluster;
        tracing::warn!(
            cluster,
            node = name,
            why,
            "skipped a bad entry under the cluster's keys"
        );
        self.shared.borrow_mut().stats.bad_entries += 1;
    }

    fn failed(&mut self, error: String, reconnect: bool) {
        self.continuous = false;
        {
            let mut shared = self.shared.borrow_mut();
            shared.stats.beat_failures += 1;
            shared.stats.connected = false;
        }
        if reconnect {
            // A connection that stopped answering is not always seen as dropped, and one to a
            // replica promoted away is read-only: start over.
            let _ = self.claim.redis.reconnect();
        }
        if self.outage.is_none() {
            tracing::warn!(node = self.claim.settings.name, %error, "cannot beat; running locally and retrying at every beat");
            self.outage = Some(error.clone());
            self.send(NodeEvent::Disconnected { error });
        }
    }

    /// Deletes this node's key and index entry, if Redis answers in time.
    async fn leave(&mut self) {
        // Even without an epoch (a join whose answer was lost): the script deletes the key
        // only if it holds this boot.
        let Claim {
            settings,
            redis,
            scripts,
            ..
        } = &mut self.claim;
        let leave = scripts.leave(redis, settings.me(self.visible));
        match tokio::time::timeout(settings.heartbeat, leave).await {
            Ok(Ok(())) => tracing::info!(node = settings.name, "left the cluster"),
            Ok(Err(e)) if is_unreachable(&e) || e.is_timeout() => {
                tracing::warn!(node = settings.name, error = %e, "could not leave cleanly; the others will see this node expire");
            }
            Ok(Err(e)) => {
                tracing::warn!(node = settings.name, error = %e, "Redis refused the leave; the others will see this node expire");
            }
            Err(_) => {
                tracing::warn!(
                    node = settings.name,
                    "Redis did not answer the leave in time; the others will see this node expire"
                );
            }
        }
        self.shared.borrow_mut().stats.connected = false;
    }

    fn id(&self, epoch: u64) -> NodeId {
        NodeId {
            name: self.claim.settings.name.clone(),
            epoch,
        }
    }

    fn send(&self, event: NodeEvent) {
        if matches!(
            event,
            NodeEvent::Left { .. } | NodeEvent::Disconnected { .. }
        ) {
            let _ = self.internal.send(event.clone());
        }
        for subscriber in &self.subscribers {
            subscriber.do_send(event.clone());
        }
    }
}
