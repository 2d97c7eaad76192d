//! The daemon's saved state: the file it runs and the changes made since (scales, stopped
//! apps), so that `procactor resurrect` brings the same apps back after a reboot.
//!
//! Why so careful: PM2 users lose their process list on reboot in ways they keep reporting —
//! a dump written in place and cut short, an empty list saved over a good one (PM2 #2827,
//! #2653). Here:
//! - **A write is atomic and durable**: the new state goes to `state.json.tmp`, is fsynced,
//!   and is renamed over `state.json`; then the directory is fsynced. A crash at any point
//!   leaves the old file or the new one, never half of one.
//! - **The last good state is kept** as `state.json.prev` (a hard link made before the rename,
//!   so `state.json` is never missing): one bad change can be undone by hand.
//! - **A damaged file is set aside, reported, and never replaces a good one**: one that does
//!   not parse is renamed `state.json.damaged-<time>` (kept for a person to read), the caller
//!   gets a note saying so, and `.prev` is used; a damaged `state.json` is never linked to
//!   `.prev`. A state of a newer format is not damage: it is left alone, with an error.
//!
//! The file holds the config's text, which may hold secrets (env values): it is written 0600
//! in a directory created 0700.
//!
//! Limits: one daemon per state directory (nothing locks it); a `.damaged-*` file is never
//! removed by procactor.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file's format: raised when a field changes meaning.
pub(crate) const FORMAT: u32 = 1;

const FILE: &str = "state.json";

/// What the daemon runs, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// [`FORMAT`] when written.
    pub(crate) format: u32,
    /// Where the config file was (its directory is the apps' default `cwd`).
    pub(crate) config_path: PathBuf,
    /// Its text, as it was applied (the file on disk may have changed since).
    pub(crate) config_text: String,
    /// Instances set by `scale`, by app, over the file's.
    #[serde(default)]
    pub(crate) scales: BTreeMap<String, usize>,
    /// Apps stopped by `stop`: not started by `resurrect`.
    #[serde(default)]
    pub(crate) stopped: BTreeSet<String>,
}

/// What [`StateDir::load`] found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The state to use; `None` when there is none (a first start, or nothing good left).
    pub(crate) state: Option<State>,
    /// What was set aside or fallen back on, for the operator.
    pub(crate) notes: Vec<String>,
}

/// Why no state could be read.
#[derive(Debug)]
pub(crate) enum StateError {
    /// The file is of a later format than this build reads; it is left as it is.
    Newer { path: PathBuf, format: u32 },
    /// The system refused, with what was being done.
    Io(String, PathBuf, io::Error),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Newer { path, format } => write!(
                f,
                "{} is of format {format}, newer than this procactor reads ({FORMAT}): run the \
                 procactor that wrote it, or move the file away",
                path.display()
            ),
            StateError::Io(doing, path, e) => write!(f, "cannot {doing} {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for StateError {}

/// The state directory: `chosen` (`--state-dir`, `PROCACTOR_STATE_DIR`), else
/// `$XDG_STATE_HOME/procactor`, else `~/.local/state/procactor`.
///
/// # Errors
/// When none is given and neither variable is set to an absolute path.
pub(crate) fn state_dir(chosen: Option<&Path>) -> Result<PathBuf, String> {
    match chosen {
        Some(dir) => Ok(dir.to_path_buf()),
        None => default_dir(
            std::env::var_os("XDG_STATE_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        ),
    }
}

fn default_dir(xdg_state: Option<&OsStr>, home: Option<&OsStr>) -> Result<PathBuf, String> {
    match (xdg_state.map(Path::new), home.map(Path::new)) {
        (Some(state), _) if state.is_absolute() => Ok(state.join("procactor")),
        (_, Some(home)) if home.is_absolute() => Ok(home.join(".local/state/procactor")),
        _ => Err("no state directory: set --state-dir (or PROCACTOR_STATE_DIR, or HOME)".into()),
    }
}

/// The state files of one daemon.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

/// How a file read.
enum Read {
    Good(State),
    Missing,
    Damaged(String),
}

impl StateDir {
    /// The files in `dir` (created when first saved).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{FILE}{suffix}"))
    }

    /// Saves `state`: written beside, fsynced, renamed over the current file, whose good
    /// version stays as `.prev`; the directory fsynced last.
    pub(crate) fn save(&self, state: &State) -> Result<(), StateError> {
        let io = |doing: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |e| StateError::Io(doing.into(), path, e)
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("create", &self.dir))?;
        let (current, tmp, prev) = (self.file(""), self.file(".tmp"), self.file(".prev"));
        let text = serde_json::to_vec_pretty(state).expect("a State serializes");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("write", &tmp))?;
        file.write_all(&text).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        drop(file);
        match self.read(&current)? {
            Read::Good(_) => {
                let linking = self.file(".prev.tmp");
                let _ = fs::remove_file(&linking);
                fs::hard_link(&current, &linking).map_err(io("link", &linking))?;
                fs::rename(&linking, &prev).map_err(io("rename", &linking))?;
            }
            Read::Damaged(_) => {
                self.set_aside(&current)?;
            }
            Read::Missing => {}
        }
        fs::rename(&tmp, &current).map_err(io("rename", &tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))
    }

    /// Reads the state back: `state.json`, else `.prev`; whatever is damaged is set aside and
    /// said in the notes.
    ///
    /// # Errors
    /// [`StateError::Newer`] for a file of a later format (left alone); I/O errors.
    pub(crate) fn load(&self) -> Result<Loaded, StateError> {
        let mut loaded = Loaded::default();
        for (suffix, fallback) in [("", false), (".prev", true)] {
            let path = self.file(suffix);
            match self.read(&path)? {
                Read::Good(state) => {
                    if fallback {
                        loaded.notes.push(format!("using {}", path.display()));
                    }
                    loaded.state = Some(state);
                    return Ok(loaded);
                }
                Read::Missing => {}
                Read::Damaged(why) => {
                    let aside = self.set_aside(&path)?;
                    loaded.notes.push(format!(
                        "{} is damaged ({why}): set aside as {}",
                        path.display(),
                        aside.display()
                    ));
                }
            }
        }
        Ok(loaded)
    }

    fn read(&self, path: &Path) -> Result<Read, StateError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Read::Missing),
            Err(e) => return Err(StateError::Io("read".into(), path.to_path_buf(), e)),
        };
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        match serde_json::from_slice::<Format>(&text) {
            Ok(Format { format }) if format > FORMAT => {
                let path = path.to_path_buf();
                return Err(StateError::Newer { path, format });
            }
            Ok(_) => {}
            Err(e) => return Ok(Read::Damaged(e.to_string())),
        }
        Ok(match serde_json::from_slice::<State>(&text) {
            Ok(state) if state.format >= 1 => Read::Good(state),
            Ok(state) => Read::Damaged(format!("format {}", state.format)),
            Err(e) => Read::Damaged(e.to_string()),
        })
    }

    /// Renames `path` to `path.damaged-<time>` (a free name), and returns that name.
    fn set_aside(&self, path: &Path) -> Result<PathBuf, StateError> {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let base = format!("{}.damaged-{stamp}", path.display());
        let aside = (1..)
            .map(|n| {
                PathBuf::from(if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                })
            })
            .find(|p| !p.exists())
            .expect("some name is free");
        fs::rename(path, &aside)
            .map_err(|e| StateError::Io("set aside".into(), path.to_path_buf(), e))?;
        Ok(aside)
    }
}

#[cfg(test)]
mod tests;
