//! `procactor.toml`: the apps an operator runs, as serde types.
//!
//! Why serde types with `deny_unknown_fields` everywhere: a misspelt key (`comand`, `instaces`)
//! must be an error that names the key and its line, never a default silently used (PM2's
//! ecosystem file ignores unknown keys). toml's own errors carry the span of the offending key or
//! value; [`load`] turns every error, toml's and the semantic checks' (`check.rs`, which read
//! `toml::Spanned` positions), into one [`FileError`] of the form `path:line:column: message`,
//! followed by the line itself.
//!
//! ```toml
//! [daemon]
//! metrics = "127.0.0.1:9464"        # Prometheus endpoint (off by default)
//!
//! [apps.web]
//! command = "python3"               # a bare name is found on PATH, a/relative one in cwd
//! args = ["server.py"]
//! cwd = "."                         # default: the directory of this file
//! env = { GREETING = "hi" }
//! instances = 3                     # or "auto": one per CPU
//! listen = { http = "127.0.0.1:8080" }   # fds 3… in this order (LISTEN_FDS)
//! ready = "notify"                  # "spawn" | "notify" | { tcp = "h:p" } | { http = "http://…" }
//! ready_timeout = "10s"
//! min_uptime = "1s"                 # with ready = "spawn" only
//! liveness = { watchdog = "5s" }    # or { http = "http://…/health", every = "2s", failures = 3 }
//! shutdown_timeout = "5s"
//! restart = { on = "always", max = 5, within = "30s", backoff = { floor = "100ms", cap = "10s" } }
//! depends_on = { db = "ready" }     # "started" | "ready"
//! log = { max_bytes = 10485760, keep = 5 }
//! ```
//!
//! Limits: one file, no includes and no variable expansion (`$HOME` in a value stays as written);
//! apps are kept in the order written, which breaks ties in the start order.

mod check;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Settings of the daemon itself.
    #[serde(default)]
    pub(crate) daemon: DaemonSpec,
    /// The apps, by name, in the order written.
    #[serde(default)]
    pub(crate) apps: IndexMap<Spanned<String>, AppSpec>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DaemonSpec {
    /// Where the daemon serves `GET /metrics` (`host:port`); none by default.
    pub(crate) metrics: Option<Spanned<String>>,
}

/// `[apps.NAME]`: one program, run as one or more instances.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppSpec {
    /// The program: a bare name is looked up on `PATH`, a relative path is taken from `cwd`.
    pub(crate) command: Spanned<String>,
    /// Its arguments.
    #[serde(default)]
    pub(crate) args: Vec<String>,
    /// Its working directory, relative to the file's directory (the default).
    #[serde(default)]
    pub(crate) cwd: Option<PathBuf>,
    /// Variables added to the daemon's environment.
    #[serde(default)]
    pub(crate) env: BTreeMap<Spanned<String>, String>,
    /// How many instances run.
    #[serde(default)]
    pub(crate) instances: Instances,
    /// Sockets the daemon binds and hands to every instance, by name, at fds 3… in this order.
    #[serde(default)]
    pub(crate) listen: IndexMap<String, Spanned<String>>,
    /// When an instance counts as ready (default `"spawn"`).
    #[serde(default)]
    pub(crate) ready: Option<Spanned<Readiness>>,
    /// How long an instance has to become ready.
    #[serde(default)]
    pub(crate) ready_timeout: Option<Dur>,
    /// With `ready = "spawn"`: an instance that exits sooner has failed to start.
    #[serde(default)]
    pub(crate) min_uptime: Option<Spanned<Dur>>,
    /// How a running instance shows it is alive.
    #[serde(default)]
    pub(crate) liveness: Option<Spanned<Liveness>>,
    /// How long an instance has to exit after SIGTERM before it is killed.
    #[serde(default)]
    pub(crate) shutdown_timeout: Option<Dur>,
    /// What happens when an instance exits.
    #[serde(default)]
    pub(crate) restart: RestartSpec,
    /// Apps that must be started (or ready) before this one starts.
    #[serde(default)]
    pub(crate) depends_on: Option<Spanned<IndexMap<String, Condition>>>,
    /// Log file rotation.
    #[serde(default)]
    pub(crate) log: LogSpec,
}

impl AppSpec {
    /// The readiness, `"spawn"` when none is written.
    pub(crate) fn readiness(&self) -> &Readiness {
        self.ready
            .as_ref()
            .map_or(&Readiness::Spawn, |r| r.get_ref())
    }

    /// The apps this one depends on, with their conditions.
    pub(crate) fn dependencies(&self) -> impl Iterator<Item = (&String, &Condition)> {
        self.depends_on.iter().flat_map(|d| d.get_ref().iter())
    }
}

/// A duration written as humans do: `"500ms"`, `"10s"`, `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub(crate) struct Dur(#[serde(with = "humantime_serde")] pub(crate) Duration);

/// `instances`: a count of at least 1, or `"auto"` (one per CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Instances {
    /// This many.
    Count(usize),
    /// One per CPU the daemon may run on.
    Auto,
}

impl Instances {
    /// How many instances this means here: `"auto"` is one per CPU the daemon may run on.
    pub(crate) fn count(self) -> usize {
        match self {
            Instances::Count(n) => n,
            Instances::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Default for Instances {
    fn default() -> Self {
        Instances::Count(1)
    }
}

impl fmt::Display for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instances::Count(n) => write!(f, "{n}"),
            Instances::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for Instances {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Instances::Count(n) => s.serialize_u64(*n as u64),
            Instances::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Instances;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a number of instances (at least 1) or "auto""#)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Instances, E> {
                match usize::try_from(n) {
                    Ok(0) => Err(E::custom(
                        "instances = 0 would run nothing: write at least 1 (`procactor stop APP` \
                         stops an app)",
                    )),
                    Ok(n) => Ok(Instances::Count(n)),
                    Err(_) => Err(E::custom(format!("instances = {n}: must be at least 1"))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Instances, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Instances, E> {
                match s {
                    "auto" => Ok(Instances::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `ready`: when a new instance counts as ready (a reload retires an old one only then).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Readiness {
    /// Once it runs (and has run `min_uptime`).
    #[default]
    Spawn,
    /// Once it sends `READY=1` to `NOTIFY_SOCKET` (systemd's `sd_notify` protocol).
    Notify,
    /// Once a TCP connection to this `host:port` succeeds.
    Tcp(String),
    /// Once a `GET` of this URL answers 2xx.
    Http(String),
}

/// `liveness`: how a running instance shows it is alive; one of `watchdog` or `http`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Liveness {
    /// It sends `WATCHDOG=1` at least this often, or is killed and restarted.
    #[serde(default)]
    pub(crate) watchdog: Option<Dur>,
    /// A `GET` of this URL must answer 2xx …
    #[serde(default)]
    pub(crate) http: Option<String>,
    /// … asked this often (default 5 s) …
    #[serde(default)]
    pub(crate) every: Option<Dur>,
    /// … or after this many failures in a row (default 3) it is killed and restarted.
    #[serde(default)]
    pub(crate) failures: Option<u32>,
}

/// `restart`: when an exited instance is started again, and how often at most.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RestartSpec {
    /// `always` (default), `on-failure` or `never`.
    pub(crate) on: RestartOn,
    /// Restarts allowed within `within` before the app is marked failed (default 5).
    pub(crate) max: Option<u32>,
    /// The window of `max` (default 30 s).
    pub(crate) within: Option<Dur>,
    /// The delay before a restart: from `floor`, doubling, up to `cap`.
    pub(crate) backoff: Option<Spanned<BackoffSpec>>,
}

/// `restart.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RestartOn {
    /// After any exit.
    #[default]
    Always,
    /// After a non-zero status or a signal only.
    OnFailure,
    /// Never.
    Never,
}

/// `restart.backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackoffSpec {
    /// The first delay.
    pub(crate) floor: Dur,
    /// The longest.
    pub(crate) cap: Dur,
}

/// `depends_on.APP`: what the other app must have reached before this one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Condition {
    /// Its instances have been started.
    Started,
    /// Its instances are ready.
    Ready,
}

/// `log`: rotation of the app's log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSpec {
    /// Size at which a file is rotated (default 10 MiB).
    pub(crate) max_bytes: Option<u64>,
    /// Rotated files kept (default 5).
    pub(crate) keep: Option<usize>,
}

/// A file that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileError {
    /// The file.
    pub(crate) path: PathBuf,
    /// 1-based line and column, when the error has a place.
    pub(crate) at: Option<(usize, usize)>,
    /// What is wrong, naming the key.
    pub(crate) message: String,
    /// The line itself, shown under the message.
    pub(crate) source_line: Option<String>,
    /// How many characters of that line are marked.
    width: usize,
}

impl FileError {
    fn at(path: &Path, text: &str, span: Option<Range<usize>>, mut message: String) -> Self {
        let mut width = 1;
        let place = span.map(|span| {
            let start = span.start.min(text.len());
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            let line = text[..start].matches('\n').count() + 1;
            let column = text[line_start..start].chars().count() + 1;
            let end = span.end.clamp(start, line_end);
            width = text[start..end].chars().count().max(1);
            let shown = text[line_start..line_end].to_string();
            // A line of an `env` table may hold a secret: its place is named, not echoed.
            let secret = mentions_env(&shown) || in_env_table(&text[..line_start]);
            if secret {
                message = without_quoted(&message);
            }
            ((line, column), (!secret).then_some(shown))
        });
        FileError {
            path: path.to_path_buf(),
            at: place.as_ref().map(|(at, _)| *at),
            message,
            source_line: place.and_then(|(_, line)| line),
            width,
        }
    }
}

/// `message` with what toml quotes in backticks (a value it read) replaced by `…`.
fn without_quoted(message: &str) -> String {
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "…" } else { part })
        .collect::<Vec<_>>()
        .join("`")
}

/// Whether `line` sets an `env` table inline (`env = { … }`).
fn mentions_env(line: &str) -> bool {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == "env")
}

/// Whether the last table header in `before` is an `env` table (`[apps.web.env]`).
fn in_env_table(before: &str) -> bool {
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .is_some_and(|header| {
            header
                .trim_matches(|c| c == '[' || c == ']')
                .split('.')
                .any(|part| part.trim() == "env")
        })
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.at {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)?;
        if let (Some((line, column)), Some(text)) = (self.at, &self.source_line) {
            let gutter = line.to_string().len();
            let marks = "^".repeat(self.width);
            let pad = column - 1;
            write!(f, "\n{line} | {text}\n{:gutter$} | {:pad$}{marks}", "", "")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

/// Reads and checks the file at `path`; returns it, and its text as read.
pub(crate) fn load(path: &Path) -> Result<(ConfigFile, String), FileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FileError::at(path, "", None, format!("cannot read it: {e}")))?;
    Ok((parse(&text, path)?, text))
}

/// Parses and checks `text`, read from `path` (named in errors).
pub(crate) fn parse(text: &str, path: &Path) -> Result<ConfigFile, FileError> {
    let file: ConfigFile = toml::from_str(text)
        .map_err(|e| FileError::at(path, text, e.span(), e.message().trim().to_string()))?;
    check::check(&file).map_err(|p| FileError::at(path, text, Some(p.span), p.message))?;
    Ok(file)
}
