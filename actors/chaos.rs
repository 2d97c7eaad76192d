//! `procactor-chaos`: a worker that misbehaves on purpose, for the runtime's fault tests.
//!
//! The mode comes from `PROCACTOR_CHAOS_MODE_<worker id>`, else `PROCACTOR_CHAOS_MODE`, so one
//! slot of a cluster can misbehave while the others run the echo worker. Modes that break the
//! protocol write raw bytes to the channel (fd 1) themselves, then wait for stdin to close, so
//! the master must end them. The modes marked * first complete the handshake and wait for the
//! master's first frame, so a test can have a request in flight when the fault comes:
//!
//! | mode                 | what it does                                                  |
//! |----------------------|---------------------------------------------------------------|
//! | `huge-len`           | a header announcing 4 GiB, then silence                       |
//! | `garbage`            | pseudo-random bytes until the pipe breaks                     |
//! | `bad-body` *         | a frame whose body is no envelope                             |
//! | `trailing` *         | a `Ready` frame with a byte after it                          |
//! | `wrong-version`      | `Hello` with protocol version 999                             |
//! | `ready-before-hello` | a well-formed `Ready` frame first                             |
//! | `noise-before-hello` | a line of text printed to stdout before the runtime starts    |
//! | `partial-frame` *    | 10 bytes of a 100-byte frame, then exit 0                     |
//! | `hang-on-stop`       | the echo worker, but its `stopping` hook never returns        |
//! | `echo` (default)     | behaves as `procactor-echo`                                   |

use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::wire::{encode_frame, Envelope, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION};
use procactor::{WorkerActor, WorkerContext};

fn main() -> Result<(), procactor::Error> {
    let id = std::env::var("PROCACTOR_WORKER_ID").unwrap_or_default();
    let mode = std::env::var(format!("PROCACTOR_CHAOS_MODE_{id}"))
        .or_else(|_| std::env::var("PROCACTOR_CHAOS_MODE"))
        .unwrap_or_else(|_| "echo".into());
    eprintln!("chaos: pid {} mode {mode}", std::process::id());
    // fd 1 is the raw channel here: the worker runtime is not running to protect it.
    // SAFETY: fd 1 is open for the life of the process and only this function writes to it.
    #[allow(unsafe_code)]
    let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    let frame = |env: Envelope<'_>| {
        let mut buf = Vec::new();
        encode_frame(&mut buf, &env, DEFAULT_MAX_FRAME_BYTES).expect("small frame");
        buf
    };
    let pid = std::process::id();
    let hello = frame(Envelope::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid,
    });
    let handshake = [hello.clone(), frame(Envelope::Ready)].concat();
    let bytes: Vec<u8> = match mode.as_str() {
        "huge-len" => u32::MAX.to_le_bytes().to_vec(),
        "garbage" => {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(pid);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                for b in chunk.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *b = state as u8;
                }
                if out.write_all(&chunk).is_err() {
                    return Ok(());
                }
            }
        }
        "bad-body" => {
            after_first_request(&mut out, &handshake)?;
            vec![3, 0, 0, 0, 0xee, 0xee, 0xee]
        }
        "trailing" => {
            after_first_request(&mut out, &handshake)?;
            vec![2, 0, 0, 0, 1, 0]
        }
        "wrong-version" => frame(Envelope::Hello {
            protocol_version: 999,
            pid,
        }),
        "ready-before-hello" => frame(Envelope::Ready),
        "noise-before-hello" => {
            println!("hello from a library that prints before the runtime starts");
            return procactor::run_worker(Echo::default());
        }
        "partial-frame" => {
            after_first_request(&mut out, &handshake)?;
            let mut bytes = 100u32.to_le_bytes().to_vec();
            bytes.extend_from_slice(&[0; 10]);
            out.write_all(&bytes)?;
            std::process::exit(0);
        }
        "hang-on-stop" => return procactor::run_worker(Stubborn),
        _ => return procactor::run_worker(Echo::default()),
    };
    out.write_all(&bytes)?;
    // Wait for the master to end us (or to go away).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

/// Completes the handshake, then waits until the master's first frame header has arrived.
fn after_first_request(out: &mut std::fs::File, handshake: &[u8]) -> std::io::Result<()> {
    out.write_all(handshake)?;
    let mut header = [0u8; 4];
    std::io::stdin().read_exact(&mut header)
}

/// The echo worker with a `stopping` hook that never returns.
struct Stubborn;

impl WorkerActor for Stubborn {
    type Msg = EchoMsg;
    type Reply = EchoReply;
    type Event = ();

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut WorkerContext<Self>) -> EchoReply {
        match msg {
            EchoMsg::Ping => EchoReply::Pong,
            EchoMsg::Pid => EchoReply::Pid(std::process::id()),
            _ => EchoReply::Done,
        }
    }

    async fn stopping(&mut self, _ctx: &mut WorkerContext<Self>) {
        eprintln!("chaos: refusing to stop");
        std::future::pending::<()>().await;
    }
}
