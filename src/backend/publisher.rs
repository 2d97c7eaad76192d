//! How frames for other nodes leave the master's loop (`remote.rs`'s requests, one-way
//! messages and answers): on a connection of the loop's own, with its loss noticed at once.
//!
//! With a `redis://` or `redis+unix://` URL the publishes go on one multiplexed connection
//! made and driven on the master's loop (see `conn.rs` for why); with `rediss://` they run on
//! the Redis thread, on the beat's connection, which the beats watch.
//!
//! **The link.** redis-rs notices that such a connection died only when a command on it fails:
//! without RESP3 nothing reports a closed socket, and its `ConnectionManager` reconnects only
//! after a command failed. A publishing connection idle while Redis restarted would fail its
//! next publish — an answer to another node lost, its asker left waiting for its timeout. So
//! the link is **down** from the moment a publish fails for the connection's sake (closed,
//! refused, timed out) or the caller reports a loss (its inbox subscription closed, a beat
//! failed): a publish then fails at once, and a task makes a new connection — at once, then
//! every `retry`, and at once again when the caller says Redis is back. An answer to a request
//! ([`publish_within`](Publisher::publish_within)) waits for the link instead, up to its
//! asker's deadline, and is sent once more if its publish failed for the connection's sake
//! (an answer that arrives twice is taken once: the asker's pending entry is gone).
//!
//! **Batches.** A frame for a channel with no publish outstanding goes at once, alone (a lone
//! request pays no wait). Frames for a channel while one of its publishes is outstanding wait
//! for it, then go together as one message, a batch (`wire.rs`): one `PUBLISH`, one wake-up
//! and one parse at each receiver, however many frames. So the frames of one channel are in
//! the order they were published, and a burst costs a round trip to Redis per batch rather
//! than per frame.
//!
//! Limits: for the master's loop only (it is `!Send`). What waits behind an outstanding
//! publish is bounded by the caller (`remote.rs` counts the bytes under way).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult};
use tokio::sync::{oneshot, Notify};

use super::conn::Redis;
use super::wire;

/// Publishes frames to other nodes' channels; clones share the link and the queues.
#[derive(Clone)]
pub(crate) struct Publisher(Rc<Inner>);

struct Inner {
    redis: Redis,
    retry: Duration,
    link: RefCell<Link>,
    /// Connections made so far: a failure on an older one is old news.
    made: Cell<u64>,
    /// Woken when the link is up again.
    up: Notify,
    /// Woken to try to make the link again at once; shared with the task that makes it.
    kick: Rc<Notify>,
    /// The channels with a publish outstanding, each with the frames waiting for it.
    queued: RefCell<HashMap<String, Vec<Queued>>>,
}

/// Where publishes go. `Thread` stays so; without TLS:
///
/// ```text
/// Down("not made yet") ──a connection made──▶ Up(conn, n)
/// Up(conn, n) ──a publish on conn n failed for its sake, or lost()──▶ Down(why)
/// Down(why) ──the task tries: at once, then every retry or at back()──▶ Up(conn, n + 1)
/// ```
enum Link {
    /// `rediss://`: to the Redis thread.
    Thread,
    /// The loop's connection, and its number.
    Up(MultiplexedConnection, u64),
    /// Lost, and why; a task makes it again.
    Down(String),
}

/// Who awaits a queued frame's publish.
type Waiting = oneshot::Sender<RedisResult<i64>>;

/// A frame waiting for its channel's outstanding publish, and who awaits its own.
type Queued = (Vec<u8>, Waiting);

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

/// Whether `error` says the connection is unusable (rather than that Redis refused the
/// command).
fn is_lost(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
}

/// The error of a publish refused while the link is down.
fn down(why: &str) -> RedisError {
    let why = format!("the connection to Redis is down ({why}); it is being made again");
    std::io::Error::new(std::io::ErrorKind::NotConnected, why).into()
}

impl Publisher {
    /// A publisher for `redis`'s server, on the calling loop (its `LocalSet`): it starts
    /// connecting now (down until connected); a lost link is made again every `retry`.
    pub(crate) fn new(redis: Redis, retry: Duration) -> Self {
        let on_loop = redis.on_loop();
        let link = if on_loop {
            Link::Down("not made yet".into())
        } else {
            Link::Thread
        };
        let publisher = Self(Rc::new(Inner {
            redis,
            retry,
            link: RefCell::new(link),
            made: Cell::new(0),
            up: Notify::new(),
            kick: Rc::new(Notify::new()),
            queued: RefCell::default(),
        }));
        if on_loop {
            publisher.make_again();
        }
        publisher
    }

    /// Why the link is down, if it is (publishes fail at once meanwhile).
    pub(crate) fn down(&self) -> Option<String> {
        match &*self.0.link.borrow() {
            Link::Down(why) => Some(why.clone()),
            Link::Thread | Link::Up(..) => None,
        }
    }

    /// The caller saw Redis lost (`why`): the link is down until a new connection is made.
    pub(crate) fn lost(&self, why: &str) {
        let made = match &*self.0.link.borrow() {
            Link::Up(_, made) => *made,
            Link::Thread | Link::Down(_) => return,
        };
        self.lost_on(made, why.to_owned());
    }

    /// The caller saw Redis answer again: a link that is down is tried again at once.
    pub(crate) fn back(&self) {
        if self.down().is_some() {
            self.0.kick.notify_one();
        }
    }

    /// Connection `made` failed (`why`): down, if it is still the link's.
    fn lost_on(&self, made: u64, why: String) {
        {
            let mut link = self.0.link.borrow_mut();
            if !matches!(&*link, Link::Up(_, m) if *m == made) {
                return;
            }
            tracing::warn!(error = %why, "the connection for messages to other nodes is lost");
            *link = Link::Down(why);
        }
        self.make_again();
    }

    /// Starts the task that makes the link again (it ends once up, or once the publisher is
    /// gone).
    fn make_again(&self) {
        let (this, kick) = (Rc::downgrade(&self.0), Rc::clone(&self.0.kick));
        tokio::task::spawn_local(async move {
            loop {
                let Some((redis, retry)) = this.upgrade().map(|p| (p.redis.clone(), p.retry))
                else {
                    return;
                };
                let made = tokio::time::timeout(retry, redis.connect_here()).await;
                let Some(inner) = this.upgrade() else { return };
                let why = match made {
                    Ok(Ok(conn)) => return Self::connected(&inner, conn),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "Redis did not answer in time".to_owned(),
                };
                *inner.link.borrow_mut() = Link::Down(why);
                drop(inner);
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = kick.notified() => {}
                }
            }
        });
    }

    fn connected(inner: &Inner, conn: MultiplexedConnection) {
        let made = inner.made.get() + 1;
        inner.made.set(made);
        *inner.link.borrow_mut() = Link::Up(conn, made);
        inner.up.notify_waiters();
        tracing::debug!("connected for messages to other nodes");
    }

    /// Publishes frame `bytes` on `channel`: at once if no publish to `channel` is
    /// outstanding, else in a batch once it is answered; how many subscribers received it.
    /// Fails at once while the link is down.
    pub(crate) async fn publish(&self, channel: String, bytes: Vec<u8>) -> RedisResult<i64> {
        let queued = {
            let mut queued = self.0.queued.borrow_mut();
            match queued.get_mut(&channel) {
                Some(frames) => {
                    let (tx, rx) = oneshot::channel();
                    frames.push((bytes, tx));
                    Err(rx)
                }
                None => {
                    queued.insert(channel.clone(), Vec::new());
                    Ok(bytes)
                }
            }
        };
        let bytes = match queued {
            Ok(bytes) => bytes,
            Err(rx) => return rx.await.unwrap_or_else(|_| Err(dropped())),
        };
        let turn = Turn(self, Some(channel));
        let result = self.send(turn.channel(), bytes).await;
        turn.next();
        result
    }

    /// [`publish`](Self::publish), waiting for a link that is down until `until`, and once
    /// more after a publish that failed for the connection's sake: for answers, whose sender
    /// must not be lost while Redis comes back (a duplicate is harmless).
    pub(crate) async fn publish_within(
        &self,
        channel: String,
        bytes: Vec<u8>,
        until: Instant,
    ) -> RedisResult<i64> {
        let mut again = true;
        loop {
            let up = self.0.up.notified();
            if self.down().is_some() {
                // Still down at `until`: the publish below says why.
                let _ = tokio::time::timeout_at(until.into(), up).await;
            }
            match self.publish(channel.clone(), bytes.clone()).await {
                Err(e) if is_lost(&e) && again && Instant::now() < until => again = false,
                result => return result,
            }
        }
    }

    /// One message on the link.
    async fn send(&self, channel: &str, bytes: Vec<u8>) -> RedisResult<i64> {
        let link = match &*self.0.link.borrow() {
            Link::Thread => None,
            Link::Up(conn, made) => Some((conn.clone(), *made)),
            Link::Down(why) => return Err(down(why)),
        };
        let Some((mut conn, made)) = link else {
            return self.0.redis.publish(channel.to_owned(), bytes).await;
        };
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(bytes);
        let result = cmd.query_async(&mut conn).await;
        if let Err(e) = &result {
            if is_lost(e) {
                self.lost_on(made, e.to_string());
            }
        }
        result
    }

    /// Sends what waits for `channel` until nothing does (in batches of at most
    /// [`wire::MAX_FRAME_BYTES`], in order), then leaves the channel idle.
    async fn drain(self, channel: String) {
        let turn = Turn(&self, Some(channel));
        loop {
            let frames = {
                let mut queued = self.0.queued.borrow_mut();
                let frames = queued.get_mut(turn.channel()).map(std::mem::take);
                frames.unwrap_or_default()
            };
            if frames.is_empty() {
                return;
            }
            for (message, waiting) in wire::batches(frames) {
                let result = self.send(turn.channel(), message).await;
                for tx in waiting {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
}

/// A channel's publish outstanding; dropped, the channel is idle again (what still waits
/// for it is dropped: its publishers hear so).
struct Turn<'a>(&'a Publisher, Option<String>);

impl Turn<'_> {
    fn channel(&self) -> &str {
        self.1.as_deref().unwrap_or_default()
    }

    /// The outstanding publish is answered: what waited meanwhile goes now, from a task of
    /// its own (the caller has its answer), else the channel is idle.
    fn next(mut self) {
        let Some(channel) = self.1.take() else { return };
        let queued = self.0 .0.queued.borrow().get(&channel).map(Vec::len);
        if queued.unwrap_or(0) > 0 {
            tokio::task::spawn_local(self.0.clone().drain(channel));
        } else {
            self.0 .0.queued.borrow_mut().remove(&channel);
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(channel) = self.1.take() {
            self.0 .0.queued.borrow_mut().remove(&channel);
        }
    }
}

fn dropped() -> RedisError {
    std::io::Error::other("the publish was dropped").into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redis::aio::ConnectionManagerConfig;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::sync::{mpsc, Semaphore};

    use super::*;

    /// A stand-in for Redis on 127.0.0.1: every command it reads goes to `commands`; a
    /// `PUBLISH` is answered `:1` once `answers` gives a permit, anything else `+OK`;
    /// `close` ends every connection open.
    struct Fake {
        port: u16,
        commands: mpsc::UnboundedReceiver<Vec<Vec<u8>>>,
        answers: Arc<Semaphore>,
        close: Arc<Notify>,
    }

    impl Fake {
        async fn start(answers: usize) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let (tx, commands) = mpsc::unbounded_channel();
            let answers = Arc::new(Semaphore::new(answers));
            let close = Arc::new(Notify::new());
            let (held, closing) = (Arc::clone(&answers), Arc::clone(&close));
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let serve = Self::serve(socket, tx.clone(), Arc::clone(&held));
                    let closing = Arc::clone(&closing);
                    tokio::spawn(async move {
                        tokio::select! {
                            () = serve => {}
                            () = closing.notified() => {}
                        }
                    });
                }
            });
            Self {
                port,
                commands,
                answers,
                close,
            }
        }

        /// Reads commands as they come and answers them in order (as Redis pipelines).
        async fn serve(
            socket: tokio::net::TcpStream,
            tx: mpsc::UnboundedSender<Vec<Vec<u8>>>,
            answers: Arc<Semaphore>,
        ) {
            let (read, mut write) = socket.into_split();
            let (queue, mut queued) = mpsc::unbounded_channel::<bool>();
            let writer = async move {
                while let Some(publish) = queued.recv().await {
                    let answer: &[u8] = if publish {
                        answers.acquire().await.unwrap().forget();
                        b":1\r\n"
                    } else {
                        b"+OK\r\n"
                    };
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            };
            let reader = async move {
                let mut read = BufReader::new(read);
                while let Some(command) = Self::command(&mut read).await {
                    let _ = queue.send(command[0].eq_ignore_ascii_case(b"PUBLISH"));
                    let _ = tx.send(command);
                }
            };
            // Either's end closes the connection.
            tokio::select! {
                () = writer => {}
                () = reader => {}
            }
        }

        async fn command<R: AsyncBufReadExt + Unpin>(read: &mut R) -> Option<Vec<Vec<u8>>> {
            let mut line = String::new();
            let number = |line: &str| line[1..].trim().parse::<usize>().ok();
            if read.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let mut args = Vec::new();
            for _ in 0..number(&line)? {
                line.clear();
                read.read_line(&mut line).await.ok()?;
                let mut arg = vec![0; number(&line)? + 2];
                read.read_exact(&mut arg).await.ok()?;
                arg.truncate(arg.len() - 2);
                args.push(arg);
            }
            Some(args)
        }

        /// The next `PUBLISH` read: (channel, message).
        async fn published(&mut self) -> (String, Vec<u8>) {
            let deadline = Duration::from_secs(10);
            loop {
                let next = tokio::time::timeout(deadline, self.commands.recv()).await;
                let command = next.expect("a command within 10 s").expect("the fake runs");
                if command[0].eq_ignore_ascii_case(b"PUBLISH") {
                    let channel = String::from_utf8(command[1].clone()).unwrap();
                    return (channel, command[2].clone());
                }
            }
        }

        fn publisher(&self) -> Publisher {
            let url = format!("redis://127.0.0.1:{}/0", self.port);
            let client = redis::Client::open(url).unwrap();
            let timeouts = Some(Duration::from_secs(5));
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeouts)
                .set_response_timeout(timeouts)
                .set_number_of_retries(0);
            let redis = Redis::start(client, config).unwrap();
            Publisher::new(redis, Duration::from_millis(100))
        }
    }

    /// Until the link is up (10 s at most).
    async fn up(publisher: &Publisher) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(why) = publisher.down() {
            assert!(Instant::now() < deadline, "still down: {why}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn publish(publisher: &Publisher, channel: &str, frame: &[u8]) -> oneshot::Receiver<i64> {
        let (tx, rx) = oneshot::channel();
        let (publisher, channel, frame) = (publisher.clone(), channel.to_owned(), frame.to_vec());
        tokio::task::spawn_local(async move {
            let _ = tx.send(publisher.publish(channel, frame).await.unwrap());
        });
        rx
    }

    #[tokio::test]
    async fn a_lone_frame_goes_at_once_and_those_behind_it_go_as_one_batch() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let mut fake = Fake::start(0).await;
                let publisher = fake.publisher();
                up(&publisher).await;
                let first = publish(&publisher, "in:b", b"1");
                assert_eq!(fake.published().await, ("in:b".into(), b"1".to_vec()));
                // Its answer is held: these wait, but another channel's frame goes at once.
                let waiting = [
                    publish(&publisher, "in:b", b"2"),
                    publish(&publisher, "in:b", b"3"),
                ];
                let other = publish(&publisher, "in:c", b"4");
                assert_eq!(fake.published().await, ("in:c".into(), b"4".to_vec()));
                fake.answers.add_permits(3);
                let (channel, batch) = fake.published().await;
                assert_eq!(channel, "in:b");
                assert_eq!(wire::unbatch(&batch), Some(vec![&b"2"[..], &b"3"[..]]));
                for rx in [first, other].into_iter().chain(waiting) {
                    assert_eq!(rx.await.unwrap(), 1);
                }
                // Idle again: the next frame goes alone.
                fake.answers.add_permits(1);
                let lone = publish(&publisher, "in:b", b"5");
                assert_eq!(fake.published().await, ("in:b".into(), b"5".to_vec()));
                assert_eq!(lone.await.unwrap(), 1);
            })
            .await;
    }

    #[tokio::test]
    async fn a_lost_connection_is_down_at_once_and_made_again() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let mut fake = Fake::start(100).await;
                let publisher = fake.publisher();
                up(&publisher).await;
                // Closed by the server: the next publish fails, and the link is down at once.
                fake.close.notify_waiters();
                let deadline = Instant::now() + Duration::from_secs(10);
                while publisher.down().is_none() {
                    let sent = publisher.publish("in:b".into(), b"x".to_vec()).await;
                    if let Err(e) = sent {
                        assert!(is_lost(&e), "{e}");
                        break;
                    }
                    assert!(Instant::now() < deadline, "the loss is not seen");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Made again; until then, an answer waits for it rather than failing.
                let until = Instant::now() + Duration::from_secs(10);
                let answer = publisher.publish_within("in:a".into(), b"y".to_vec(), until);
                assert_eq!(answer.await.unwrap(), 1);
                up(&publisher).await;
                while fake.published().await.0 != "in:a" {}
                // A loss the caller saw (its subscription closed): down at once, made again.
                publisher.lost("the subscription's connection closed");
                let why = publisher.down().expect("down at once");
                assert!(why.contains("subscription"), "{why}");
                let refused = publisher.publish("in:b".into(), b"z".to_vec()).await;
                assert!(refused
                    .unwrap_err()
                    .to_string()
                    .contains("being made again"));
                up(&publisher).await;
            })
            .await;
    }
}
