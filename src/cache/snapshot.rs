//! Snapshots of a [`Store`](crate::cache::Store) on disk, written atomically and checked when
//! read. The format is this crate's own: nothing here is public, and only [`load`] reads what
//! [`write()`] writes.
//!
//! The cache exports the entries on the master's thread (the values are shared, not copied) and
//! hands them to [`write()`] on a blocking thread: encoding, writing and syncing never hold up the
//! master's event loop.
//!
//! [`write()`] puts the whole store in `<name>.tmp` in the snapshot's directory, syncs it,
//! renames it over the snapshot and syncs the directory, so a crash at any point leaves either
//! the old snapshot or the new one, never a mixture; a stray `<name>.tmp` is ignored by [`load`]
//! and overwritten by the next `write`. [`load`] rejects a file whose header, length or checksum
//! is wrong rather than loading part of it; the caller moves it out of the way with
//! [`set_aside`] and starts empty.
//!
//! # Format, version 1
//! | bytes | content |
//! |---|---|
//! | 8 | magic, `PACACHE1` |
//! | 4 | format version, `u32` little-endian |
//! | 8 | body length, `u64` little-endian |
//! | body length | postcard of the entries: collection, key, value, deadline |
//! | 4 | CRC-32 (IEEE) of everything before it, `u32` little-endian |
//!
//! A TTL is stored as an absolute wall-clock deadline (time since the Unix epoch), so the time
//! the master spends down counts against it: an entry whose deadline has passed when the
//! snapshot is loaded is skipped.
//!
//! # Caveats
//! - Only one process may save to a path at a time: they would share the temporary file.
//! - A wall-clock step between save and load (NTP, a changed clock) moves deadlines with it.
//! - The whole file is read into memory, and a save holds a copy of every value while it runs.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cache::store::SnapshotEntry;

const MAGIC: &[u8; 8] = b"PACACHE1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 20;
const CRC_LEN: usize = 4;

/// Why a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SnapshotError {
    /// The file exists but is not a whole, valid snapshot. Set it aside with [`set_aside`].
    #[error("cache snapshot {path} is corrupt: {reason}")]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: Corruption,
    },
    /// The file could not be read.
    #[error("cannot read cache snapshot {path}: {source}")]
    Io {
        /// The snapshot file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What is wrong with a corrupt snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Corruption {
    /// It does not start with the magic bytes: not a cache snapshot.
    #[error("not a cache snapshot (bad magic)")]
    BadMagic,
    /// It was written in a format version this build does not read.
    #[error("unsupported format version {0}")]
    Version(u32),
    /// It is shorter or longer than its header says: truncated, or appended to.
    #[error("{actual} bytes long, {expected} expected")]
    Length {
        /// The length the header implies (at least a header and a checksum).
        expected: u64,
        /// The file's length.
        actual: u64,
    },
    /// The checksum does not match the contents.
    #[error("checksum mismatch")]
    Checksum,
    /// The checksum matches but the entries do not decode.
    #[error("undecodable entries: {0}")]
    Decode(String),
}

/// One entry on disk: borrowed from the entries when saving; when loading, the strings are
/// owned and the value is borrowed from the file.
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    collection: Cow<'a, str>,
    key: Cow<'a, str>,
    #[serde(borrow, with = "serde_bytes")]
    value: Cow<'a, [u8]>,
    /// Wall-clock deadline, as time since the Unix epoch.
    deadline: Option<Duration>,
}

/// Writes `entries` (as [`Store::export`](crate::cache::Store::export) gave them, `wall` being
/// the wall-clock time of the export) to `path` atomically (see the module docs). It blocks:
/// call it off the master's event loop.
///
/// # Errors
/// Any I/O error creating, writing, syncing or renaming the temporary file (the snapshot at
/// `path` is then the previous one, intact), or syncing the directory (the new one is then in
/// place, but a crash could still undo the rename).
pub(crate) fn write(path: &Path, entries: &[SnapshotEntry], wall: SystemTime) -> io::Result<()> {
    let bytes = encode(entries, wall)?;
    write_atomically(path, &bytes)
}

/// Reads the snapshot at `path`: `Ok(None)` when there is none, otherwise its entries with the
/// TTL each has left now, those already expired left out. Hand them to
/// [`Store::import`](crate::cache::Store::import) with the store's current `now`.
///
/// # Errors
/// [`SnapshotError::Corrupt`] when the file is not a whole, valid snapshot (nothing of it is
/// returned), [`SnapshotError::Io`] when it cannot be read.
pub(crate) fn load(path: &Path) -> Result<Option<Vec<SnapshotEntry>>, SnapshotError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            let path = path.to_owned();
            return Err(SnapshotError::Io { path, source });
        }
    };
    match decode(&bytes, SystemTime::now()) {
        Ok(entries) => Ok(Some(entries)),
        Err(reason) => {
            let path = path.to_owned();
            Err(SnapshotError::Corrupt { path, reason })
        }
    }
}

/// Renames a corrupt snapshot to `<name>.corrupt-<unix seconds>` in the same directory (with a
/// `-1`, `-2`… suffix if that exists, never overwriting a file) and returns the new path, for the
/// caller to log.
///
/// # Errors
/// Any I/O error, e.g. when `path` does not exist; `path` is then left where it was.
pub(crate) fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    set_aside_at(path, secs)
}

fn set_aside_at(path: &Path, secs: u64) -> io::Result<PathBuf> {
    let name = file_name(path)?;
    for n in 0..1000 {
        let mut candidate = name.to_os_string();
        candidate.push(format!(".corrupt-{secs}"));
        if n > 0 {
            candidate.push(format!("-{n}"));
        }
        let candidate = path.with_file_name(candidate);
        // Claiming the name first is what makes the rename unable to overwrite anything.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(_) => {
                return match fs::rename(path, &candidate) {
                    Ok(()) => Ok(candidate),
                    Err(e) => {
                        let _ = fs::remove_file(&candidate);
                        Err(e)
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many set-aside snapshots with this timestamp",
    ))
}

fn encode(entries: &[SnapshotEntry], wall: SystemTime) -> io::Result<Vec<u8>> {
    let records: Vec<Record<'_>> = entries
        .iter()
        .map(|e| Record {
            collection: Cow::Borrowed(&e.collection),
            key: Cow::Borrowed(&e.key),
            value: Cow::Borrowed(&e.value),
            // A deadline beyond what `SystemTime` holds never comes, like such a TTL in a store.
            deadline: e.ttl.and_then(|ttl| wall.checked_add(ttl)).map(since_epoch),
        })
        .collect();
    let body = postcard::to_stdvec(&records).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CRC_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&out).to_le_bytes());
    Ok(out)
}

fn decode(bytes: &[u8], wall: SystemTime) -> Result<Vec<SnapshotEntry>, Corruption> {
    let actual = bytes.len() as u64;
    if bytes.len() < HEADER_LEN + CRC_LEN {
        let expected = (HEADER_LEN + CRC_LEN) as u64;
        return Err(Corruption::Length { expected, actual });
    }
    let (header, rest) = bytes.split_at(HEADER_LEN);
    if &header[..8] != MAGIC {
        return Err(Corruption::BadMagic);
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Corruption::Version(version));
    }
    let body_len = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    let expected = body_len.saturating_add((HEADER_LEN + CRC_LEN) as u64);
    if expected != actual {
        return Err(Corruption::Length { expected, actual });
    }
    let (body, crc) = rest.split_at(rest.len() - CRC_LEN);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32(&bytes[..bytes.len() - CRC_LEN]) != stored {
        return Err(Corruption::Checksum);
    }
    let records = match postcard::take_from_bytes::<Vec<Record<'_>>>(body) {
        Ok((records, [])) => records,
        Ok(_) => {
            return Err(Corruption::Decode(
                "trailing bytes after the entries".into(),
            ))
        }
        Err(e) => return Err(Corruption::Decode(e.to_string())),
    };
    let wall = since_epoch(wall);
    let live = records.into_iter().filter_map(|r| {
        let ttl = match r.deadline {
            Some(deadline) if deadline <= wall => return None,
            Some(deadline) => Some(deadline - wall),
            None => None,
        };
        Some(SnapshotEntry {
            collection: r.collection.into_owned(),
            key: r.key.into_owned(),
            value: Bytes::from(r.value.into_owned()),
            ttl,
        })
    });
    Ok(live.collect())
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = file_name(path)?.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory is synced.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn file_name(path: &Path) -> io::Result<&std::ffi::OsStr> {
    path.file_name().ok_or_else(|| {
        let msg = format!("snapshot path {} has no file name", path.display());
        io::Error::new(io::ErrorKind::InvalidInput, msg)
    })
}

/// CRC-32 (IEEE 802.3, as zlib and PNG), table-driven. Hand-written because it is 20 lines and
/// none of the crate's dependencies offers one.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use std::time::Instant;

    use super::*;
    use crate::cache::{MemoryStore, Store};

    fn save(store: &dyn Store, path: &Path, now: Instant) -> io::Result<()> {
        write(path, &store.export(now), SystemTime::now())
    }

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("procactor-snapshot-{test}-{}-{n}", std::process::id());
            let dir = std::env::temp_dir().join(name);
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entry(key: &str, value: &str, ttl: Option<u64>) -> SnapshotEntry {
        SnapshotEntry {
            collection: "c".into(),
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ttl: ttl.map(Duration::from_secs),
        }
    }

    fn store_with(entries: &[SnapshotEntry]) -> MemoryStore {
        let mut store = MemoryStore::default();
        store.import(entries.to_vec(), Instant::now());
        store
    }

    fn corruption(path: &Path) -> Corruption {
        match load(path) {
            Err(SnapshotError::Corrupt { reason, .. }) => reason,
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    fn saved(dir: &TempDir) -> PathBuf {
        let path = dir.path("cache.snap");
        let store = store_with(&[entry("a", "1", None), entry("b", "2", Some(60))]);
        save(&store, &path, Instant::now()).unwrap();
        path
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_keeps_values_and_ttls() {
        let dir = TempDir::new("round-trip");
        let path = dir.path("cache.snap");
        let mut big = entry("big", "", None);
        big.value = Bytes::from(vec![7; 100_000]);
        let entries = [
            entry("a", "1", None),
            entry("b", "2", Some(60)),
            big,
            SnapshotEntry {
                collection: "other".into(),
                ..entry("a", "3", Some(3600))
            },
        ];
        let now = Instant::now();
        save(&store_with(&entries), &path, now).unwrap();
        assert_eq!(dir.names(), ["cache.snap"], "no temporary file left");

        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.len(), entries.len());
        for (got, want) in loaded.iter().zip(&entries) {
            assert_eq!((&got.collection, &got.key), (&want.collection, &want.key));
            assert_eq!(got.value, want.value);
            match (got.ttl, want.ttl) {
                (None, None) => {}
                // Wall time passes between save and load.
                (Some(got), Some(want)) => {
                    assert!(
                        got <= want && got > want - Duration::from_secs(5),
                        "{got:?}"
                    )
                }
                other => panic!("ttl changed: {other:?}"),
            }
        }
        let mut store = MemoryStore::default();
        assert_eq!(store.import(loaded, now), entries.len());
        assert_eq!(store.get("other", "a", now).as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn entries_whose_deadline_passed_while_down_are_dropped() {
        let saved_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let entries = [
            entry("short", "1", Some(5)),
            entry("long", "2", Some(60)),
            entry("forever", "3", None),
        ];
        let bytes = encode(&entries, saved_at).unwrap();
        let loaded = decode(&bytes, saved_at + Duration::from_secs(10)).unwrap();
        let expected = [entry("long", "2", Some(50)), entry("forever", "3", None)];
        assert_eq!(loaded, expected);
        let loaded = decode(&bytes, saved_at + Duration::from_secs(60)).unwrap();
        assert_eq!(loaded, [entry("forever", "3", None)], "due exactly: gone");
    }

    #[test]
    fn a_missing_snapshot_is_none() {
        let dir = TempDir::new("missing");
        assert!(load(&dir.path("cache.snap")).unwrap().is_none());
    }

    #[test]
    fn an_unreadable_snapshot_is_an_io_error() {
        let dir = TempDir::new("unreadable");
        let err = load(&dir.0).unwrap_err();
        assert!(matches!(err, SnapshotError::Io { .. }), "{err:?}");
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_snapshot() {
        let dir = TempDir::new("crash");
        let path = saved(&dir);
        // What a crash between writing the temporary file and renaming it leaves behind.
        fs::write(dir.path("cache.snap.tmp"), b"PACACHE1 half written").unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.len(), 2);

        save(
            &store_with(&[entry("new", "x", None)]),
            &path,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), [entry("new", "x", None)]);
        assert_eq!(dir.names(), ["cache.snap"], "the stray file is replaced");
    }

    #[test]
    fn a_failed_save_leaves_the_old_snapshot() {
        let dir = TempDir::new("failed-save");
        let path = saved(&dir);
        // The temporary file cannot be created where a directory stands.
        fs::create_dir(dir.path("cache.snap.tmp")).unwrap();
        let store = store_with(&[entry("new", "x", None)]);
        assert!(save(&store, &path, Instant::now()).is_err());
        assert_eq!(load(&path).unwrap().unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_body_is_detected() {
        let dir = TempDir::new("corrupt");
        let path = saved(&dir);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + 3] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(corruption(&path), Corruption::Checksum);
    }

    #[test]
    fn a_truncated_snapshot_is_detected() {
        let dir = TempDir::new("truncated");
        let path = saved(&dir);
        let bytes = fs::read(&path).unwrap();
        let full = bytes.len() as u64;
        for len in [bytes.len() - 1, HEADER_LEN + CRC_LEN] {
            fs::write(&path, &bytes[..len]).unwrap();
            let expected = Corruption::Length {
                expected: full,
                actual: len as u64,
            };
            assert_eq!(corruption(&path), expected);
        }
        for len in [0, 5, HEADER_LEN] {
            fs::write(&path, &bytes[..len]).unwrap();
            assert!(matches!(corruption(&path), Corruption::Length { .. }));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        fs::write(&path, &longer).unwrap();
        assert!(matches!(corruption(&path), Corruption::Length { .. }));
    }

    #[test]
    fn a_wrong_magic_or_version_is_detected() {
        let dir = TempDir::new("magic");
        let path = saved(&dir);
        let bytes = fs::read(&path).unwrap();
        let mut foreign = bytes.clone();
        foreign[..8].copy_from_slice(b"PACACHE0");
        fs::write(&path, &foreign).unwrap();
        assert_eq!(corruption(&path), Corruption::BadMagic);
        let mut future = bytes;
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        fs::write(&path, &future).unwrap();
        assert_eq!(corruption(&path), Corruption::Version(2));
    }

    #[test]
    fn a_checksummed_body_that_does_not_decode_is_detected() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&[1, 0xFF, 0xFF]);
        bytes.extend_from_slice(&crc32(&bytes).to_le_bytes());
        let err = decode(&bytes, SystemTime::now()).unwrap_err();
        assert!(matches!(err, Corruption::Decode(_)), "{err:?}");
    }

    #[test]
    fn set_aside_renames_by_time_and_never_overwrites() {
        let dir = TempDir::new("set-aside");
        let path = dir.path("cache.snap");
        fs::write(&path, b"first").unwrap();
        let first = set_aside_at(&path, 1_700_000_000).unwrap();
        assert_eq!(first, dir.path("cache.snap.corrupt-1700000000"));
        fs::write(&path, b"second").unwrap();
        let second = set_aside_at(&path, 1_700_000_000).unwrap();
        assert_eq!(second, dir.path("cache.snap.corrupt-1700000000-1"));
        assert_eq!(fs::read(&first).unwrap(), b"first");
        assert_eq!(fs::read(&second).unwrap(), b"second");
        assert!(!path.exists());
        // Nothing to set aside: an error, and no name is left claimed.
        assert!(set_aside_at(&path, 1_700_000_000).is_err());
        assert_eq!(dir.names().len(), 2);

        fs::write(&path, b"third").unwrap();
        let before = since_epoch(SystemTime::now()).as_secs();
        let third = set_aside(&path).unwrap();
        let name = third.file_name().unwrap().to_str().unwrap();
        let secs: u64 = name
            .strip_prefix("cache.snap.corrupt-")
            .unwrap()
            .parse()
            .unwrap();
        assert!(secs >= before && secs <= before + 5, "{name}");
        assert!(load(&path).unwrap().is_none(), "a fresh start after it");
    }
}
