//! Cache figures: a get/set mix (3 gets to 1 set over 1 000 keys) from 2 worker processes,
//! pipelined, against the same workload from 2 client threads on a `redis-server` on 127.0.0.1,
//! started by the bench when one is installed.
//!
//! Each worker reads through a near-cache (`CacheClient::near_cache`): a read of a key it holds
//! is answered in the worker, and what it cannot answer (the sets, the first read of each key)
//! goes to the master in batches of 64, 64 operations in flight; each redis client pipelines
//! its commands 64 to a batch. Every answer is read, on both sides.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::relay::{Relay, RelayMsg, RelayReply};
use procactor::prelude::*;

use crate::http::ROLE_ENV;

/// Operations in flight per client, for both.
const WINDOW: usize = 64;

pub(crate) fn is_relay_worker() -> bool {
    std::env::var_os(ROLE_ENV).is_some_and(|v| v == "relay")
}

pub(crate) fn run_relay_worker() -> Result<(), procactor::Error> {
    procactor::run_worker(Relay::default())
}

/// Operations per second through the cluster's cache from 2 workers.
pub(crate) async fn procactor_ops(count: u64) -> Result<f64, procactor::Error> {
    let config = ClusterConfig::new()
        .workers(2)
        .env(ROLE_ENV, "relay")
        .log(crate::bench_logs());
    let cluster = ClusterSupervisor::start::<Relay>(config).await?;
    let run = |w: usize| {
        cluster.worker(w).send(Call(RelayMsg::CacheBench {
            collection: "bench".into(),
            count,
            window: WINDOW,
            near: true,
        }))
    };
    // Warm up, then measure both at once.
    run(0).await??;
    let t = Instant::now();
    let runs = [run(0), run(1)];
    for r in runs {
        if let RelayReply::Failed(e) = r.await?? {
            return Err(procactor::Error::Ask(e));
        }
    }
    let rate = (2 * count) as f64 / t.elapsed().as_secs_f64();
    cluster.stop().await?;
    Ok(rate)
}

/// A `redis-server` of our own on a free port, killed (by pid) when dropped.
pub(crate) struct Redis {
    child: Child,
    pub(crate) port: u16,
}

impl Redis {
    /// Starts one and waits until it listens; `None` when `redis-server` is not installed.
    pub(crate) fn start() -> io::Result<Option<Self>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = match Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other("redis-server did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Some(redis))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply: a status, an error, an integer, or a bulk string (possibly nil).
fn read_reply(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<()> {
    line.clear();
    reader.read_line(line)?;
    match line.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(()),
        Some(b'$') => {
            let len: i64 = line[1..].trim().parse().map_err(io::Error::other)?;
            if len >= 0 {
                let mut body = vec![0u8; len as usize + 2];
                io::Read::read_exact(reader, &mut body)?;
            }
            Ok(())
        }
        _ => Err(io::Error::other(format!("redis: {}", line.trim()))),
    }
}

fn redis_client(port: u16, count: u64) -> io::Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let (mut batch, mut line) = (Vec::new(), String::new());
    let mut n = 0u64;
    while n < count {
        batch.clear();
        let take = (WINDOW as u64).min(count - n);
        for i in n..n + take {
            let key = format!("k{}", i % 1000);
            if i % 4 == 0 {
                let value = i.to_le_bytes();
                command(&mut batch, &[b"SET", key.as_bytes(), &value]);
            } else {
                command(&mut batch, &[b"GET", key.as_bytes()]);
            }
        }
        writer.write_all(&batch)?;
        for _ in 0..take {
            read_reply(&mut reader, &mut line)?;
        }
        n += take;
    }
    Ok(())
}

/// Operations per second on a local redis-server from 2 client threads, or `None` when
/// `redis-server` is not installed.
pub(crate) fn redis_ops(count: u64) -> io::Result<Option<f64>> {
    let Some(redis) = Redis::start()? else {
        return Ok(None);
    };
    let port = redis.port;
    redis_client(port, count)?;
    let t = Instant::now();
    let clients: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || redis_client(port, count)))
        .collect();
    for client in clients {
        client
            .join()
            .map_err(|_| io::Error::other("client panicked"))??;
    }
    let rate = (2 * count) as f64 / t.elapsed().as_secs_f64();
    drop(redis);
    Ok(Some(rate))
}
