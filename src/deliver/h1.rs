//! A lean HTTP/1.1 client for plain-http upstreams that runs inside the request's own task: the
//! request is written and the answer read by the task that serves the client, with no connection
//! task, request channel or body channel in between (hyper's client needs all three, and they were
//! the largest single cost of a proxied request). Each serving worker keeps its own idle connections.
//!
//! Scope: what a gateway sends upstream (a request with a complete body) and every answer framing
//! HTTP/1.1 allows: `Content-Length`, chunked (SSE streams), and close-delimited; interim 1xx answers
//! are skipped. Anything else (TLS, HTTP/2) uses hyper's pooled client.
//!
//! The answer is read strictly (RFC 9112), never more leniently than hyper's client (a property test
//! in `h1/hyper_agreement.rs` holds the two side by side):
//! - `Content-Length` is `1*DIGIT` (white space around it trimmed; no sign, no `0x`, no overflow);
//!   a list or repeat of one value is that value, differing values are an error. It is checked
//!   even where it does not frame the body (next to a Transfer-Encoding, in a 204 or 304), where
//!   hyper ignores it;
//! - `Transfer-Encoding` frames the body whenever present: chunked when `chunked` is the final
//!   coding, otherwise up to the close (§6.3 rule 4). Together with `Content-Length`, the
//!   Transfer-Encoding wins and the connection is not reused (§6.3 rule 3). `chunked` twice, an
//!   empty coding list, or any Transfer-Encoding in an HTTP/1.0 answer is an error;
//! - chunked bodies follow the rules in [`chunked`]: hex sizes of at most 16 digits, CRLF line ends
//!   everywhere (a bare LF is an error), well-formed trailer fields.
//!
//! A connection goes back to the pool only after its answer was read to the end with nothing behind
//! it, its framing was not close-delimited or ambiguous, and the upstream did not ask to close it. An
//! idle connection is dropped once it has been idle longer than the pool's idle timeout (the client
//! passes `POOL_IDLE_TIMEOUT`, the one hyper's pooled client uses as well).

mod chunked;
mod head;

use super::upstream_error::UpstreamError;
use bytes::{Bytes, BytesMut};
use head::{Framing, parse_head};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Bodies up to this size are copied behind the head and sent in one write.
const INLINE_BODY: usize = 16 * 1024;
/// Idle connections kept per worker and backend.
const MAX_IDLE: usize = 1024;
/// Most bytes read from an answer's body per system call.
const READ_CHUNK: usize = 16 * 1024;

/// One worker's connections to one backend.
#[derive(Debug)]
pub struct Pool {
    authority: String,
    host: HeaderValue,
    connect_timeout: Duration,
    /// How long a connection may sit idle in the pool before it is dropped.
    idle_timeout: Duration,
    /// Oldest first: connections are pushed as they go idle.
    idle: Mutex<Vec<Conn>>,
}

#[derive(Debug)]
struct Conn {
    io: TcpStream,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
    /// When it went back to the pool.
    idle_since: Instant,
}

impl Conn {
    /// Read what the socket has (up to [`READ_CHUNK`]) behind the undecoded bytes. The bytes go
    /// through a buffer on the stack and the connection's buffer grows only by what arrived, so an
    /// open stream trickling small chunks holds no read buffer of its own between them (see
    /// [`Conn::release_if_drained`]).
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = tokio::io::ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let got = rb.filled();
        if self.buf.is_empty() {
            // Nothing left of earlier reads: a buffer of just what arrived, not the old capacity.
            self.buf = BytesMut::from(got);
        } else {
            self.buf.extend_from_slice(got);
        }
        Poll::Ready(Ok(got.len()))
    }

    /// Give the buffer's memory back once everything in it was decoded: the frames already handed
    /// out keep what they still need of it.
    fn release_if_drained(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

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
    /// `authority`: `host:port` of an `http://` backend; idle connections are dropped after
    /// `idle_timeout`.
    pub fn new(
        authority: String,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<Pool> {
        Some(Pool {
            host: HeaderValue::from_str(&authority).ok()?,
            authority,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The most recently idle connection that is neither expired nor closed by the upstream.
    fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let expired =
            idle.partition_point(|c| now.duration_since(c.idle_since) > self.idle_timeout);
        let stale: Vec<Conn> = idle.drain(..expired).collect();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if c.is_usable() {
                found = Some(c);
                break;
            }
        }
        drop(idle);
        drop(stale);
        found
    }

    fn checkin(&self, mut c: Conn) {
        c.idle_since = Instant::now();
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
            idle_since: Instant::now(),
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

impl head::Head {
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

/// An upstream answer's body, read from the connection as the caller polls; the connection returns to
/// its pool when the body ends cleanly.
#[derive(Debug)]
pub struct Body {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    framing: Framing,
    keep_alive: bool,
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
        match self.framing {
            Framing::Done => Ok(None),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(left) as usize;
                self.framing = Framing::Length(left - n as u64);
                Ok(Some(buf.split_to(n).freeze()))
            }
            Framing::UntilClose => Ok((!buf.is_empty()).then(|| buf.split().freeze())),
            Framing::Chunked(ref mut c) => {
                let data = c.decode(buf)?;
                if c.is_done() {
                    self.framing = Framing::Done;
                }
                Ok(data)
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
                    if let Some(conn) = this.conn.as_mut() {
                        conn.release_if_drained();
                    }
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
            let n = match conn.poll_read_more(cx) {
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
mod hyper_agreement;
#[cfg(test)]
mod tests;
