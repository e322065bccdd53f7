//! The streamed response body: SSE passed through chunk by chunk (or translated event by event), with
//! the idle and total timeouts, time-to-first-token, and usage read from the final events.

use super::client::UpstreamBody;
use crate::protocol::{BoxError, Protocol};
use crate::translate::{SseParser, StreamTransform, StreamUsage, Usage, stream_error_event};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

enum Mode {
    /// Bytes go out as they came; events are parsed on the side for usage.
    Raw {
        parser: SseParser,
        usage: StreamUsage,
    },
    Transform {
        parser: SseParser,
        t: Box<dyn StreamTransform>,
    },
}

/// How the stream ended, for metrics, EWMA and token reconciliation.
#[derive(Debug, Clone, Copy)]
pub struct StreamOutcome {
    pub usage: Option<Usage>,
    pub ttft: Option<Duration>,
    pub error: Option<&'static str>,
}

pub type OnFinish = Box<dyn FnOnce(StreamOutcome) + Send>;
/// Told the time to first token as soon as the first bytes arrive: the congestion and latency
/// signal of a stream (never its total duration).
pub type OnFirst = Box<dyn FnOnce(Duration) + Send>;

pub struct StreamBody {
    inner: UpstreamBody,
    mode: Mode,
    client: Protocol,
    pending: VecDeque<Bytes>,
    idle: Pin<Box<Sleep>>,
    idle_for: Duration,
    deadline: Pin<Box<Sleep>>,
    sent_at: Instant,
    ttft: Option<Duration>,
    done: bool,
    on_first: Option<OnFirst>,
    on_finish: Option<OnFinish>,
}

impl StreamBody {
    /// `transform: None` passes bytes through untouched.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: UpstreamBody,
        transform: Option<Box<dyn StreamTransform>>,
        client: Protocol,
        sent_at: Instant,
        idle_for: Duration,
        deadline: Instant,
        on_first: OnFirst,
        on_finish: OnFinish,
    ) -> StreamBody {
        let parser = SseParser::default();
        let mode = match transform {
            None => Mode::Raw {
                parser,
                usage: StreamUsage::default(),
            },
            Some(t) => Mode::Transform { parser, t },
        };
        StreamBody {
            inner,
            mode,
            client,
            pending: VecDeque::new(),
            idle: Box::pin(tokio::time::sleep(idle_for)),
            idle_for,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            sent_at,
            ttft: None,
            done: false,
            on_first: Some(on_first),
            on_finish: Some(on_finish),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match &self.mode {
            Mode::Raw { usage, .. } => usage.usage(),
            Mode::Transform { t, .. } => t.usage(),
        }
    }

    fn finish(&mut self, error: Option<&'static str>) {
        if let Mode::Transform { t, .. } = &mut self.mode
            && error.is_none()
        {
            self.pending.extend(t.finish());
        }
        if let Some(kind) = error {
            self.pending
                .push_back(stream_error_event(self.client, kind));
        }
        self.done = true;
        if let Some(f) = self.on_finish.take() {
            f(StreamOutcome {
                usage: self.usage(),
                ttft: self.ttft,
                error,
            });
        }
    }

    fn on_data(&mut self, data: Bytes) {
        if self.ttft.is_none() {
            let ttft = self.sent_at.elapsed();
            self.ttft = Some(ttft);
            if let Some(f) = self.on_first.take() {
                f(ttft);
            }
        }
        self.idle.as_mut().reset(Instant::now() + self.idle_for);
        match &mut self.mode {
            Mode::Raw { parser, usage } => {
                for ev in parser.push(&data) {
                    usage.observe(&ev);
                }
                self.pending.push_back(data);
            }
            Mode::Transform { parser, t } => {
                for ev in parser.push(&data) {
                    self.pending.extend(t.push(&ev));
                }
            }
        }
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                this.finish(Some("total_timeout"));
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.on_data(data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream stream broke off");
                    this.finish(Some("upstream_broken"));
                }
                Poll::Ready(None) => this.finish(None),
                Poll::Pending => {
                    ready!(this.idle.as_mut().poll(cx));
                    this.finish(Some("idle_timeout"));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // The client went away mid-stream: still account for what was used.
        if let Some(f) = self.on_finish.take() {
            f(StreamOutcome {
                usage: self.usage(),
                ttft: self.ttft,
                error: Some("client_gone"),
            });
        }
    }
}
