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
//! The daemon is this same executable (`procactor daemon`, hidden), started in the background
//! by `start` and `resurrect` (`launch.rs`), or in the foreground with `--foreground`.
//!
//! Output that meets a closed pipe (`procactor list --json | head -1`) ends the command quietly,
//! as Unix tools do, rather than with a panic.

/// `println!` to standard output; a closed pipe ends the process quietly (status 0), another
/// write error with status 1.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            std::process::exit(i32::from(e.kind() != std::io::ErrorKind::BrokenPipe));
        }
    }};
}

/// `print!` to standard output, as [`say!`] does.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = write!(out, $($arg)*).and_then(|()| out.flush()) {
            std::process::exit(i32::from(e.kind() != std::io::ErrorKind::BrokenPipe));
        }
    }};
}

mod args;
mod client;
mod conn;
mod daemon;
mod describe;
mod exit;
mod file;
mod handshake;
mod launch;
mod mapping;
mod plan;
mod proto;
mod render;
mod socket;
mod startup;
mod state;
mod top;

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
                return launch::foreground(cli, socket, Some((path, text)), false);
            }
            launch::ensure_daemon(cli, &socket)?;
            Request::Start { path, text }
        }
        Command::Resurrect { foreground } => {
            if *foreground {
                return launch::foreground(cli, socket, None, true);
            }
            launch::ensure_daemon(cli, &socket)?;
            Request::Resurrect
        }
        Command::Daemon { resurrect } => return launch::daemon(cli, socket, *resurrect),
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
        Command::Top => {
            return top::run(&socket.path);
        }
        Command::Kill => Request::Kill,
    };
    let shown = Shown::of(&request);
    ask(cli.json, &socket.path, request, shown)
}

/// Reads and checks a config file before anything else happens (an error starts nothing, and
/// exits 2); returns its absolute path and its text, which the daemon gets as they are.
fn read_config(file: &Path) -> Result<(PathBuf, String), Failure> {
    let (_checked, text) = file::load(file)?;
    let path = std::path::absolute(file)
        .map_err(|e| Failure::new(Exit::Usage, format!("{}: {e}", file.display())))?;
    Ok((path, text))
}

/// One request to the daemon: its events and outcome printed, its status returned.
fn ask(json: bool, socket: &Path, request: Request, shown: Shown) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a runtime: {e}")))?;
    let colour = render::colours();
    let on_event = |event: Event| match (&event, json) {
        (Event::Line(line), true) => say!("{}", serde_json::json!(line)),
        (Event::Line(line), false) => say!("{}", render::log_line(line, colour)),
        (_, true) => say!("{}", serde_json::json!({ "event": event })),
        (_, false) => say!("{event}"),
    };
    let (_daemon, outcome) = runtime.block_on(client::request(socket, request, on_event))?;
    match shown {
        Shown::Table if !json && outcome.ok => print_table(&outcome, colour),
        Shown::Lines if outcome.ok => print_lines(&outcome, json, colour),
        Shown::Describe if !json && outcome.ok => match describe::text(&outcome.data, colour) {
            Some(text) => say_raw!("{text}"),
            None => print_outcome(json, &outcome),
        },
        _ => print_outcome(json, &outcome),
    }
    exit::of_outcome(&outcome)
}

/// How an outcome's data is printed for people.
#[derive(Debug, Clone, Copy)]
enum Shown {
    /// The instance table.
    Table,
    /// Log lines.
    Lines,
    /// One app in detail.
    Describe,
    /// As it comes.
    Data,
}

impl Shown {
    fn of(request: &Request) -> Shown {
        match request {
            Request::List
            | Request::Resurrect
            | Request::Start { .. }
            | Request::Restart { .. }
            | Request::Scale { .. } => Shown::Table,
            Request::Logs { .. } => Shown::Lines,
            Request::Describe { .. } => Shown::Describe,
            _ => Shown::Data,
        }
    }
}

fn print_table(outcome: &Outcome, colour: bool) {
    // `resurrect` answers what it noticed beside the table.
    let rows = match outcome.data.get("instances") {
        Some(rows) => {
            for note in outcome.data["notes"].as_array().into_iter().flatten() {
                eprintln!("procactor: {}", note.as_str().unwrap_or_default());
            }
            rows.clone()
        }
        None => outcome.data.clone(),
    };
    match serde_json::from_value::<Vec<proto::Instance>>(rows) {
        Ok(rows) => say_raw!("{}", render::table(&rows, colour)),
        Err(_) => print_outcome(false, outcome),
    }
}

fn print_lines(outcome: &Outcome, json: bool, colour: bool) {
    let lines: Vec<proto::Line> = serde_json::from_value(outcome.data.clone()).unwrap_or_default();
    for line in lines {
        if json {
            say!("{}", serde_json::json!(line));
        } else {
            say!("{}", render::log_line(&line, colour));
        }
    }
}

/// The outcome's data on stdout: JSON as it is with `--json`; else text lines as they are,
/// anything else as indented JSON (tables come with the commands' own rendering).
fn print_outcome(json: bool, outcome: &Outcome) {
    let data = &outcome.data;
    match data {
        serde_json::Value::Null => {}
        _ if json => say!("{data}"),
        serde_json::Value::String(text) => say!("{text}"),
        serde_json::Value::Array(lines) if lines.iter().all(|l| l.is_string()) => {
            for line in lines.iter().filter_map(|l| l.as_str()) {
                say!("{line}");
            }
        }
        // `apply`: the plan, a line per change and why.
        serde_json::Value::Object(fields) if fields.get("lines").is_some_and(|l| l.is_array()) => {
            // Applied: the plan came first, as `plan:` notes, then the changes as they went.
            if fields.get("applied") == Some(&serde_json::Value::Bool(true)) {
                say!("applied");
                return;
            }
            for line in fields["lines"].as_array().into_iter().flatten() {
                say!("{}", line.as_str().unwrap_or_default());
            }
            say!("(dry run: nothing changed)");
        }
        // `stop`: the apps it stopped.
        serde_json::Value::Object(fields)
            if fields.get("stopped").is_some_and(|s| s.is_array()) =>
        {
            for app in fields["stopped"].as_array().into_iter().flatten() {
                say!("{}: stopped", app.as_str().unwrap_or_default());
            }
        }
        _ => say!("{data:#}"),
    }
}

fn startup(cli: &Cli, socket: &SocketPath) -> Result<(), Failure> {
    let state_dir =
        state::state_dir(cli.state_dir.as_deref()).map_err(|e| Failure::new(Exit::Usage, e))?;
    let unit = startup::Unit::current(socket.path.clone(), state_dir)
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot find this executable: {e}")))?;
    say_raw!("{}", unit.text());
    Ok(())
}
