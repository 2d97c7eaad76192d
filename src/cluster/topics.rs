//! The master's part in topics and confirmations: it confirms keys as workers do, and registers
//! for every round of a key's confirmations (clustr-node's `emitConfirmation` and
//! `onConfirmation(n, id)`).
//!
//! What a group (a topic) is, and who its members are, is said once, in
//! [`ClusterInfo`'s Groups](crate::ClusterInfo#groups); how confirmations count, in
//! [`on_confirmation`](Cluster::on_confirmation).

use crate::error::Error;
use crate::messaging::system::{Confirm, OnConfirmation};
use crate::messaging::{ConfirmationRounds, Peer};
use crate::worker::WorkerActor;

use super::Cluster;

impl<A: WorkerActor> Cluster<A> {
    /// The master confirms `key`, as a worker does with
    /// [`WorkerHandle::confirm`](crate::WorkerHandle::confirm): it counts in every round of
    /// `key` as one process, [`Peer::Master`].
    ///
    /// # Errors
    /// [`Error::Ask`] with [`AskError::Invalid`](crate::AskError::Invalid) for a key longer
    /// than 1 KiB; [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn confirm(&self, key: &str) -> Result<(), Error> {
        let confirm = Confirm {
            from: Peer::Master,
            key: key.to_owned(),
        };
        Ok(self.supervisor.send(confirm).await??)
    }

    /// Every round of `n` confirmations of `key`, from now on (clustr-node's
    /// `onConfirmation(n, id)`): a round is answered with the processes that confirmed in it,
    /// in order, and the next round counts from zero.
    ///
    /// - The first round counts the confirmations on record (those of processes still running),
    ///   also those made before this call; each later round, the confirmations after the last
    ///   of the round before.
    /// - One process counts once in a round: confirming twice while a round is open counts
    ///   once; its confirmation after the round completed counts in the next one.
    /// - Each registration (and each process's
    ///   [`await_confirmations`](Self::await_confirmations)) counts rounds of its own: one
    ///   completing a round takes nothing from another.
    /// - A worker's confirmations stop counting when its process ends; a replacement in a
    ///   reload continues its slot's.
    ///
    /// The registration ends when the [`ConfirmationRounds`] is dropped.
    ///
    /// ```no_run
    /// # use procactor::prelude::*;
    /// # use procactor::actors::echo::Echo;
    /// # async fn f(cluster: Cluster<Echo>) -> Result<(), procactor::Error> {
    /// let mut warmed = cluster.on_confirmation("warm", 2).await?;
    /// while let Some(round) = warmed.next().await {
    ///     println!("two more processes are warm: {round:?}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Ask`] with [`AskError::Invalid`](crate::AskError::Invalid) for `n == 0` or a
    /// key longer than 1 KiB; [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn on_confirmation(&self, key: &str, n: usize) -> Result<ConfirmationRounds, Error> {
        let on = OnConfirmation {
            key: key.to_owned(),
            n,
        };
        Ok(self.supervisor.send(on).await??)
    }
}
