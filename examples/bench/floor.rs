//! Floors: what the round trips cost with no framework at all, but with the machinery any design
//! of that kind must have. They say how much of a figure's distance to its baseline a framework
//! could still win, and how much is the price of the design itself.
//!
//! - `loop_rtt_us_median_same_core` / `_cross_core`: the raw baseline's framing and echo, with
//!   an event loop on each side instead of blocking reads: the child is a tokio current-thread
//!   loop reading its stdin pipe, the parent a task of an actix `System` (as procactor's master
//!   is) on tokio's pipe types. Each side then waits in `epoll_wait` and reads after it, where
//!   the raw baseline sleeps in `read` itself. A runtime that multiplexes a worker's pipe with
//!   its timers, its asks and its other tasks cannot round-trip faster than this.
//! - `redis_pubsub_rtt_us_median`: a request and its answer through Redis pub/sub between two
//!   processes with no framework (redis-rs's blocking client: this process publishes to a
//!   channel the child subscribes to; the child publishes what it got to a channel this process
//!   subscribes to), beside a bare `PING`. Every design that carries requests between hosts
//!   over pub/sub pays at least this, before the hop from a master to its worker.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Env var that puts the bench binary in the event-loop echo child's role.
const LOOP_CHILD_ENV: &str = "PROCACTOR_BENCH_LOOP_CHILD";
/// Env var that puts the bench binary in the pub/sub echo child's role (its value: the URL).
const PUBSUB_CHILD_ENV: &str = "PROCACTOR_BENCH_PUBSUB_CHILD";
/// Channels of the pub/sub floor: requests to the child, answers to this process.
const TO_CHILD: &str = "procactor-bench-floor:child";
const TO_PARENT: &str = "procactor-bench-floor:parent";
/// Bytes of a request's body, as the raw baseline's small frames.
const BODY: usize = 32;

/// Runs this process as one of the floors' children, if it was started as one.
pub(crate) fn child_role() -> Option<Result<(), Box<dyn std::error::Error>>> {
    if std::env::var_os(LOOP_CHILD_ENV).is_some() {
        return Some(loop_child().map_err(Into::into));
    }
    let url = std::env::var(PUBSUB_CHILD_ENV).ok()?;
    Some(pubsub_child(&url).map_err(Into::into))
}

/// The event-loop child: echoes every frame (u32 LE length + body) it reads on stdin to
/// stdout, on a tokio current-thread loop; ends when stdin closes.
fn loop_child() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let input = io::stdin().as_fd().try_clone_to_owned()?;
        let output = io::stdout().as_fd().try_clone_to_owned()?;
        let mut input = tokio::net::unix::pipe::Receiver::from_owned_fd(input)?;
        let mut output = tokio::net::unix::pipe::Sender::from_owned_fd(output)?;
        let mut frame = vec![0u8; 4 + BODY];
        loop {
            if input.read_exact(&mut frame).await.is_err() {
                return Ok(());
            }
            output.write_all(&frame).await?;
        }
    })
}

/// Median round trip, µs, of one frame between a task of this actix `System` (its thread on
/// CPU `master`) and the event-loop child (on CPU `child`).
pub(crate) async fn loop_rtt(master: usize, child: usize, round_trips: usize) -> io::Result<f64> {
    let restore = crate::pinned::pin_this_thread(master)?;
    let result = async {
        let mut c = Command::new(std::env::current_exe()?)
            .env(LOOP_CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let ended = Ended(&mut c);
        crate::pinned::pin_process(ended.0.id(), child)?;
        let input = OwnedFd::from(ended.0.stdin.take().expect("piped"));
        let output = OwnedFd::from(ended.0.stdout.take().expect("piped"));
        let mut to = tokio::net::unix::pipe::Sender::from_owned_fd(input)?;
        let mut from = tokio::net::unix::pipe::Receiver::from_owned_fd(output)?;
        let mut frame = vec![7u8; 4 + BODY];
        frame[..4].copy_from_slice(&(BODY as u32).to_le_bytes());
        let mut back = vec![0u8; 4 + BODY];
        let mut rtts = Vec::with_capacity(round_trips);
        for i in 0..round_trips + 1_000 {
            let t = Instant::now();
            to.write_all(&frame).await?;
            from.read_exact(&mut back).await?;
            if i >= 1_000 {
                rtts.push(t.elapsed());
            }
        }
        if back != frame {
            return Err(io::Error::other(
                "the event-loop child echoed another frame",
            ));
        }
        drop(to);
        drop(ended);
        Ok(median_us(rtts))
    }
    .await;
    crate::pinned::restore(restore)?;
    result
}

/// The pub/sub child: subscribes to [`TO_CHILD`], says `ready` on stdout, then publishes every
/// message it gets to [`TO_PARENT`]; ends when told `end`.
fn pubsub_child(url: &str) -> redis::RedisResult<()> {
    let client = client(url)?;
    let mut publisher = client.get_connection()?;
    let mut subscriber = client.get_connection()?;
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe(TO_CHILD)?;
    println!("ready");
    io::stdout().flush()?;
    loop {
        let payload: Vec<u8> = pubsub.get_message()?.get_payload()?;
        if payload == b"end" {
            return Ok(());
        }
        let _: i64 = redis::cmd("PUBLISH")
            .arg(TO_PARENT)
            .arg(payload)
            .query(&mut publisher)?;
    }
}

/// Median round trip, µs, of a request and its answer through Redis pub/sub between this
/// process and a child with no framework (see the module's doc), after a tenth more to warm up.
pub(crate) fn pubsub_rtt(url: &str, round_trips: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let client = client(url)?;
    let mut subscriber = client.get_connection()?;
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe(TO_PARENT)?;
    pubsub.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut publisher = client.get_connection()?;
    let mut c = Command::new(std::env::current_exe()?)
        .env(PUBSUB_CHILD_ENV, url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let ended = Ended(&mut c);
    let mut line = String::new();
    BufReader::new(ended.0.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("the pub/sub child said {line:?}, not ready").into());
    }
    let request = vec![7u8; BODY];
    let mut rtts = Vec::with_capacity(round_trips);
    for i in 0..round_trips + round_trips / 10 {
        let t = Instant::now();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(TO_CHILD)
            .arg(&request)
            .query(&mut publisher)?;
        let answer: Vec<u8> = pubsub.get_message()?.get_payload()?;
        if i >= round_trips / 10 {
            rtts.push(t.elapsed());
        }
        if answer != request {
            return Err("the pub/sub child answered another payload".into());
        }
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg(TO_CHILD)
        .arg("end")
        .query(&mut publisher)?;
    drop(ended);
    Ok(median_us(rtts))
}

/// A client whose connections send at once (`TCP_NODELAY`): the best case.
fn client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let nodelay = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    redis::Client::open(url.into_connection_info()?.set_tcp_settings(nodelay))
}

fn median_us(mut rtts: Vec<Duration>) -> f64 {
    rtts.sort();
    crate::micros(rtts[rtts.len() / 2])
}

/// A child ended by its pid when dropped: waited for up to 10 s after its input closes or it
/// is told to end, then killed, and always reaped.
struct Ended<'a>(&'a mut Child);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
