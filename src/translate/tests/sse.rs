//! SSE parser and encoder.

use crate::translate::{SseEvent, SseParser, encode_sse};

fn e(event: Option<&str>, data: &str) -> SseEvent {
    SseEvent {
        event: event.map(str::to_string),
        data: data.to_string(),
    }
}

#[test]
fn parses_named_and_unnamed_events() {
    let mut p = SseParser::default();
    let out = p.push(b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: hello\n\n");
    assert_eq!(
        out,
        vec![e(Some("ping"), "{\"type\":\"ping\"}"), e(None, "hello")]
    );
}

#[test]
fn events_split_across_every_byte() {
    let raw = b"event: a\r\ndata: one\r\n\r\nevent: b\r\ndata: two\r\n\r\n";
    let mut p = SseParser::default();
    let mut out = Vec::new();
    for b in raw {
        out.extend(p.push(std::slice::from_ref(b)));
    }
    assert_eq!(out, vec![e(Some("a"), "one"), e(Some("b"), "two")]);
}

#[test]
fn crlf_split_between_cr_and_lf() {
    let mut p = SseParser::default();
    assert!(p.push(b"data: x\r").is_empty());
    // The LF completes the CRLF: it must not count as a second (blank) line.
    assert!(p.push(b"\n").is_empty());
    assert_eq!(p.push(b"\r"), vec![e(None, "x")]);
    assert!(p.push(b"\n").is_empty());
    assert_eq!(p.push(b"data: y\r\n\r\n"), vec![e(None, "y")]);
}

#[test]
fn bare_cr_line_ends() {
    let mut p = SseParser::default();
    assert_eq!(p.push(b"data: a\rdata: b\r\r"), vec![e(None, "a\nb")]);
}

#[test]
fn multi_line_data_comments_and_other_fields() {
    let mut p = SseParser::default();
    let out = p.push(b": keep-alive\nid: 7\nretry: 100\ndata: line1\ndata:line2\ndata\n\n");
    assert_eq!(out, vec![e(None, "line1\nline2\n")]);
}

#[test]
fn only_a_field_named_exactly_data_is_data() {
    let mut p = SseParser::default();
    let out = p.push(b"datum: no\ndata_x: no\ndata:  two spaces\ndata:: colon\n\n");
    assert_eq!(out, vec![e(None, " two spaces\n: colon")]);
}

#[test]
fn blank_lines_without_data_dispatch_nothing() {
    let mut p = SseParser::default();
    assert!(p.push(b"\n\n: comment\n\nevent: orphan\n\n").is_empty());
    // The orphan event name does not leak into the next event.
    assert_eq!(p.push(b"data: x\n\n"), vec![e(None, "x")]);
}

#[test]
fn utf8_split_across_chunks_and_bom() {
    let raw = "\u{feff}data: héllo ✓\n\n".as_bytes();
    let mut p = SseParser::default();
    let mut out = Vec::new();
    for c in raw.chunks(3) {
        out.extend(p.push(c));
    }
    assert_eq!(out, vec![e(None, "héllo ✓")]);
}

#[test]
fn finish_flushes_an_unterminated_event() {
    let mut p = SseParser::default();
    assert!(p.push(b"data: [DONE]").is_empty());
    assert_eq!(p.finish(), vec![e(None, "[DONE]")]);
    assert!(p.finish().is_empty());
}

#[test]
fn encode_round_trips() {
    assert_eq!(
        &encode_sse(Some("message_stop"), "{}")[..],
        b"event: message_stop\ndata: {}\n\n"
    );
    assert_eq!(&encode_sse(None, "[DONE]")[..], b"data: [DONE]\n\n");
    assert_eq!(
        &encode_sse(None, "a\r\nb\nc")[..],
        b"data: a\ndata: b\ndata: c\n\n"
    );
    let mut p = SseParser::default();
    assert_eq!(
        p.push(&encode_sse(Some("x"), "a\nb")),
        vec![e(Some("x"), "a\nb")]
    );
}

#[test]
fn a_line_or_an_event_past_its_bound_stops_the_parser() {
    // No newline at all: the buffer never grows past the bound.
    let mut p = SseParser::with_limits(16, 64);
    assert!(p.push(b"data: 0123456789").is_empty());
    assert!(!p.too_large());
    assert!(p.push(b"abcdef").is_empty());
    assert!(p.too_large());
    assert!(p.push(b"\n\n").is_empty(), "nothing after the bound");
    assert!(p.finish().is_empty());
    // Data lines without the blank line that ends an event.
    let mut p = SseParser::with_limits(1024, 64);
    for _ in 0..4 {
        p.push(b"data: 0123456789abcdef\n");
    }
    assert!(p.too_large());
    // Within the bounds nothing changes.
    let mut p = SseParser::with_limits(64, 64);
    let evs = p.push(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
    assert_eq!(evs.len(), 2);
    assert!(!p.too_large());
}

#[test]
fn a_line_that_is_not_utf8_stops_the_parser() {
    let mut p = SseParser::default();
    let evs = p.push(b"data: {\"a\":1}\n\n\xFF\xFEjunk\ndata: {\"b\":2}\n\n");
    assert_eq!(evs, vec![e(None, "{\"a\":1}")]);
    assert!(p.invalid());
    assert!(!p.too_large());
    assert!(
        p.push(b"data: x\n\n").is_empty(),
        "nothing after invalid bytes"
    );
    assert!(p.finish().is_empty());
    // UTF-8 split across chunks is not invalid.
    let mut p = SseParser::default();
    p.push(b"data: h\xC3");
    assert_eq!(p.push(b"\xA9\n\n"), vec![e(None, "h\u{e9}")]);
    assert!(!p.invalid());
}
