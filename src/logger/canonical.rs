//! Whether a worker's record fields, as the JSON text it sent, are byte for byte what the
//! master would write for them: then the writer copies the text into the line instead of
//! parsing it into a map and serialising the map again, which was most of the cost of a
//! worker's record on the master.
//!
//! The master writes fields as `serde_json` serialises its `Map`: keys in ascending order and
//! each once, no whitespace, strings escaped only where they must be (`\"`, `\\`, `\b`, `\f`,
//! `\n`, `\r`, `\t`, and `\u00xx` in lower-case hex for the other control characters), numbers
//! as `serde_json` prints what it parsed. A worker's `LogSender` sends exactly that, since it
//! serialises with `serde_json` too. Text that is all of that is *canonical*: parsing and
//! serialising it again gives the same bytes, so copying it is writing it. At the top level,
//! no key may be named like one of the line's own keys (`time`, `kind`, …), which the writer
//! renames. (Were `serde_json`'s `preserve_order` feature on, a map would keep the text's key
//! order instead of sorting it: ascending keys are kept as they are either way.)
//!
//! # Limits
//! The check is strict and partial on purpose: it answers "the same bytes" or "don't know",
//! never changes what is written. Text it does not accept (another serialiser's spacing or key
//! order, a key with an escape, `\/`, `\u00e9`, `1e2`, nesting deeper than [`MAX_DEPTH`]) is
//! parsed and re-serialised as before, which costs only time.

use super::record::TOP_LEVEL;

/// An object's braces, named (a brace in a literal miscounts tools that match braces).
const OPEN: u8 = b'{';
const CLOSE: u8 = b'}';

/// Nesting accepted; `serde_json` refuses past 128 levels, and such text goes the slow way.
const MAX_DEPTH: u32 = 64;

/// Whether `text` is a JSON object the master would write exactly so as a record's fields.
pub(super) fn is_canonical_fields(text: &str) -> bool {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
        depth: 0,
    };
    parser.peek() == Some(OPEN) && parser.object(true) && parser.at == parser.bytes.len()
}

/// A recognizer of canonical JSON over `bytes`, at byte `at`.
struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: u32,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Takes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.at += usize::from(next);
        next
    }

    fn value(&mut self) -> bool {
        match self.peek() {
            Some(OPEN) => self.object(false),
            Some(b'[') => self.array(),
            Some(b'"') => self.string(true).is_some(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    /// An object at `{`: keys without escapes, strictly ascending (so each once), and at the
    /// top level none of the line's own.
    fn object(&mut self, top: bool) -> bool {
        if !self.enter() {
            return false;
        }
        self.at += 1;
        if self.eat(CLOSE) {
            self.depth -= 1;
            return true;
        }
        let mut previous: Option<&[u8]> = None;
        loop {
            let Some(key) = self.string(false) else {
                return false;
            };
            if previous.is_some_and(|previous| previous >= key)
                || (top && TOP_LEVEL.iter().any(|reserved| reserved.as_bytes() == key))
            {
                return false;
            }
            previous = Some(key);
            if !self.eat(b':') || !self.value() {
                return false;
            }
            if self.eat(CLOSE) {
                self.depth -= 1;
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self) -> bool {
        if !self.enter() {
            return false;
        }
        self.at += 1;
        if self.eat(b']') {
            self.depth -= 1;
            return true;
        }
        loop {
            if !self.value() {
                return false;
            }
            if self.eat(b']') {
                self.depth -= 1;
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn enter(&mut self) -> bool {
        self.depth += 1;
        self.depth <= MAX_DEPTH
    }

    /// A string at `"`, its contents returned; with `escapes`, the escapes `serde_json` writes
    /// are allowed in it, else none is.
    fn string(&mut self, escapes: bool) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(&self.bytes[start..self.at - 1]);
                }
                b'\\' if escapes => {
                    let len = canonical_escape(&self.bytes[self.at..])?;
                    self.at += len;
                }
                // A raw control character is not JSON; a backslash where none is allowed.
                0..=0x1f | b'\\' => return None,
                _ => self.at += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let next = self.bytes[self.at..].starts_with(word);
        if next {
            self.at += word.len();
        }
        next
    }

    /// A number, which is canonical when `serde_json` prints what it parses from it as it is.
    fn number(&mut self) -> bool {
        let start = self.at;
        self.eat(b'-');
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.peek().is_some_and(|b| b.is_ascii_digit()) {
                p.at += 1;
            }
            p.at > from
        };
        if !digits(self) {
            return false;
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            if !digits(self) {
                return false;
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            integer = false;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !digits(self) {
                return false;
            }
        }
        let token = &self.bytes[start..self.at];
        // Most numbers are small integers: without a leading zero or `-0`, and short enough
        // to fit an `i64`, they print back as they are.
        let unsigned = token.strip_prefix(b"-").unwrap_or(token);
        if integer && unsigned.len() <= 18 && (unsigned[0] != b'0' || token == b"0") {
            return true;
        }
        reprinted_same(token)
    }
}

/// The length of the escape at the start of `at` (`\n`, `\u001b`, …) if `serde_json` writes
/// it so; `None` for any other escape.
fn canonical_escape(at: &[u8]) -> Option<usize> {
    match *at.get(1)? {
        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => {
            let hex = at.get(2..6)?;
            let lower = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
            let value = |b: u8| {
                if b.is_ascii_digit() {
                    b - b'0'
                } else {
                    b - b'a' + 10
                }
            };
            if hex[0] != b'0' || hex[1] != b'0' || !lower(hex[2]) || !lower(hex[3]) {
                return None;
            }
            let code = value(hex[2]) * 16 + value(hex[3]);
            // Below 0x20, but not one with a short form.
            let short = matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d);
            (code < 0x20 && !short).then_some(6)
        }
        _ => None,
    }
}

/// Whether `serde_json` prints the number it parses from `token` as `token`.
fn reprinted_same(token: &[u8]) -> bool {
    let Ok(number) = serde_json::from_slice::<serde_json::Number>(token) else {
        return false;
    };
    let mut printed = [0u8; 64];
    let mut out = std::io::Cursor::new(&mut printed[..]);
    if serde_json::to_writer(&mut out, &number).is_err() {
        return false;
    }
    let len = out.position() as usize;
    printed[..len] == *token
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// What the master writes for `text` the slow way: parsed into a map, serialised again.
    fn reserialised(text: &str) -> Option<String> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(Value::Object(map).to_string()),
            _ => None,
        }
    }

    #[test]
    fn what_serde_json_writes_is_canonical() {
        let values = [
            serde_json::json!({}),
            serde_json::json!({"client": "10.0.0.1", "duration_ms": 0.1, "method": "GET", "path": "/bench", "status": 200}),
            serde_json::json!({"event": "tick", "n": -42, "big": u64::MAX, "small": i64::MIN, "f": 1.5e300, "g": -0.0, "h": 1e-7}),
            serde_json::json!({"nested": {"time": [1, {"b": null, "a": true}], "z": false}, "list": []}),
            serde_json::json!({"line": "say \"hi\"\\ \n\r\t\u{0}\u{1b}[31m\u{7f} été 日本 🦀 \u{2028}\u{8}\u{c}"}),
            serde_json::json!({"field_time": 1, "kinds": "x", "w": "/a/b"}),
        ];
        for value in values {
            let text = value.to_string();
            assert!(is_canonical_fields(&text), "{text}");
            assert_eq!(reserialised(&text).as_deref(), Some(&*text));
        }
    }

    #[test]
    fn what_would_be_written_otherwise_is_not() {
        let texts = [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1 }"#,
            r#" {"a":1}"#,
            "{\"a\":\n1}",
            r#"{"time":1}"#,
            r#"{"group":"x"}"#,
            r#"{"a\"b":1}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\u000A"}"#,
            r#"{"a":"\u001B"}"#,
            r#"{"a":1e2}"#,
            r#"{"a":1.0E2}"#,
            r#"{"a":1.50}"#,
            r#"{"a":-0}"#,
            r#"{"a":123456789012345678901234567890}"#,
            r#"{"a":01}"#,
            r#"{"a":.5}"#,
            r#"{"a":1.}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{}"#,
            r#"{"a":1}x"#,
            r#"[1]"#,
            r#""a""#,
            "",
            "{",
        ];
        for text in texts {
            assert!(!is_canonical_fields(text), "{text}");
        }
    }

    #[test]
    fn accepted_text_always_reserialises_to_itself() {
        // Every object the recognizer accepts, among many near-misses, prints back as it is.
        let atoms = [
            "0",
            "-1",
            "1.5",
            "1e5",
            "1E5",
            "1.0",
            "0.1",
            "-0.0",
            "true",
            "null",
            r#""x""#,
            r#""\u0000""#,
            r#""\n""#,
            "[]",
            "{}",
            r#"{"a":1}"#,
            r#"{"b":1,"a":1}"#,
            "12345678901234567890",
        ];
        let keys = ["a", "b", "time", "pid2", "field_kind"];
        for (i, first) in atoms.iter().enumerate() {
            for second in &atoms[i..] {
                for key in keys {
                    let text = format!(r#"{{"{key}":{first},"zz":[{second},{first}]}}"#);
                    if is_canonical_fields(&text) {
                        assert_eq!(reserialised(&text).as_deref(), Some(&*text), "{text}");
                    }
                }
            }
        }
        let deep = "[".repeat(70) + &"]".repeat(70);
        assert!(!is_canonical_fields(&format!(r#"{{"a":{deep}}}"#)));
    }
}
