//! `describe` for people: one app's settings as the TOML of its table in the file (env values
//! redacted unless `--show-env`, as the daemon sends them), the addresses of its sockets, its
//! instances as `list` shows them, and how each instance's last process ended, with the last
//! lines it wrote to stderr. `--json` prints the daemon's answer as it is instead.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use crate::proto::Instance;
use crate::render;

/// How an instance's last process ended, as the daemon reports it.
#[derive(Debug, Deserialize)]
struct LastExit {
    pid: Option<u32>,
    reason: String,
    uptime_s: f64,
    at_s: f64,
    #[serde(default)]
    last_stderr: Vec<String>,
}

/// The text of a `describe` answer, or `None` when `data` is not one (printed as it is then).
pub(crate) fn text(data: &Value, colour: bool) -> Option<String> {
    let app = data.get("app")?.as_str()?;
    let Value::Object(mut spec) = without_nulls(data.get("spec")?.clone()) else {
        return None;
    };
    // The program first, as a file would have it; the rest as it comes.
    let mut table = toml::Table::new();
    for key in ["command", "args", "cwd", "instances"] {
        if let Some(value) = spec.remove(key) {
            table.insert(key.to_owned(), toml::Value::try_from(value).ok()?);
        }
    }
    for (key, value) in spec {
        table.insert(key, toml::Value::try_from(value).ok()?);
    }
    let apps = toml::Table::from_iter([(app.to_owned(), toml::Value::Table(table))]);
    let file = toml::to_string(&toml::Table::from_iter([(
        "apps".to_owned(),
        toml::Value::Table(apps),
    )]))
    .ok()?;
    let mut out = String::new();
    let _ = writeln!(out, "{}", file.trim_end());
    let sockets = data.get("sockets").and_then(Value::as_object);
    if let Some(sockets) = sockets.filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "\nsockets:");
        let width = sockets.keys().map(String::len).max().unwrap_or(0);
        for (name, addr) in sockets {
            let _ = writeln!(out, "  {name:<width$}  {}", addr.as_str().unwrap_or("?"));
        }
    }
    let rows: Vec<Instance> = serde_json::from_value(data.get("instances")?.clone()).ok()?;
    let _ = write!(out, "\n{}", render::table(&rows, colour));
    let exits: std::collections::BTreeMap<String, LastExit> =
        serde_json::from_value(data.get("last_exits").cloned().unwrap_or_default())
            .unwrap_or_default();
    if !exits.is_empty() {
        let _ = writeln!(out, "\nlast exits:");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for (instance, exit) in &exits {
            let pid = exit.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let _ = writeln!(
                out,
                "  {app}[{instance}] pid {pid}: {}, after {}, {} ago",
                exit.reason,
                render::duration(exit.uptime_s),
                render::duration(now - exit.at_s),
            );
            for line in &exit.last_stderr {
                let _ = writeln!(out, "    | {line}");
            }
        }
    }
    Some(out)
}

/// `value` without its `null`s and empty tables (TOML has no null: a setting not written, or
/// left at its defaults, is left out).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, without_nulls(v)))
                .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_reads_as_its_table_its_sockets_instances_and_last_exits() {
        let data = serde_json::json!({
            "app": "web",
            "spec": {
                "command": "python3",
                "args": ["server.py"],
                "cwd": null,
                "env": { "GREETING": "<redacted>" },
                "instances": 2,
                "listen": { "http": "127.0.0.1:0" },
                "ready": "notify",
                "ready_timeout": "30s",
                "restart": { "on": "failure", "max": 10 },
                "log": {},
            },
            "sockets": { "http": "127.0.0.1:41234" },
            "instances": [{
                "app": "web", "instance": 0, "pid": 4242, "state": "ready", "restarts": 1,
                "uptime_s": 65.0, "cpu_pct": 0.5, "memory_bytes": 1048576, "generation": 1,
            }],
            "last_exits": { "0": {
                "pid": 4100, "reason": "exited with status 1", "uptime_s": 3.0, "at_s": 0.0,
                "last_stderr": ["Traceback (most recent call last):"],
            }},
        });
        let text = text(&data, false).expect("a describe answer");
        assert!(
            text.starts_with("[apps.web]\ncommand = \"python3\"\nargs = [\"server.py\"]\n"),
            "{text}"
        );
        assert!(text.contains("command = \"python3\""), "{text}");
        assert!(text.contains("GREETING = \"<redacted>\""), "{text}");
        assert!(
            !text.contains("cwd"),
            "a setting not written is left out: {text}"
        );
        assert!(
            !text.contains("[apps.web.log]"),
            "nor an empty table: {text}"
        );
        assert!(text.contains("http  127.0.0.1:41234"), "{text}");
        assert!(text.contains("4242") && text.contains("1m"), "{text}");
        assert!(
            text.contains("web[0] pid 4100: exited with status 1, after 3s"),
            "{text}"
        );
        assert!(text.contains("    | Traceback"), "{text}");
        let parsed: toml::Table = text.split("\n\n").next().unwrap().parse().expect("TOML");
        assert_eq!(parsed["apps"]["web"]["instances"].as_integer(), Some(2));
    }

    #[test]
    fn other_answers_are_not_taken_for_one() {
        assert!(text(&serde_json::json!({ "lines": [] }), false).is_none());
        assert!(text(&Value::Null, false).is_none());
    }
}
