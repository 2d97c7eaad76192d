//! The baseline: two processes, two pipes, no framework.
//!
//! Same framing as procactor (u32 LE length + body), with the body's first byte as the kind:
//! 0 request (echoed back whole), 1 one-way (counted), 2 count query (answered with the u64 LE
//! count of one-way frames since the last query). The child reads big chunks, handles every
//! complete frame and writes all its replies with one `write(2)`: the best case a framework can
//! approach. The parent raises both pipes to 1 MiB, as procactor does.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, FromRawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Env var that puts the bench binary in raw-child role.
pub(crate) const RAW_CHILD_ENV: &str = "PROCACTOR_BENCH_RAW_CHILD";

const REQUEST: u8 = 0;
const TELL: u8 = 1;
const COUNT: u8 = 2;
const SMALL_BODY: usize = 32;
const BULK_BODY: usize = 64 * 1024;

/// Figures of the raw-pipe baseline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawFigures {
    pub(crate) rtt_us_median: f64,
    pub(crate) rtt_us_p99: f64,
    pub(crate) pipelined_req_per_s: f64,
    pub(crate) tell_per_s: f64,
    pub(crate) bulk_64k_mb_per_s: f64,
    pub(crate) spawn_ms_median: f64,
    pub(crate) respawn_ms_median: f64,
    pub(crate) broadcast_4_per_s: f64,
}

impl RawFigures {
    /// Figures of a run that did not measure the baseline.
    pub(crate) fn nan() -> Self {
        Self {
            rtt_us_median: f64::NAN,
            rtt_us_p99: f64::NAN,
            pipelined_req_per_s: f64::NAN,
            tell_per_s: f64::NAN,
            bulk_64k_mb_per_s: f64::NAN,
            spawn_ms_median: f64::NAN,
            respawn_ms_median: f64::NAN,
            broadcast_4_per_s: f64::NAN,
        }
    }
}

/// Sizes of each measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawParams {
    pub(crate) round_trips: usize,
    pub(crate) pipelined: usize,
    pub(crate) in_flight: usize,
    pub(crate) tells: usize,
    pub(crate) bulk_messages: usize,
    pub(crate) spawns: usize,
    pub(crate) broadcasts: usize,
    pub(crate) broadcast_window: usize,
}

/// True when this process was started as the raw child.
pub(crate) fn is_raw_child() -> bool {
    std::env::var_os(RAW_CHILD_ENV).is_some()
}

/// The raw child's loop: echo requests, count one-way frames, answer count queries.
pub(crate) fn child_main() -> ! {
    // SAFETY: fd 0 and fd 1 stay open for the life of the process; ManuallyDrop never closes them.
    #[allow(unsafe_code)]
    let (mut input, mut output) = unsafe {
        (
            ManuallyDrop::new(File::from_raw_fd(0)),
            ManuallyDrop::new(File::from_raw_fd(1)),
        )
    };
    let mut buf = vec![0u8; 1 << 20];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::with_capacity(1 << 20);
    let mut count = 0u64;
    loop {
        if start > 0 && buf.len() - end < 64 * 1024 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = match input.read(&mut buf[end..]) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(n) => n,
        };
        end += n;
        while end - start >= 4 {
            let len = u32::from_le_bytes(buf[start..start + 4].try_into().unwrap()) as usize;
            if end - start < 4 + len {
                if 4 + len > buf.len() {
                    buf.resize(4 + len, 0);
                }
                break;
            }
            let frame = &buf[start..start + 4 + len];
            match frame[4] {
                REQUEST => out.extend_from_slice(frame),
                TELL => count += 1,
                _ => {
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.push(COUNT);
                    out.extend_from_slice(&count.to_le_bytes());
                    count = 0;
                }
            }
            start += 4 + len;
        }
        if start == end {
            start = 0;
            end = 0;
        }
        if !out.is_empty() {
            if output.write_all(&out).is_err() {
                std::process::exit(0);
            }
            out.clear();
        }
    }
}

struct RawChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RawChild {
    fn spawn() -> io::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(RAW_CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        for fd in [stdin.as_fd(), stdout.as_fd()] {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
        }
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout,
            buf: vec![0u8; 1 << 20],
            start: 0,
            end: 0,
        })
    }

    /// Reads until `frames` complete frames have arrived; returns the last one's body.
    fn read_frames(&mut self, mut frames: usize) -> io::Result<Vec<u8>> {
        let mut last = Vec::new();
        while frames > 0 {
            while frames > 0 && self.end - self.start >= 4 {
                let len =
                    u32::from_le_bytes(self.buf[self.start..self.start + 4].try_into().unwrap())
                        as usize;
                if self.end - self.start < 4 + len {
                    break;
                }
                if frames == 1 {
                    last = self.buf[self.start + 4..self.start + 4 + len].to_vec();
                }
                self.start += 4 + len;
                frames -= 1;
            }
            if frames == 0 {
                break;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.buf.len() - self.end < 64 * 1024 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stdout.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "raw child closed",
                ));
            }
            self.end += n;
        }
        Ok(last)
    }

    /// Reads whatever is available (at least one read) and returns the complete frames seen.
    fn read_some(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < 64 * 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stdout.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "raw child closed",
            ));
        }
        self.end += n;
        let mut frames = 0;
        while self.end - self.start >= 4 {
            let len = u32::from_le_bytes(self.buf[self.start..self.start + 4].try_into().unwrap())
                as usize;
            if self.end - self.start < 4 + len {
                break;
            }
            self.start += 4 + len;
            frames += 1;
        }
        Ok(frames)
    }

    fn input(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("stdin is open until end()")
    }

    fn count(&mut self) -> io::Result<u64> {
        self.input().write_all(&frame(COUNT, 1))?;
        let body = self.read_frames(1)?;
        Ok(u64::from_le_bytes(body[1..9].try_into().unwrap()))
    }

    fn end(mut self) -> io::Result<()> {
        self.stdin = None;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for RawChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn frame(kind: u8, body: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + body);
    f.extend_from_slice(&(body as u32).to_le_bytes());
    f.push(kind);
    f.resize(4 + body, 0xa5);
    f
}

/// Sends `count` frames of `kind`/`body` in large writes, then a count query; frames per second.
fn one_way(c: &mut RawChild, count: usize, body: usize) -> io::Result<f64> {
    let one = frame(TELL, body);
    let per_batch = ((256 * 1024) / one.len()).max(1);
    let batch: Vec<u8> = one.repeat(per_batch);
    let t = Instant::now();
    let mut sent = 0;
    while sent < count {
        let n = per_batch.min(count - sent);
        c.input().write_all(&batch[..n * one.len()])?;
        sent += n;
    }
    let got = c.count()?;
    let elapsed = t.elapsed();
    if got != count as u64 {
        return Err(io::Error::other(format!(
            "raw child counted {got} of {count}"
        )));
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// Runs every raw measurement.
pub(crate) fn measure(p: &RawParams) -> io::Result<RawFigures> {
    let mut c = RawChild::spawn()?;
    let request = frame(REQUEST, SMALL_BODY);

    for _ in 0..1_000 {
        c.input().write_all(&request)?;
        c.read_frames(1)?;
    }
    let mut rtts: Vec<Duration> = Vec::with_capacity(p.round_trips);
    for _ in 0..p.round_trips {
        let t = Instant::now();
        c.input().write_all(&request)?;
        c.read_frames(1)?;
        rtts.push(t.elapsed());
    }
    rtts.sort();

    let t = Instant::now();
    let (mut sent, mut answered) = (0usize, 0usize);
    let mut batch = Vec::with_capacity(p.in_flight * request.len());
    while answered < p.pipelined {
        let room = (p.in_flight - (sent - answered)).min(p.pipelined - sent);
        if room > 0 {
            batch.clear();
            for _ in 0..room {
                batch.extend_from_slice(&request);
            }
            c.input().write_all(&batch)?;
            sent += room;
        }
        answered += c.read_some()?;
    }
    let pipelined = p.pipelined as f64 / t.elapsed().as_secs_f64();

    let tell = one_way(&mut c, p.tells, SMALL_BODY)?;
    let bulk = one_way(&mut c, p.bulk_messages, BULK_BODY)?;
    c.end()?;

    let mut spawns = Vec::with_capacity(p.spawns);
    for _ in 0..p.spawns {
        let t = Instant::now();
        let mut c = RawChild::spawn()?;
        c.input().write_all(&request)?;
        c.read_frames(1)?;
        spawns.push(t.elapsed());
        c.end()?;
    }
    spawns.sort();

    // Respawn: SIGKILL a child, reap it, start another, first reply.
    let mut respawns = Vec::with_capacity(p.spawns);
    let mut c = RawChild::spawn()?;
    for _ in 0..p.spawns {
        let t = Instant::now();
        c.child.kill()?;
        c.child.wait()?;
        c = RawChild::spawn()?;
        c.input().write_all(&request)?;
        c.read_frames(1)?;
        respawns.push(t.elapsed());
    }
    c.end()?;
    respawns.sort();

    let broadcast = broadcast(p.broadcasts, p.broadcast_window)?;

    Ok(RawFigures {
        rtt_us_median: rtts[rtts.len() / 2].as_secs_f64() * 1e6,
        rtt_us_p99: rtts[rtts.len() * 99 / 100].as_secs_f64() * 1e6,
        pipelined_req_per_s: pipelined,
        tell_per_s: tell,
        bulk_64k_mb_per_s: bulk * BULK_BODY as f64 / 1e6,
        spawn_ms_median: spawns[spawns.len() / 2].as_secs_f64() * 1e3,
        respawn_ms_median: respawns[respawns.len() / 2].as_secs_f64() * 1e3,
        broadcast_4_per_s: broadcast,
    })
}

/// One parent, four children: every message is written to each child, which echoes it back as
/// its acknowledgement; up to `window` messages in flight; messages per second, all acknowledged.
fn broadcast(count: usize, window: usize) -> io::Result<f64> {
    let mut children = (0..4)
        .map(|_| RawChild::spawn())
        .collect::<io::Result<Vec<_>>>()?;
    let request = frame(REQUEST, SMALL_BODY);
    let mut batch = Vec::with_capacity(window * request.len());
    let mut acked = [0usize; 4];
    let mut sent = 0usize;
    let t = Instant::now();
    loop {
        let done = *acked.iter().min().expect("four children");
        if done >= count {
            break;
        }
        let room = (window - (sent - done)).min(count - sent);
        if room > 0 {
            batch.clear();
            for _ in 0..room {
                batch.extend_from_slice(&request);
            }
            for c in children.iter_mut() {
                c.input().write_all(&batch)?;
            }
            sent += room;
        }
        for (c, acked) in children.iter_mut().zip(acked.iter_mut()) {
            if *acked < sent {
                *acked += c.read_some()?;
            }
        }
    }
    let rate = count as f64 / t.elapsed().as_secs_f64();
    for c in children {
        c.end()?;
    }
    Ok(rate)
}

/// Median round trip with this thread on CPU `master` and the raw child on CPU `child`.
pub(crate) fn pinned_rtt(master: usize, child: usize, round_trips: usize) -> io::Result<f64> {
    let restore = crate::pinned::pin_this_thread(master)?;
    let result = (|| {
        let mut c = RawChild::spawn()?;
        crate::pinned::pin_process(c.child.id(), child)?;
        let request = frame(REQUEST, SMALL_BODY);
        for _ in 0..1_000 {
            c.input().write_all(&request)?;
            c.read_frames(1)?;
        }
        let mut rtts = Vec::with_capacity(round_trips);
        for _ in 0..round_trips {
            let t = Instant::now();
            c.input().write_all(&request)?;
            c.read_frames(1)?;
            rtts.push(t.elapsed());
        }
        c.end()?;
        rtts.sort();
        Ok(rtts[rtts.len() / 2].as_secs_f64() * 1e6)
    })();
    crate::pinned::restore(restore)?;
    result
}
