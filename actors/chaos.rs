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
//! | `get-no-read` *      | `PROCACTOR_CHAOS_COUNT` (400) cache `Get`s of key `big` in    |
//! |                      | collection `c`, never reading an answer                       |
//! | `flood-events` *     | `Event` frames (`"e"`) as fast as it can, never reading stdin |
//! | `flood-logs` *       | `Log` records as fast as it can, never reading stdin          |
//! | `flood-sends` *      | tiny `Send`s to the master as fast as it can                  |
//! | `flood-asks` *       | `Ask`s of the master (`"e"`) as fast as it can (answers unread) |
//! | `flood-joins` *      | `System` `Join` requests as fast as it can (answers unread)   |
//! | `escape`             | the echo worker with descendants that `sleep`: one in its     |
//! |                      | group, one in a group of its own, one in a session of its own,|
//! |                      | one double-forked (reparented to init), one both; its first   |
//! |                      | event to the master is `"escape <pid> <pid> <pid> <pid> <pid>"` |
//! | `extremes` *         | frames with the largest and smallest values each field takes  |
//! |                      | (TTLs, leases, timeouts, ids, counts, times), then reads on   |
//! | `tell-burst`         | the echo worker that, at each one-way message from the master, |
//! |                      | `tell_worker`s `PROCACTOR_CHAOS_COUNT` (1000) 4 KiB messages to |
//! |                      | worker `PROCACTOR_CHAOS_TARGET` (1), then sends the master     |
//! |                      | `"told <ok> <backpressure> <other errors>"`                   |
//! | `echo` (default)     | behaves as `procactor-echo`                                   |

use std::fs::File;
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::wire::{
    encode_frame, encode_value, Envelope, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use procactor::{SystemOp, WorkerActor, WorkerContext};

fn main() -> Result<(), procactor::Error> {
    if std::env::var_os("PROCACTOR_CHAOS_HOLD_PORT").is_some() {
        return hold_port();
    }
    let mode = mode();
    eprintln!("chaos: pid {} mode {mode}", std::process::id());
    // fd 1 is the raw channel here: the worker runtime is not running to protect it.
    // SAFETY: fd 1 is open for the life of the process; it is never closed (`ManuallyDrop`), and
    // only `breach` writes to it before the worker runtime takes it over.
    #[allow(unsafe_code)]
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let Some(bytes) = breach(&mode, &mut out)? else {
        return procactor::run_worker(Chaos::new(&mode)?);
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

/// This process's mode: its slot's, else the cluster's, else `echo`; `echo` for the processes
/// of a slot before generation `PROCACTOR_CHAOS_FROM_GENERATION`.
fn mode() -> String {
    let generation = env_number("PROCACTOR_GENERATION").unwrap_or(1);
    if generation < env_number("PROCACTOR_CHAOS_FROM_GENERATION").unwrap_or(1) {
        return "echo".into();
    }
    let id = std::env::var("PROCACTOR_WORKER_ID").unwrap_or_default();
    std::env::var(format!("PROCACTOR_CHAOS_MODE_{id}"))
        .or_else(|_| std::env::var("PROCACTOR_CHAOS_MODE"))
        .unwrap_or_else(|_| "echo".into())
}

/// The modes that break the protocol: what they write to the channel last (some write more
/// first, or never return). `None` for the modes that run the echo worker.
fn breach(mode: &str, out: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let pid = std::process::id();
    let hello = frame(Envelope::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid,
    });
    let handshake = [hello.clone(), frame(Envelope::Ready)].concat();
    let bytes = match mode {
        "huge-len" => u32::MAX.to_le_bytes().to_vec(),
        "garbage" => write_garbage(out, pid),
        "bad-body" => {
            after_first_request(out, &handshake)?;
            vec![3, 0, 0, 0, 0xee, 0xee, 0xee]
        }
        "trailing" => {
            after_first_request(out, &handshake)?;
            vec![2, 0, 0, 0, 1, 0]
        }
        "wrong-version" => frame(Envelope::Hello {
            protocol_version: 999,
            pid,
        }),
        "ready-before-hello" => frame(Envelope::Ready),
        "partial-frame" => {
            after_first_request(out, &handshake)?;
            let mut bytes = 100u32.to_le_bytes().to_vec();
            bytes.extend_from_slice(&[0; 10]);
            out.write_all(&bytes)?;
            std::process::exit(0);
        }
        "forge-sender" => {
            // A frame only the master may write, claiming to come from worker 1.
            after_first_request(out, &handshake)?;
            frame(Envelope::Deliver {
                from: procactor::Peer::Worker { id: 1, pid: 1 },
                via: procactor::Via::Direct,
                ack: None,
                payload: &[0],
            })
        }
        "get-no-read" => {
            after_first_request(out, &handshake)?;
            let count = env_number("PROCACTOR_CHAOS_COUNT").unwrap_or(400);
            let gets: Vec<u8> = (0..count)
                .flat_map(|id| {
                    let op = procactor::cache::CacheOp::Get {
                        collection: "c".into(),
                        key: "big".into(),
                    };
                    frame(Envelope::System {
                        id,
                        op: SystemOp::Cache(op),
                    })
                })
                .collect();
            out.write_all(&gets)?;
            // Never read the answers; PR_SET_PDEATHSIG ends us if the master dies.
            loop {
                std::thread::park();
            }
        }
        "extremes" => {
            after_first_request(out, &handshake)?;
            out.write_all(&extremes())?;
            // Read (and drop) the answers until the master ends us.
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        }
        "flood-events" | "flood-logs" | "flood-sends" | "flood-asks" | "flood-joins" => {
            after_first_request(out, &handshake)?;
            flood(out, mode)
        }
        "crash-at-start" => std::process::exit(1),
        "abort" => std::process::abort(),
        "hang-at-start" => hello,
        "stop-reading" => handshake,
        _ => return Ok(None),
    };
    Ok(Some(bytes))
}

/// One encoded frame.
fn frame(env: Envelope<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(&mut buf, &env, DEFAULT_MAX_FRAME_BYTES).expect("small frame");
    buf
}

/// Frames whose fields hold extreme values, each valid on the wire: the master must answer or
/// ignore them, never overflow or panic.
fn extremes() -> Vec<u8> {
    use procactor::cache::CacheOp;
    use std::time::Duration;

    let c = || "c".to_string();
    let k = || "k".to_string();
    let ops = [
        CacheOp::Set {
            collection: c(),
            key: k(),
            value: vec![0],
            ttl: Some(Duration::MAX),
        },
        CacheOp::Expire {
            collection: c(),
            key: k(),
            ttl: Some(Duration::MAX),
        },
        CacheOp::Ttl {
            collection: c(),
            key: k(),
        },
        CacheOp::Increment {
            collection: c(),
            key: "n".into(),
            by: i64::MAX,
        },
        CacheOp::Increment {
            collection: c(),
            key: "n".into(),
            by: i64::MAX,
        },
        CacheOp::Increment {
            collection: c(),
            key: "m".into(),
            by: i64::MIN,
        },
        CacheOp::Increment {
            collection: c(),
            key: "m".into(),
            by: i64::MIN,
        },
        CacheOp::CompareAndSet {
            collection: c(),
            key: k(),
            expected: None,
            new: None,
            ttl: Some(Duration::MAX),
        },
        CacheOp::Lock {
            name: "l".into(),
            lease: Duration::MAX,
            wait: Duration::MAX,
        },
        CacheOp::Lock {
            name: "l".into(),
            lease: Duration::ZERO,
            wait: Duration::MAX,
        },
        CacheOp::Lock {
            name: "z".into(),
            lease: Duration::ZERO,
            wait: Duration::ZERO,
        },
        CacheOp::Unlock {
            name: "l".into(),
            token: u64::MAX,
        },
        CacheOp::Subscribe {
            id: u64::MAX,
            collection: c(),
            prefix: String::new(),
        },
        CacheOp::Unsubscribe { id: u64::MAX },
        CacheOp::Unsubscribe { id: 0 },
    ];
    let mut frames = Vec::new();
    let mut id = u64::MAX - 100;
    let mut push = |env: Envelope<'_>| {
        encode_frame(&mut frames, &env, DEFAULT_MAX_FRAME_BYTES).expect("small frame")
    };
    for op in ops {
        id += 1;
        push(Envelope::System {
            id,
            op: SystemOp::Cache(op),
        });
    }
    for op in [
        SystemOp::AwaitConfirmations {
            key: "k",
            n: u32::MAX,
            timeout_ms: u64::MAX,
        },
        SystemOp::AwaitConfirmations {
            key: "k",
            n: 0,
            timeout_ms: 0,
        },
        SystemOp::Kill(u64::MAX),
        SystemOp::Restart(u64::MAX),
        SystemOp::Leave("never joined"),
    ] {
        id += 1;
        push(Envelope::System { id, op });
    }
    push(Envelope::Log {
        kind: procactor::logger::Kind::Error,
        time_ns: u64::MAX,
        fields: "not json",
    });
    push(Envelope::Event {
        payload: &[0xff; 9],
    });
    for to in [
        procactor::Route::Worker(u64::MAX),
        procactor::Route::Group(""),
    ] {
        push(Envelope::Send {
            to,
            ack: Some(u64::MAX),
            payload: &[],
        });
    }
    push(Envelope::Ask {
        id: u64::MAX,
        to: procactor::Route::Worker(u64::MAX),
        payload: &[],
    });
    push(Envelope::Ask {
        id: u64::MAX - 1,
        to: procactor::Route::Master,
        payload: &[0xff; 3],
    });
    frames
}

/// Writes one kind of small frame in batches until the pipe breaks, then exits with status 0.
fn flood(out: &mut File, mode: &str) -> ! {
    let mut event = Vec::new();
    encode_value(&mut event, "e").expect("a short string encodes");
    let mut batch = Vec::new();
    let mut id = 0;
    loop {
        batch.clear();
        for _ in 0..1024 {
            id += 1;
            let env = match mode {
                "flood-events" => Envelope::Event { payload: &event },
                "flood-logs" => Envelope::Log {
                    kind: procactor::logger::Kind::History,
                    time_ns: 0,
                    fields: r#"{"event":"flood"}"#,
                },
                "flood-sends" => Envelope::Send {
                    to: procactor::Route::Master,
                    ack: None,
                    payload: &event,
                },
                "flood-asks" => Envelope::Ask {
                    id,
                    to: procactor::Route::Master,
                    payload: &event,
                },
                _ => Envelope::System {
                    id,
                    op: SystemOp::Join("g"),
                },
            };
            encode_frame(&mut batch, &env, DEFAULT_MAX_FRAME_BYTES).expect("small frame");
        }
        if out.write_all(&batch).is_err() {
            std::process::exit(0);
        }
    }
}

/// Writes pseudo-random bytes until the pipe breaks, then exits with status 0.
fn write_garbage(out: &mut File, pid: u32) -> ! {
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
            std::process::exit(0);
        }
    }
}

/// Completes the handshake, then waits until the master's first frame header has arrived.
fn after_first_request(out: &mut File, handshake: &[u8]) -> std::io::Result<()> {
    out.write_all(handshake)?;
    let mut header = [0u8; 4];
    std::io::stdin().read_exact(&mut header)
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

/// The echo worker ([`Echo`], whose answers it reuses) with what a mode adds to it.
struct Chaos {
    echo: Echo,
    fault: Fault,
}

/// What a mode adds to the echo worker.
enum Fault {
    /// Nothing (any start-up effect has happened already).
    None,
    /// A `stopping` hook that never returns.
    HangOnStop,
    /// Aborts as the message that leaves `left` at zero arrives.
    DieAfter { left: u64 },
    /// Answers every connection to each listening socket it was handed with its pid.
    Serve,
    /// Sends bursts of one-way messages to another worker and reports how many went.
    TellBurst { to: usize, count: u64 },
    /// Has a grandchild holding a port; its first event to the master is this report.
    Grandchild(String),
    /// Has descendants out of its process group; its first event to the master is this report.
    Escaped(String),
}

impl Chaos {
    /// The worker for an echo-based `mode`, after what that mode does before the runtime starts.
    fn new(mode: &str) -> std::io::Result<Self> {
        let fault = match mode {
            "noise-before-hello" => {
                println!("hello from a library that prints before the runtime starts");
                Fault::None
            }
            "flood-stderr" => {
                std::thread::spawn(|| {
                    let line = "flood ".repeat(20);
                    let mut stderr = std::io::stderr().lock();
                    while writeln!(stderr, "{line}").is_ok() {}
                });
                Fault::None
            }
            "hang-on-stop" => Fault::HangOnStop,
            "tell-burst" => Fault::TellBurst {
                to: env_number("PROCACTOR_CHAOS_TARGET").unwrap_or(1) as usize,
                count: env_number("PROCACTOR_CHAOS_COUNT").unwrap_or(1000),
            },
            "serve" => Fault::Serve,
            "fork-grandchild" => Fault::Grandchild(spawn_grandchild()?),
            "escape" => Fault::Escaped(spawn_escapees()?),
            mode => match mode.strip_prefix("die-after-") {
                Some(n) => Fault::DieAfter {
                    left: n.parse().unwrap_or(1),
                },
                None => Fault::None,
            },
        };
        Ok(Self {
            echo: Echo::default(),
            fault,
        })
    }

    /// Counts a message in, for `die-after-<n>`.
    fn arrived(&mut self) {
        if let Fault::DieAfter { left } = &mut self.fault {
            *left = left.saturating_sub(1);
            if *left == 0 {
                eprintln!("chaos: dying as planned");
                std::process::abort();
            }
        }
    }
}

impl WorkerActor for Chaos {
    type Msg = EchoMsg;
    type Reply = EchoReply;
    type Event = String;
    type MasterReply = String;

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        match &self.fault {
            Fault::Serve => serve(ctx),
            Fault::Grandchild(report) | Fault::Escaped(report) => {
                let _ = ctx.send_master(report);
            }
            _ => {}
        }
    }

    async fn handle(&mut self, msg: EchoMsg, ctx: &mut WorkerContext<Self>) -> EchoReply {
        self.arrived();
        self.echo.answer(msg, ctx).await
    }

    async fn tell(&mut self, msg: EchoMsg, ctx: &mut WorkerContext<Self>) {
        self.arrived();
        if let Fault::TellBurst { to, count } = self.fault {
            let report = tell_burst(ctx, to, count);
            let _ = ctx.send_master(&report);
            return;
        }
        self.echo.take(msg, ctx).await;
    }

    async fn stopping(&mut self, _ctx: &mut WorkerContext<Self>) {
        if let Fault::HangOnStop = self.fault {
            eprintln!("chaos: refusing to stop");
            std::future::pending::<()>().await;
        }
    }
}

/// Sends `count` 4 KiB one-way messages to worker `to`; returns `"told <ok> <backpressure>
/// <other errors>"`.
fn tell_burst(ctx: &mut WorkerContext<Chaos>, to: usize, count: u64) -> String {
    let (mut ok, mut refused, mut other) = (0, 0, 0);
    let msg = EchoMsg::Echo(vec![5; 4096]);
    for _ in 0..count {
        match ctx.peers().tell_worker(to, &msg) {
            Ok(()) => ok += 1,
            Err(procactor::AskError::Backpressure(_)) => refused += 1,
            Err(_) => other += 1,
        }
    }
    format!("told {ok} {refused} {other}")
}

/// Starts the grandchild (this program again, holding a port) and returns the report
/// `"grandchild <pid> <port>"`.
fn spawn_grandchild() -> std::io::Result<String> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env("PROCACTOR_CHAOS_HOLD_PORT", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    Ok(format!("grandchild {}", line.trim()))
}

/// Starts descendants that each `sleep 1000` out of reach of a signal to this process's group,
/// but one; returns the report `"escape <pids>"`.
#[allow(clippy::zombie_processes)] // they outlive this process, or die with it
fn spawn_escapees() -> std::io::Result<String> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let sleeper = || {
        let mut sleep = Command::new("/bin/sleep");
        sleep
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        sleep
    };
    let in_group = sleeper().spawn()?.id();
    let own_group = sleeper().process_group(0).spawn()?.id();
    // A new session (setsid(1) execs sleep itself: a background job of sh leads no group), a
    // double fork, and a double fork in a new session; the shells print the pids and exit.
    let script = "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; \
                  (sleep 1000 </dev/null >/dev/null 2>&1 & echo $!); \
                  setsid sh -c '(sleep 1000 </dev/null >/dev/null 2>&1 & echo $!)'";
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let rest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(format!("escape {in_group} {own_group} {rest}"))
}

/// Reports the socket-activation variables to the master, then answers `"<pid>\n"` on every
/// connection to each listening socket, from a thread per socket.
fn serve(ctx: &mut WorkerContext<Chaos>) {
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
