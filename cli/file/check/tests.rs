//! The semantic checks: each problem is refused with the line of the key or value it is about.

use std::path::Path;

use crate::file::{parse, ConfigFile, FileError};

fn parse_ok(text: &str) -> ConfigFile {
    parse(text, Path::new("procactor.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the error is on `line` and its message holds every piece of `says`.
fn assert_error(text: &str, line: usize, says: &[&str]) -> FileError {
    let e = match parse(text, Path::new("procactor.toml")) {
        Ok(file) => panic!("parsed: {file:?}"),
        Err(e) => e,
    };
    assert_eq!(e.at.map(|(l, _)| l), Some(line), "line of: {e}");
    for piece in says {
        assert!(e.message.contains(piece), "{piece:?} not in: {e}");
    }
    e
}

#[test]
fn semantic_errors_are_named_with_their_line() {
    assert_error("[apps.a]\ncommand = \"  \"\n", 2, &["command is empty"]);
    assert_error("[apps.all]\ncommand = \"a\"\n", 1, &["\"all\" is reserved"]);
    assert_error("[apps.\"my app\"]\ncommand = \"a\"\n", 1, &["\"my app\""]);
    assert_error("[daemon]\nmetrics = \"9464\"\n", 2, &["daemon.metrics"]);
    assert_error(
        "[apps.a]\ncommand = \"a\"\nlisten = { http = \"localhost:80\" }\n",
        3,
        &["listen.http"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nlisten = { \"\" = \"127.0.0.1:1\" }\n",
        3,
        &["without ':'"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nenv = { \"A=B\" = \"1\" }\n",
        3,
        &["\"A=B\""],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nlisten = { http = \"127.0.0.1:8080\" }\n\
         [apps.b]\ncommand = \"b\"\nlisten = { web = \"127.0.0.1:8080\" }\n",
        6,
        &["app a"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nready = \"notify\"\nmin_uptime = \"1s\"\n",
        4,
        &["min_uptime"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nready = { tcp = \"nowhere\" }\n",
        3,
        &["host:port"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nready = { http = \"https://h/\" }\n",
        3,
        &["http://"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\nrestart = { backoff = { floor = \"2s\", cap = \"1s\" } }\n",
        3,
        &["floor is above cap"],
    );
}

#[test]
fn liveness_takes_one_of_watchdog_or_http() {
    let with = |liveness: &str| format!("[apps.a]\ncommand = \"a\"\nliveness = {liveness}\n");
    assert_error(&with("{}"), 3, &["one of watchdog or http"]);
    assert_error(
        &with("{ watchdog = \"1s\", http = \"http://h/\" }"),
        3,
        &["one of"],
    );
    assert_error(&with("{ watchdog = \"0s\" }"), 3, &["above 0"]);
    assert_error(
        &with("{ watchdog = \"1s\", every = \"1s\" }"),
        3,
        &["go with http"],
    );
    assert_error(
        &with("{ http = \"http://h/\", failures = 0 }"),
        3,
        &["at least 1"],
    );
    assert_error(
        &with("{ http = \"http://h/\", every = \"0s\" }"),
        3,
        &["every must be above 0"],
    );
    assert_error(&with("{ http = \"not a url\" }"), 3, &["not a URL"]);
}

#[test]
fn a_readiness_probe_on_a_listened_address_is_refused() {
    let with = |listen: &str, ready: &str| {
        format!(
            "[apps.web]\ncommand = \"w\"\nlisten = {{ http = \"{listen}\" }}\nready = {ready}\n"
        )
    };
    for (listen, ready) in [
        ("127.0.0.1:8080", "{ tcp = \"127.0.0.1:8080\" }"),
        ("127.0.0.1:8080", "{ tcp = \"localhost:8080\" }"),
        ("0.0.0.0:8080", "{ tcp = \"10.0.0.1:8080\" }"),
        (
            "127.0.0.1:8080",
            "{ http = \"http://127.0.0.1:8080/ready\" }",
        ),
        ("127.0.0.1:80", "{ http = \"http://localhost/\" }"),
        ("[::1]:8080", "{ tcp = \"[::1]:8080\" }"),
    ] {
        assert_error(&with(listen, ready), 4, &["listen.http", "notify"]);
    }
    // Another port, or another host, is the instance's own address: allowed.
    parse_ok(&with("127.0.0.1:8080", "{ tcp = \"127.0.0.1:9000\" }"));
    parse_ok(&with(
        "127.0.0.1:8080",
        "{ http = \"http://127.0.0.2:8080/\" }",
    ));
    parse_ok(&with("127.0.0.1:8080", "\"notify\""));
}

#[test]
fn depends_on_names_known_apps_without_cycles() {
    assert_error(
        "[apps.a]\ncommand = \"a\"\ndepends_on = { db = \"ready\" }\n",
        3,
        &["no app \"db\""],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\ndepends_on = { a = \"ready\" }\n",
        3,
        &["cycle: a → a"],
    );
    assert_error(
        "[apps.a]\ncommand = \"a\"\ndepends_on = { b = \"ready\" }\n\
         [apps.b]\ncommand = \"b\"\ndepends_on = { c = \"started\" }\n\
         [apps.c]\ncommand = \"c\"\ndepends_on = { a = \"ready\" }\n",
        3,
        &["cycle: a → b → c → a"],
    );
    // A diamond is no cycle.
    parse_ok(
        "[apps.a]\ncommand = \"a\"\ndepends_on = { b = \"ready\", c = \"ready\" }\n\
         [apps.b]\ncommand = \"b\"\ndepends_on = { d = \"ready\" }\n\
         [apps.c]\ncommand = \"c\"\ndepends_on = { d = \"started\" }\n\
         [apps.d]\ncommand = \"d\"\n",
    );
}
