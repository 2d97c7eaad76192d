//! `procactor-chaos`: a worker that misbehaves on purpose, for the runtime's fault tests.
//!
//! The mode comes from `PROCACTOR_CHAOS_MODE_<worker id>`, else `PROCACTOR_CHAOS_MODE`, so one
//! slot of a cluster can misbehave while the others run the echo worker. Modes that break the
//! protocol write raw bytes to the channel (fd 1) themselves, then wait for stdin to close, so
//! the master must end them. The modes marked * first complete the handshake and wait for the
//! master's first frame, so a test can have a request in flight when the fault comes.
//!
//! `PROCACTOR_CHAOS_FROM_GENERATION=n` applies the mode only from the slot's n-th process on (the
//! earlier ones run the echo worker), so that a cluster starts cleanly and its restarts misbehave.
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
//! | `forge-sender` *     | a `Deliver` frame (master → worker only) naming worker 1      |
//! | `hang-on-stop`       | the echo worker, but its `stopping` hook never returns        |
//! | `crash-at-start`     | exits with status 1 before saying anything                    |
//! | `abort`              | aborts (SIGABRT) before saying anything                       |
//! | `hang-at-start`      | says `Hello`, then never becomes ready                        |
//! | `stop-reading`       | completes the handshake, then never reads stdin again         |
//! | `die-after-<n>`      | the echo worker, aborting as its n-th request arrives         |
//! | `flood-stderr`       | the echo worker, writing lines to stderr as fast as it can    |
//! | `serve`              | the echo worker, answering every connection to each listening |
//! |                      | socket it was handed with its pid; its first event to the     |
//! |                      | master is `"listen <LISTEN_PID> <LISTEN_FDS> <LISTEN_FDNAMES>"` |
//! | `fork-grandchild`    | the echo worker with a grandchild holding a TCP port; its first |
//! |                      | event to the master is `"grandchild <pid> <port>"`            |
//! | `echo` (default)     | behaves as `procactor-echo`                                   |

use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::wire::{encode_frame, Envelope, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION};
use procactor::{WorkerActor, WorkerContext};

fn main() -> Result<(), procactor::Error> {
    let id = std::env::var("PROCACTOR_WORKER_ID").unwrap_or_default();
    if std::env::var_os("PROCACTOR_CHAOS_HOLD_PORT").is_some() {
        return hold_port();
    }
    let mut mode = std::env::var(format!("PROCACTOR_CHAOS_MODE_{id}"))
        .or_else(|_| std::env::var("PROCACTOR_CHAOS_MODE"))
        .unwrap_or_else(|_| "echo".into());
    let generation: u64 = env_number("PROCACTOR_GENERATION").unwrap_or(1);
    if generation < env_number("PROCACTOR_CHAOS_FROM_GENERATION").unwrap_or(1) {
        mode = "echo".into();
    }
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
        "forge-sender" => {
            // A frame only the master may write, claiming to come from worker 1.
            after_first_request(&mut out, &handshake)?;
            frame(Envelope::Deliver {
                from: procactor::Peer::Worker { id: 1, pid: 1 },
                via: procactor::Via::Direct,
                ack: None,
                payload: &[0],
            })
        }
        "hang-on-stop" => return procactor::run_worker(Stubborn),
        "crash-at-start" => std::process::exit(1),
        "abort" => std::process::abort(),
        "hang-at-start" => hello,
        "stop-reading" => handshake,
        "fork-grandchild" => return procactor::run_worker(Grandparent::start()?),
        "serve" => return procactor::run_worker(Server),
        "flood-stderr" => {
            std::thread::spawn(|| {
                let line = "flood ".repeat(20);
                let mut stderr = std::io::stderr().lock();
                while writeln!(stderr, "{line}").is_ok() {}
            });
            return procactor::run_worker(Echo::default());
        }
        mode if mode.starts_with("die-after-") => {
            let n = mode["die-after-".len()..].parse().unwrap_or(1);
            return procactor::run_worker(DieAfter { left: n });
        }
        _ => return procactor::run_worker(Echo::default()),
    };
    out.write_all(&bytes)?;
    if mode == "stop-reading" {
        // Never read again; PR_SET_PDEATHSIG ends us if the master dies.
        loop {
            std::thread::park();
        }
    }
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
    type Event = String;

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

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// The grandchild: binds a port on loopback, says which, and holds it until killed.
fn hold_port() -> Result<(), procactor::Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{} {}", std::process::id(), listener.local_addr()?.port());
    loop {
        std::thread::park();
    }
}

/// The echo worker with a grandchild process that holds a TCP port.
struct Grandparent {
    grandchild: String,
}

impl Grandparent {
    fn start() -> std::io::Result<Self> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .env("PROCACTOR_CHAOS_HOLD_PORT", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        Ok(Self {
            grandchild: format!("grandchild {}", line.trim()),
        })
    }
}

impl WorkerActor for Grandparent {
    type Msg = EchoMsg;
    type Reply = EchoReply;
    type Event = String;

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        let _ = ctx.send_master(&self.grandchild);
    }

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut WorkerContext<Self>) -> EchoReply {
        match msg {
            EchoMsg::Ping => EchoReply::Pong,
            EchoMsg::Pid => EchoReply::Pid(std::process::id()),
            _ => EchoReply::Done,
        }
    }
}

/// The echo worker, aborting when its n-th request arrives.
struct DieAfter {
    left: u64,
}

impl WorkerActor for DieAfter {
    type Msg = EchoMsg;
    type Reply = EchoReply;
    type Event = String;

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut WorkerContext<Self>) -> EchoReply {
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            eprintln!("chaos: dying as planned");
            std::process::abort();
        }
        match msg {
            EchoMsg::Seq(n) => EchoReply::Seq { n, in_order: true },
            EchoMsg::Pid => EchoReply::Pid(std::process::id()),
            _ => EchoReply::Pong,
        }
    }
}

/// The echo worker serving "<pid>\n" on every listening socket it was handed.
struct Server;

impl WorkerActor for Server {
    type Msg = EchoMsg;
    type Reply = EchoReply;
    type Event = String;

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        let report = format!(
            "listen {} {} {}",
            var("LISTEN_PID"),
            var("LISTEN_FDS"),
            var("LISTEN_FDNAMES")
        );
        let _ = ctx.send_master(&report);
        for name in ctx.listener_names() {
            if let Ok(tcp) = ctx.listener(name) {
                std::thread::spawn(move || {
                    for stream in tcp.incoming().flatten() {
                        let _ = writeln!(&stream, "{}", std::process::id());
                    }
                });
            } else if let Ok(unix) = ctx.unix_listener(name) {
                std::thread::spawn(move || {
                    for stream in unix.incoming().flatten() {
                        let _ = writeln!(&stream, "{}", std::process::id());
                    }
                });
            }
        }
    }

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut WorkerContext<Self>) -> EchoReply {
        match msg {
            EchoMsg::Pid => EchoReply::Pid(std::process::id()),
            _ => EchoReply::Pong,
        }
    }
}
