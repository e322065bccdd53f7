//! The chunked transfer coding (RFC 9112 §7.1), decoded as strictly as hyper's client or more:
//!
//! - `chunk-size` is 1 to 16 hex digits (no sign, no `0x`, no leading white space), optionally
//!   followed by spaces or tabs (BWS), then either the end of the line or `;` and extensions;
//! - every chunk-size line and trailer line ends in CRLF, and the chunk data is followed by exactly
//!   CRLF: a bare LF, or a CR that does not start a CRLF, is an error;
//! - each trailer line is a well-formed header field; trailer lines, their size and the extension
//!   bytes of a whole body are bounded.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use std::io;

/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;
/// Chunk extension bytes in one body (hyper's limit).
const MAX_EXTENSIONS: usize = 16 * 1024;
/// Trailer lines, and their bytes, in one body.
const MAX_TRAILERS: usize = 100;
const MAX_TRAILER_BYTES: usize = 8 * 1024;
/// More hex digits than this would not fit in 64 bits, leading zeros or not.
const MAX_SIZE_DIGITS: usize = 16;

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Chunked {
    state: State,
    extension_bytes: usize,
    trailer_lines: usize,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
enum State {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Bytes left in the current chunk.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

pub(super) fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Chunked {
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next chunk data in `buf`, consumed from it with the framing before it; `Ok(None)` when
    /// more bytes are needed or the body ended ([`Chunked::is_done`]).
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    let size = self.chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.state = if n as u64 == left {
                        State::DataEnd
                    } else {
                        State::Data(left - n as u64)
                    };
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                State::DataEnd => {
                    if !b"\r\n".starts_with(&buf[..buf.len().min(2)]) {
                        return Err(bad("missing crlf after chunk data"));
                    }
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        self.trailer(&line)?;
                    }
                }
            }
        }
    }

    /// `chunk-size [BWS] [";" chunk-ext]`, the line without its CRLF.
    fn chunk_size(&mut self, line: &[u8]) -> io::Result<u64> {
        let (size, ext) = match memchr::memchr(b';', line) {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        let digits = size.trim_ascii_end();
        // Only spaces and tabs may follow the digits (a trimmed CR, LF or form feed may not).
        let bws = &size[digits.len()..];
        if digits.is_empty()
            || digits.len() > MAX_SIZE_DIGITS
            || !digits.iter().all(u8::is_ascii_hexdigit)
            || !bws.iter().all(|b| *b == b' ' || *b == b'\t')
        {
            return Err(bad("bad chunk size"));
        }
        if let Some(ext) = ext {
            self.extension_bytes += ext.len();
            if self.extension_bytes >= MAX_EXTENSIONS {
                return Err(bad("chunk extensions too long"));
            }
        }
        let digits = std::str::from_utf8(digits).map_err(|_| bad("bad chunk size"))?;
        u64::from_str_radix(digits, 16).map_err(|_| bad("bad chunk size"))
    }

    /// One trailer line (without its CRLF): a header field, counted and otherwise dropped.
    fn trailer(&mut self, line: &[u8]) -> io::Result<()> {
        self.trailer_lines += 1;
        self.trailer_bytes += line.len() + 2;
        if self.trailer_lines > MAX_TRAILERS || self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(bad("chunk trailers too large"));
        }
        let mut field = Vec::with_capacity(line.len() + 4);
        field.extend_from_slice(line);
        field.extend_from_slice(b"\r\n\r\n");
        let mut slot = [httparse::EMPTY_HEADER; 1];
        let ok = match httparse::parse_headers(&field, &mut slot) {
            Ok(httparse::Status::Complete((_, [h]))) => {
                HeaderName::from_bytes(h.name.as_bytes()).is_ok()
                    && HeaderValue::from_bytes(h.value).is_ok()
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(bad("malformed chunk trailer"))
        }
    }
}

/// One CRLF-terminated line at the start of `buf`, consumed; returned without its CRLF. A line ended
/// by a bare LF, or holding a CR elsewhere, is an error.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    let lf = memchr::memchr(b'\n', buf);
    if lf.unwrap_or(buf.len()) > MAX_LINE {
        return Err(bad("chunk line too long"));
    }
    let Some(lf) = lf else {
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(bad("chunk line ends in a bare lf"));
    }
    if memchr::memchr(b'\r', &buf[..lf - 1]).is_some() {
        return Err(bad("stray cr in a chunk line"));
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    Ok(Some(line))
}
