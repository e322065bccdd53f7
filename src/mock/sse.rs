//! Server-sent events: framing, and a paced, channel-backed producer feeding a response body.

use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::Response;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::body::{MockBody, sse_response};
use super::control::Snapshot;
use super::fault::StreamFault;
use super::state::InFlight;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Frames buffered ahead of the client.
const CHANNEL_FRAMES: usize = 32;

/// OpenAI's end-of-stream marker.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// The client went away; stop producing.
#[derive(Debug)]
pub(crate) struct Closed;

/// Sending side of a streaming body; each send is one body frame.
pub(crate) struct SseTx {
    tx: mpsc::Sender<Bytes>,
    period: Option<Duration>,
    next: Option<Instant>,
    fault: StreamFault,
    /// `echo_key_event`'s error event.
    echo_event: Option<Bytes>,
    sent: AtomicUsize,
}

/// Frames sent before a fault starts.
const FAULT_AFTER: usize = 2;

/// Build a streaming response and spawn `produce` to feed it.
///
/// `produce` first waits `ttft`, then runs; token frames sent with [`SseTx::token`] are paced at
/// `tokens_per_sec` (0 = unpaced). `guard` keeps the request counted in flight until the end.
pub(crate) fn stream<F, Fut>(snap: &Snapshot, guard: InFlight, produce: F) -> Response<MockBody>
where
    F: FnOnce(SseTx) -> Fut,
    Fut: Future<Output = Result<(), Closed>> + Send + 'static,
{
    let (tokens_per_sec, ttft) = (snap.tokens_per_sec, snap.ttft);
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let period = (tokens_per_sec > 0.0 && tokens_per_sec.is_finite())
        .then(|| Duration::from_secs_f64(1.0 / tokens_per_sec));
    let sse = SseTx {
        tx,
        period,
        next: None,
        fault: snap.stream_fault,
        echo_event: snap.echo_event.clone(),
        sent: AtomicUsize::new(0),
    };
    let closed = sse.tx.clone();
    let fut = produce(sse);
    tokio::spawn(async move {
        let _guard = guard;
        if !ttft.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(ttft) => {}
                _ = closed.closed() => return,
            }
        }
        drop(closed);
        let _ = fut.await;
    });
    sse_response(rx)
}

impl SseTx {
    /// Send one frame now (or break the stream here, as the fault setting says).
    pub async fn send(&self, frame: Bytes) -> Result<(), Closed> {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        if n == FAULT_AFTER {
            self.fault().await?;
        }
        self.put(frame).await
    }

    async fn put(&self, frame: Bytes) -> Result<(), Closed> {
        self.tx.send(frame).await.map_err(|_| Closed)
    }

    async fn fault(&self) -> Result<(), Closed> {
        const FILL: &[u8] = &[b'x'; 16 * 1024];
        match self.fault {
            StreamFault::None => Ok(()),
            StreamFault::Truncate => Err(Closed),
            StreamFault::Malformed => {
                self.put(Bytes::from_static(
                    b"data: {\"choices\":[{\"delta\":{\"content\n\n",
                ))
                .await
            }
            StreamFault::NoNewline => loop {
                self.put(Bytes::from_static(FILL)).await?;
            },
            StreamFault::EndlessEvent => {
                let mut line = b"data: ".to_vec();
                line.extend_from_slice(FILL);
                line.push(b'\n');
                let line = Bytes::from(line);
                loop {
                    self.put(line.clone()).await?;
                }
            }
            StreamFault::Stall => {
                self.tx.closed().await;
                Err(Closed)
            }
            StreamFault::CloseMidBody => {
                let _ = self.put(Bytes::new()).await;
                Err(Closed)
            }
            StreamFault::Garbage => {
                self.put(garbage()).await?;
                Err(Closed)
            }
            StreamFault::EchoKeyEvent => {
                if let Some(ev) = &self.echo_event {
                    self.put(ev.clone()).await?;
                }
                Err(Closed)
            }
            // Answered before any stream starts (see `router`).
            StreamFault::Blackhole | StreamFault::EchoKey => Ok(()),
        }
    }

    /// Send one token frame, waiting for its pacing slot first.
    pub async fn token(&mut self, frame: Bytes) -> Result<(), Closed> {
        if let Some(period) = self.period {
            let now = Instant::now();
            let slot = self.next.map_or(now, |t| t.max(now));
            if slot > now {
                tokio::select! {
                    _ = tokio::time::sleep_until(slot) => {}
                    _ = self.tx.closed() => return Err(Closed),
                }
            }
            self.next = Some(slot + period);
        }
        self.send(frame).await
    }
}

/// Lines of random bytes, each opening with `0xFF 0xFE` (never valid UTF-8), no CR or LF inside,
/// then a blank line.
fn garbage() -> Bytes {
    const LINES: usize = 8;
    const WIDTH: usize = 64;
    let mut b = Vec::with_capacity(LINES * (WIDTH + 3) + 1);
    for _ in 0..LINES {
        b.extend_from_slice(&[0xFF, 0xFE]);
        b.extend((0..WIDTH).map(|_| match rand::random::<u8>() {
            b'\n' | b'\r' => 0,
            x => x,
        }));
        b.push(b'\n');
    }
    b.push(b'\n');
    Bytes::from(b)
}

/// `event: {name}\ndata: {json}\n\n`.
pub(crate) fn event(name: &str, json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(name.len() + json.len() + 16);
    b.put_slice(b"event: ");
    b.put_slice(name.as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// Append `s` as a JSON string literal.
pub(crate) fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Split `s` into fragments of at most `max` chars (for streamed tool arguments).
pub(crate) fn fragments(s: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(&event("ping", b"{}")[..], b"event: ping\ndata: {}\n\n");
        let parts: Vec<_> = fragments("{\"input\":\"héllo\"}", 5).collect();
        assert_eq!(parts.concat(), "{\"input\":\"héllo\"}");
        assert!(parts.iter().all(|p| p.chars().count() <= 5));
    }

    #[test]
    fn garbage_is_lines_that_are_never_utf8() {
        let g = garbage();
        let lines: Vec<_> = g.split(|b| *b == b'\n').collect();
        assert_eq!(
            lines.len(),
            10,
            "8 lines, a blank line, and nothing after it"
        );
        for l in &lines[..8] {
            assert!(std::str::from_utf8(l).is_err());
            assert!(!l.contains(&b'\r'));
        }
    }
}
