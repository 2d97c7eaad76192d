//! `procactor startup`: a systemd unit that brings the daemon and its saved apps back at boot.
//!
//! Why these settings:
//! - `Type=notify` + `NotifyAccess=main`: systemd counts the service as started when the
//!   daemon itself (not an app: their `NOTIFY_SOCKET` is their own) sends `READY=1`, which it
//!   does once its apps are ready; units ordered after it wait for the apps, not for a fork.
//! - `WatchdogSec=30`: the daemon pings `WATCHDOG=1` from its event loop; a hung daemon is
//!   killed and restarted (`Restart=on-failure`) rather than left supervising nothing.
//! - `ExecStart=… resurrect --foreground`: the saved state, in the foreground, as systemd
//!   expects of a `notify` service; `ExecReload=… reload all` is a rolling reload;
//!   `ExecStop=… kill` stops the apps gracefully, each within its `shutdown_timeout`.
//! - `KillMode=mixed`: SIGTERM goes to the daemon only, which stops its apps in order; only
//!   what is left after the stop timeout is killed, group-wide.
//! - The socket and the state directory are pinned (`Environment=`) to the ones this command
//!   resolves now, so the commands a person types later reach the same daemon.
//!
//! It runs as the user who ran `startup` (`User=`, unless root), like PM2's `startup`. The text
//! goes to stdout, with how to install it in comments, so that
//! `procactor startup | sudo tee /etc/systemd/system/procactor.service` is the whole step.
//!
//! Limits: systemd only. A socket under `/run/user/UID` exists while that user has a session
//! or lingers; the unit says so when it applies.

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What the unit is made of.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// This executable.
    pub(crate) exe: PathBuf,
    /// The control socket.
    pub(crate) socket: PathBuf,
    /// The state directory.
    pub(crate) state_dir: PathBuf,
    /// The user to run as (`None`: root).
    pub(crate) user: Option<String>,
}

impl Unit {
    /// The unit for the current user, executable and paths.
    ///
    /// # Errors
    /// When this executable's path cannot be found.
    pub(crate) fn current(socket: PathBuf, state_dir: PathBuf) -> std::io::Result<Unit> {
        let uid = nix::unistd::geteuid();
        let user = (!uid.is_root()).then(|| match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => user.name,
            _ => uid.to_string(), // systemd takes a numeric User= too
        });
        Ok(Unit {
            exe: std::env::current_exe()?,
            socket,
            state_dir,
            user,
        })
    }

    /// The unit file's text.
    pub(crate) fn text(&self) -> String {
        let exe = exec_arg(&self.exe);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# procactor: the daemon, and the apps it saved, at boot."
        );
        let _ = writeln!(
            t,
            "# Install: save as /etc/systemd/system/procactor.service, then"
        );
        let _ = writeln!(
            t,
            "#   systemctl daemon-reload && systemctl enable --now procactor"
        );
        if let (Some(user), true) = (&self.user, self.socket.starts_with("/run/user")) {
            let _ = writeln!(
                t,
                "# The socket is under /run/user, which exists at boot only if {user} lingers:\n\
                 #   loginctl enable-linger {user}"
            );
        }
        t.push_str("\n[Unit]\nDescription=procactor: supervised apps\n");
        t.push_str("After=network.target\n\n[Service]\n");
        t.push_str("Type=notify\nNotifyAccess=main\n");
        if let Some(user) = &self.user {
            let _ = writeln!(t, "User={user}");
        }
        let _ = writeln!(
            t,
            "Environment={}",
            env_arg("PROCACTOR_SOCKET", &self.socket)
        );
        let _ = writeln!(
            t,
            "Environment={}",
            env_arg("PROCACTOR_STATE_DIR", &self.state_dir)
        );
        let _ = writeln!(t, "ExecStart={exe} resurrect --foreground");
        let _ = writeln!(t, "ExecReload={exe} reload all");
        let _ = writeln!(t, "ExecStop={exe} kill");
        t.push_str("WatchdogSec=30\nKillMode=mixed\nRestart=on-failure\n\n");
        t.push_str("[Install]\nWantedBy=multi-user.target\n");
        t
    }
}

/// `s` escaped for a unit file: specifiers (`%`) doubled, and quoted when it has a space, a
/// quote or a backslash (systemd.syntax(7)).
fn quoted(s: &str) -> String {
    let s = s.replace('%', "%%");
    if s.contains([' ', '\t', '"', '\'', '\\']) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// A path as a command-line word of `ExecStart=` and the like, where `$` expands variables.
fn exec_arg(path: &Path) -> String {
    quoted(&path.to_string_lossy().replace('$', "$$"))
}

/// `NAME=path` as one `Environment=` assignment.
fn env_arg(name: &str, path: &Path) -> String {
    quoted(&format!("{name}={}", path.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(user: Option<&str>, socket: &str) -> Unit {
        Unit {
            exe: PathBuf::from("/usr/local/bin/procactor"),
            socket: PathBuf::from(socket),
            state_dir: PathBuf::from("/home/alice/.local/state/procactor"),
            user: user.map(String::from),
        }
    }

    #[test]
    fn the_unit_has_every_line_the_issue_asks() {
        let text = unit(None, "/tmp/procactor-0/daemon.sock").text();
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "ExecStart=/usr/local/bin/procactor resurrect --foreground",
            "ExecReload=/usr/local/bin/procactor reload all",
            "ExecStop=/usr/local/bin/procactor kill",
            "WatchdogSec=30",
            "KillMode=mixed",
            "Environment=PROCACTOR_SOCKET=/tmp/procactor-0/daemon.sock",
            "Environment=PROCACTOR_STATE_DIR=/home/alice/.local/state/procactor",
            "WantedBy=multi-user.target",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(!text.contains("User="), "root's unit runs as root");
        assert!(!text.contains("linger"));
        // Every line is a comment, a section, a key=value or blank: a valid unit file.
        for line in text.lines() {
            let ok = line.is_empty()
                || line.starts_with('#')
                || line.starts_with('[')
                || line.contains('=');
            assert!(ok, "{line:?}");
        }
    }

    #[test]
    fn a_users_unit_runs_as_that_user_and_says_when_to_linger() {
        let text = unit(Some("alice"), "/run/user/1000/procactor/daemon.sock").text();
        assert!(text.lines().any(|l| l == "User=alice"), "{text}");
        assert!(text.contains("#   loginctl enable-linger alice"), "{text}");
    }

    #[test]
    fn paths_are_escaped_for_systemd() {
        let mut u = unit(None, "/tmp/my dir/d.sock");
        u.exe = PathBuf::from("/opt/100% tools/$bin/procactor");
        let text = u.text();
        assert!(
            text.contains("ExecStart=\"/opt/100%% tools/$$bin/procactor\" resurrect --foreground"),
            "{text}"
        );
        assert!(
            text.contains("Environment=\"PROCACTOR_SOCKET=/tmp/my dir/d.sock\""),
            "{text}"
        );
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn the_current_unit_names_this_executable() {
        let u = Unit::current(PathBuf::from("/s"), PathBuf::from("/d")).unwrap();
        assert_eq!(u.exe, std::env::current_exe().unwrap());
        assert_eq!(u.user.is_none(), nix::unistd::geteuid().is_root());
    }
}
