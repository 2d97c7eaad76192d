//! The command line, declared with clap's derive: every command of the operator's tool, the
//! options every command takes, and the help texts (`procactor --help`, `procactor CMD --help`).
//!
//! Why clap: argument errors, `--help`, `--version`, environment fallbacks and shell completions
//! (`completions SHELL`, from these same definitions) come from one declaration, with no
//! hand-written parsing. A usage error exits with status 2, as the other configuration errors do.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit::EXIT_STATUS_HELP;
use crate::proto::Target;

/// Supervise any program: a daemon that keeps your apps running, and the commands that
/// drive it.
#[derive(Debug, Parser)]
#[command(name = "procactor", version, after_help = EXIT_STATUS_HELP)]
pub(crate) struct Cli {
    /// The daemon's control socket [default: $XDG_RUNTIME_DIR/procactor/daemon.sock, else
    /// /tmp/procactor-UID/daemon.sock]
    #[arg(long, global = true, env = "PROCACTOR_SOCKET", value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,

    /// The daemon's state directory: its saved state and the apps' logs [default:
    /// $XDG_STATE_HOME/procactor, else ~/.local/state/procactor]
    #[arg(long, global = true, env = "PROCACTOR_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// Print JSON instead of text, for programs (env values stay redacted)
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start the apps of FILE (starting the daemon if none runs); returns once they are ready
    Start {
        /// The config file
        #[arg(default_value = "procactor.toml")]
        file: PathBuf,
        /// Be the daemon, in this process (for systemd and containers)
        #[arg(long)]
        foreground: bool,
    },
    /// One line per instance: app, instance, pid, state, restarts, uptime, CPU %, memory,
    /// generation
    List,
    /// One app in detail: its settings (env values redacted), sockets, recent exits
    Describe {
        /// The app
        app: String,
        /// Show env values
        #[arg(long)]
        show_env: bool,
    },
    /// Replace the instances of APP (or of all apps) one at a time, with no downtime; a new
    /// instance that is not ready stops it, and those not yet replaced keep the old version
    Reload {
        /// An app, or `all`
        #[arg(value_name = "APP|all")]
        target: Target,
    },
    /// Give every instance of APP (or of all apps) a new process, one at a time; each takes over once ready
    Restart {
        /// An app, or `all`
        #[arg(value_name = "APP|all")]
        target: Target,
    },
    /// Stop APP (or all apps); they stay stopped across resurrect
    Stop {
        /// An app, or `all`
        #[arg(value_name = "APP|all")]
        target: Target,
    },
    /// Run N instances of APP
    Scale {
        /// The app
        app: String,
        /// How many instances (at least 1; `stop APP` stops it)
        n: usize,
    },
    /// Show the apps' output, each line prefixed with its app and instance (`web[2]`)
    Logs {
        /// Only this app
        app: Option<String>,
        /// Keep printing new lines
        #[arg(short, long)]
        follow: bool,
        /// How many past lines
        #[arg(long, default_value_t = 20, value_name = "N")]
        lines: usize,
    },
    /// Print what FILE changes (which instances start, stop, reload, and why), then change it
    Apply {
        /// The config file
        file: PathBuf,
        /// Print the plan only
        #[arg(long)]
        dry_run: bool,
    },
    /// A live view of the instances (q quits)
    Top,
    /// Print a systemd unit that runs the daemon at boot (install it as the text says)
    Startup,
    /// Stop every app and the daemon
    Kill,
    /// The daemon itself, as `start` runs it in the background (not for people)
    #[command(hide = true)]
    Daemon {
        /// Start the apps of the state file.
        #[arg(long)]
        resurrect: bool,
    },
    /// Start the daemon with the apps it saved (after a reboot)
    Resurrect {
        /// Be the daemon, in this process (systemd's ExecStart)
        #[arg(long)]
        foreground: bool,
    },
    /// Print shell completions for SHELL
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Target::from(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("procactor").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_of_the_issue_parses() {
        let cases: &[&[&str]] = &[
            &["start"],
            &["start", "apps.toml", "--foreground"],
            &["list"],
            &["describe", "web", "--show-env"],
            &["reload", "web"],
            &["reload", "all"],
            &["restart", "all"],
            &["stop", "web"],
            &["scale", "web", "0"],
            &["logs"],
            &["logs", "web", "-f", "--lines", "5"],
            &["apply", "procactor.toml", "--dry-run"],
            &["top"],
            &["startup"],
            &["kill"],
            &["resurrect", "--foreground"],
            &["completions", "bash"],
        ];
        for args in cases {
            parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn arguments_land_where_they_belong() {
        let cli = parse(&["--json", "--socket", "/s", "--state-dir", "/d", "list"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket.as_deref(), Some(std::path::Path::new("/s")));
        assert_eq!(cli.state_dir.as_deref(), Some(std::path::Path::new("/d")));
        // Globals go after the command too.
        let cli = parse(&["reload", "all", "--json"]).unwrap();
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Reload {
                target: Target::All
            }
        ));
        let cli = parse(&["start"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Start { file, foreground: false } if file == std::path::Path::new("procactor.toml")
        ));
        let cli = parse(&["logs", "web", "-f", "--lines", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Logs { app: Some(app), follow: true, lines: 5 } if app == "web"
        ));
        let cli = parse(&["scale", "web", "3"]).unwrap();
        assert!(matches!(cli.command, Command::Scale { n: 3, .. }));
    }

    #[test]
    fn usage_errors_are_status_2() {
        for args in [
            &["scale", "web"][..],
            &["scale", "web", "-1"],
            &["frobnicate"],
            &["reload"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn help_lists_the_exit_statuses() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3 no daemon running"), "{help}");
    }
}
