//! The sweep: every live process whose environment carries a tree token (see `tree`) is killed,
//! round after round, until a scan of `/proc` finds none.
//!
//! A process group reaches a worker's descendants only while they stay in it. The sweep reaches
//! those that left it too (`setsid`, `setpgid`, a double fork reparenting them to init): they
//! inherited the token with the environment. One round reads `/proc/*/environ`; each process
//! that carries the token is opened as a pidfd, checked again, and sent `SIGKILL` through the
//! pidfd, so a recycled pid is never hit. A process forking meanwhile is caught in a later round:
//! its children carry the token too, and a process with `SIGKILL` pending forks no more. The
//! rounds stop when one finds nothing, or after about a second.
//!
//! Two callers: the sweeper thread of the master, fed a token each time a child of the master
//! has been reaped (the reaped child's exit is reported once its sweep has run, so when a stop
//! returns its sweeps have run), and the keeper (see `keeper`) after the master has died. The
//! scan is written for the keeper: after `fork` it may only make system calls, so it allocates
//! nothing, takes no lock and reads into buffers on its stack.
//!
//! # Limits
//! A process whose environment the master may not read (another user's, or one made
//! non-dumpable) is not found, nor one that executed a program without the token (see `tree`).

use std::sync::{mpsc, OnceLock};

use super::tree::{self, Matcher, Token};

/// How long the rounds of one sweep may go on.
const BUDGET_NANOS: i64 = 1_000_000_000;
/// The pause between two rounds that found something: the killed processes exit meanwhile.
const PAUSE_NANOS: i64 = 2_000_000;

/// Sweeps until a round finds no process carrying any of `matchers`' needles, or the budget is
/// spent; `skip` is never killed (the caller's own pid). Returns the last round's count (0: none
/// left). Async-signal-safe.
pub(super) fn sweep<C: Carriers + ?Sized>(matchers: &mut C, skip: libc::pid_t) -> usize {
    let start = monotonic_nanos();
    loop {
        let found = round(matchers, skip);
        if found == 0 || monotonic_nanos() - start > BUDGET_NANOS {
            return found;
        }
        pause(PAUSE_NANOS);
    }
}

/// One scan of `/proc`: kills every process (but `skip`) that carries a needle; returns how many
/// did. Async-signal-safe.
pub(super) fn round<C: Carriers + ?Sized>(matchers: &mut C, skip: libc::pid_t) -> usize {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let dir = unsafe {
        libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return 0;
    }
    let mut found = 0;
    let mut dents = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `dents.len()` bytes into `dents`.
        let n =
            unsafe { libc::syscall(libc::SYS_getdents64, dir, dents.as_mut_ptr(), dents.len()) };
        if n <= 0 {
            break;
        }
        for name in Dirents::new(&dents[..n as usize]) {
            let pid = parse_pid(name).filter(|&pid| pid != skip);
            if let Some(pid) = pid {
                if carries(pid, matchers) && kill_if_carries(pid, matchers) {
                    found += 1;
                }
            }
        }
    }
    // SAFETY: `dir` was opened above and is closed once.
    unsafe { libc::close(dir) };
    found
}

/// Whether process `pid`'s environment carries one of the needles. Async-signal-safe.
fn carries<C: Carriers + ?Sized>(pid: libc::pid_t, matchers: &mut C) -> bool {
    let mut path = [0u8; 32];
    environ_path(pid, &mut path);
    // SAFETY: `path` is NUL-terminated; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        // Gone, or not ours to read.
        return false;
    }
    matchers.reset();
    let mut buf = [0u8; 4096];
    let mut found = false;
    loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        if matchers.feed(&buf[..n as usize]) {
            found = true;
            break;
        }
    }
    if !found {
        found = matchers.finish();
    }
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    found
}

/// Opens `pid` as a pidfd, checks that the process it names still carries a needle (the pid may
/// have been recycled since it was read), and sends it `SIGKILL` through the pidfd. Returns
/// whether it carried one. Async-signal-safe.
fn kill_if_carries<C: Carriers + ?Sized>(pid: libc::pid_t, matchers: &mut C) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    if pidfd < 0 {
        return false;
    }
    // Read after the pidfd was opened: if it still carries the needle, the pidfd names it.
    let carries = carries(pid, matchers);
    if carries {
        // SAFETY: pidfd_send_signal takes a pidfd, a signal, no siginfo and no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
    // SAFETY: `pidfd` was opened above and is closed once.
    unsafe { libc::close(pidfd) };
    carries
}

/// What a sweep looks for in each process's environment, fed in pieces.
pub(super) trait Carriers {
    /// A new environment block begins.
    fn reset(&mut self);
    /// The next piece of it; whether it carries what is looked for already.
    fn feed(&mut self, piece: &[u8]) -> bool;
    /// The block ended; whether it carries what is looked for.
    fn finish(&mut self) -> bool;
}

/// Any of these needles (the keeper's: allocation-free, async-signal-safe).
impl Carriers for [Matcher<'_>] {
    fn reset(&mut self) {
        self.iter_mut().for_each(Matcher::reset);
    }

    fn feed(&mut self, piece: &[u8]) -> bool {
        self.iter_mut().fold(false, |any, m| m.feed(piece) | any)
    }

    fn finish(&mut self) -> bool {
        self.iter_mut().fold(false, |any, m| m.finish() | any)
    }
}

/// Any of a set of tokens (the sweeper thread's, which may allocate): the block is kept whole
/// and its list looked up in the set once, so a batch of many exits (a cluster of 256 stopping)
/// costs one pass over each process's environment, not one per token.
struct TokenSet {
    tokens: std::collections::HashSet<Vec<u8>>,
    block: Vec<u8>,
}

impl TokenSet {
    fn new<'a>(tokens: impl IntoIterator<Item = &'a Token>) -> Self {
        Self {
            tokens: tokens.into_iter().map(|t| t.as_bytes().to_vec()).collect(),
            block: Vec::with_capacity(8 * 1024),
        }
    }
}

impl Carriers for TokenSet {
    fn reset(&mut self) {
        self.block.clear();
    }

    fn feed(&mut self, piece: &[u8]) -> bool {
        self.block.extend_from_slice(piece);
        false
    }

    fn finish(&mut self) -> bool {
        tree::elements(&self.block).any(|token| self.tokens.contains(token))
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds. Async-signal-safe.
#[allow(clippy::unnecessary_cast)] // time_t and c_long are i64 on 64-bit targets only
fn monotonic_nanos() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as i64 * 1_000_000_000 + now.tv_nsec as i64
}

/// Sleeps `nanos` (below a second). Async-signal-safe.
fn pause(nanos: i64) {
    let time = libc::timespec {
        tv_sec: 0,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: nanosleep reads one timespec; an early wake-up only shortens the pause.
    unsafe { libc::nanosleep(&time, std::ptr::null_mut()) };
}

/// The names in a buffer filled by `getdents64(2)` (`struct linux_dirent64`: inode u64, offset
/// i64, record length u16, type u8, then the NUL-terminated name).
struct Dirents<'a> {
    buf: &'a [u8],
}

impl<'a> Dirents<'a> {
    const NAME: usize = 19;

    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for Dirents<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = self.buf.get(16..18)?;
        let len = u16::from_ne_bytes([len[0], len[1]]) as usize;
        if len <= Self::NAME || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let (record, rest) = self.buf.split_at(len);
        self.buf = rest;
        let name = &record[Self::NAME..];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Some(&name[..end])
    }
}

/// A `/proc` entry's name as a pid: decimal digits only, above 0.
fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
    if name.is_empty() || name.len() > 10 {
        return None;
    }
    let mut pid: i64 = 0;
    for &b in name {
        if !b.is_ascii_digit() {
            return None;
        }
        pid = pid * 10 + i64::from(b - b'0');
    }
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)
}

/// Writes `/proc/<pid>/environ` and a NUL into `out`.
fn environ_path(pid: libc::pid_t, out: &mut [u8; 32]) {
    const PROC: &[u8] = b"/proc/";
    const ENVIRON: &[u8] = b"/environ\0";
    out[..PROC.len()].copy_from_slice(PROC);
    let at = PROC.len()
        + super::activated::write_decimal(&mut out[PROC.len()..], pid.unsigned_abs().into());
    out[at..at + ENVIRON.len()].copy_from_slice(ENVIRON);
}

/// A sweep the sweeper thread is asked for.
struct Job {
    token: Token,
    /// Told once the sweep has run; `None`: nobody waits.
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Queues a sweep of `token`; the receiver is told once it has run (at once if the sweeper
/// thread is gone).
pub(super) fn after_exit(token: Token) -> tokio::sync::oneshot::Receiver<()> {
    let (done, rx) = tokio::sync::oneshot::channel();
    let _ = sweeper().send(Job {
        token,
        done: Some(done),
    });
    rx
}

/// Queues a sweep of `token` that nobody waits for.
pub(super) fn after_exit_unwatched(token: Token) {
    let _ = sweeper().send(Job { token, done: None });
}

/// Starts the sweeper thread, if it is not running yet.
pub(super) fn start() {
    sweeper();
}

fn sweeper() -> &'static mpsc::Sender<Job> {
    static SWEEPER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SWEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("procactor-sweep".into())
            .spawn(move || run(&rx))
            .expect("cannot start the procactor sweeper thread");
        tx
    })
}

/// The sweeper thread: the jobs queued meanwhile share their rounds.
fn run(jobs: &mpsc::Receiver<Job>) {
    let me = std::process::id() as libc::pid_t;
    while let Ok(first) = jobs.recv() {
        let batch: Vec<Job> = std::iter::once(first).chain(jobs.try_iter()).collect();
        let mut set = TokenSet::new(batch.iter().map(|job| &job.token));
        let left = sweep(&mut set, me);
        if left > 0 {
            tracing::warn!(left, "processes of exited workers outlived the sweep");
        }
        for job in batch {
            if let Some(done) = job.done {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::super::tree::{master_prefix, Needle, VAR};
    use super::*;

    #[test]
    fn pids_are_decimal_names_above_zero() {
        for (name, pid) in [
            (&b"1"[..], Some(1)),
            (b"4194304", Some(4_194_304)),
            (b"2147483647", Some(i32::MAX)),
            (b"2147483648", None),
            (b"99999999999", None),
            (b"0", None),
            (b"", None),
            (b"self", None),
            (b"12a", None),
            (b"-1", None),
        ] {
            assert_eq!(parse_pid(name), pid, "{:?}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn the_environ_path_is_built_without_allocating() {
        for (pid, path) in [
            (1, "/proc/1/environ\0"),
            (i32::MAX, "/proc/2147483647/environ\0"),
        ] {
            let mut out = [0xffu8; 32];
            environ_path(pid, &mut out);
            assert_eq!(&out[..path.len()], path.as_bytes());
        }
    }

    #[test]
    fn directory_records_are_read_by_their_length() {
        let mut buf = Vec::new();
        for name in ["1", "self", "4194304"] {
            let len = (19 + name.len() + 1).next_multiple_of(8);
            let mut record = vec![0u8; len];
            record[16..18].copy_from_slice(&(len as u16).to_ne_bytes());
            record[19..19 + name.len()].copy_from_slice(name.as_bytes());
            buf.extend_from_slice(&record);
        }
        let names: Vec<&[u8]> = Dirents::new(&buf).collect();
        assert_eq!(names, [&b"1"[..], b"self", b"4194304"]);
        assert_eq!(Dirents::new(&buf[..30]).count(), 1, "a cut record ends it");
        assert_eq!(Dirents::new(&[0u8; 24]).count(), 0, "a zero length ends it");
    }

    /// A `sleep 1000` carrying `tree` as its `PROCACTOR_TREE`, and the std handle to it.
    /// A `sleep` carrying `tree`, returned once its environment can be read: `spawn` returns
    /// while the kernel may still be setting up the new image, when `/proc/PID/environ` reads
    /// empty (a round then would not see it; CI once caught that window).
    #[allow(
        clippy::zombie_processes,
        reason = "the child is handed to the test, which kills and waits for it"
    )]
    fn sleeper(tree: &str) -> std::process::Child {
        let mut child = Command::new("/bin/sleep")
            .arg("1000")
            .env(VAR, tree)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let path = format!("/proc/{}/environ", child.id());
        let needle = format!("{VAR}={tree}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let environ = std::fs::read(&path).unwrap_or_default();
            if environ
                .split(|&b| b == 0)
                .any(|var| var == needle.as_bytes())
            {
                return child;
            }
            if Instant::now() >= deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("{path} never showed {needle}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn exited(child: &mut std::process::Child, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_sweep_kills_the_carriers_of_its_token_and_no_one_else() {
        let token = Token::new(1, 1);
        let token_text = std::str::from_utf8(token.as_bytes()).unwrap().to_owned();
        let other = Token::new(10, 1);
        let other_text = std::str::from_utf8(other.as_bytes()).unwrap().to_owned();
        let mut carriers = [
            sleeper(&token_text),
            sleeper(&format!("1.2/3/0/1;{token_text}")),
        ];
        let mut others = [sleeper(&other_text), sleeper(&format!("{token_text}0"))];
        let mut set = TokenSet::new([&token]);
        let me = std::process::id() as libc::pid_t;
        assert_eq!(sweep(&mut set, me), 0, "none left");
        for child in &mut carriers {
            assert!(
                exited(child, Duration::from_secs(10)),
                "a carrier is killed"
            );
        }
        for child in &mut others {
            assert!(child.try_wait().unwrap().is_none(), "a stranger lives");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn a_masters_prefix_reaches_each_of_its_tokens() {
        let mut children = [
            sleeper(std::str::from_utf8(Token::new(0, 1).as_bytes()).unwrap()),
            sleeper(std::str::from_utf8(Token::new(7, 3).as_bytes()).unwrap()),
        ];
        // A master of its own (this test's tokens belong to the process under test).
        let prefix = format!("{}.0/", std::process::id());
        assert_ne!(prefix, master_prefix());
        let mut stranger = sleeper(&format!("{prefix}1/0/1"));
        let mut matchers = [Matcher::new(Needle::Prefix(prefix.as_bytes()))];
        assert_eq!(round(&mut matchers[..], 0), 1);
        assert!(exited(&mut stranger, Duration::from_secs(10)));
        for child in &mut children {
            assert!(
                child.try_wait().unwrap().is_none(),
                "another master's child lives"
            );
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn a_round_with_nothing_to_find_is_quick() {
        let tokens: Vec<Token> = (0..256).map(|worker| Token::new(worker, 0)).collect();
        // A batch of 256 exits (a cluster of 256 stopping) looked for in one round.
        let mut set = TokenSet::new(tokens.iter());
        let started = Instant::now();
        for _ in 0..10 {
            assert_eq!(round(&mut set, 0), 0);
        }
        let each = started.elapsed() / 10;
        // A few milliseconds for a few hundred processes; generous for shared cores.
        assert!(each < Duration::from_millis(100), "one round took {each:?}");
    }

    #[tokio::test]
    async fn a_queued_sweep_reports_when_it_has_run() {
        let token = Token::new(2, 1);
        let mut child = sleeper(std::str::from_utf8(token.as_bytes()).unwrap());
        after_exit(token).await.unwrap();
        assert!(child.try_wait().unwrap().is_some() || exited(&mut child, Duration::from_secs(1)));
    }
}
