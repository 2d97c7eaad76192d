//! Restart policy: pure decisions, no processes, no clock of its own.
//!
//! Every decision is a function of the exit, the process's uptime and an [`Instant`] passed in,
//! so the whole policy is unit-tested with a fake clock; only the supervisor acts on it. What
//! the settings mean, and why their defaults are what they are, is with the settings
//! ([`RestartPolicy`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::restart::{Escalation, RestartPolicy, RestartType, Strategy};

/// How a process ended, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitKind {
    /// Status 0.
    Normal,
    /// Anything else that a restart may mend.
    Abnormal,
    /// A fault that a restart cannot mend.
    Permanent,
    /// Ended because the operator or the program asked (a kill, a graceful end with a status):
    /// restarted as a normal or abnormal exit would be, but not a crash, so neither counted
    /// toward the intensity nor backed off.
    Requested {
        /// It exited with status 0.
        normal: bool,
    },
}

/// What follows an exit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Leave the slot down.
    Stay,
    /// Restart these slots, in ascending order, after `delay` (the others stopped first).
    /// Zero for an exit that was asked for.
    Restart { slots: Vec<usize>, delay: Duration },
    /// The intensity is exceeded.
    GiveUp(Escalation),
    /// A permanent fault: leave the slot down for good; not counted toward intensity.
    Fail,
}

/// The policy's memory: recent restarts and each slot's consecutive restarts.
#[derive(Debug)]
pub(crate) struct PolicyState {
    policy: RestartPolicy,
    window: VecDeque<Instant>,
    consecutive: Vec<u32>,
    rng: u64,
}

impl PolicyState {
    pub(crate) fn new(policy: RestartPolicy, slots: usize, seed: u64) -> Self {
        Self {
            policy,
            window: VecDeque::new(),
            consecutive: vec![0; slots],
            rng: seed | 1,
        }
    }

    /// Adds a slot (a worker added at runtime); returns its index.
    pub(crate) fn add_slot(&mut self) -> usize {
        self.consecutive.push(0);
        self.consecutive.len() - 1
    }

    /// Number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.consecutive.len()
    }

    /// Decides what follows the exit of `slot`'s process, which had been up for `uptime`.
    pub(crate) fn on_exit(
        &mut self,
        slot: usize,
        kind: ExitKind,
        uptime: Duration,
        now: Instant,
    ) -> Decision {
        let restart = match (kind, self.policy.restart) {
            (ExitKind::Permanent, _) => return Decision::Fail,
            (_, RestartType::Temporary)
            | (ExitKind::Normal | ExitKind::Requested { normal: true }, RestartType::Transient) => {
                false
            }
            _ => true,
        };
        if !restart {
            return Decision::Stay;
        }
        let delay = if matches!(kind, ExitKind::Requested { .. }) {
            // Asked for, not a crash: OTP's terminate_child/restart_child do not count either.
            Duration::ZERO
        } else {
            if self.restarts_in_window(now) >= self.policy.intensity.max_restarts as usize {
                return Decision::GiveUp(self.policy.escalation);
            }
            self.window.push_back(now);
            self.next_delay(slot, uptime)
        };
        let n = self.slots();
        let slots = match self.policy.strategy {
            Strategy::OneForOne => vec![slot],
            Strategy::OneForAll => (0..n).collect(),
            Strategy::RestForOne => (slot..n).collect(),
        };
        Decision::Restart { slots, delay }
    }

    /// Restarts recorded in the window at `now`.
    pub(crate) fn restarts_in_window(&mut self, now: Instant) -> usize {
        let period = self.policy.intensity.period;
        while let Some(&oldest) = self.window.front() {
            if now.saturating_duration_since(oldest) >= period {
                self.window.pop_front();
            } else {
                break;
            }
        }
        self.window.len()
    }

    /// Forgets a slot's backoff history.
    pub(crate) fn reset_backoff(&mut self, slot: usize) {
        if let Some(n) = self.consecutive.get_mut(slot) {
            *n = 0;
        }
    }

    fn next_delay(&mut self, slot: usize, uptime: Duration) -> Duration {
        let backoff = self.policy.backoff;
        if uptime >= backoff.reset_after {
            self.reset_backoff(slot);
        }
        let n = self.consecutive.get(slot).copied().unwrap_or(0);
        if let Some(c) = self.consecutive.get_mut(slot) {
            *c = c.saturating_add(1);
        }
        if backoff.floor.is_zero() {
            return Duration::ZERO;
        }
        let cap = backoff.cap.as_secs_f64();
        let base =
            (backoff.floor.as_secs_f64() * backoff.multiplier.powi(n.min(64) as i32)).min(cap);
        let jitter = backoff.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * self.unit();
        Duration::from_secs_f64((base * factor).clamp(0.0, cap))
    }

    /// A uniform draw from [0, 1) (xorshift64*).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::restart::{Backoff, Intensity};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(restart: RestartType, strategy: Strategy) -> RestartPolicy {
        RestartPolicy {
            restart,
            strategy,
            backoff: Backoff {
                jitter: 0.0,
                ..Backoff::default()
            },
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn restart_type_by_exit_kind() {
        use ExitKind::{Abnormal, Normal};
        use RestartType::{Permanent, Temporary, Transient};
        let t0 = Instant::now();
        let cases = [
            (Permanent, Normal, true),
            (Permanent, Abnormal, true),
            (Transient, Normal, false),
            (Transient, Abnormal, true),
            (Temporary, Normal, false),
            (Temporary, Abnormal, false),
        ];
        for (restart, kind, restarts) in cases {
            let mut state = PolicyState::new(policy(restart, Strategy::OneForOne), 1, 1);
            let decision = state.on_exit(0, kind, ms(0), t0);
            assert_eq!(
                matches!(decision, Decision::Restart { .. }),
                restarts,
                "{restart:?} {kind:?}: {decision:?}"
            );
            if !restarts {
                assert_eq!(decision, Decision::Stay);
            }
        }
        for restart in [Permanent, Transient, Temporary] {
            let mut state = PolicyState::new(policy(restart, Strategy::OneForOne), 1, 1);
            assert_eq!(
                state.on_exit(0, ExitKind::Permanent, ms(0), t0),
                Decision::Fail
            );
        }
    }

    #[test]
    fn strategies_choose_their_slots() {
        let t0 = Instant::now();
        let slots = |strategy| {
            let mut state = PolicyState::new(policy(RestartType::Permanent, strategy), 3, 1);
            match state.on_exit(1, ExitKind::Abnormal, ms(0), t0) {
                Decision::Restart { slots, .. } => slots,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(slots(Strategy::OneForOne), [1]);
        assert_eq!(slots(Strategy::OneForAll), [0, 1, 2]);
        assert_eq!(slots(Strategy::RestForOne), [1, 2]);
    }

    fn intensity(max_restarts: u32, period: Duration) -> PolicyState {
        let mut p = policy(RestartType::Permanent, Strategy::OneForOne);
        p.intensity = Intensity {
            max_restarts,
            period,
        };
        PolicyState::new(p, 1, 1)
    }

    #[test]
    fn the_intensity_window_slides() {
        let t0 = Instant::now();
        // Two per 5 s, a crash every 3 s: never more than two in any window.
        let mut state = intensity(2, ms(5000));
        for i in 0..20 {
            let decision = state.on_exit(0, ExitKind::Abnormal, ms(10), t0 + ms(3000 * i));
            assert!(matches!(decision, Decision::Restart { .. }), "crash {i}");
        }
        // Crashes at 0, 1 and 2 s: the third gives up.
        let mut state = intensity(2, ms(5000));
        assert!(matches!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0 + ms(1000)),
            Decision::Restart { .. }
        ));
        assert_eq!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0 + ms(2000)),
            Decision::GiveUp(Escalation::StopCluster)
        );
        // Once the window has passed, restarts are allowed again.
        assert_eq!(state.restarts_in_window(t0 + ms(5000)), 1);
        assert!(matches!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0 + ms(6000)),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn zero_restarts_gives_up_at_once_and_a_group_restart_counts_once() {
        let t0 = Instant::now();
        let mut state = intensity(0, ms(5000));
        assert!(matches!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0),
            Decision::GiveUp(_)
        ));

        let mut p = policy(RestartType::Permanent, Strategy::OneForAll);
        p.intensity.max_restarts = 1;
        let mut state = PolicyState::new(p, 3, 1);
        assert!(matches!(
            state.on_exit(2, ExitKind::Abnormal, ms(0), t0),
            Decision::Restart { ref slots, .. } if slots.len() == 3
        ));
        assert_eq!(state.restarts_in_window(t0), 1);
    }

    #[test]
    fn backoff_grows_caps_and_resets_after_a_stable_run() {
        let t0 = Instant::now();
        let mut p = policy(RestartType::Permanent, Strategy::OneForOne);
        p.intensity.max_restarts = 100;
        p.backoff.cap = ms(1000);
        let mut state = PolicyState::new(p, 1, 1);
        let mut delays = Vec::new();
        for i in 0..6 {
            match state.on_exit(0, ExitKind::Abnormal, ms(5), t0 + ms(i)) {
                Decision::Restart { delay, .. } => delays.push(delay),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // A run of reset_after or more starts over at the floor.
        let stable = p.backoff.reset_after;
        match state.on_exit(0, ExitKind::Abnormal, stable, t0 + ms(10)) {
            Decision::Restart { delay, .. } => assert_eq!(delay, ms(100)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_varies() {
        let t0 = Instant::now();
        let mut p = RestartPolicy::default();
        p.intensity.max_restarts = u32::MAX;
        let mut state = PolicyState::new(p, 1, 7);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            // A stable run each time, so every delay is a jittered floor.
            let uptime = p.backoff.reset_after;
            match state.on_exit(0, ExitKind::Abnormal, uptime, t0 + ms(i)) {
                Decision::Restart { delay, .. } => {
                    assert!(delay >= ms(80) && delay <= ms(120), "{delay:?}");
                    seen.insert(delay);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            seen.len() > 100,
            "jitter varies: {} distinct delays",
            seen.len()
        );
    }

    #[test]
    fn a_zero_floor_restarts_at_once() {
        let t0 = Instant::now();
        let p = RestartPolicy {
            backoff: Backoff::none(),
            ..RestartPolicy::default()
        };
        let mut state = PolicyState::new(p, 1, 1);
        for i in 0..3 {
            assert_eq!(
                state.on_exit(0, ExitKind::Abnormal, ms(0), t0 + ms(i)),
                Decision::Restart {
                    slots: vec![0],
                    delay: Duration::ZERO
                }
            );
        }
    }

    #[test]
    fn permanent_faults_are_not_counted() {
        let t0 = Instant::now();
        let mut state = intensity(1, ms(5000));
        for _ in 0..5 {
            assert_eq!(
                state.on_exit(0, ExitKind::Permanent, ms(0), t0),
                Decision::Fail
            );
        }
        assert_eq!(state.restarts_in_window(t0), 0);
        assert!(matches!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn requested_exits_are_not_counted_nor_backed_off() {
        let t0 = Instant::now();
        let mut state = intensity(1, ms(5000));
        for i in 0..100 {
            assert_eq!(
                state.on_exit(0, ExitKind::Requested { normal: false }, ms(0), t0 + ms(i)),
                Decision::Restart {
                    slots: vec![0],
                    delay: Duration::ZERO
                },
                "kill {i}"
            );
        }
        assert_eq!(state.restarts_in_window(t0 + ms(100)), 0);
        // The crashes that follow are counted from zero, and backed off from the floor.
        assert_eq!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0 + ms(200)),
            Decision::Restart {
                slots: vec![0],
                delay: ms(100)
            }
        );
        assert_eq!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0 + ms(300)),
            Decision::GiveUp(Escalation::StopCluster)
        );
    }

    #[test]
    fn requested_exits_follow_the_restart_type_and_strategy() {
        let t0 = Instant::now();
        let mut temporary =
            PolicyState::new(policy(RestartType::Temporary, Strategy::OneForOne), 1, 1);
        assert_eq!(
            temporary.on_exit(0, ExitKind::Requested { normal: false }, ms(0), t0),
            Decision::Stay
        );
        let mut transient =
            PolicyState::new(policy(RestartType::Transient, Strategy::RestForOne), 3, 1);
        assert_eq!(
            transient.on_exit(1, ExitKind::Requested { normal: false }, ms(0), t0),
            Decision::Restart {
                slots: vec![1, 2],
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn added_slots_join_the_strategies() {
        let t0 = Instant::now();
        let mut state = PolicyState::new(policy(RestartType::Permanent, Strategy::OneForAll), 2, 1);
        assert_eq!(state.add_slot(), 2);
        assert_eq!(state.slots(), 3);
        assert!(matches!(
            state.on_exit(0, ExitKind::Abnormal, ms(0), t0),
            Decision::Restart { ref slots, .. } if slots == &[0, 1, 2]
        ));
    }
}
