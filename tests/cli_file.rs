//! The `procactor` binary as an operator meets it before any daemon runs: a config error names
//! the key and its line and starts nothing (status 2); a command with no daemon at its socket
//! says so (status 3); a daemon speaking another protocol is named with both versions
//! (status 4) and nothing is printed on stdout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs the binary with `args`; its output once it exits (killed and failed after 60 s).
fn procactor(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_procactor"))
        .args(args)
        .env_remove("PROCACTOR_SOCKET")
        .env_remove("PROCACTOR_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("procactor {args:?} did not exit within 60 s");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_config_error_names_the_key_and_line_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("procactor.toml");
    std::fs::write(
        &config,
        "[apps.web]\ncommand = \"python3\"\nargs = [\"server.py\"]\ninstaces = 3\n",
    )
    .unwrap();
    let socket = tmp.path().join("run/daemon.sock");
    let state = tmp.path().join("state");
    for command in [&["start"][..], &["apply", "--dry-run"]] {
        let mut args = command.to_vec();
        args.extend([
            arg(&config),
            "--socket",
            arg(&socket),
            "--state-dir",
            arg(&state),
        ]);
        let out = procactor(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("unknown field `instaces`"), "{stderr}");
        assert!(
            stderr.contains(&format!("{}:4:1:", config.display())),
            "{stderr}"
        );
        assert!(stderr.contains("4 | instaces = 3"), "{stderr}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
    assert!(!socket.parent().unwrap().exists(), "no socket, no daemon");
    assert!(!state.exists(), "no state");
}

#[test]
fn a_command_with_no_daemon_says_so_with_status_3() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("nothing-here.sock");
    let out = procactor(&["list", "--socket", arg(&socket)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("procactor: no daemon is running at {}", socket.display())
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_daemon_of_another_protocol_is_named_with_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("daemon.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // A daemon of a later build: reads the hello, answers with the mismatch line, closes.
    listener.set_nonblocking(true).unwrap();
    let daemon = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the client never connected");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut hello = String::new();
        BufReader::new(&stream).read_line(&mut hello).unwrap();
        let answer = r#"{"error":{"kind":"protocol_mismatch","client":1,"daemon":99,"version":"9.9.9","pid":4321}}"#;
        writeln!(&stream, "{answer}").unwrap();
        hello
    });
    let out = procactor(&["--json", "list", "--socket", arg(&socket)]);
    let hello = daemon.join().unwrap();
    assert!(hello.starts_with(r#"{"hello":{"protocol":1,"#), "{hello}");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        stderr.contains(&format!(
            "procactor {version} speaks protocol 1, the running daemon (9.9.9, pid 4321) \
             speaks protocol 99"
        )),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no banner in --json output: {}",
        text(&out.stdout)
    );
}
