//! Hostile bytes from a worker end that worker, with a typed reason, and nothing else.
//!
//! `procactor-chaos` writes each kind of bad input; the tests check the exit reason, that the
//! requests in flight fail with it, and that a well-behaved sibling keeps its process and answers.

mod common;

use std::time::Duration;

use common::cluster::{chaos_config, collector, next_matching, within};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::wire::PROTOCOL_VERSION;
use procactor::{Error, FrameError, ProtocolError};

/// Starts worker 0 in `mode` (it breaks the protocol before `Ready`): the start fails, naming it.
async fn start_fails_with(mode: &str) -> ExitReason {
    let err = ClusterSupervisor::start::<Echo>(chaos_config(2, &[(0, mode)]))
        .await
        .expect_err("a worker that breaks the handshake fails the start");
    match err {
        Error::StartFailed { worker: 0, reason } => reason,
        other => panic!("{mode}: {other:?}"),
    }
}

/// Worker 0 runs `mode` after a clean handshake: its request in flight fails with the fault,
/// and worker 1 is untouched.
async fn in_flight_request_fails_with(mode: &str) -> ExitReason {
    let (events, mut rx) = collector::<WorkerEvent>();
    let cluster = ClusterSupervisor::builder::<Echo>(chaos_config(2, &[(0, mode)]))
        .subscribe(events)
        .start()
        .await
        .unwrap();
    let survivor = cluster.workers().await.unwrap()[1].pid.unwrap();
    let err = cluster
        .worker(0)
        .send(Call(EchoMsg::Ping))
        .await
        .unwrap()
        .unwrap_err();
    let CallError::WorkerExited { worker: 0, reason } = err else {
        panic!("{mode}: {err:?}")
    };
    let exited = next_matching(&mut rx, Duration::from_secs(10), |e| {
        e.worker == 0 && matches!(e.kind, WorkerEventKind::Exited { .. })
    })
    .await
    .expect("exit event");
    assert!(
        matches!(&exited.kind, WorkerEventKind::Exited { reason: r, .. } if *r == reason),
        "the event has the same reason: {exited:?}"
    );
    let w1 = cluster.worker(1);
    assert_eq!(
        w1.send(Call(EchoMsg::Pid)).await.unwrap(),
        Ok(EchoReply::Pid(survivor))
    );
    assert_eq!(common::proc_state(exited.pid.unwrap()), None, "reaped");
    cluster.stop().await.unwrap();
    reason
}

#[actix::test]
async fn oversized_length_is_rejected_before_the_body() {
    within(60, async {
        let reason = start_fails_with("huge-len").await;
        assert!(
            matches!(
                reason,
                ExitReason::Protocol(ProtocolError::Frame(FrameError::TooLarge { len, max }))
                    if len == u32::MAX as usize && max == procactor::wire::DEFAULT_MAX_FRAME_BYTES
            ),
            "{reason:?}"
        );
    })
    .await;
}

#[actix::test]
async fn garbage_ends_the_worker_without_reading_it_all() {
    within(60, async {
        let before = common::vm_hwm_kib(std::process::id()).unwrap();
        let reason = start_fails_with("garbage").await;
        assert!(
            matches!(
                reason,
                ExitReason::Protocol(ProtocolError::Frame(
                    FrameError::TooLarge { .. }
                        | FrameError::Decode(_)
                        | FrameError::TrailingBytes { .. }
                ))
            ),
            "{reason:?}"
        );
        let after = common::vm_hwm_kib(std::process::id()).unwrap();
        // At most one maximal frame (16 MiB) may have been buffered, never the endless stream;
        // the other tests of this binary run in the same process meanwhile, hence the margin.
        assert!(
            after - before < 64 * 1024,
            "peak memory grew by {} KiB",
            after - before
        );
    })
    .await;
}

#[actix::test]
async fn wrong_protocol_version_is_refused() {
    within(60, async {
        let reason = start_fails_with("wrong-version").await;
        assert_eq!(
            reason,
            ExitReason::Protocol(ProtocolError::VersionMismatch {
                worker: 999,
                master: PROTOCOL_VERSION
            })
        );
    })
    .await;
}

#[actix::test]
async fn a_frame_before_hello_is_a_violation() {
    within(60, async {
        let reason = start_fails_with("ready-before-hello").await;
        assert_eq!(
            reason,
            ExitReason::Protocol(ProtocolError::Unexpected {
                got: "Ready".into(),
                state: "waiting for Hello".into()
            })
        );
    })
    .await;
}

#[actix::test]
async fn text_printed_before_the_runtime_starts_is_a_violation() {
    within(60, async {
        let reason = start_fails_with("noise-before-hello").await;
        // "hell" read as a length is far over the maximum.
        assert!(
            matches!(
                reason,
                ExitReason::Protocol(ProtocolError::Frame(FrameError::TooLarge { .. }))
            ),
            "{reason:?}"
        );
    })
    .await;
}

#[actix::test]
async fn undecodable_body_fails_the_request_in_flight() {
    within(60, async {
        let reason = in_flight_request_fails_with("bad-body").await;
        assert!(
            matches!(
                reason,
                ExitReason::Protocol(ProtocolError::Frame(FrameError::Decode(_)))
            ),
            "{reason:?}"
        );
    })
    .await;
}

#[actix::test]
async fn trailing_bytes_fail_the_request_in_flight() {
    within(60, async {
        let reason = in_flight_request_fails_with("trailing").await;
        assert_eq!(
            reason,
            ExitReason::Protocol(ProtocolError::Frame(FrameError::TrailingBytes { extra: 1 }))
        );
    })
    .await;
}

#[actix::test]
async fn end_of_file_inside_a_frame_is_truncation() {
    within(60, async {
        let reason = in_flight_request_fails_with("partial-frame").await;
        assert_eq!(
            reason,
            ExitReason::Protocol(ProtocolError::Frame(FrameError::Truncated {
                expected: 104,
                got: 10 + 4
            }))
        );
    })
    .await;
}

#[actix::test]
async fn a_worker_cannot_forge_a_sender() {
    within(60, async {
        // The wire has no field for a worker to say who it is; the one frame that names a
        // sender travels master → worker only, and a worker that writes it is ended.
        let reason = in_flight_request_fails_with("forge-sender").await;
        assert!(
            matches!(
                &reason,
                ExitReason::Protocol(ProtocolError::Unexpected { got, .. }) if got == "Deliver"
            ),
            "{reason}"
        );
    })
    .await;
}
