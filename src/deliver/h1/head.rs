//! A response head and the framing of the body after it (RFC 9112 §6): which of `Content-Length`,
//! `Transfer-Encoding` or the connection's close ends the body, and whether the connection may carry
//! another request afterwards.

use super::UpstreamError;
use super::chunked::Chunked;
use crate::protocol::headers::read_from_answer;
use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

const MAX_HEADERS: usize = 100;

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Framing {
    /// Bytes left.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

pub(super) struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once the body was read to its end.
    pub keep_alive: bool,
}

fn protocol(msg: &'static str) -> UpstreamError {
    UpstreamError::Protocol(msg)
}

/// A complete response head at the start of `buf`, consumed from it; `None` when more bytes are needed.
pub(super) fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, UpstreamError> {
    // Slots the parser fills: left uninitialised (3.2 KiB of stack not written for every answer).
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut r, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(protocol("malformed response head")),
    };
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(protocol("malformed status"))?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each field's name and value lie in the head: the values are then slices of the head's
    // own bytes, shared rather than copied (one allocation for the head, none per field).
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = r.headers.len();
    for (span, h) in spans.iter_mut().zip(r.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        *span = (
            name as u32,
            (name + h.name.len()) as u32,
            value as u32,
            (value + h.value.len()) as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    // Only the fields a stage reads go into the map (`read_from_answer`); the framing fields are
    // read here. httparse has checked every name (a token) and value (no control bytes) already.
    let mut headers = HeaderMap::new();
    let mut fields = Fields::default();
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = &head[ns as usize..ne as usize];
        let value = &head[vs as usize..ve as usize];
        fields.add(name, value)?;
        if read_from_answer(name) {
            let name =
                HeaderName::from_bytes(name).map_err(|_| protocol("malformed header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| protocol("malformed header value"))?;
            headers.append(name, value);
        }
    }
    let (framing, reusable) = fields.framing(status, version)?;
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive: reusable && fields.keep_alive(version),
    }))
}

/// What the framing and connection fields of a head say.
#[derive(Default)]
struct Fields {
    /// The transfer codings of every `Transfer-Encoding` line, in order; `Some` when there was one.
    codings: Option<Vec<String>>,
    length: Option<u64>,
    close: bool,
    keep_alive: bool,
}

impl Fields {
    fn add(&mut self, name: &[u8], value: &[u8]) -> Result<(), UpstreamError> {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let v = text(value).ok_or(protocol("malformed transfer-encoding"))?;
            let codings = self.codings.get_or_insert_with(Vec::new);
            codings.extend(list(v).map(str::to_ascii_lowercase));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let v = text(value).ok_or(protocol("malformed content-length"))?;
            for n in v.split(',').map(ows_trim) {
                let n = content_length(n).ok_or(protocol("malformed content-length"))?;
                if self.length.is_some_and(|l| l != n) {
                    return Err(protocol("conflicting content-length"));
                }
                self.length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"connection")
            && let Some(v) = text(value)
        {
            for token in list(v) {
                self.close |= token.eq_ignore_ascii_case("close");
                self.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
        Ok(())
    }

    /// HTTP/1.1 stays open unless told to close; HTTP/1.0 closes unless told to keep alive. A
    /// `close` anywhere wins.
    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }

    /// Whether the transfer codings end in `chunked`; `None` without a `Transfer-Encoding`.
    fn chunked(&self, version: Version) -> Result<Option<bool>, UpstreamError> {
        let Some(codings) = &self.codings else {
            return Ok(None);
        };
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; the framing is faulty.
        if version == Version::HTTP_10 {
            return Err(protocol("transfer-encoding in an http/1.0 response"));
        }
        if codings.is_empty() {
            return Err(protocol("empty transfer-encoding"));
        }
        // RFC 9112 §6.1: a sender must not apply chunked more than once.
        if codings.iter().filter(|c| *c == "chunked").count() > 1 {
            return Err(protocol("chunked applied more than once"));
        }
        Ok(Some(codings.last().is_some_and(|c| c == "chunked")))
    }

    /// The body's framing, and whether the connection can be reused after it.
    fn framing(
        &self,
        status: StatusCode,
        version: Version,
    ) -> Result<(Framing, bool), UpstreamError> {
        let chunked = self.chunked(version)?;
        // RFC 9112 §6.3 rule 3: with both, Transfer-Encoding frames the body and the connection
        // closes after it (the two disagreeing is how request smuggling starts).
        let both = chunked.is_some() && self.length.is_some();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now speaks another protocol: never pooled.
            return Ok((Framing::Length(0), false));
        }
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((Framing::Length(0), !both));
        }
        Ok(match (chunked, self.length) {
            (Some(true), _) => (Framing::Chunked(Chunked::default()), !both),
            // Rule 4: chunked is not the final coding: the body runs to the close.
            (Some(false), _) => (Framing::UntilClose, false),
            (None, Some(n)) => (Framing::Length(n), true),
            (None, None) => (Framing::UntilClose, false),
        })
    }
}

/// A field value as text when it is visible ASCII, spaces and tabs only (as `HeaderValue::to_str`).
fn text(value: &[u8]) -> Option<&str> {
    let visible = value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    std::str::from_utf8(value).ok().filter(|_| visible)
}

/// The elements of a comma-separated field value, trimmed, empty ones skipped (RFC 9110 §5.6.1).
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(ows_trim).filter(|s| !s.is_empty())
}

/// Without leading and trailing spaces and tabs (optional white space).
fn ows_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6): no sign, no radix prefix, no overflow.
fn content_length(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
