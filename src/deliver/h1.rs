//! A lean HTTP/1.1 client for plain-http upstreams that runs inside the request's own task: the
//! request is written and the answer read by the task that serves the client, with no connection
//! task, request channel or body channel in between (hyper's client needs all three, and they were
//! the largest single cost of a proxied request). Each serving worker keeps its own idle connections.
//!
//! Scope: what a gateway sends upstream (a request with a complete body) and every answer framing
//! HTTP/1.1 allows: `Content-Length`, chunked (SSE streams), and close-delimited; interim 1xx answers
//! are skipped. A connection goes back to the pool only after its answer was read to the end and
//! the upstream did not ask to close it. Anything else (TLS, HTTP/2) uses hyper's pooled client.

use super::upstream_error::UpstreamError;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Bodies up to this size are copied behind the head and sent in one write.
const INLINE_BODY: usize = 16 * 1024;
/// Idle connections kept per worker and backend.
const MAX_IDLE: usize = 1024;

/// One worker's connections to one backend.
#[derive(Debug)]
pub struct Pool {
    authority: String,
    host: HeaderValue,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

#[derive(Debug)]
struct Conn {
    io: TcpStream,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
}

impl Conn {
    /// Whether the upstream closed (or wrote to) this idle connection. Uses the readiness the runtime
    /// already has: no system call unless the socket became readable.
    fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable while idle: either end of stream, unexpected bytes, or a stale readiness flag.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

impl Pool {
    /// `authority`: `host:port` of an `http://` backend.
    pub fn new(authority: String, connect_timeout: Duration) -> Option<Pool> {
        Some(Pool {
            host: HeaderValue::from_str(&authority).ok()?,
            authority,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if c.is_usable() {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let io = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
        })
    }

    /// Send `req` (origin-form target, whole body) and read the answer's head; the body follows as
    /// the response's [`Body`].
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Bytes>,
    ) -> Result<Response<Body>, UpstreamError> {
        let (parts, body) = req.into_parts();
        let mut msg = encode_head(&parts, &self.host, body.len());
        // A small body goes out in the same write as the head; a large one after it, uncopied.
        let rest = if body.len() <= INLINE_BODY {
            msg.extend_from_slice(&body);
            None
        } else {
            Some(body)
        };
        let (mut conn, reused) = match self.checkout() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        // The upstream may close an idle connection just as it is taken from the pool (its idle
        // timeout races the request). A reused connection closed or reset before any byte of an
        // answer never answered the request: it goes once more, on a fresh connection.
        if let Err(e) = start_exchange(&mut conn, &msg, rest.as_ref()).await {
            if !(reused && hung_up(&e)) {
                return Err(UpstreamError::Io(e));
            }
            conn = self.connect().await?;
            start_exchange(&mut conn, &msg, rest.as_ref())
                .await
                .map_err(UpstreamError::Io)?;
        }
        read_head(self.clone(), conn).await
    }
}

fn encode_head(parts: &http::request::Parts, host: &HeaderValue, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body_len.min(INLINE_BODY));
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    if !parts.headers.contains_key(HOST) {
        line(b"host", host.as_bytes());
    }
    for (name, value) in &parts.headers {
        // Framing is ours to set.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        line(name.as_str().as_bytes(), value.as_bytes());
    }
    // A GET or HEAD without a body (a probe) sends no length (RFC 9110 §8.6).
    if body_len > 0 || !matches!(parts.method, http::Method::GET | http::Method::HEAD) {
        line(b"content-length", body_len.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Write the request and wait for the first bytes of its answer.
async fn start_exchange(conn: &mut Conn, msg: &[u8], rest: Option<&Bytes>) -> io::Result<()> {
    conn.io.write_all(msg).await?;
    if let Some(body) = rest {
        conn.io.write_all(body).await?;
    }
    conn.buf.reserve(8 * 1024);
    if conn.io.read_buf(&mut conn.buf).await? == 0 {
        return Err(closed_before_answering());
    }
    Ok(())
}

fn closed_before_answering() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "upstream closed the connection before answering",
    )
}

/// The connection is gone: closed or reset by the upstream.
fn hung_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Read the rest of the answer's head (skipping interim answers); the body follows as [`Body`].
async fn read_head(pool: Arc<Pool>, mut conn: Conn) -> Result<Response<Body>, UpstreamError> {
    loop {
        if let Some(head) = parse_head(&mut conn.buf)? {
            if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok(head.into_response(pool, conn));
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err(UpstreamError::Protocol("response head too large"));
        }
        conn.buf.reserve(8 * 1024);
        let n = conn
            .io
            .read_buf(&mut conn.buf)
            .await
            .map_err(UpstreamError::Io)?;
        if n == 0 {
            return Err(UpstreamError::Io(closed_before_answering()));
        }
    }
}

struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// A complete response head at the start of `buf`, consumed from it; `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, UpstreamError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut slots);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpstreamError::Protocol("malformed response head")),
    };
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(UpstreamError::Protocol("malformed status"))?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut close = version == Version::HTTP_10;
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| UpstreamError::Protocol("malformed header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| UpstreamError::Protocol("malformed header value"))?;
        if name == TRANSFER_ENCODING {
            // The last coding decides whether the body is chunked.
            chunked = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name == CONTENT_LENGTH {
            let n = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(UpstreamError::Protocol("malformed content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(UpstreamError::Protocol("conflicting content-length"));
            }
            length = Some(n);
        } else if name == CONNECTION
            && let Ok(v) = value.to_str()
        {
            for token in v.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    buf.advance(len);
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::Size)
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive: !close,
    }))
}

impl Head {
    fn into_response(self, pool: Arc<Pool>, conn: Conn) -> Response<Body> {
        let mut body = Body {
            conn: Some(conn),
            pool,
            framing: self.framing,
            keep_alive: self.keep_alive,
        };
        body.finish_if_done();
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = self.headers;
        resp
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// Bytes left.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes left in the current chunk.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// An upstream answer's body, read from the connection as the caller polls; the connection returns to
/// its pool when the body ends cleanly.
#[derive(Debug)]
pub struct Body {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    framing: Framing,
    keep_alive: bool,
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One CRLF-terminated line at the start of `buf`, consumed (without its CRLF).
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, io::Error> {
    match memchr::memchr(b'\n', buf) {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > 4096 => Err(bad("chunk line too long")),
        None => Ok(None),
    }
}

impl Body {
    fn finish_if_done(&mut self) {
        if matches!(self.framing, Framing::Length(0)) {
            self.framing = Framing::Done;
        }
        if self.framing == Framing::Done
            && let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.pool.checkin(conn);
        }
    }

    /// The next data frame decodable from what is buffered; `Ok(None)` when more bytes are needed.
    fn decode(&mut self) -> Result<Option<Bytes>, io::Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Framing::Chunked(Chunked::Size) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    let hex = line[..].split(|b| *b == b';').next().unwrap_or(&[]);
                    let hex = std::str::from_utf8(hex).map_err(|_| bad("bad chunk size"))?;
                    let size =
                        u64::from_str_radix(hex.trim(), 16).map_err(|_| bad("bad chunk size"))?;
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    });
                }
                Framing::Chunked(Chunked::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.framing = Framing::Chunked(if n as u64 == left {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left - n as u64)
                    });
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                Framing::Chunked(Chunked::DataEnd) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    if !line.is_empty() {
                        return Err(bad("missing CRLF after chunk data"));
                    }
                    self.framing = Framing::Chunked(Chunked::Size);
                }
                Framing::Chunked(Chunked::Trailers) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.framing = Framing::Done;
                    }
                }
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Ok(Some(data)) => {
                    this.finish_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.framing == Framing::Done {
                this.finish_if_done();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            conn.buf.reserve(8 * 1024);
            let n = match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if n == 0 {
                this.conn = None;
                if this.framing == Framing::UntilClose {
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                this.framing = Framing::Done;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection mid-body",
                ))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
