//! What `apply` would do: the difference between the apps that run and a new file, as a list
//! of changes with their reasons, computed before anything is touched.
//!
//! Why a pure function: `apply --dry-run` must print exactly what `apply` then does, so both
//! use this one plan, and it is tested without a process. The classes follow what the library
//! can change on a live app:
//! - **reload** (rolling, no downtime): the program changed — `command`, `args`, `env`, `cwd`;
//! - **scale**: only `instances` changed (after a reload when both changed);
//! - **restart** (the app's instances stop, then start: downtime for that app): what a cluster
//!   fixes when it starts — `listen`, readiness (`ready`, `ready_timeout`, `min_uptime`),
//!   `liveness`, `shutdown_timeout`, `restart`, `log`;
//! - **start** / **stop**: an app added or removed; **keep**: nothing to do.
//!
//! `depends_on` orders starts only, so changing it changes nothing that runs. `[daemon]`
//! settings take effect when the daemon next starts; the plan says so.
//!
//! Secrets: reasons name what changed, never a value — env values, args and paths are not
//! printed; only the command (a program name) is shown before and after.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::file::{AppSpec, ConfigFile, Instances};

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(crate) enum Change {
    /// `[daemon]` changed; applies at the daemon's next start.
    Daemon { why: Vec<Why> },
    /// A new app: start its instances.
    Start { app: String, instances: Instances },
    /// An app no longer in the file: stop its instances.
    Stop { app: String },
    /// Replace the app's instances one by one with the new program.
    Reload { app: String, why: Vec<Why> },
    /// Change the number of instances.
    Scale {
        app: String,
        from: Instances,
        to: Instances,
    },
    /// Stop the app's instances, then start them with the new settings.
    Restart { app: String, why: Vec<Why> },
    /// Nothing changes.
    Keep { app: String },
}

/// Why an app changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Why {
    /// The program, before and after.
    Command { from: String, to: String },
    /// A variable added, removed or changed (value never shown).
    Env { key: String, how: &'static str },
    /// Any other setting, by its key in the file.
    Changed(&'static str),
    /// The number of instances (within a restart).
    Instances { from: Instances, to: Instances },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Command { from, to } => write!(f, "command {from} → {to}"),
            Why::Env { key, how } => write!(f, "env {key} {how}"),
            Why::Changed(key) => write!(f, "{key} changed"),
            Why::Instances { from, to } => write!(f, "instances {from} → {to}"),
        }
    }
}

impl Serialize for Why {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn reasons(why: &[Why]) -> String {
    why.iter()
        .map(Why::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Daemon { why } => write!(
                f,
                "daemon: {} (takes effect at the daemon's next start)",
                reasons(why)
            ),
            Change::Start { app, instances } => match instances {
                Instances::Count(1) => write!(f, "start {app}: 1 instance"),
                Instances::Count(n) => write!(f, "start {app}: {n} instances"),
                Instances::Auto => write!(f, "start {app}: one instance per CPU"),
            },
            Change::Stop { app } => write!(f, "stop {app}"),
            Change::Reload { app, why } => write!(f, "reload {app}: {}", reasons(why)),
            Change::Scale { app, from, to } => write!(f, "scale {app}: instances {from} → {to}"),
            Change::Restart { app, why } => write!(f, "restart {app}: {}", reasons(why)),
            Change::Keep { app } => write!(f, "keep {app}"),
        }
    }
}

/// The changes that turn `running` (the apps as they run, scale changes included) into `new`:
/// the daemon's first, then the new file's apps in its order, then the apps it drops.
pub(crate) fn plan(running: &ConfigFile, new: &ConfigFile) -> Vec<Change> {
    let mut changes = Vec::new();
    if running.daemon != new.daemon {
        changes.push(Change::Daemon {
            why: vec![Why::Changed("metrics")],
        });
    }
    for (name, app) in &new.apps {
        let app_name = name.get_ref().clone();
        let Some(old) = running.apps.get(name.get_ref().as_str()) else {
            changes.push(Change::Start {
                app: app_name,
                instances: app.instances,
            });
            continue;
        };
        let restart = restart_reasons(old, app);
        if !restart.is_empty() {
            let mut why = restart;
            if old.instances != app.instances {
                why.push(Why::Instances {
                    from: old.instances,
                    to: app.instances,
                });
            }
            changes.push(Change::Restart { app: app_name, why });
            continue;
        }
        let reload = reload_reasons(old, app);
        let scale = old.instances != app.instances;
        if reload.is_empty() && !scale {
            changes.push(Change::Keep { app: app_name });
            continue;
        }
        if !reload.is_empty() {
            changes.push(Change::Reload {
                app: app_name.clone(),
                why: reload,
            });
        }
        if scale {
            changes.push(Change::Scale {
                app: app_name,
                from: old.instances,
                to: app.instances,
            });
        }
    }
    for name in running.apps.keys() {
        if !new.apps.contains_key(name.get_ref().as_str()) {
            changes.push(Change::Stop {
                app: name.get_ref().clone(),
            });
        }
    }
    changes
}

/// What a rolling reload with the new program covers.
fn reload_reasons(old: &AppSpec, new: &AppSpec) -> Vec<Why> {
    let mut why = Vec::new();
    if old.command.get_ref() != new.command.get_ref() {
        why.push(Why::Command {
            from: old.command.get_ref().clone(),
            to: new.command.get_ref().clone(),
        });
    }
    if old.args != new.args {
        why.push(Why::Changed("args"));
    }
    for (key, value) in &new.env {
        match old.env.get(key.get_ref().as_str()) {
            None => why.push(env(key.get_ref(), "added")),
            Some(before) if before != value => why.push(env(key.get_ref(), "changed")),
            Some(_) => {}
        }
    }
    for key in old.env.keys() {
        if !new.env.contains_key(key.get_ref().as_str()) {
            why.push(env(key.get_ref(), "removed"));
        }
    }
    if old.cwd != new.cwd {
        why.push(Why::Changed("cwd"));
    }
    why
}

fn env(key: &str, how: &'static str) -> Why {
    Why::Env {
        key: key.to_string(),
        how,
    }
}

/// What the library fixes when an app's cluster starts.
fn restart_reasons(old: &AppSpec, new: &AppSpec) -> Vec<Why> {
    let listen = |a: &AppSpec| -> Vec<(String, String)> {
        a.listen
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect()
    };
    let min_uptime = |a: &AppSpec| a.min_uptime.as_ref().map(|d| *d.get_ref());
    let liveness = |a: &AppSpec| a.liveness.as_ref().map(|l| l.get_ref().clone());
    [
        ("listen", listen(old) != listen(new)),
        ("ready", old.readiness() != new.readiness()),
        ("ready_timeout", old.ready_timeout != new.ready_timeout),
        ("min_uptime", min_uptime(old) != min_uptime(new)),
        ("liveness", liveness(old) != liveness(new)),
        (
            "shutdown_timeout",
            old.shutdown_timeout != new.shutdown_timeout,
        ),
        ("restart", old.restart != new.restart),
        ("log", old.log != new.log),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| Why::Changed(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::file::parse;

    fn file(text: &str) -> ConfigFile {
        parse(text, Path::new("procactor.toml")).unwrap()
    }

    fn lines(running: &str, new: &str) -> Vec<String> {
        plan(&file(running), &file(new))
            .iter()
            .map(Change::to_string)
            .collect()
    }

    const WEB: &str = "[apps.web]\ncommand = \"python3\"\nargs = [\"server.py\"]\ninstances = 3\n\
        env = { GREETING = \"hi\", DB_PASSWORD = \"s3cret\" }\nlisten = { http = \"127.0.0.1:8080\" }\n";

    #[test]
    fn the_same_file_keeps_everything() {
        assert_eq!(lines(WEB, WEB), ["keep web"]);
        // Spans differ, values do not: a reformatted file is the same file.
        let moved = format!("\n\n# comment\n{WEB}");
        assert_eq!(lines(WEB, &moved), ["keep web"]);
        assert_eq!(lines("", ""), Vec::<String>::new());
    }

    #[test]
    fn added_and_removed_apps_start_and_stop() {
        let api = "[apps.api]\ncommand = \"node\"\ninstances = \"auto\"\n";
        assert_eq!(
            lines(WEB, &format!("{api}{WEB}")),
            ["start api: one instance per CPU", "keep web"]
        );
        assert_eq!(
            lines("", "[apps.one]\ncommand = \"x\"\n"),
            ["start one: 1 instance"]
        );
        assert_eq!(lines("", WEB), ["start web: 3 instances"]);
        assert_eq!(lines(&format!("{WEB}{api}"), WEB), ["keep web", "stop api"]);
    }

    #[test]
    fn a_changed_program_is_a_reload_with_its_reasons() {
        let new = WEB
            .replace("\"python3\"", "\"python3.12\"")
            .replace("server.py", "app.py")
            .replace("GREETING = \"hi\"", "GREETING = \"hello\", MODE = \"x\"")
            .replace(", DB_PASSWORD = \"s3cret\"", "");
        assert_eq!(
            lines(WEB, &format!("{new}cwd = \"srv\"\n")),
            [
                "reload web: command python3 → python3.12, args changed, env GREETING changed, \
              env MODE added, env DB_PASSWORD removed, cwd changed"
            ]
        );
    }

    #[test]
    fn env_values_are_never_shown() {
        let new = WEB.replace("s3cret", "n3wsecret");
        let changes = plan(&file(WEB), &file(&new));
        assert_eq!(
            changes[0].to_string(),
            "reload web: env DB_PASSWORD changed"
        );
        let json = serde_json::to_string(&changes).unwrap();
        assert!(
            !json.contains("s3cret") && !json.contains("n3wsecret"),
            "{json}"
        );
        assert_eq!(
            json,
            r#"[{"change":"reload","app":"web","why":["env DB_PASSWORD changed"]}]"#
        );
    }

    #[test]
    fn instances_alone_is_a_scale_and_after_a_reload_with_it() {
        let more = WEB.replace("instances = 3", "instances = 5");
        assert_eq!(lines(WEB, &more), ["scale web: instances 3 → 5"]);
        let auto = WEB.replace("instances = 3", "instances = \"auto\"");
        assert_eq!(lines(WEB, &auto), ["scale web: instances 3 → auto"]);
        let both = more.replace("s3cret", "other");
        assert_eq!(
            lines(WEB, &both),
            [
                "reload web: env DB_PASSWORD changed",
                "scale web: instances 3 → 5"
            ]
        );
    }

    #[test]
    fn what_a_cluster_fixes_at_start_is_a_restart() {
        let port = WEB.replace("8080", "8081");
        assert_eq!(lines(WEB, &port), ["restart web: listen changed"]);
        let with = |extra: &str| format!("{WEB}{extra}\n");
        for (extra, key) in [
            ("ready = \"notify\"", "ready"),
            ("ready_timeout = \"3s\"", "ready_timeout"),
            ("min_uptime = \"1s\"", "min_uptime"),
            ("liveness = { watchdog = \"5s\" }", "liveness"),
            ("shutdown_timeout = \"1s\"", "shutdown_timeout"),
            ("restart = { max = 1 }", "restart"),
            ("log = { keep = 1 }", "log"),
        ] {
            assert_eq!(
                lines(WEB, &with(extra)),
                [format!("restart web: {key} changed")]
            );
        }
        // "spawn" is the default: writing it changes nothing.
        assert_eq!(lines(WEB, &with("ready = \"spawn\"")), ["keep web"]);
        // A restart takes the program and the count with it, and says so.
        let all = port
            .replace("instances = 3", "instances = 2")
            .replace("hi", "ho");
        assert_eq!(
            lines(WEB, &all),
            ["restart web: listen changed, instances 3 → 2"]
        );
    }

    #[test]
    fn listen_order_is_the_fd_order() {
        let two =
            "[apps.a]\ncommand = \"a\"\nlisten = { x = \"127.0.0.1:1\", y = \"127.0.0.1:2\" }\n";
        let swapped =
            "[apps.a]\ncommand = \"a\"\nlisten = { y = \"127.0.0.1:2\", x = \"127.0.0.1:1\" }\n";
        assert_eq!(lines(two, swapped), ["restart a: listen changed"]);
    }

    #[test]
    fn depends_on_changes_nothing_running_and_daemon_settings_wait() {
        let two = "[apps.a]\ncommand = \"a\"\n[apps.b]\ncommand = \"b\"\n";
        let ordered = "[apps.a]\ncommand = \"a\"\ndepends_on = { b = \"ready\" }\n[apps.b]\ncommand = \"b\"\n";
        assert_eq!(lines(two, ordered), ["keep a", "keep b"]);
        let metrics = format!("[daemon]\nmetrics = \"127.0.0.1:9464\"\n{two}");
        assert_eq!(
            lines(two, &metrics)[0],
            "daemon: metrics changed (takes effect at the daemon's next start)"
        );
    }
}
