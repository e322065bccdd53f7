//! The streamed response body: SSE passed through chunk by chunk (or translated event by event),
//! checked on the way ([`StreamCheck`]: complete, malformed, too large), with the idle and total
//! timeouts and time to first token. A stream that cannot be passed on whole ends with an error event
//! in the client's dialect and an aborted body (HTTP/1.1: no terminating chunk; HTTP/2:
//! `RST_STREAM`), so no client mistakes a partial answer for a complete one.

use super::client::UpstreamBody;
use crate::config::BoundsConfig;
use crate::protocol::BoxError;
use crate::translate::{
    SseEvent, SseParser, StreamCheck, StreamFault, StreamTransform, Usage, Wire, stream_error_event,
};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How a stream ended, for metrics, health, congestion control and token reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream completed the message and the client got all of it.
    Complete,
    /// Not passed on whole, for this reason.
    Fault(StreamFault),
    /// The client went away before the end.
    ClientGone,
}

#[derive(Debug, Clone)]
pub struct StreamOutcome {
    pub usage: Option<Usage>,
    /// Why the upstream's message stopped, as it said (`stop`, `end_turn`, …).
    pub finish_reason: Option<&'static str>,
    /// The model the upstream answered with (kept for a recording trace only).
    pub model: Option<String>,
    pub ttft: Option<Duration>,
    pub end: StreamEnd,
}

pub type OnFinish = Box<dyn FnOnce(StreamOutcome) + Send>;
/// Told the time to first token as soon as the first bytes arrive: the congestion and latency
/// signal of a stream (never its total duration).
pub type OnFirst = Box<dyn FnOnce(Duration) + Send>;

/// The error that aborts a client body after a fault's error event.
#[derive(Debug, thiserror::Error)]
#[error("stream aborted: {0}")]
struct Aborted(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    /// Send what is pending, then end cleanly.
    Ending,
    /// Send what is pending, let the server flush it (one `Pending`), then abort with this fault.
    Aborting(StreamFault),
    /// Flushed: abort now.
    Abort(StreamFault),
    Done,
}

/// Where a stream's events come from and go to.
#[derive(Debug, Clone)]
pub struct StreamSides {
    /// The upstream's stream (what the check expects).
    pub upstream: Wire,
    /// The client's stream (what the error event speaks).
    pub client: Wire,
    /// The key Sluice injected upstream: masked wherever the stream echoes it (an upstream error
    /// event quoting the request's headers).
    pub secret: Option<String>,
    /// Keep the response's model from the stream (a recording trace).
    pub keep_model: bool,
}

pub struct StreamBody {
    inner: UpstreamBody,
    /// None: bytes pass through untouched.
    transform: Option<Box<dyn StreamTransform>>,
    parser: SseParser,
    events: Vec<SseEvent>,
    check: StreamCheck,
    client: Wire,
    secret: Option<String>,
    pending: VecDeque<Bytes>,
    state: State,
    /// One timer for both timeouts, set to the earlier of the idle and the total deadline. Bytes
    /// only move `last_data`: the timer is pushed out when it fires early, never reset per chunk.
    timer: Pin<Box<Sleep>>,
    /// What the timer is set to.
    timer_at: Instant,
    /// The waker the timer was last polled with, still pending: until `timer_at` passes, polling it
    /// again for that task would only register the same waker again (a touch of the timer's entry
    /// per chunk, cold under thousands of streams).
    armed: Option<Waker>,
    idle_for: Duration,
    deadline: Instant,
    last_data: Instant,
    sent_at: Instant,
    ttft: Option<Duration>,
    on_first: Option<OnFirst>,
    on_finish: Option<OnFinish>,
}

/// The timing of a stream: when it was sent, its idle timeout and its total deadline.
#[derive(Debug, Clone, Copy)]
pub struct StreamClock {
    pub sent_at: Instant,
    pub idle_for: Duration,
    pub deadline: Instant,
}

impl StreamBody {
    pub fn new(
        inner: UpstreamBody,
        transform: Option<Box<dyn StreamTransform>>,
        sides: StreamSides,
        bounds: &BoundsConfig,
        clock: StreamClock,
        on_first: OnFirst,
        on_finish: OnFinish,
    ) -> StreamBody {
        let now = Instant::now();
        let timer_at = (now + clock.idle_for).min(clock.deadline);
        let mut check = StreamCheck::of(sides.upstream);
        if sides.keep_model {
            check.keep_model();
        }
        StreamBody {
            inner,
            transform,
            parser: SseParser::with_limits(bounds.sse_max_line_bytes, bounds.sse_max_event_bytes),
            events: Vec::new(),
            check,
            client: sides.client,
            secret: sides.secret,
            pending: VecDeque::new(),
            state: State::Streaming,
            timer: Box::pin(tokio::time::sleep_until(timer_at)),
            timer_at,
            armed: None,
            idle_for: clock.idle_for,
            deadline: clock.deadline,
            last_data: now,
            sent_at: clock.sent_at,
            ttft: None,
            on_first: Some(on_first),
            on_finish: Some(on_finish),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match &self.transform {
            Some(t) => t.usage().or_else(|| self.check.usage()),
            None => self.check.usage(),
        }
    }

    fn report(&mut self, end: StreamEnd) {
        if let Some(f) = self.on_finish.take() {
            f(StreamOutcome {
                usage: self.usage(),
                finish_reason: self.check.finish_reason(),
                model: self.check.model().map(str::to_string),
                ttft: self.ttft,
                end,
            });
        }
    }

    /// End with an error event in the client's dialect (unless the upstream's own error event
    /// already went out), then abort.
    fn fail(&mut self, fault: StreamFault) {
        if fault != StreamFault::UpstreamError {
            self.pending
                .push_back(stream_error_event(self.client, fault));
        }
        self.state = State::Aborting(fault);
        self.report(StreamEnd::Fault(fault));
    }

    /// The parser stopped: a bound passed, or bytes that are not SSE (not UTF-8).
    fn parser_fault(&self) -> Option<StreamFault> {
        if self.parser.too_large() {
            Some(StreamFault::TooLarge)
        } else if self.parser.invalid() {
            Some(StreamFault::Malformed)
        } else {
            None
        }
    }

    /// `now`: read as this poll began.
    fn on_data(&mut self, data: Bytes, now: Instant) {
        if self.ttft.is_none() {
            let ttft = now.saturating_duration_since(self.sent_at);
            self.ttft = Some(ttft);
            if let Some(f) = self.on_first.take() {
                f(ttft);
            }
        }
        self.last_data = now;
        // The events' vector is kept between chunks (emptied), not allocated per chunk.
        let mut events = std::mem::take(&mut self.events);
        let from_boundary = self.parser.at_boundary();
        self.parser.push_into(&data, &mut events);
        let fault = self
            .parser_fault()
            .or_else(|| events.iter().find_map(|ev| self.check.observe(ev).err()));
        let from = self.pending.len();
        if fault.is_none() {
            match &mut self.transform {
                None => self.pending.push_back(data),
                // A filter keeping every event of a chunk that starts and ends between events:
                // the chunk goes on as it came.
                Some(t)
                    if from_boundary
                        && self.parser.at_boundary()
                        && events.iter().all(|ev| t.keeps(ev) == Some(true)) =>
                {
                    self.pending.push_back(data)
                }
                Some(t) => {
                    for ev in &events {
                        self.pending.extend(t.push(ev));
                    }
                }
            }
        }
        events.clear();
        self.events = events;
        if let Some(fault) = fault {
            return self.fail(fault);
        }
        if let Some(key) = &self.secret {
            for b in self.pending.iter_mut().skip(from) {
                *b = super::attempt::mask(std::mem::take(b), key);
            }
        }
    }

    /// Whether the timer was last polled, still pending, with a waker that wakes the same task as
    /// `waker`.
    fn armed_for(&self, waker: &Waker) -> bool {
        self.armed.as_ref().is_some_and(|w| w.will_wake(waker))
    }

    /// Ready with the fault once the total deadline passed or no bytes came for `idle_for`. The
    /// timer fires at the earlier deadline it was last set to; if bytes came since, it is set again
    /// from the last of them. `now`: read as this poll began.
    fn poll_timeouts(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<StreamFault> {
        if now < self.timer_at && self.armed_for(cx.waker()) {
            return Poll::Pending;
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                if !self.armed_for(cx.waker()) {
                    self.armed = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let now = Instant::now();
            if now >= self.deadline {
                return Poll::Ready(StreamFault::TotalTimeout);
            }
            let idle_at = self.last_data + self.idle_for;
            if now >= idle_at {
                return Poll::Ready(StreamFault::Idle);
            }
            self.timer_at = idle_at.min(self.deadline);
            self.timer.as_mut().reset(self.timer_at);
        }
    }

    /// The upstream body ended: complete, an upstream error already passed on, or cut short.
    fn on_upstream_end(&mut self) {
        for ev in self.parser.finish() {
            if let Err(fault) = self.check.observe(&ev) {
                return self.fail(fault);
            }
            if let Some(t) = &mut self.transform {
                self.pending.extend(t.push(&ev));
            }
        }
        if self.check.errored() {
            return self.fail(StreamFault::UpstreamError);
        }
        if !self.check.complete() {
            return self.fail(StreamFault::Truncated);
        }
        if let Some(t) = &mut self.transform {
            self.pending.extend(t.finish());
        }
        self.state = State::Ending;
        self.report(StreamEnd::Complete);
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
            match this.state {
                State::Streaming => {}
                State::Ending | State::Done => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Aborting(fault) => {
                    // An error from the body makes the server drop the connection at once, with
                    // whatever it still buffers: give it a turn to write the error event first.
                    this.state = State::Abort(fault);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                State::Abort(fault) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(Box::new(Aborted(fault.label())))));
                }
            }
            // The total deadline is read off the clock on every poll, so a stream that never
            // pauses is cut too; the clock read serves the chunk's times and the timer's check.
            let now = Instant::now();
            if now >= this.deadline {
                this.fail(StreamFault::TotalTimeout);
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.on_data(data, now);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(suppressed) = crate::observe::log_gate::allow("stream_broke_off") {
                        tracing::warn!(error = %e, suppressed, "upstream stream broke off");
                    }
                    this.fail(StreamFault::Truncated);
                }
                Poll::Ready(None) => this.on_upstream_end(),
                Poll::Pending => match this.poll_timeouts(cx, now) {
                    Poll::Ready(fault) => this.fail(fault),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done && self.pending.is_empty()
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // Dropped before the end: a client that read through the completion marker and closed
        // (as the SDKs do after `[DONE]`) finished normally; otherwise it went away mid-stream.
        // Either way what was used is accounted for.
        let end = if self.check.complete() && !self.check.errored() {
            StreamEnd::Complete
        } else {
            StreamEnd::ClientGone
        };
        self.report(end);
    }
}
