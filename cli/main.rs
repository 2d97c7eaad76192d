//! `procactor`: the operator's tool over the procactor library — a daemon that supervises any
//! program (one cluster per app, from `procactor.toml`), and the commands that drive it over a
//! Unix socket.
//!
//! Why a binary outside `src/`: it uses only the library's public API, as any user's program
//! would, and the library builds without it (`--no-default-features`, feature `cli`).
//!
//! Every command ends with a documented exit status (`exit.rs`): 0 done, 1 failed, 2 usage or
//! config, 3 no daemon running, 4 protocol version mismatch, 5 refused. Errors go to stderr as
//! one message; stdout carries only what was asked for (text, or JSON with `--json`).
//!
//! Limits of this build: the daemon itself is not here yet. Commands that talk to a daemon do
//! so fully (socket, handshake, request, events, outcome); with none running they say so and
//! exit 3, and `start`/`resurrect` cannot start one yet.

mod args;
mod client;
mod conn;
mod exit;
mod file;
mod handshake;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the daemon maps each app with it")
)]
mod mapping;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "apply plans with it (a later step)")
)]
mod plan;
mod proto;
mod socket;
mod startup;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the daemon saves it, resurrect reads it")
)]
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use args::{Cli, Command};
use exit::{Exit, Failure};
use proto::{Event, Outcome, Request};
use socket::SocketPath;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => Exit::Ok.into(),
        Err(failure) => {
            eprintln!("procactor: {failure}");
            failure.exit.into()
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let socket = socket::socket_path(cli.socket.as_deref());
    let request = match &cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "procactor", &mut std::io::stdout());
            return Ok(());
        }
        Command::Startup => return startup(cli, &socket),
        Command::Start { file, foreground } => {
            let (path, text) = read_config(file)?;
            if *foreground {
                return Err(cannot_start(&socket));
            }
            Request::Start { path, text }
        }
        Command::Resurrect { .. } => return Err(cannot_start(&socket)),
        Command::Apply { file, dry_run } => {
            let (path, text) = read_config(file)?;
            Request::Apply {
                path,
                text,
                dry_run: *dry_run,
            }
        }
        Command::List => Request::List,
        Command::Describe { app, show_env } => Request::Describe {
            app: app.clone(),
            show_env: *show_env,
        },
        Command::Reload { target } => Request::Reload {
            target: target.clone(),
        },
        Command::Restart { target } => Request::Restart {
            target: target.clone(),
        },
        Command::Stop { target } => Request::Stop {
            target: target.clone(),
        },
        Command::Scale { app, n } => Request::Scale {
            app: app.clone(),
            n: *n,
        },
        Command::Logs { app, follow, lines } => Request::Logs {
            app: app.clone(),
            lines: *lines,
            follow: *follow,
        },
        Command::Top => Request::Watch,
        Command::Kill => Request::Kill,
    };
    let starting = matches!(request, Request::Start { .. });
    ask(cli.json, &socket.path, request).map_err(|failure| match failure.exit {
        Exit::NoDaemon if starting => cannot_start(&socket),
        _ => failure,
    })
}

/// Reads and checks a config file before anything else happens (an error starts nothing, and
/// exits 2); returns its absolute path and its text, which the daemon gets as they are.
fn read_config(file: &Path) -> Result<(PathBuf, String), Failure> {
    let (_checked, text) = file::load(file)?;
    let path = std::path::absolute(file)
        .map_err(|e| Failure::new(Exit::Usage, format!("{}: {e}", file.display())))?;
    Ok((path, text))
}

/// `start`/`resurrect` with no daemon to reach: this build has none to start. (One that
/// answers is named instead: `--foreground` would be a second daemon.)
fn cannot_start(socket: &SocketPath) -> Failure {
    let path = socket.path.display();
    if std::os::unix::net::UnixStream::connect(&socket.path).is_ok() {
        return Failure::new(Exit::Failed, format!("a daemon already runs at {path}"));
    }
    Failure::new(
        Exit::NoDaemon,
        format!("no daemon is running at {path}, and this build of procactor cannot start one yet"),
    )
}

/// One request to the daemon: its events and outcome printed, its status returned.
fn ask(json: bool, socket: &Path, request: Request) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a runtime: {e}")))?;
    let on_event = |event: Event| {
        if json {
            println!("{}", serde_json::json!({ "event": event }));
        } else {
            println!("{event}");
        }
    };
    let (_daemon, outcome) = runtime.block_on(client::request(socket, request, on_event))?;
    print_outcome(json, &outcome);
    exit::of_outcome(&outcome)
}

/// The outcome's data on stdout: JSON as it is with `--json`; else text lines as they are,
/// anything else as indented JSON (tables come with the commands' own rendering).
fn print_outcome(json: bool, outcome: &Outcome) {
    let data = &outcome.data;
    match data {
        serde_json::Value::Null => {}
        _ if json => println!("{data}"),
        serde_json::Value::String(text) => println!("{text}"),
        serde_json::Value::Array(lines) if lines.iter().all(|l| l.is_string()) => {
            for line in lines.iter().filter_map(|l| l.as_str()) {
                println!("{line}");
            }
        }
        _ => println!("{data:#}"),
    }
}

fn startup(cli: &Cli, socket: &SocketPath) -> Result<(), Failure> {
    let state_dir =
        state::state_dir(cli.state_dir.as_deref()).map_err(|e| Failure::new(Exit::Usage, e))?;
    let unit = startup::Unit::current(socket.path.clone(), state_dir)
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot find this executable: {e}")))?;
    print!("{}", unit.text());
    Ok(())
}
