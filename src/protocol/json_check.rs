//! Whether bytes are one JSON text (RFC 8259), checked without building anything: the gate a
//! passed-through upstream answer goes through before it reaches a client as a complete one. The
//! same walk, steered by its caller ([`Walk`]), reads a stream chunk's fields, a request's fields
//! and an answer's usage in the pass that validates them.
//!
//! Stricter than serde's skip of a value (`IgnoredAny`), which it replaces on that path at about a
//! third of the cost: the text must be UTF-8, and a `\u` escape may not leave a surrogate unpaired
//! (as serde_json requires when it reads a string).

/// Deepest nesting of arrays and objects accepted: serde_json's limit when it builds a tree.
const MAX_DEPTH: usize = 128;

/// `true` when `text` is exactly one JSON value, with optional white space around it.
pub fn is_json(text: &[u8]) -> bool {
    if std::str::from_utf8(text).is_err() {
        return false;
    }
    let mut c = Cursor { b: text, i: 0 };
    c.ws();
    let whole = c.value(0);
    c.ended(whole)
}

/// Deepest nesting a [`Walk`] goes: anything deeper is left to a full parser, whose limit may be
/// counted differently.
const WALK_DEPTH: usize = 64;

/// A validating walk that lets its caller read the values it wants as it goes: one pass over the
/// text, nothing allocated. The caller steers it: at each member or element it walks the value
/// itself, with [`Walk::value`] (the value's text, validated), [`Walk::object`] or [`Walk::array`].
/// Nesting is held to [`WALK_DEPTH`]. An escaped key stops the walk: a reader that compares raw keys
/// must not guess what it means; the caller then asks a full parser, which decides. Every piece it
/// hands out is cut next to an ASCII quote or bracket, so it is a `str` too.
pub struct Walk<'a> {
    text: &'a str,
    c: Cursor<'a>,
    /// Objects and arrays entered and not yet left.
    depth: usize,
}

impl<'a> Walk<'a> {
    /// At the first value of `text`.
    pub fn new(text: &'a str) -> Walk<'a> {
        let mut c = Cursor {
            b: text.as_bytes(),
            i: 0,
        };
        c.ws();
        Walk { text, c, depth: 0 }
    }

    /// The first byte of the value the walk is at.
    pub fn peek(&self) -> Option<u8> {
        self.c.peek()
    }

    /// Walks the value the walk is at: its text, `None` when it is not valid.
    pub fn value(&mut self) -> Option<&'a str> {
        let start = self.c.i;
        self.c
            .value(MAX_DEPTH - WALK_DEPTH + self.depth)
            .then(|| &self.text[start..self.c.i])
    }

    /// Walks the value the walk is at without handing it out: whether it is valid.
    pub fn skip(&mut self) -> bool {
        self.c.value(MAX_DEPTH - WALK_DEPTH + self.depth)
    }

    /// Walks the object the walk is at: `on_member` is given each raw key (between its quotes),
    /// with the walk at its value, which it must walk; its `false` stops the walk. `false` when the
    /// object is not whole and valid.
    pub fn object(&mut self, on_member: &mut dyn FnMut(&mut Walk<'a>, &'a str) -> bool) -> bool {
        if self.peek() != Some(b'{') || self.depth >= WALK_DEPTH {
            return false;
        }
        self.depth += 1;
        let whole = self.members_with(on_member);
        self.depth -= 1;
        whole
    }

    fn members_with(&mut self, on_member: &mut dyn FnMut(&mut Walk<'a>, &'a str) -> bool) -> bool {
        if self.c.open(b'}') {
            return true;
        }
        loop {
            let start = self.c.i + 1;
            if self.c.peek() != Some(b'"') || self.c.string_escaped() != Some(false) {
                return false;
            }
            let key = &self.text[start..self.c.i - 1];
            self.c.ws();
            if self.c.peek() != Some(b':') {
                return false;
            }
            self.c.i += 1;
            self.c.ws();
            if !on_member(self, key) {
                return false;
            }
            match self.c.after_item(b'}') {
                Some(true) => return true,
                Some(false) => {}
                None => return false,
            }
        }
    }

    /// Walks the array the walk is at, as [`Walk::object`] does an object.
    pub fn array(&mut self, on_element: &mut dyn FnMut(&mut Walk<'a>) -> bool) -> bool {
        if self.peek() != Some(b'[') || self.depth >= WALK_DEPTH {
            return false;
        }
        self.depth += 1;
        let whole = self.c.open(b']')
            || loop {
                if !on_element(self) {
                    break false;
                }
                match self.c.after_item(b']') {
                    Some(true) => break true,
                    Some(false) => {}
                    None => break false,
                }
            };
        self.depth -= 1;
        whole
    }

    /// Whether only white space is left.
    pub fn ended(mut self) -> bool {
        self.c.ended(true)
    }
}

/// A JSON string value (as [`Walk::value`] hands it out) without escapes, as its text; `None` for
/// one with escapes, or for another value.
pub fn plain_string(v: &str) -> Option<&str> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

type Span = std::ops::Range<usize>;

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    /// The walk was `whole` and only white space follows it.
    fn ended(&mut self, whole: bool) -> bool {
        self.ws();
        whole && self.i == self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1, &mut |_, _| true),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1, &mut |_| true),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.b[self.i..].starts_with(word);
        self.i += word.len();
        ok
    }

    /// At `{`. `on_member` is told each key (between its quotes) and value; `false` stops the walk.
    fn object(&mut self, depth: usize, on_member: &mut impl FnMut(Span, Span) -> bool) -> bool {
        if self.open(b'}') {
            return true;
        }
        loop {
            let key = self.i + 1;
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            let key = key..self.i - 1;
            self.ws();
            if self.peek() != Some(b':') {
                return false;
            }
            self.i += 1;
            self.ws();
            let value = self.i;
            if !self.value(depth) || !on_member(key, value..self.i) {
                return false;
            }
            match self.after_item(b'}') {
                Some(true) => return true,
                Some(false) => {}
                None => return false,
            }
        }
    }

    /// At `[`. `on_element` is told each element; `false` stops the walk.
    fn array(&mut self, depth: usize, on_element: &mut impl FnMut(Span) -> bool) -> bool {
        if self.open(b']') {
            return true;
        }
        loop {
            let start = self.i;
            if !self.value(depth) || !on_element(start..self.i) {
                return false;
            }
            match self.after_item(b']') {
                Some(true) => return true,
                Some(false) => {}
                None => return false,
            }
        }
    }

    /// Past an opening bracket: whether the container is empty (its `close` consumed).
    fn open(&mut self, close: u8) -> bool {
        self.i += 1;
        self.ws();
        let empty = self.peek() == Some(close);
        if empty {
            self.i += 1;
        }
        empty
    }

    /// After a member or element: `Some(true)` past the closing `close`, `Some(false)` past a comma,
    /// `None` at anything else.
    fn after_item(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        if c == close {
            return Some(true);
        }
        (c == b',').then(|| {
            self.ws();
            false
        })
    }

    /// At `"`. The text is known to be UTF-8, so only quotes, escapes and control characters matter;
    /// the bytes between them are skipped eight at a time.
    fn string(&mut self) -> bool {
        self.string_escaped().is_some()
    }

    /// As [`Cursor::string`]: `Some(true)` when the string holds an escape, `None` when it is not
    /// a valid string. Inlined into its two callers: called for every key and string value, its
    /// registers' saving and restoring cost about as much as a short string's scan.
    #[inline(always)]
    fn string_escaped(&mut self) -> Option<bool> {
        let b = self.b;
        let mut i = self.i + 1;
        let mut escaped = false;
        loop {
            i = plain_run(b, i);
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Some(escaped);
                }
                Some(b'\\') => {
                    self.i = i + 1;
                    if !self.escape() {
                        return None;
                    }
                    i = self.i;
                    escaped = true;
                }
                // A control character, or the end.
                _ => return None,
            }
        }
    }

    /// After a backslash: one escape; a high surrogate must be followed at once by its low half.
    /// Kept out of line: escapes are rare, and inlined its registers would be saved on every string.
    #[cold]
    #[inline(never)]
    fn escape(&mut self) -> bool {
        let Some(e) = self.peek() else {
            return false;
        };
        self.i += 1;
        match e {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => true,
            b'u' => match self.hex4() {
                Some(0xD800..=0xDBFF) => {
                    self.b[self.i..].starts_with(b"\\u") && {
                        self.i += 2;
                        matches!(self.hex4(), Some(0xDC00..=0xDFFF))
                    }
                }
                Some(0xDC00..=0xDFFF) | None => false,
                Some(_) => true,
            },
            _ => false,
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut unit = 0u16;
        for &d in digits {
            unit = unit << 4 | (d as char).to_digit(16)? as u16;
        }
        self.i += 4;
        Some(unit)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|d| d.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek().is_some_and(|d| d.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        true
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|d| d.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

/// Where the first byte at or after `from` lies that is a quote, a backslash or a control character
/// (below 0x20); `b.len()` when there is none.
#[inline]
fn plain_run(b: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set in `found` where it is special; below the first special byte no bit
    // is set by mistake (the borrows that cause false hits only run upwards from a true one).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut n = from;
    while let Some(chunk) = b.get(n..n + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = zero(v ^ (ONES * b'"' as u64))
            | zero(v ^ (ONES * b'\\' as u64))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
        if found != 0 {
            return n + (found.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while let Some(&c) = b.get(n) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        n += 1;
    }
    n
}

/// Every single-byte change of `text` to one of JSON's structural or literal bytes, then every cut
/// of it: the mutations the differential tests of the fast readings run them through.
#[cfg(test)]
pub(crate) fn mutations(text: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..text.len()).flat_map(move |i| {
        b"\"\\{}[],:0ln -u"
            .iter()
            .map(move |&swap| {
                let mut m = text.to_vec();
                m[i] = swap;
                m
            })
            .chain(std::iter::once(text[..i].to_vec()))
    })
}

#[cfg(test)]
mod tests {
    use super::is_json;

    const VALID: &[&str] = &[
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        r#" { "a" : [ 1 , -0.5e+10 , 2E-3 , true , false , null , "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00" ] } "#,
        r#"[]"#,
        r#"{}"#,
        r#""é ünïcode ✓""#,
        "0",
        "-0",
        "12.5",
        "\n\t 7 \r\n",
        r#"{"a":{"b":{"c":[[[]]]}}}"#,
        r#"{"a":1,"a":2}"#,
    ];

    const INVALID: &[&str] = &[
        "",
        " ",
        "{",
        "}",
        "[1,]",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{"a":1}{"#,
        r#"{"a":1} x"#,
        "01",
        "1.",
        ".5",
        "1e",
        "+1",
        "-",
        "tru",
        "nul",
        "True",
        r#""unterminated"#,
        "\"tab\tinside\"",
        r#""bad \x escape""#,
        r#""\u12""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800x""#,
        "[1 2]",
        "{\"a\":1 \"b\":2}",
        "NaN",
        "Infinity",
    ];

    #[test]
    fn agrees_with_serde_on_valid_and_invalid_texts() {
        for t in VALID {
            assert!(is_json(t.as_bytes()), "valid: {t}");
            assert!(serde_json::from_str::<serde_json::Value>(t).is_ok(), "{t}");
        }
        for t in INVALID {
            assert!(!is_json(t.as_bytes()), "invalid: {t}");
            assert!(serde_json::from_str::<serde_json::Value>(t).is_err(), "{t}");
        }
    }

    #[test]
    fn every_single_byte_change_is_judged_as_serde_judges_it() {
        // Each position of each valid text replaced by each of these bytes: the verdicts must match
        // serde_json's (tree-building, so strings are checked as strictly as here).
        const SWAPS: &[u8] = b"\"\\{}[],:0-.eE+ \taxu\x01";
        for t in VALID {
            let t = t.as_bytes();
            for i in 0..t.len() {
                for &s in SWAPS {
                    let mut m = t.to_vec();
                    m[i] = s;
                    let ours = is_json(&m);
                    let serde = serde_json::from_slice::<serde_json::Value>(&m).is_ok();
                    assert_eq!(ours, serde, "{}", String::from_utf8_lossy(&m));
                }
                // And cut short there.
                let cut = &t[..i];
                assert_eq!(
                    is_json(cut),
                    serde_json::from_slice::<serde_json::Value>(cut).is_ok(),
                    "{}",
                    String::from_utf8_lossy(cut)
                );
            }
        }
    }

    #[test]
    fn the_plain_run_stops_at_the_first_special_byte_wherever_it_lies() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        for len in 0..20 {
            for at in 0..len {
                for special in (0u8..=255).filter(|c| *c < 0x20 || *c == b'"' || *c == b'\\') {
                    // Plain bytes of every kind around it, multi-byte UTF-8 included.
                    for filler in [b'a', 0x7f, 0x80, 0xff, b'!'] {
                        let mut b = vec![filler; len];
                        b[at] = special;
                        if at + 1 < len {
                            b[at + 1] = 0x00;
                        }
                        for from in 0..=at {
                            assert_eq!(
                                super::plain_run(&b, from),
                                from + naive(&b[from..]),
                                "{b:?} from {from}"
                            );
                        }
                    }
                }
            }
            assert_eq!(super::plain_run(&vec![b'x'; len], 0), len);
        }
    }

    #[test]
    fn not_utf8_or_too_deep_is_refused() {
        assert!(!is_json(b"\"\xff\""));
        assert!(!is_json(b"\"\xc3\""));
        let ok = "[".repeat(128) + &"]".repeat(128);
        assert!(is_json(ok.as_bytes()));
        let deep = "[".repeat(129) + &"]".repeat(129);
        assert!(!is_json(deep.as_bytes()));
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
        let deep_obj = r#"{"a":"#.repeat(200) + "1" + &"}".repeat(200);
        assert!(!is_json(deep_obj.as_bytes()));
    }

    /// A walk that steps into every object and array and reads every other value (`skip`: walks
    /// past it without reading it).
    fn walk_all(w: &mut super::Walk<'_>, skip: bool) -> bool {
        match w.peek() {
            Some(b'{') => w.object(&mut |w, _| walk_all(w, skip)),
            Some(b'[') => w.array(&mut |w| walk_all(w, skip)),
            _ if skip => w.skip(),
            _ => w.value().is_some(),
        }
    }

    #[test]
    fn a_steered_walk_judges_every_text_as_the_check_does() {
        let mut walked = 0;
        let mut judge = |t: &str| {
            let mut w = super::Walk::new(t);
            let ok = walk_all(&mut w, false) && w.ended();
            // An escaped key stops the walk; anything else is judged the same.
            if ok || !t.contains('\\') {
                assert_eq!(ok, is_json(t.as_bytes()), "{t}");
            }
            walked += usize::from(ok);
            // Skipping the leaves, or the whole text, judges it as reading them does.
            let mut w = super::Walk::new(t);
            assert_eq!(walk_all(&mut w, true) && w.ended(), ok, "{t}");
            let mut w = super::Walk::new(t);
            assert_eq!(w.skip() && w.ended(), is_json(t.as_bytes()), "{t}");
        };
        for t in VALID.iter().chain(INVALID) {
            judge(t);
            for m in super::mutations(t.as_bytes()).filter_map(|m| String::from_utf8(m).ok()) {
                judge(&m);
            }
        }
        assert!(walked > 200, "{walked}");
        // Nesting: as deep as the walk goes, and not one level more.
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(walk_all(
            &mut super::Walk::new(&nested(super::WALK_DEPTH)),
            false
        ));
        assert!(!walk_all(
            &mut super::Walk::new(&nested(super::WALK_DEPTH + 1)),
            false
        ));
    }
}
