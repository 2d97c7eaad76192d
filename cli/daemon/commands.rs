//! What the daemon does for each request: the operator's commands over the running apps.
//!
//! Each command answers an [`Outcome`]: `ok` with its data (rows, a plan, a description), or an
//! error with a kind for programs and a message for people. Commands that change what runs hold
//! [`Daemon::changing`] and write the state file after the change.

use std::path::Path;
use std::rc::Rc;

use serde_json::json;

use super::app::{App, Unstarted};
use super::{Daemon, Loaded};
use crate::file::{self, AppSpec, ConfigFile, Instances};
use crate::plan::{self, Change};
use crate::proto::{Event, Outcome, OutcomeError, Target};

/// A successful outcome with `data`.
pub(crate) fn ok(data: serde_json::Value) -> Outcome {
    Outcome {
        ok: true,
        error: None,
        data,
    }
}

/// A failed outcome.
pub(crate) fn failed(kind: &str, message: impl Into<String>) -> Outcome {
    Outcome {
        ok: false,
        error: Some(OutcomeError {
            kind: kind.to_owned(),
            message: message.into(),
        }),
        data: serde_json::Value::Null,
    }
}

/// Every instance, as `list` shows them.
pub(crate) async fn list(d: &Daemon) -> Outcome {
    match d.instances().await {
        Ok(rows) => ok(json!(rows)),
        Err(e) => failed("internal", e),
    }
}

/// Runs the file at `path` (its `text` as the client read it): starts every app of it that is
/// not running, in `depends_on` order, and answers the table once they are ready.
pub(crate) async fn start(d: &Daemon, path: &Path, text: &str) -> Outcome {
    let _changing = d.changing.lock().await;
    let new = match file::parse(text, path) {
        Ok(file) => file,
        Err(e) => return failed("config", e.to_string()),
    };
    if let Some(refusal) = start_refused(d, path, &new) {
        return failed("config", refusal);
    }
    let loaded = Loaded {
        path: path.to_path_buf(),
        text: text.to_owned(),
        file: new,
    };
    if let Err(e) = d.serve_metrics(&loaded.file) {
        return failed("config", e);
    }
    // Starting again what was stopped: `start` is the operator's word for it.
    d.stopped.borrow_mut().clear();
    *d.loaded.borrow_mut() = Some(loaded.clone());
    if let Err(e) = start_missing(d, &loaded).await {
        save_state(d);
        return failed(if e.config { "config" } else { "start_failed" }, e.message);
    }
    save_state(d);
    drop(_changing);
    list(d).await
}

/// Why `start` of `new` (at `path`) must go through `apply`, if it must: `start` never changes
/// what runs, it starts what does not. So it is refused for another file while apps run, and
/// for this file when it changes an app that runs (or the daemon's own settings); an app that
/// failed to start, or none running at all, is no obstacle.
fn start_refused(d: &Daemon, path: &Path, new: &ConfigFile) -> Option<String> {
    let apps = d.apps.borrow();
    if apps.is_empty() {
        return None;
    }
    let loaded = d.loaded.borrow();
    let loaded = loaded.as_ref()?;
    if loaded.path != path {
        return Some(format!(
            "the daemon runs {}; change it with `procactor apply {}`",
            loaded.path.display(),
            path.display()
        ));
    }
    let changed: Vec<&str> = apps
        .keys()
        .filter(|name| loaded.file.apps.get(name.as_str()) != new.apps.get(name.as_str()))
        .map(String::as_str)
        .collect();
    if changed.is_empty() && loaded.file.daemon == new.daemon {
        return None;
    }
    let what = if changed.is_empty() {
        "the daemon's settings".to_owned()
    } else {
        changed.join(", ")
    };
    Some(format!(
        "{} changed since the daemon started it ({what}); `procactor apply {}` shows and makes \
         the change",
        path.display(),
        path.display()
    ))
}

/// Starts, in `depends_on` order, every app of `loaded` that neither runs nor was stopped. An
/// app that fails to start does not stop the others — only those that depend on it.
///
/// # Errors
/// Every app that failed or was not started for it, with why, in one message.
async fn start_missing(d: &Daemon, loaded: &Loaded) -> Result<(), Unstarted> {
    let mut failures: Vec<(String, Unstarted)> = Vec::new();
    for name in start_order(&loaded.file) {
        if d.app(&name).is_some() || d.stopped.borrow().contains(&name) {
            continue;
        }
        let spec = &loaded.file.apps[name.as_str()];
        let blocked = spec
            .dependencies()
            .find(|(dep, _)| failures.iter().any(|(f, _)| f == *dep))
            .map(|(dep, _)| dep.clone());
        if let Some(dep) = blocked {
            // It follows its dependency: at fault as much as the dependency is.
            let config = failures.iter().any(|(f, why)| *f == dep && why.config);
            let message = format!("{name}: not started: it depends on {dep}");
            failures.push((name.clone(), Unstarted { message, config }));
            continue;
        }
        let spec = scaled(d, &name, spec);
        if let Err(e) = start_app(d, &name, &spec, &loaded.dir()).await {
            failures.push((name.clone(), e));
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    // The file is at fault (exit status 2) when every failure comes from its settings.
    let config = failures.iter().all(|(_, why)| why.config);
    let lines: Vec<String> = failures.into_iter().map(|(_, why)| why.message).collect();
    Err(Unstarted {
        message: lines.join("\n"),
        config,
    })
}

/// `spec` with the instances an operator scaled `name` to, if they did.
fn scaled(d: &Daemon, name: &str, spec: &AppSpec) -> AppSpec {
    let mut spec = spec.clone();
    if let Some(&n) = d.scales.borrow().get(name) {
        spec.instances = Instances::Count(n);
    }
    spec
}

async fn start_app(d: &Daemon, name: &str, spec: &AppSpec, dir: &Path) -> Result<(), Unstarted> {
    let app = App::start(
        name,
        spec,
        dir,
        &d.state_dir,
        d.events.clone(),
        d.lines.clone(),
    )
    .await
    .map_err(|e| Unstarted {
        message: format!("{name}: {}", e.message),
        config: e.config,
    })?;
    let app = Rc::new(app);
    app.watch_liveness(d.events.clone());
    d.add_app(app);
    Ok(())
}

/// The apps of `file` in an order where each comes after what it depends on (the file is
/// checked for cycles when parsed); ties in the order written.
pub(crate) fn start_order(file: &ConfigFile) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let names: Vec<&String> = file.apps.keys().map(|k| k.get_ref()).collect();
    while order.len() < names.len() {
        let before = order.len();
        for (name, app) in file.apps.iter().map(|(k, a)| (k.get_ref(), a)) {
            if order.contains(name) {
                continue;
            }
            if app.dependencies().all(|(dep, _)| order.contains(dep)) {
                order.push(name.clone());
            }
        }
        if order.len() == before {
            // A cycle or an unknown app, which parsing refuses: start the rest as written.
            let rest: Vec<String> = names
                .iter()
                .filter(|n| !order.contains(n))
                .map(|n| (*n).clone())
                .collect();
            order.extend(rest);
        }
    }
    order
}

/// The apps `target` names, or an outcome saying which does not run.
fn targets(d: &Daemon, target: &Target) -> Result<Vec<Rc<App>>, Outcome> {
    match target {
        Target::All => Ok(d.running()),
        Target::App(name) => d
            .app(name)
            .map(|app| vec![app])
            .ok_or_else(|| not_running(d, name)),
    }
}

pub(super) fn not_running(d: &Daemon, name: &str) -> Outcome {
    let known = d
        .loaded
        .borrow()
        .as_ref()
        .is_some_and(|l| l.file.apps.keys().any(|k| k.get_ref() == name));
    if known {
        failed("not_running", format!("{name} is stopped"))
    } else {
        failed("not_found", format!("no app is called {name}"))
    }
}

/// Rolling reload of the target apps, one after the other; the first failure stops it.
pub(crate) async fn reload(d: &Daemon, target: &Target) -> Outcome {
    let _changing = d.changing.lock().await;
    let apps = match targets(d, target) {
        Ok(apps) => apps,
        Err(outcome) => return outcome,
    };
    let mut done = Vec::new();
    for app in apps {
        match app.cluster().reload().await {
            Ok(report) if !report.skipped.is_empty() => {
                return failed(
                    "reload_failed",
                    format!(
                        "{}: {} instances replaced; {:?} not serving (restarting or given up) \
                         and not replaced — `procactor stop {}` then `start` brings an app back",
                        app.name,
                        report.replaced.len(),
                        report.skipped,
                        app.name
                    ),
                )
            }
            Ok(report) => done.push(format!(
                "{}: {} instances replaced",
                app.name,
                report.replaced.len()
            )),
            Err(e) => {
                return failed(
                    "reload_failed",
                    format!(
                        "{}: {e}; the instances not yet replaced keep serving the old version",
                        app.name
                    ),
                )
            }
        }
    }
    ok(json!(done))
}

/// Restarts every instance of the target apps: each gets a new process, which takes over once
/// ready while the old one is stopped gracefully (so a restart drops no request either); an
/// instance that does not serve now (restarting after a crash, given up) is reported, and the
/// others are still restarted.
pub(crate) async fn restart(d: &Daemon, target: &Target) -> Outcome {
    let _changing = d.changing.lock().await;
    let apps = match targets(d, target) {
        Ok(apps) => apps,
        Err(outcome) => return outcome,
    };
    let mut failures = Vec::new();
    for app in apps {
        for id in app.cluster().ids() {
            if let Err(e) = app.cluster().restart_worker(id).await {
                failures.push(format!("{}[{id}]: {e}", app.name));
            }
        }
    }
    drop(_changing);
    if !failures.is_empty() {
        return failed("restart_failed", failures.join("; "));
    }
    list(d).await
}

/// Stops the target apps; they stay stopped (also after `resurrect`) until `start`.
pub(crate) async fn stop(d: &Daemon, target: &Target) -> Outcome {
    let _changing = d.changing.lock().await;
    let apps = match targets(d, target) {
        Ok(apps) => apps,
        Err(outcome) => return outcome,
    };
    let mut stopped = Vec::new();
    for app in apps.iter().rev() {
        let result = app.stop().await;
        d.remove_app(&app.name);
        d.stopped.borrow_mut().push(app.name.clone());
        if let Err(e) = result {
            save_state(d);
            return failed("stop_failed", format!("{}: {e}", app.name));
        }
        stopped.push(app.name.clone());
    }
    save_state(d);
    ok(json!({ "stopped": stopped }))
}

/// Runs `n` instances of `app` (new ones start ready before this answers; extra ones stop
/// gracefully).
pub(crate) async fn scale(d: &Daemon, name: &str, n: usize) -> Outcome {
    let _changing = d.changing.lock().await;
    let Some(app) = d.app(name) else {
        return not_running(d, name);
    };
    if n == 0 {
        return failed(
            "config",
            "scale to 0 is `procactor stop APP`; an app runs at least one instance",
        );
    }
    if let Err(e) = app.cluster().scale(n).await {
        return failed("scale_failed", format!("{name}: {e}"));
    }
    app.spec.borrow_mut().instances = Instances::Count(n);
    d.scales.borrow_mut().insert(name.to_owned(), n);
    save_state(d);
    drop(_changing);
    list(d).await
}

/// One app in detail: its settings (env values redacted unless `show_env`), its sockets, its
/// instances and how each last exited.
pub(crate) async fn describe(d: &Daemon, name: &str, show_env: bool) -> Outcome {
    let Some(app) = d.app(name) else {
        return not_running(d, name);
    };
    let mut spec = serde_json::to_value(&*app.spec.borrow()).unwrap_or_default();
    if !show_env {
        if let Some(env) = spec.get_mut("env").and_then(|e| e.as_object_mut()) {
            for value in env.values_mut() {
                *value = json!("<redacted>");
            }
        }
    }
    let names: Vec<String> = app.spec.borrow().listen.keys().cloned().collect();
    let sockets: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .filter_map(|n| {
            let addr = app.cluster().local_addr(n)?;
            Some((n.clone(), json!(addr.to_string())))
        })
        .collect();
    let instances = match app.instances(&d.samples).await {
        Ok(rows) => rows,
        Err(e) => return failed("internal", e),
    };
    let exits = app.exits.borrow().clone();
    ok(json!({
        "app": name,
        "spec": spec,
        "sockets": sockets,
        "instances": instances,
        "last_exits": exits,
    }))
}

/// The plan from the file that runs to `text`, and, unless `dry_run`, the change.
pub(crate) async fn apply(d: &Daemon, path: &Path, text: &str, dry_run: bool) -> Outcome {
    let _changing = d.changing.lock().await;
    let new = match file::parse(text, path) {
        Ok(file) => file,
        Err(e) => return failed("config", e.to_string()),
    };
    let mut running = d
        .loaded
        .borrow()
        .as_ref()
        .map(|l| l.file.clone())
        .unwrap_or_default();
    // An app of the file that does not run and was not stopped (it failed to start) is one to
    // start, not to reload.
    running.apps.retain(|name, _| {
        d.app(name.get_ref()).is_some() || d.stopped.borrow().contains(name.get_ref())
    });
    let changes = plan::plan(&running, &new);
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    if dry_run {
        return ok(json!({ "plan": changes, "lines": lines, "applied": false }));
    }
    // The plan first, then the changes as they happen.
    for line in &lines {
        let _ = d.events.send(Event::Note {
            message: format!("plan: {line}"),
        });
    }
    if let Err(e) = d.serve_metrics(&new) {
        return failed("config", e);
    }
    let loaded = Loaded {
        path: path.to_path_buf(),
        text: text.to_owned(),
        file: new,
    };
    match apply_changes(d, &loaded, &changes).await {
        Ok(()) => {
            *d.loaded.borrow_mut() = Some(loaded);
            save_state(d);
            ok(json!({ "plan": changes, "lines": lines, "applied": true }))
        }
        // The file that runs stays the old one (what started or stopped meanwhile runs or
        // not): a second `apply` plans the rest of the change again.
        Err(e) => failed("apply_failed", e),
    }
}

async fn apply_changes(d: &Daemon, loaded: &Loaded, changes: &[Change]) -> Result<(), String> {
    let dir = loaded.dir();
    for change in changes {
        match change {
            Change::Stop { app } => {
                if let Some(running) = d.app(app) {
                    running.stop().await.map_err(|e| format!("{app}: {e}"))?;
                    d.remove_app(app);
                }
                d.scales.borrow_mut().shift_remove(app);
            }
            Change::Restart { app, .. } => {
                if let Some(running) = d.app(app) {
                    running.stop().await.map_err(|e| format!("{app}: {e}"))?;
                    d.remove_app(app);
                }
                d.scales.borrow_mut().shift_remove(app);
            }
            Change::Reload { app, .. } => {
                if let Some(running) = d.app(app) {
                    running
                        .reload_with(&loaded.file.apps[app.as_str()], &dir, &d.state_dir)
                        .await
                        .map_err(|e| format!("{app}: {e}"))?;
                }
            }
            Change::Scale { app, to, .. } => {
                if let Some(running) = d.app(app) {
                    running
                        .cluster()
                        .scale(to.count())
                        .await
                        .map_err(|e| format!("{app}: {e}"))?;
                    running.spec.borrow_mut().instances = *to;
                }
                d.scales.borrow_mut().shift_remove(app);
            }
            Change::Start { app, .. } => {
                // Written in the file again: an operator's earlier `stop` of it is over.
                d.stopped.borrow_mut().retain(|s| s != app);
            }
            Change::Keep { .. } | Change::Daemon { .. } => {}
        }
    }
    // New apps, and restarted ones, start in dependency order.
    start_missing(d, loaded).await.map_err(String::from)
}

/// Stops every app (the last started first), as `kill` and the daemon's exit do.
pub(crate) async fn stop_all(d: &Daemon) {
    let apps = d.running();
    for app in apps.iter().rev() {
        if let Err(e) = app.stop().await {
            eprintln!("procactor daemon: stopping {}: {e}", app.name);
        }
        d.remove_app(&app.name);
    }
}

/// `resurrect`: starts what the state file says ran; answers the table, with what was set
/// aside or fallen back on (a damaged state file) as `notes`. A daemon that already runs a file
/// starts only what of it is missing.
pub(crate) async fn resurrect_request(d: &Daemon) -> Outcome {
    let _changing = d.changing.lock().await;
    let notes = if d.loaded.borrow().is_some() {
        let loaded = d.loaded.borrow().clone().expect("just checked");
        if let Err(e) = start_missing(d, &loaded).await {
            return failed("start_failed", e);
        }
        Vec::new()
    } else {
        match resurrect(d).await {
            Ok(notes) => notes,
            Err(e) => return failed("resurrect_failed", e),
        }
    };
    drop(_changing);
    let mut outcome = list(d).await;
    if outcome.ok {
        outcome.data = json!({ "notes": notes, "instances": outcome.data });
    }
    outcome
}

/// Starts what the state file says ran, at its scale, except what was stopped; returns what
/// was set aside or fallen back on (also written to the daemon's log).
pub(crate) async fn resurrect(d: &Daemon) -> Result<Vec<String>, String> {
    let loaded = d.state.load().map_err(|e| e.to_string())?;
    for note in &loaded.notes {
        eprintln!("procactor daemon: {note}");
    }
    let notes = loaded.notes;
    let Some(state) = loaded.state else {
        return Ok(notes);
    };
    let loaded = Loaded {
        file: file::parse(&state.config_text, &state.config_path)
            .map_err(|e| format!("the saved file no longer reads: {e}"))?,
        path: state.config_path,
        text: state.config_text,
    };
    *d.scales.borrow_mut() = state.scales.into_iter().collect();
    *d.stopped.borrow_mut() = state.stopped.into_iter().collect();
    d.serve_metrics(&loaded.file)?;
    *d.loaded.borrow_mut() = Some(loaded.clone());
    start_missing(d, &loaded).await?;
    Ok(notes)
}

/// Writes what runs to the state file; a failure is reported on the daemon's output (the
/// previous state stays as it was).
fn save_state(d: &Daemon) {
    let Some(loaded) = d.loaded.borrow().clone() else {
        return;
    };
    let state = crate::state::State {
        format: crate::state::FORMAT,
        config_path: loaded.path,
        config_text: loaded.text,
        scales: d.scales.borrow().clone().into_iter().collect(),
        stopped: d.stopped.borrow().iter().cloned().collect(),
    };
    let saved = d.state.save(&state);
    if let Some(metrics) = d.metrics.borrow().as_ref() {
        metrics.state_write(saved.is_ok());
    }
    if let Err(e) = saved {
        eprintln!("procactor daemon: the state was not saved: {e}");
    }
}
