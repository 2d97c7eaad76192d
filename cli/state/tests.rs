//! The state file in temporary directories: round trips, `.prev`, damage set aside and never
//! promoted, a newer format left alone.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn state(text: &str) -> State {
    State {
        format: FORMAT,
        config_path: PathBuf::from("/srv/procactor.toml"),
        config_text: text.into(),
        scales: BTreeMap::from([("web".to_string(), 5)]),
        stopped: BTreeSet::from(["api".to_string()]),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_saved_state_reads_back_private_and_with_no_temporary_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let states = StateDir::new(&dir);
    let loaded = states.load().unwrap();
    assert!(
        loaded.state.is_none() && loaded.notes.is_empty(),
        "nothing yet"
    );
    states.save(&state("one")).unwrap();
    let loaded = states.load().unwrap();
    assert_eq!(loaded.state, Some(state("one")));
    assert!(loaded.notes.is_empty());
    assert_eq!(names(&dir), ["state.json"]);
    assert_eq!((mode(&dir), mode(&dir.join("state.json"))), (0o700, 0o600));
}

#[test]
fn each_save_keeps_the_last_good_one_as_prev() {
    let tmp = tempfile::tempdir().unwrap();
    let states = StateDir::new(tmp.path());
    states.save(&state("one")).unwrap();
    states.save(&state("two")).unwrap();
    states.save(&state("three")).unwrap();
    assert_eq!(states.load().unwrap().state, Some(state("three")));
    let prev: State =
        serde_json::from_slice(&fs::read(tmp.path().join("state.json.prev")).unwrap()).unwrap();
    assert_eq!(prev, state("two"));
    assert_eq!(names(tmp.path()), ["state.json", "state.json.prev"]);
}

#[test]
fn a_damaged_file_is_set_aside_reported_and_prev_used() {
    let tmp = tempfile::tempdir().unwrap();
    let states = StateDir::new(tmp.path());
    states.save(&state("good")).unwrap();
    states.save(&state("newer")).unwrap();
    // Cut short, as a write in place would be by a crash.
    fs::write(tmp.path().join("state.json"), "{\"format\":1,\"config_pa").unwrap();
    let loaded = states.load().unwrap();
    assert_eq!(loaded.state, Some(state("good")), "the last good one");
    assert_eq!(loaded.notes.len(), 2, "{:?}", loaded.notes);
    assert!(
        loaded.notes[0].contains("state.json is damaged"),
        "{}",
        loaded.notes[0]
    );
    assert!(
        loaded.notes[0].contains("set aside as"),
        "{}",
        loaded.notes[0]
    );
    assert!(loaded.notes[1].starts_with("using ") && loaded.notes[1].ends_with("state.json.prev"));
    let files = names(tmp.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("state.json.damaged-"), "{files:?}");
    assert_eq!(
        fs::read_to_string(tmp.path().join(&files[0])).unwrap(),
        "{\"format\":1,\"config_pa",
        "the damaged file is kept as it was, for a person to read"
    );
    assert_eq!(files[1], "state.json.prev");
    // The next save makes a new state.json and leaves the good .prev as it is.
    states.save(&state("after")).unwrap();
    assert_eq!(states.load().unwrap().state, Some(state("after")));
    let prev = fs::read(tmp.path().join("state.json.prev")).unwrap();
    assert_eq!(
        serde_json::from_slice::<State>(&prev).unwrap(),
        state("good")
    );
}

#[test]
fn a_damaged_file_is_never_promoted_to_prev_by_a_save() {
    let tmp = tempfile::tempdir().unwrap();
    let states = StateDir::new(tmp.path());
    states.save(&state("good")).unwrap();
    states.save(&state("second")).unwrap();
    fs::write(tmp.path().join("state.json"), "").unwrap(); // an empty file: damaged
    states.save(&state("third")).unwrap();
    let prev = fs::read(tmp.path().join("state.json.prev")).unwrap();
    assert_eq!(
        serde_json::from_slice::<State>(&prev).unwrap(),
        state("good")
    );
    assert_eq!(states.load().unwrap().state, Some(state("third")));
    assert!(names(tmp.path())
        .iter()
        .any(|n| n.starts_with("state.json.damaged-")));
}

#[test]
fn when_both_are_damaged_nothing_is_used_and_both_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let states = StateDir::new(tmp.path());
    fs::write(tmp.path().join("state.json"), "not json").unwrap();
    fs::write(tmp.path().join("state.json.prev"), "{\"format\":0}").unwrap();
    let loaded = states.load().unwrap();
    assert_eq!(loaded.state, None);
    assert_eq!(loaded.notes.len(), 2, "{:?}", loaded.notes);
    let files = names(tmp.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|n| n.contains(".damaged-")), "{files:?}");
    // Two set aside in the same second get distinct names.
    fs::write(tmp.path().join("state.json"), "again").unwrap();
    states.load().unwrap();
    assert_eq!(names(tmp.path()).len(), 3);
}

#[test]
fn a_missing_state_falls_back_on_prev() {
    let tmp = tempfile::tempdir().unwrap();
    let states = StateDir::new(tmp.path());
    states.save(&state("one")).unwrap();
    states.save(&state("two")).unwrap();
    fs::remove_file(tmp.path().join("state.json")).unwrap();
    let loaded = states.load().unwrap();
    assert_eq!(loaded.state, Some(state("one")));
    assert_eq!(loaded.notes.len(), 1);
}

#[test]
fn a_newer_format_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let states = StateDir::new(tmp.path());
    let newer = format!("{{\"format\":{},\"whatever\":true}}", FORMAT + 1);
    fs::write(tmp.path().join("state.json"), &newer).unwrap();
    let e = states.load().unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("format {}, newer", FORMAT + 1)),
        "{e}"
    );
    assert!(
        states.save(&state("older")).is_err(),
        "not overwritten by an older daemon"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("state.json")).unwrap(),
        newer
    );
}

#[test]
fn a_temporary_left_by_a_crash_is_ignored_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let states = StateDir::new(tmp.path());
    states.save(&state("one")).unwrap();
    fs::write(tmp.path().join("state.json.tmp"), "half a wri").unwrap();
    assert_eq!(states.load().unwrap().state, Some(state("one")));
    states.save(&state("two")).unwrap();
    assert_eq!(states.load().unwrap().state, Some(state("two")));
    assert_eq!(names(tmp.path()), ["state.json", "state.json.prev"]);
}

#[test]
fn the_directory_follows_xdg_then_home() {
    let dir = |xdg: Option<&str>, home: Option<&str>| {
        default_dir(xdg.map(OsStr::new), home.map(OsStr::new))
    };
    assert_eq!(
        dir(Some("/s"), Some("/h")),
        Ok(PathBuf::from("/s/procactor"))
    );
    assert_eq!(
        dir(None, Some("/h")),
        Ok(PathBuf::from("/h/.local/state/procactor"))
    );
    assert_eq!(
        dir(Some("rel"), Some("/h")),
        Ok(PathBuf::from("/h/.local/state/procactor"))
    );
    assert!(dir(None, None).unwrap_err().contains("--state-dir"));
    assert_eq!(state_dir(Some(Path::new("/x"))), Ok(PathBuf::from("/x")));
}
