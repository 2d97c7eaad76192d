//! The tree marker: a token in the environment of every process a master starts, which every
//! descendant inherits, so that the master can find a worker's descendants wherever they went —
//! a new process group, a new session, a double fork, reparented to init.
//!
//! Each child gets `PROCACTOR_TREE=<tokens>`, a `;`-separated list that ends with its own token,
//! `<nonce>/<spawn>/<worker>/<generation>`: the nonce names this master process (its pid and the
//! time it first spawned, in nanoseconds), the spawn number makes the token unique among every
//! child the process started (several clusters may run in one process), the slot and generation
//! are for a reader of `/proc`. A master that is itself a worker (a cluster in a worker) passes on
//! the list it inherited, with its child's token added, so the outer master's sweeps find the
//! inner workers too.
//!
//! The [`Matcher`] finds a token in a process's environment, as `/proc/<pid>/environ` gives it:
//! exactly one element of the list (so worker 1 never matches worker 10), or every token of one
//! master (`<nonce>/`). It is fed the environment in pieces, allocates nothing and takes no lock,
//! because the keeper runs it after `fork` (see `keeper`).
//!
//! # Limits
//! `/proc/<pid>/environ` is the environment the process was executed with: a descendant that
//! executes a program with an environment of its own making, without the variable, is not found.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The variable that carries the tokens.
pub(crate) const VAR: &str = "PROCACTOR_TREE";

/// The start of the entry that carries the tokens, as it appears in an environment block.
const KEY: &[u8] = b"PROCACTOR_TREE=";

/// One child's token: `<nonce>/<spawn>/<worker>/<generation>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl Token {
    /// A new token, unique in this process, for process `generation` of slot `worker`.
    pub(crate) fn new(worker: usize, generation: u64) -> Self {
        static SPAWNS: AtomicU64 = AtomicU64::new(0);
        let spawn = SPAWNS.fetch_add(1, Ordering::Relaxed) + 1;
        Self(format!("{}{spawn}/{worker}/{generation}", master_prefix()))
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The child's `PROCACTOR_TREE`: what this process inherited, then this token.
    pub(super) fn env_value(&self) -> OsString {
        inherited_then(std::env::var_os(VAR), &self.0)
    }
}

/// `inherited` (if any) and `token`, separated by `;`.
fn inherited_then(inherited: Option<OsString>, token: &str) -> OsString {
    match inherited {
        Some(mut list) if !list.is_empty() => {
            list.push(";");
            list.push(token);
            list
        }
        _ => token.into(),
    }
}

/// `<nonce>/`: what every token of this master process starts with.
pub(super) fn master_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}.{nanos}/", std::process::id())
    })
}

/// What a [`Matcher`] looks for in the `;`-separated list.
#[derive(Debug, Clone, Copy)]
pub(super) enum Needle<'a> {
    /// An element equal to this token (the sweeper thread looks tokens up in a set instead).
    #[cfg_attr(not(test), allow(dead_code))]
    Token(&'a [u8]),
    /// An element that starts with this (a master's `<nonce>/`).
    Prefix(&'a [u8]),
}

/// Where the matcher is in the environment block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of an entry, this many bytes of [`KEY`] matched.
    Key(usize),
    /// In an entry of another variable.
    OtherEntry,
    /// In the list, this many bytes of the needle matched in the current element.
    Element(usize),
    /// In an element that does not match.
    OtherElement,
}

/// Looks for a needle in an environment block (`NAME=value` entries, each ending with a NUL),
/// fed in pieces. No allocation, no lock: it runs after `fork` too.
#[derive(Debug, Clone, Copy)]
pub(super) struct Matcher<'a> {
    needle: Needle<'a>,
    at: At,
    found: bool,
}

impl<'a> Matcher<'a> {
    pub(super) fn new(needle: Needle<'a>) -> Self {
        Self {
            needle,
            at: At::Key(0),
            found: false,
        }
    }

    /// Starts over, for another process's environment.
    pub(super) fn reset(&mut self) {
        self.at = At::Key(0);
        self.found = false;
    }

    /// Whether the needle was found in what was fed so far.
    #[cfg(test)]
    pub(super) fn found(&self) -> bool {
        self.found
    }

    /// Feeds the next piece of the block; returns [`found`](Self::found).
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !self.found && !bytes.is_empty() {
            if self.at == At::OtherEntry {
                // The common case, skipped in one search.
                match bytes.iter().position(|&b| b == 0) {
                    Some(end) => {
                        self.at = At::Key(0);
                        bytes = &bytes[end + 1..];
                    }
                    None => return false,
                }
                continue;
            }
            self.step(bytes[0]);
            bytes = &bytes[1..];
        }
        self.found
    }

    /// The block ended (an entry at the very end may lack its NUL); returns
    /// [`found`](Self::found).
    pub(super) fn finish(&mut self) -> bool {
        if let At::Element(matched) = self.at {
            self.end_of_element(matched);
        }
        self.at = At::Key(0);
        self.found
    }

    fn needle(&self) -> &'a [u8] {
        match self.needle {
            Needle::Token(n) | Needle::Prefix(n) => n,
        }
    }

    fn end_of_element(&mut self, matched: usize) {
        if matched == self.needle().len() {
            self.found = true;
        }
    }

    fn step(&mut self, b: u8) {
        let needle = self.needle();
        self.at = match (self.at, b) {
            (At::Key(_), 0) => At::Key(0),
            (At::Key(k), b) if KEY[k] == b => {
                if k + 1 == KEY.len() {
                    At::Element(0)
                } else {
                    At::Key(k + 1)
                }
            }
            (At::Key(_), _) => At::OtherEntry,
            (At::OtherEntry, 0) => At::Key(0),
            (At::OtherEntry, _) => At::OtherEntry,
            (At::Element(j), 0 | b';') => {
                self.end_of_element(j);
                if b == 0 {
                    At::Key(0)
                } else {
                    At::Element(0)
                }
            }
            (At::Element(j), b) if j < needle.len() && needle[j] == b => {
                if j + 1 == needle.len() && matches!(self.needle, Needle::Prefix(_)) {
                    self.found = true;
                }
                At::Element(j + 1)
            }
            (At::OtherElement, 0) => At::Key(0),
            (At::OtherElement, b';') => At::Element(0),
            (At::Element(_) | At::OtherElement, _) => At::OtherElement,
        };
    }
}

/// The elements of the token list in `block` (a whole environment block): none when it has no
/// `PROCACTOR_TREE` entry.
pub(super) fn elements(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let list = block
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(KEY))
        .unwrap_or(&[]);
    list.split(|&b| b == b';').filter(|token| !token.is_empty())
}

/// Whether `block` (a whole environment block) carries `needle`.
#[cfg(test)]
pub(super) fn carries(block: &[u8], needle: Needle<'_>) -> bool {
    let mut matcher = Matcher::new(needle);
    matcher.feed(block);
    matcher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(entries: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend_from_slice(e.as_bytes());
            out.push(0);
        }
        out
    }

    const T1: Needle<'static> = Needle::Token(b"9.5/1/1/1");

    #[test]
    fn a_token_matches_only_a_whole_element() {
        for (value, expected) in [
            ("9.5/1/1/1", true),
            ("8.2/3/0/1;9.5/1/1/1", true),
            ("9.5/1/1/1;8.2/3/0/1", true),
            ("a;9.5/1/1/1;b", true),
            ("9.5/1/1/10", false),
            ("9.5/1/1/1x", false),
            ("x9.5/1/1/1", false),
            ("9.5/1/1/", false),
            ("9.5/1/1", false),
            ("", false),
            (";;", false),
        ] {
            let env = block(&["A=1", &format!("PROCACTOR_TREE={value}"), "B=2"]);
            assert_eq!(carries(&env, T1), expected, "{value:?}");
        }
    }

    #[test]
    fn the_token_must_be_in_the_tree_variable() {
        for entries in [
            &["OTHER=9.5/1/1/1"][..],
            &["XPROCACTOR_TREE=9.5/1/1/1"],
            &["PROCACTOR_TREEX=9.5/1/1/1"],
            &["PROCACTOR_TREE", "9.5/1/1/1"],
            &["=9.5/1/1/1"],
        ] {
            assert!(!carries(&block(entries), T1), "{entries:?}");
        }
        let last = b"A=1\0PROCACTOR_TREE=9.5/1/1/1";
        assert!(carries(last, T1), "a last entry without its NUL");
        assert!(carries(&block(&["", "PROCACTOR_TREE=9.5/1/1/1"]), T1));
    }

    #[test]
    fn a_prefix_matches_every_token_of_one_master() {
        let master = Needle::Prefix(b"9.5/");
        for (value, expected) in [
            ("9.5/1/0/1", true),
            ("8.2/3/0/1;9.5/7/3/2", true),
            ("9.5/", true),
            ("9.55/1/0/1", false),
            ("19.5/1/0/1", false),
            ("8.2/3/0/1", false),
            ("8.2/9.5/", false),
        ] {
            let env = block(&[&format!("PROCACTOR_TREE={value}")]);
            assert_eq!(carries(&env, master), expected, "{value:?}");
        }
    }

    #[test]
    fn a_block_fed_in_pieces_matches_as_a_whole() {
        let env = block(&["HOME=/root", "PROCACTOR_TREE=8.2/3/0/1;9.5/1/1/1", "Z=9"]);
        for size in 1..env.len() {
            let mut matcher = Matcher::new(T1);
            for piece in env.chunks(size) {
                matcher.feed(piece);
            }
            assert!(matcher.finish(), "pieces of {size}");
            matcher.reset();
            assert!(!matcher.found());
            let worker_10 = Needle::Token(b"9.5/1/1/10");
            let mut other = Matcher::new(worker_10);
            env.chunks(size).for_each(|p| {
                other.feed(p);
            });
            assert!(!other.finish(), "pieces of {size}");
        }
    }

    #[test]
    fn tokens_are_unique_and_start_with_the_masters_prefix() {
        let (a, b) = (Token::new(1, 1), Token::new(1, 1));
        assert_ne!(a, b);
        let text = std::str::from_utf8(a.as_bytes()).unwrap();
        let rest = text.strip_prefix(master_prefix()).unwrap();
        assert!(rest.ends_with("/1/1"), "{text}");
        assert!(!text.contains([';', '=', '\0']), "{text}");
        let env = block(&[&format!("PROCACTOR_TREE={text}")]);
        assert!(carries(&env, Needle::Token(a.as_bytes())));
        assert!(!carries(&env, Needle::Token(b.as_bytes())));
        assert!(carries(&env, Needle::Prefix(master_prefix().as_bytes())));
    }

    #[test]
    fn an_inherited_list_is_kept_and_the_token_added() {
        assert_eq!(inherited_then(None, "9.5/1/0/1"), "9.5/1/0/1");
        assert_eq!(inherited_then(Some("".into()), "9.5/1/0/1"), "9.5/1/0/1");
        assert_eq!(
            inherited_then(Some("8.2/3/0/1".into()), "9.5/1/0/1"),
            "8.2/3/0/1;9.5/1/0/1"
        );
    }
}
