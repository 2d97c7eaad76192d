//! Every key of `procactor.toml`, the issue's snippet, and serde's errors: each names the key
//! and its line (the semantic checks' tests are in `check/tests.rs`).

use std::path::Path;
use std::time::Duration;

use super::*;

fn parse_ok(text: &str) -> ConfigFile {
    parse(text, Path::new("procactor.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> FileError {
    match parse(text, Path::new("procactor.toml")) {
        Ok(file) => panic!("parsed: {file:?}"),
        Err(e) => e,
    }
}

/// Asserts the error is on `line` and its message holds every piece of `says`.
fn assert_error(text: &str, line: usize, says: &[&str]) -> FileError {
    let e = parse_err(text);
    assert_eq!(e.at.map(|(l, _)| l), Some(line), "line of: {e}");
    for piece in says {
        assert!(e.message.contains(piece), "{piece:?} not in: {e}");
    }
    e
}

fn app<'a>(file: &'a ConfigFile, name: &str) -> &'a AppSpec {
    &file.apps[name]
}

const ISSUE_SNIPPET: &str = r#"[apps.web]
command = "python3"
args = ["server.py"]
instances = 3
listen = { http = "127.0.0.1:8080" }
ready = "notify"
"#;

#[test]
fn the_issues_snippet_parses_as_written() {
    let file = parse_ok(ISSUE_SNIPPET);
    let web = app(&file, "web");
    assert_eq!(web.command.get_ref(), "python3");
    assert_eq!(web.args, ["server.py"]);
    assert_eq!(web.instances, Instances::Count(3));
    assert_eq!(web.listen["http"].get_ref(), "127.0.0.1:8080");
    assert_eq!(web.readiness(), &Readiness::Notify);
}

#[test]
fn every_key_is_read() {
    let file = parse_ok(
        r#"
[daemon]
metrics = "127.0.0.1:9464"

[apps.db]
command = "./db"

[apps.web]
command = "python3"
args = ["server.py", "--quiet"]
cwd = "srv"
env = { GREETING = "hi", DB_PASSWORD = "s3cret" }
instances = "auto"
listen = { http = "127.0.0.1:8080", admin = "unix:/tmp/web.sock" }
ready = "spawn"
ready_timeout = "10s"
min_uptime = "1s 500ms"
liveness = { watchdog = "5s" }
shutdown_timeout = "3s"
restart = { on = "on-failure", max = 7, within = "1m", backoff = { floor = "50ms", cap = "2s" } }
depends_on = { db = "started" }
log = { max_bytes = 1048576, keep = 2 }
"#,
    );
    assert_eq!(
        file.daemon.metrics.as_ref().unwrap().get_ref(),
        "127.0.0.1:9464"
    );
    assert_eq!(
        file.apps.keys().map(|k| k.get_ref()).collect::<Vec<_>>(),
        ["db", "web"]
    );
    let web = app(&file, "web");
    assert_eq!(web.args, ["server.py", "--quiet"]);
    assert_eq!(web.cwd.as_deref(), Some(Path::new("srv")));
    assert_eq!(web.env["GREETING"], "hi");
    assert_eq!(web.env["DB_PASSWORD"], "s3cret");
    assert_eq!(web.instances, Instances::Auto);
    let listen: Vec<_> = web
        .listen
        .iter()
        .map(|(k, v)| (k.as_str(), v.get_ref().as_str()))
        .collect();
    assert_eq!(
        listen,
        [("http", "127.0.0.1:8080"), ("admin", "unix:/tmp/web.sock")],
        "order kept"
    );
    assert_eq!(web.readiness(), &Readiness::Spawn);
    assert_eq!(web.ready_timeout, Some(Dur(Duration::from_secs(10))));
    assert_eq!(
        web.min_uptime.as_ref().unwrap().get_ref().0,
        Duration::from_millis(1500)
    );
    let liveness = web.liveness.as_ref().unwrap().get_ref();
    assert_eq!(liveness.watchdog, Some(Dur(Duration::from_secs(5))));
    assert_eq!(web.shutdown_timeout, Some(Dur(Duration::from_secs(3))));
    assert_eq!(web.restart.on, RestartOn::OnFailure);
    assert_eq!(web.restart.max, Some(7));
    assert_eq!(web.restart.within, Some(Dur(Duration::from_secs(60))));
    let backoff = web.restart.backoff.as_ref().unwrap().get_ref();
    assert_eq!(
        (backoff.floor.0, backoff.cap.0),
        (Duration::from_millis(50), Duration::from_secs(2))
    );
    assert_eq!(
        web.dependencies().collect::<Vec<_>>(),
        [(&"db".to_string(), &Condition::Started)]
    );
    assert_eq!(
        web.log,
        LogSpec {
            max_bytes: Some(1 << 20),
            keep: Some(2)
        }
    );
}

#[test]
fn defaults_when_only_the_command_is_given() {
    let file = parse_ok("[apps.one]\ncommand = \"sleep\"\n");
    let one = app(&file, "one");
    assert_eq!(one.instances, Instances::Count(1));
    assert_eq!(one.readiness(), &Readiness::Spawn);
    assert!(one.args.is_empty() && one.env.is_empty() && one.listen.is_empty());
    assert_eq!(
        (
            one.cwd.as_ref(),
            one.liveness.as_ref(),
            one.depends_on.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(one.restart, RestartSpec::default());
    assert_eq!(one.log, LogSpec::default());
    assert_eq!(file.daemon, DaemonSpec::default());
    assert_eq!(
        parse_ok(""),
        ConfigFile::default(),
        "an empty file runs nothing"
    );
}

#[test]
fn readiness_probes_and_http_liveness_are_read() {
    let file = parse_ok(
        r#"
[apps.a]
command = "a"
ready = { tcp = "127.0.0.1:9001" }
liveness = { http = "http://127.0.0.1:9001/health", every = "2s", failures = 3 }
[apps.b]
command = "b"
ready = { http = "http://localhost:9002/ready" }
restart = { on = "never" }
depends_on = { a = "ready" }
"#,
    );
    assert_eq!(
        app(&file, "a").readiness(),
        &Readiness::Tcp("127.0.0.1:9001".into())
    );
    let liveness = app(&file, "a").liveness.as_ref().unwrap().get_ref();
    assert_eq!(
        liveness.http.as_deref(),
        Some("http://127.0.0.1:9001/health")
    );
    assert_eq!(
        (liveness.every, liveness.failures),
        (Some(Dur(Duration::from_secs(2))), Some(3))
    );
    assert_eq!(
        app(&file, "b").readiness(),
        &Readiness::Http("http://localhost:9002/ready".into())
    );
    assert_eq!(app(&file, "b").restart.on, RestartOn::Never);
    assert_eq!(
        app(&file, "b").dependencies().next().unwrap().1,
        &Condition::Ready
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let e = assert_error(
        "[apps.web]\ncommand = \"x\"\ninstaces = 3\n",
        3,
        &["instaces", "instances"],
    );
    assert_eq!(e.at, Some((3, 1)));
    let shown = e.to_string();
    assert!(
        shown.starts_with("procactor.toml:3:1: unknown field `instaces`"),
        "{shown}"
    );
    assert!(shown.contains("3 | instaces = 3\n  | ^^^^^^^^"), "{shown}");
    // Every table denies unknown keys, however deep.
    assert_error("[daemon]\nmetric = \"x:1\"\n", 2, &["metric"]);
    assert_error(
        "[apps.a]\ncommand = \"a\"\nrestart = { on = \"always\", tries = 2 }\n",
        3,
        &["tries"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nrestart = { backoff = { floor = \"1s\", ceiling = \"2s\" } }\n",
        3,
        &["ceiling"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nlog = { max_size = 1 }\n",
        3,
        &["max_size"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nliveness = { watchdog = \"1s\", period = 1 }\n",
        3,
        &["period"],
    );
    assert_error("[server]\nport = 1\n", 1, &["server"]);
}

#[test]
fn wrong_types_and_values_are_named_with_their_line() {
    assert_error(
        "[apps.a]\ncommand = \"a\"\ninstances = 0\n",
        3,
        &["instances = 0"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\ninstances = -2\n",
        3,
        &["at least 1"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\ninstances = \"many\"\n",
        3,
        &["\"auto\""],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nready = \"notfy\"\n",
        3,
        &["notfy", "notify"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nready_timeout = \"ten\"\n",
        3,
        &["ten"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nrestart = { on = \"sometimes\" }\n",
        3,
        &["sometimes"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\ndepends_on = { b = \"up\" }\n[apps.b]\ncommand = \"b\"\n",
        3,
        &["up"],
    );
    assert_error("[apps.a]\ncommand = 3\n", 2, &["string"]);
    assert_error("[apps.a]\nargs = [\"x\"]\n", 1, &["command"]);
    assert_error(
        "[apps.a]\ncommand = \"a\"\nargs = \"x y\"\n",
        3,
        &["sequence"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\ncommand = \"b\"\n",
        3,
        &["duplicate"],
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let e = load(Path::new("/nonexistent/procactor.toml")).unwrap_err();
    assert_eq!(e.at, None);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/procactor.toml: cannot read it"),
        "{e}"
    );
}

#[test]
fn instances_and_durations_write_back_as_read() {
    let web = &parse_ok(ISSUE_SNIPPET).apps["web"];
    let json = serde_json::to_value(web).unwrap();
    assert_eq!(json["instances"], 3);
    assert_eq!(json["ready"], "notify");
    let auto =
        &parse_ok("[apps.a]\ncommand = \"a\"\ninstances = \"auto\"\nready_timeout = \"1m\"\n").apps
            ["a"];
    let json = serde_json::to_value(auto).unwrap();
    assert_eq!(
        (json["instances"].as_str(), json["ready_timeout"].as_str()),
        (Some("auto"), Some("1m"))
    );
    assert_eq!(Instances::Auto.to_string(), "auto");
}

#[test]
fn an_error_in_an_env_table_names_its_place_but_never_echoes_a_value() {
    let inline = parse_err("[apps.web]\ncommand = \"x\"\nenv = { DB_PASSWORD = 42 }\n");
    let text = inline.to_string();
    assert!(text.contains(":3:"), "{text}");
    assert!(!text.contains("42"), "the value is not echoed: {text}");
    let table = parse_err("[apps.web]\ncommand = \"x\"\n[apps.web.env]\nTOKEN = [\"s3cret\"]\n");
    let text = table.to_string();
    assert!(text.contains(":4:"), "{text}");
    assert!(!text.contains("s3cret"), "the value is not echoed: {text}");
    // Elsewhere the line is shown.
    let other = parse_err("[apps.web]\ncommand = \"x\"\ninstaces = 3\n");
    assert!(other.to_string().contains("instaces = 3"), "{other}");
}
