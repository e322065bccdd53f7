//! Server-sent events: an incremental parser and an encoder.

use bytes::Bytes;

/// Capacity of the partial-line buffer kept between lines; a longer line's buffer is freed.
const KEEP_LINE_CAPACITY: usize = 4096;

/// One dispatched server-sent event. `data` joins multi-line data with `\n`.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser (per the WHATWG event-stream rules): feed it chunks as they
/// arrive; events split across chunks, `\n` / `\r\n` / `\r` line ends, multi-line data,
/// comments (`:` lines), `id:`/`retry:` fields and a leading BOM are all handled.
///
/// Strict on encoding: a line that is not UTF-8 stops the parser ([`SseParser::invalid`]), where
/// the standard would decode it lossily: an AI upstream sending such bytes is broken, and
/// replacing them would hand the client altered text as if nothing happened.
///
/// Bounded: a line longer than `max_line` bytes or an event whose data grows past `max_event`
/// bytes stops the parser ([`SseParser::too_large`]); what it buffers never exceeds those bounds,
/// whatever the upstream sends (no newline at all, or data lines without the blank line).
#[derive(Debug)]
pub struct SseParser {
    max_line: usize,
    max_event: usize,
    /// A bound was exceeded: the rest of the stream is ignored.
    over: bool,
    /// A line was not UTF-8: the rest of the stream is ignored.
    invalid: bool,
    /// Bytes of the current, unfinished line (kept as bytes so split UTF-8 survives).
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one ends nothing.
    skip_lf: bool,
    /// The first line has been seen (BOM stripping is done).
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limits(usize::MAX, usize::MAX)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that stops past `max_line` bytes in one line or `max_event` bytes of one event.
    pub fn with_limits(max_line: usize, max_event: usize) -> Self {
        SseParser {
            max_line,
            max_event,
            over: false,
            invalid: false,
            line: Vec::new(),
            skip_lf: false,
            started: false,
            event: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// A line or an event went past its bound; nothing more is parsed.
    pub fn too_large(&self) -> bool {
        self.over
    }

    /// A line was not UTF-8 (the stream is not SSE); nothing more is parsed.
    pub fn invalid(&self) -> bool {
        self.invalid
    }

    /// Between events: no partial line, data or event name held. Bytes fed from here up to the
    /// next such point are exactly the events they completed (plus comments and ignored fields).
    pub fn at_boundary(&self) -> bool {
        self.line.is_empty() && !self.has_data && self.event.is_none() && !self.stopped()
    }

    fn stopped(&self) -> bool {
        self.over || self.invalid
    }

    fn exceeds(&mut self, line_add: usize) -> bool {
        if self.line.len().saturating_add(line_add) > self.max_line {
            self.over = true;
            self.line = Vec::new();
            self.data = String::new();
        }
        self.over
    }

    /// Feed the next chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.push_into(chunk, &mut out);
        out
    }

    /// Feed the next chunk; the events it completed are appended to `out`. A line that ends in
    /// the chunk and did not start in an earlier one is read where it is, without a copy.
    pub fn push_into(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = chunk;
        while !rest.is_empty() && !self.stopped() {
            if self.skip_lf {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(i) => {
                    if self.exceeds(i) {
                        break;
                    }
                    self.skip_lf = rest[i] == b'\r';
                    if self.line.is_empty() {
                        self.end_line(&rest[..i], out);
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&rest[..i]);
                        self.end_line(&line, out);
                        // Keep a small line buffer for the next split line; give a large one back.
                        if line.capacity() <= KEEP_LINE_CAPACITY {
                            line.clear();
                            self.line = line;
                        }
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    if !self.exceeds(rest.len()) {
                        self.line.extend_from_slice(rest);
                    }
                    break;
                }
            }
        }
    }

    /// End of stream: dispatch a final event that lacked its terminating blank line
    /// (strict SSE would drop it; upstreams that omit it are common enough to be lenient).
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.stopped() {
            return out;
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.end_line(&line, &mut out);
        }
        self.end_line(b"", &mut out);
        self.skip_lf = false;
        out
    }

    fn end_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let Ok(line) = std::str::from_utf8(line) else {
            self.invalid = true;
            self.data = String::new();
            return;
        };
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        // `data:` first: nearly every line is one, and a prefix is cheaper than a search.
        let (name, value) = match line.strip_prefix("data:").map(|v| ("data", v)) {
            Some(split) => split,
            None => line.split_once(':').unwrap_or((line, "")),
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => {
                self.event = (!value.is_empty()).then(|| value.to_owned());
            }
            "data" => {
                if self.data.len().saturating_add(value.len()) >= self.max_event {
                    self.over = true;
                    self.data = String::new();
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields carry nothing we forward
        }
    }
}

/// Encode one SSE frame: optional `event:` line, one `data:` line per line of `data`,
/// and the terminating blank line.
pub fn encode_sse(event: Option<&str>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(event) = event {
        s.push_str("event: ");
        s.push_str(event);
        s.push('\n');
    }
    let normalized;
    let data = if data.contains('\r') {
        normalized = data.replace("\r\n", "\n").replace('\r', "\n");
        normalized.as_str()
    } else {
        data
    };
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}
