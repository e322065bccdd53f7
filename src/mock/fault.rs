//! Faults the simulated upstream can inject, as hostile or broken providers do: a stream cut
//! short, a malformed event, a line with no end, an event with no end, a stall, a connection
//! dropped mid-body, bytes that are not SSE at all; and, for every answer, streamed or not, an
//! upstream that never answers or one whose error echoes the key it was sent.
//!
//! The stream faults start after the first two frames of a stream and touch only streamed
//! answers (a non-streamed one is answered normally); `blackhole` and `echo_key` apply to every
//! API request, streamed or not, before any answer starts.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
pub enum StreamFault {
    #[default]
    None,
    /// End the body cleanly before the completion marker.
    Truncate,
    /// Send one event whose data is broken JSON, then go on normally.
    Malformed,
    /// Send bytes without any newline until the client goes away.
    NoNewline,
    /// Send `data:` lines without the blank line that ends an event, until the client goes away.
    EndlessEvent,
    /// Send nothing more, keeping the connection open.
    Stall,
    /// Drop the connection mid-body (no terminating chunk).
    CloseMidBody,
    /// Send a few lines of random binary bytes (never valid UTF-8, so never SSE), then end the
    /// body cleanly. A non-streamed answer is a 200 whose body is not JSON.
    Garbage,
    /// Read the request, then never answer, not even a status line, keeping the connection open.
    /// Every API request, streamed or not.
    Blackhole,
    /// Answer 400 in the protocol's error shape, its message echoing the `Authorization` and
    /// `x-api-key` headers received (as some providers echo a rejected key). Every API request,
    /// streamed or not.
    EchoKey,
    /// Start the stream normally, then send an error event in the protocol's shape whose message
    /// echoes the credentials received, and end the body. Streamed answers only.
    EchoKeyEvent,
}

impl StreamFault {
    pub const ALL: [StreamFault; 11] = [
        StreamFault::None,
        StreamFault::Truncate,
        StreamFault::Malformed,
        StreamFault::NoNewline,
        StreamFault::EndlessEvent,
        StreamFault::Stall,
        StreamFault::CloseMidBody,
        StreamFault::Garbage,
        StreamFault::Blackhole,
        StreamFault::EchoKey,
        StreamFault::EchoKeyEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamFault::None => "none",
            StreamFault::Truncate => "truncate",
            StreamFault::Malformed => "malformed",
            StreamFault::NoNewline => "no_newline",
            StreamFault::EndlessEvent => "endless_event",
            StreamFault::Stall => "stall",
            StreamFault::CloseMidBody => "close_mid_body",
            StreamFault::Garbage => "garbage",
            StreamFault::Blackhole => "blackhole",
            StreamFault::EchoKey => "echo_key",
            StreamFault::EchoKeyEvent => "echo_key_event",
        }
    }

    pub fn parse(s: &str) -> Option<StreamFault> {
        StreamFault::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// The fault setting, changeable at run time.
#[derive(Debug, Default)]
pub(crate) struct FaultSetting(AtomicU8);

impl FaultSetting {
    pub fn new(f: StreamFault) -> Self {
        let s = FaultSetting::default();
        s.set(f);
        s
    }
    pub fn get(&self) -> StreamFault {
        StreamFault::ALL[self.0.load(Ordering::Relaxed) as usize % StreamFault::ALL.len()]
    }
    pub fn set(&self, f: StreamFault) {
        let i = StreamFault::ALL.iter().position(|x| *x == f).unwrap_or(0);
        self.0.store(i as u8, Ordering::Relaxed);
    }
}
