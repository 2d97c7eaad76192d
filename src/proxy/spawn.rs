//! Starting a slot's process, watching its output and its exit, and settling what depended on it
//! once it is reaped.

use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use tokio::net::unix::pipe::Receiver;

use super::actor::*;
use super::generation::Finished;
use super::pipes::{self, ReadFrames};
use super::DRAIN_AFTER_EXIT;
use crate::config::{INSTANCE_ENV, SHUTDOWN_TIMEOUT_ENV};
use crate::error::{ExitReason, SpawnError};
use crate::event::WorkerEventKind;
use crate::logger::Stream;
use crate::os::notify::NotifySocket;
use crate::os::{
    Child as _, ChildPipes, OsChild, OsSpawner, RawExit, SpawnSpec, Spawner as _, Token,
};
use crate::state::WorkerState;
use crate::worker::{env, WorkerActor};

impl<A: WorkerActor> Worker<A> {
    /// Starts a new process as the slot's serving process.
    pub(super) fn spawn_process(&mut self, ctx: &mut Context<Self>) {
        if self.generations > 0 && !std::mem::take(&mut self.uncounted) {
            self.respawns += 1;
            let reason = self
                .last_exit
                .as_ref()
                .map_or(0, super::metered::reason_index);
            self.counters.restarts[reason] += 1;
        }
        self.generations += 1;
        let new = self.new_proc(self.generations);
        let old = std::mem::replace(&mut self.proc, new);
        // What was sent while the slot was down waits for the new process.
        self.proc.inherit(old);
        self.start_process(self.generations, ctx);
    }

    /// Spawns the process for the (already placed) `Proc` of `generation`.
    pub(super) fn start_process(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let config = &self.spawn.config;
        let launch = self.spawn.launch();
        let mut env = launch.env.clone();
        env.extend(self.env.iter().cloned());
        let (mut notify, mut pid_vars) = (None, Vec::new());
        if config.plain {
            env.push((INSTANCE_ENV.into(), self.id.to_string().into()));
            match self.prepare_plain(&mut env, &mut pid_vars) {
                Ok(socket) => notify = socket,
                Err(e) => {
                    let error = SpawnError {
                        program: launch.program.clone(),
                        kind: e.kind(),
                        message: format!("cannot bind its notification socket: {e}"),
                    };
                    return self.spawned(generation, Err(error), None, ctx);
                }
            }
        } else {
            for (key, value) in [
                (env::WORKER_ID, self.id.to_string()),
                (env::GENERATION, generation.to_string()),
                (env::MASTER_PID, std::process::id().to_string()),
                (env::MAX_FRAME_BYTES, config.max_frame_bytes.to_string()),
                (env::LOG_LEVEL, config.log.worker_level.clone()),
                (env::GROUP, self.spawn.group.clone()),
            ] {
                env.push((key.into(), value.into()));
            }
        }
        let timeout_ms = config.shutdown_timeout.as_millis().to_string();
        env.push((SHUTDOWN_TIMEOUT_ENV.into(), timeout_ms.into()));
        let listeners = self.spawn.listeners.duplicates();
        let spec = SpawnSpec {
            program: launch.program,
            args: launch.args,
            env,
            cwd: launch.cwd,
            pid_vars,
            pipe_bytes: config.pipe_buffer_bytes,
            listeners,
            cpus: config.affinity.cpus_for(self.id),
            tree: Token::new(self.id, generation),
        };
        ctx.wait(
            OsSpawner
                .spawn(spec)
                .into_actor(self)
                .map(move |result, act, ctx| act.spawned(generation, result, notify, ctx)),
        );
    }

    /// Process `generation` was spawned (or could not be); `notify` is its notification
    /// socket, if it has one.
    pub(super) fn spawned(
        &mut self,
        generation: u64,
        parts: Result<(ChildPipes, OsChild), SpawnError>,
        notify: Option<NotifySocket>,
        ctx: &mut Context<Self>,
    ) {
        let span = self.span(generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let id = self.id;
        let Some(p) = self.proc_mut(generation) else {
            // Abandoned while spawning (a replacement given up on): dropping the handle kills it.
            return;
        };
        let (pipes, child) = match parts {
            Ok(parts) => parts,
            Err(e) => {
                tracing::error!(worker = id, generation, error = %e, "worker failed to spawn");
                p.exit = Some(RawExit::Code(-1));
                p.fault = Some(ExitReason::SpawnFailed(e));
                self.finalize(generation);
                return;
            }
        };
        let child = Rc::new(child);
        let pid = child.pid();
        p.child = Some(Rc::clone(&child));
        p.started(pid, Instant::now());
        p.stdin.attach(pipes.stdin);
        let tail = Rc::clone(&p.stderr_tail);
        // A member of its supervision group's topic while a process of the slot runs.
        self.links.routing.borrow_mut().process_started(id);
        tracing::debug!(worker = id, pid, generation, "worker spawned");
        self.emit(generation, Some(pid), WorkerEventKind::Spawned);
        self.watch(
            generation,
            pid,
            (pipes.stdout, pipes.stderr),
            tail,
            child,
            ctx,
        );
        if self.plain() {
            self.plain_started(generation, notify, ctx);
        } else {
            self.arm_ready_timeout(generation, ctx);
            self.kick_writer(generation, ctx);
        }
    }

    /// Reads process `generation`'s stdout (frames, or lines of a plain program) and stderr,
    /// and waits for its exit.
    fn watch(
        &mut self,
        generation: u64,
        pid: u32,
        (stdout, stderr): (Receiver, Receiver),
        tail: Rc<std::cell::RefCell<std::collections::VecDeque<String>>>,
        child: Rc<OsChild>,
        ctx: &mut Context<Self>,
    ) {
        let plain = self.plain();
        if plain {
            let lines = self.read_lines(generation, pid, stdout, Stream::Stdout, Rc::clone(&tail));
            ctx.spawn(
                lines
                    .into_actor(self)
                    .map(move |(), act, _| act.stdout_closed(generation)),
            );
        } else {
            let max_frame = self.spawn.config.max_frame_bytes;
            ctx.spawn(ReadFrames::new(generation, stdout, max_frame));
        }
        ctx.spawn(
            self.read_lines(generation, pid, stderr, Stream::Stderr, tail)
                .into_actor(self)
                .map(move |(), act, _| {
                    if let Some(p) = act.proc_mut(generation) {
                        p.stderr_open = false;
                        act.try_finalize(generation);
                    }
                }),
        );
        ctx.spawn(
            async move { child.wait().await.unwrap_or(RawExit::LOST) }
                .into_actor(self)
                .map(move |raw, act, ctx| act.exited(generation, raw, ctx)),
        );
    }

    /// Kills process `generation` if it is not ready within the ready timeout.
    pub(super) fn arm_ready_timeout(&mut self, generation: u64, ctx: &mut Context<Self>) {
        ctx.run_later(self.spawn.config.ready_timeout, move |act, ctx| {
            let starting = act
                .proc_mut(generation)
                .is_some_and(|p| matches!(p.state, WorkerState::Starting | WorkerState::Online));
            if starting {
                act.fault(generation, ExitReason::ReadyTimeout, ctx);
            }
        });
    }

    /// Reads `pipe` of process `generation` line by line into the logs and `tail`.
    fn read_lines(
        &self,
        generation: u64,
        pid: u32,
        pipe: tokio::net::unix::pipe::Receiver,
        stream: Stream,
        tail: Rc<std::cell::RefCell<std::collections::VecDeque<String>>>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let source = self.source(generation, pid);
        pipes::read_lines(pipe, source, stream, self.links.log.clone(), tail)
    }

    pub(crate) fn stdout_closed(&mut self, generation: u64) {
        let plain = self.plain();
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        p.stdout_open = false;
        if !plain {
            self.disconnected(generation);
        }
        self.try_finalize(generation);
    }

    /// The channel of process `generation` is closed (or gone with it): `Disconnected`, once,
    /// before its exit is reported.
    fn disconnected(&mut self, generation: u64) {
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if !std::mem::replace(&mut p.disconnected, true) {
            let pid = p.pid();
            self.emit(generation, pid, WorkerEventKind::Disconnected);
        }
    }

    pub(super) fn exited(&mut self, generation: u64, raw: RawExit, ctx: &mut Context<Self>) {
        let span = self.span(generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        p.exit = Some(raw);
        if p.stdout_open || p.stderr_open {
            ctx.run_later(DRAIN_AFTER_EXIT, move |act, _| act.finalize(generation));
        }
        self.try_finalize(generation);
    }

    pub(super) fn try_finalize(&mut self, generation: u64) {
        if self.proc_mut(generation).is_some_and(|p| p.drained()) {
            self.finalize(generation);
        }
    }

    /// Process `generation` is reaped and its output read (or the wait for it is over): report
    /// its exit, and settle what depended on it.
    pub(super) fn finalize(&mut self, generation: u64) {
        let span = self.span(generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let id = self.id;
        let Some(finished) = self.proc_mut(generation).and_then(|p| p.finish(id)) else {
            return;
        };
        // Its notification socket is read no more, and removed.
        self.notify.end(generation);
        if !self.plain() {
            // Once, before its exit (its stdout may still be held open by a descendant: the
            // channel is gone with it all the same).
            self.disconnected(generation);
        }
        // What it had taken in is gone with it: its senders may send again.
        self.pay_credits(generation, true);
        if let Some(pid) = finished.pid {
            // Its locks are released and its subscriptions end, however it ended.
            self.links
                .cache
                .process_gone(crate::Peer::Worker { id, pid });
        }
        if self.proc.generation == generation {
            self.serving_exited(generation, finished);
        } else {
            // A replacement that never became ready, or a replaced process done draining.
            self.retired(generation, &finished);
            let Finished {
                reason,
                pid,
                last_stderr,
                uptime,
            } = finished;
            let kind = WorkerEventKind::Retired {
                reason,
                last_stderr,
                uptime,
            };
            self.emit(generation, pid, kind);
        }
    }

    /// The serving process exited: waiters hear of it, and so does the supervisor.
    fn serving_exited(&mut self, generation: u64, finished: Finished) {
        let Finished {
            reason,
            pid,
            last_stderr,
            uptime,
        } = finished;
        let id = self.id;
        if reason.is_normal() {
            tracing::info!(worker = id, pid, generation, "worker exited");
        } else {
            tracing::warn!(worker = id, pid, generation, %reason, "worker exited");
        }
        for tx in self.exit_waiters.drain(..) {
            let _ = tx.send(reason.clone());
        }
        // Joined topics end with the process (its successor joins again); the slot stays a
        // member of its supervision group only if a replacement takes over.
        let successor = self.handover.incoming().is_some();
        self.links.routing.borrow_mut().process_ended(id, successor);
        self.last_exit = Some(reason.clone());
        let kind = WorkerEventKind::Exited {
            reason: reason.clone(),
            last_stderr: last_stderr.clone(),
            uptime,
        };
        self.emit(generation, pid, kind);
        if self.promote_replacement() {
            return;
        }
        for tx in self.ready_waiters.drain(..) {
            let _ = tx.send(Err(reason.clone()));
        }
        self.promoted_failed(reason, last_stderr);
    }
}
