//! The worker runtime seen from the pipe: a test plays the master with raw frames.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use procactor::actors::echo::{EchoMsg, EchoReply};
use procactor::wire::{
    decode_envelope, decode_value, encode_frame, encode_value, Envelope, FrameDecoder,
    DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// Starts `procactor-echo` as a worker with plain pipes, as a master would.
fn start_echo() -> (Child, common::KillOnDrop) {
    let child = Command::new(env!("CARGO_BIN_EXE_procactor-echo"))
        .env("PROCACTOR_WORKER_ID", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = common::KillOnDrop(child.id());
    (child, guard)
}

/// Reads frames until one arrives; returns its body.
fn read_frame(stdout: &mut impl Read, buf: &mut BytesMut) -> BytesMut {
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    loop {
        if let Some(frame) = decoder.decode(buf).unwrap() {
            return frame;
        }
        let mut chunk = [0u8; 4096];
        let n = stdout.read(&mut chunk).unwrap();
        assert!(n > 0, "the worker closed its stdout");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn frame(env: &Envelope<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, env, DEFAULT_MAX_FRAME_BYTES).unwrap();
    out
}

#[test]
fn handshake_then_requests_then_stdin_eof_ends_the_worker() {
    let (mut child, _guard) = start_echo();
    let mut stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut buf = BytesMut::new();

    let hello = read_frame(&mut stdout, &mut buf);
    assert_eq!(
        decode_envelope(&hello).unwrap(),
        Envelope::Hello {
            protocol_version: PROTOCOL_VERSION,
            pid: child.id()
        }
    );
    assert_eq!(
        decode_envelope(&read_frame(&mut stdout, &mut buf)).unwrap(),
        Envelope::Ready
    );

    let mut payload = Vec::new();
    encode_value(&mut payload, &EchoMsg::Ping).unwrap();
    stdin
        .write_all(&frame(&Envelope::Request {
            id: 41,
            payload: &payload,
        }))
        .unwrap();
    // A request whose payload is not an EchoMsg is answered with Failed, not a crash.
    stdin
        .write_all(&frame(&Envelope::Request {
            id: 42,
            payload: &[0xff, 0xff],
        }))
        .unwrap();

    let reply = read_frame(&mut stdout, &mut buf);
    let Envelope::Reply { id: 41, payload } = decode_envelope(&reply).unwrap() else {
        panic!("expected the reply to 41");
    };
    assert_eq!(decode_value::<EchoReply>(payload).unwrap(), EchoReply::Pong);
    let failed = read_frame(&mut stdout, &mut buf);
    assert!(matches!(
        decode_envelope(&failed).unwrap(),
        Envelope::Failed { id: 42, .. }
    ));

    // End of stdin: the master is gone. The worker exits promptly, on its own.
    drop(stdin);
    assert!(
        common::wait_until(Duration::from_secs(5), || matches!(
            child.try_wait(),
            Ok(Some(_))
        )),
        "the worker exits after stdin EOF"
    );
}

#[test]
fn shutdown_runs_the_stopping_hook_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_procactor-echo"))
        .env("PROCACTOR_WORKER_ID", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = common::KillOnDrop(child.id());
    let mut stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut buf = BytesMut::new();
    read_frame(&mut stdout, &mut buf);
    read_frame(&mut stdout, &mut buf);
    let mut payload = Vec::new();
    encode_value(&mut payload, &EchoMsg::Seq(0)).unwrap();
    stdin
        .write_all(&frame(&Envelope::Tell { payload: &payload }))
        .unwrap();
    stdin.write_all(&frame(&Envelope::Shutdown)).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        stderr.contains("echo: stopping after 1 one-way messages"),
        "{stderr}"
    );
}

#[test]
fn run_worker_outside_a_cluster_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_procactor-echo"))
        .env_remove("PROCACTOR_WORKER_ID")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NotAWorker"), "{stderr}");
}
