//! The program a slot runs and where it runs: finding `exec` as `execvp` would, in the
//! working directory the processes get.
//!
//! The master resolves the program once, when the cluster starts, to a path the child can
//! execute after it has changed to its working directory: a relative path with a `/` is taken
//! from that directory (where a shell started there would find it), a bare name from `PATH`.
//! Limit: `PATH` is the master's, read when the cluster starts; a relative entry in it (`.`) is
//! taken from the master's working directory, not the child's.

use std::path::{Path, PathBuf};

use crate::config::ClusterConfig;
use crate::error::ConfigError;

/// The program a group runs — what [`ClusterConfig::exec`], [`args`](ClusterConfig::args),
/// [`env`](ClusterConfig::env) and [`cwd`](ClusterConfig::cwd) say — as a reload onto a new
/// version may change it ([`Cluster::reload_with`](crate::Cluster::reload_with)).
///
/// ```
/// use procactor::{ClusterConfig, Program};
///
/// let config = ClusterConfig::new().exec("python3").args(["server.py"]).env("GREETING", "hi");
/// let next = Program::of(&config).env("GREETING", "hello");
/// assert_eq!(next.env, [("GREETING".to_string(), "hello".to_string())]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Program {
    /// The program; `None` re-runs this executable in worker role.
    pub exec: Option<PathBuf>,
    /// Its arguments (as [`ClusterConfig::args`]).
    pub args: Option<Vec<String>>,
    /// The environment added for it, on top of the master's. Replaces the config's whole list.
    pub env: Vec<(String, String)>,
    /// Its working directory; `None`: the master's.
    pub cwd: Option<PathBuf>,
}

impl Program {
    /// `exec`, with no arguments, no added environment, in the master's directory.
    pub fn new(exec: impl Into<PathBuf>) -> Self {
        Self {
            exec: Some(exec.into()),
            args: Some(Vec::new()),
            ..Self::default()
        }
    }

    /// The program `config` runs.
    pub fn of(config: &ClusterConfig) -> Self {
        Self {
            exec: config.exec.clone(),
            args: config.args.clone(),
            env: config.env.clone(),
            cwd: config.cwd.clone(),
        }
    }

    /// Replaces the arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `key` to `value` in the added environment (replacing an earlier value of `key`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// `config` with this program in place of its own.
    ///
    /// # Errors
    /// As [`ClusterConfig::validate`] for `exec` and `cwd`: a directory that is not one, a
    /// program that cannot be found or run.
    pub(crate) fn applied_to(&self, config: &ClusterConfig) -> Result<ClusterConfig, ConfigError> {
        check(self.exec.as_deref(), self.cwd.as_deref())?;
        let mut config = config.clone();
        config.exec = self.exec.clone();
        config.args = self.args.clone();
        config.env = self.env.clone();
        config.cwd = self.cwd.clone();
        Ok(config)
    }
}

/// Finds `program` as `execvp` would from `cwd` (the master's working directory when `None`):
/// a path with a `/` as it is (a relative one inside `cwd`), a bare name in `PATH`.
pub(crate) fn resolve_program(program: &Path, cwd: Option<&Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.components().count() > 1 || program.is_absolute() {
        let path = match cwd {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.to_path_buf(),
        };
        return executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Checks that `cwd` is a directory and that `exec` is an executable file found from it.
pub(super) fn check(exec: Option<&Path>, cwd: Option<&Path>) -> Result<(), ConfigError> {
    if let Some(dir) = cwd {
        if !dir.is_dir() {
            return Err(ConfigError {
                field: "cwd",
                reason: format!("{} is not a directory", dir.display()),
            });
        }
    }
    if let Some(program) = exec {
        if resolve_program(program, cwd).is_none() {
            let bare = program.components().count() == 1 && program.is_relative();
            let place = match cwd {
                _ if bare => " in any directory of PATH".to_owned(),
                Some(dir) if program.is_relative() => format!(" in {}", dir.display()),
                _ => String::new(),
            };
            return Err(ConfigError {
                field: "exec",
                reason: format!("{} is not an executable file{place}", program.display()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_program_names_are_found_in_path() {
        assert!(resolve_program(Path::new("sh"), None).is_some());
        assert!(resolve_program(Path::new("no-such-program-procactor"), None).is_none());
        assert!(
            resolve_program(Path::new("sh"), Some(Path::new("/nowhere"))).is_some(),
            "a bare name is looked up in PATH whatever the directory"
        );
    }

    #[test]
    fn a_relative_program_is_found_in_the_working_directory() {
        let found = resolve_program(Path::new("./sh"), Some(Path::new("/bin")));
        assert_eq!(found.as_deref(), Some(Path::new("/bin/./sh")));
        assert!(resolve_program(Path::new("./sh"), Some(Path::new("/"))).is_none());
        assert!(resolve_program(Path::new("/bin/sh"), Some(Path::new("/"))).is_some());
    }

    #[test]
    fn a_missing_program_is_named_with_the_directory_it_was_looked_for_in() {
        let e = check(Some(Path::new("./sh")), Some(Path::new("/"))).unwrap_err();
        assert_eq!(e.field, "exec");
        assert!(
            e.reason.contains("./sh is not an executable file in /"),
            "{}",
            e.reason
        );
        let e = check(
            Some(Path::new("no-such-program-procactor")),
            Some(Path::new("/")),
        )
        .unwrap_err();
        assert!(
            e.reason
                .ends_with("is not an executable file in any directory of PATH"),
            "a bare name is looked for in PATH, not in the working directory: {}",
            e.reason
        );
        let e = check(None, Some(Path::new("/no/such/dir"))).unwrap_err();
        assert_eq!(e.field, "cwd");
        check(Some(Path::new("./sh")), Some(Path::new("/bin"))).unwrap();
    }
}
