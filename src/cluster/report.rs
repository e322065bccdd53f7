//! [`BackendReport`]: what one node tells the others about one backend, as one compact gossip value.
//!
//! ```text
//! h=1;lat=12.5;ttft=80.1;inf=3;cd=1764000000123;t=1764000000000
//! ```
//! `h` health verdict of the node's own probes and ejections (1/0), `lat` / `ttft` latency and time
//! to first token EWMAs in ms (absent: not measured yet), `inf` requests in flight from this node,
//! `cd` cooldown (429 `Retry-After`) until, unix ms (0: none), `t` report time, unix ms, `n` requests
//! this node has sent to the backend (its evidence for a cooldown), `u` which upstream this node
//! reaches under that name ([`target_id`] of the configured url: a report about another target is
//! ignored).
//! Unknown fields are ignored, so a newer node can add some.

use crate::balance::BackendStatus;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Reports older than this are ignored by the merge (the publisher refreshes every ~5 s).
pub const MAX_REPORT_AGE: Duration = Duration::from_secs(10);

/// One node's view of one backend at `reported_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendReport {
    /// The node probes this backend; with `healthy: false` (an ejection) the node has evidence too.
    pub probed: bool,
    /// The node's own verdict: probes say healthy and it has not ejected the backend.
    pub healthy: bool,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub in_flight: u32,
    /// Unix ms; 0 = no cooldown running.
    pub cooldown_until_ms: u64,
    /// Unix ms.
    pub reported_at_ms: u64,
    /// Requests this node has sent to the backend since it started.
    pub sent: u64,
    /// [`target_id`] of the url the node reaches the backend at (None: not said).
    pub target: Option<u32>,
}

/// A short public id of the upstream a backend name points at: FNV-1a over the configured url.
pub fn target_id(url: &str) -> u32 {
    url.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("backend report field `{field}`: invalid value `{value}`")]
    Invalid { field: &'static str, value: String },
    #[error("backend report: missing field `{0}`")]
    Missing(&'static str),
    #[error("backend report: `{0}` is not key=value")]
    Malformed(String),
}

impl BackendReport {
    /// The report for a local [`BackendStatus`] taken at `now` (= `now_unix_ms` on the wall clock).
    pub fn from_status(status: &BackendStatus, now: Instant, now_unix_ms: u64) -> BackendReport {
        BackendReport {
            probed: status.probed,
            healthy: verdict(status, now),
            latency_ms: status.latency_ms,
            ttft_ms: status.ttft_ms,
            in_flight: status.in_flight,
            cooldown_until_ms: status
                .cooldown_until
                .map_or(0, |until| instant_to_unix_ms(until, now, now_unix_ms)),
            reported_at_ms: now_unix_ms,
            sent: 0,
            target: None,
        }
    }

    /// With this node's evidence: requests sent, and which upstream it reaches.
    pub fn with_evidence(mut self, sent: u64, target: u32) -> BackendReport {
        self.sent = sent;
        self.target = Some(target);
        self
    }

    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(64);
        let _ = write!(
            s,
            "h={};p={}",
            u8::from(self.healthy),
            u8::from(self.probed)
        );
        if let Some(v) = self.latency_ms.filter(|v| v.is_finite() && *v >= 0.0) {
            let _ = write!(s, ";lat={v:.1}");
        }
        if let Some(v) = self.ttft_ms.filter(|v| v.is_finite() && *v >= 0.0) {
            let _ = write!(s, ";ttft={v:.1}");
        }
        let _ = write!(
            s,
            ";inf={};cd={};t={}",
            self.in_flight, self.cooldown_until_ms, self.reported_at_ms
        );
        if self.sent > 0 {
            let _ = write!(s, ";n={}", self.sent);
        }
        if let Some(u) = self.target {
            let _ = write!(s, ";u={u:08x}");
        }
        s
    }

    pub fn decode(value: &str) -> Result<BackendReport, ReportError> {
        let mut healthy = None;
        // Older nodes send no `p`: count their verdict as evidence.
        let mut probed = true;
        let mut latency_ms = None;
        let mut ttft_ms = None;
        let mut in_flight = 0;
        let mut cooldown_until_ms = 0;
        let mut reported_at_ms = None;
        let mut sent = 0;
        let mut target = None;
        for part in value.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(ReportError::Malformed(part.to_string()));
            };
            match k {
                "h" => {
                    healthy = Some(match v {
                        "1" => true,
                        "0" => false,
                        _ => return Err(invalid("h", v)),
                    })
                }
                "p" => probed = v != "0",
                "lat" => latency_ms = Some(parse_ms("lat", v)?),
                "ttft" => ttft_ms = Some(parse_ms("ttft", v)?),
                "inf" => in_flight = v.parse().map_err(|_| invalid("inf", v))?,
                "cd" => cooldown_until_ms = v.parse().map_err(|_| invalid("cd", v))?,
                "t" => reported_at_ms = Some(v.parse().map_err(|_| invalid("t", v))?),
                "n" => sent = v.parse().map_err(|_| invalid("n", v))?,
                "u" => target = Some(u32::from_str_radix(v, 16).map_err(|_| invalid("u", v))?),
                _ => {}
            }
        }
        Ok(BackendReport {
            probed,
            healthy: healthy.ok_or(ReportError::Missing("h"))?,
            latency_ms,
            ttft_ms,
            in_flight,
            cooldown_until_ms,
            reported_at_ms: reported_at_ms.ok_or(ReportError::Missing("t"))?,
            sent,
            target,
        })
    }

    /// Age at `now_unix_ms`; a report from the future (clock skew) counts as brand new.
    pub fn age(&self, now_unix_ms: u64) -> Duration {
        Duration::from_millis(now_unix_ms.saturating_sub(self.reported_at_ms))
    }

    /// Young enough to take part in the merge.
    pub fn is_fresh(&self, now_unix_ms: u64) -> bool {
        self.age(now_unix_ms) <= MAX_REPORT_AGE
    }
}

fn invalid(field: &'static str, value: &str) -> ReportError {
    ReportError::Invalid {
        field,
        value: value.to_string(),
    }
}

fn parse_ms(field: &'static str, v: &str) -> Result<f64, ReportError> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(invalid(field, v)),
    }
}

/// A node's health verdict for gossip: probes say healthy and the backend is not ejected. A running
/// cooldown is not a health problem (it travels separately as `cd`), so a backend that is only
/// cooling down still votes healthy.
pub(crate) fn verdict(status: &BackendStatus, now: Instant) -> bool {
    let cooling = status.cooldown_until.is_some_and(|c| c > now);
    status.healthy && (status.available || cooling)
}

/// Wall-clock now in unix ms.
pub(crate) fn unix_now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `until` on the wall clock, rounded up; 0 when it has passed.
pub(crate) fn instant_to_unix_ms(until: Instant, now: Instant, now_unix_ms: u64) -> u64 {
    if until <= now {
        return 0;
    }
    let d = until - now;
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    now_unix_ms.saturating_add(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// A wall-clock deadline as an `Instant`; `None` when it has passed (or is 0).
pub(crate) fn unix_ms_to_instant(ms: u64, now: Instant, now_unix_ms: u64) -> Option<Instant> {
    if ms <= now_unix_ms {
        return None;
    }
    now.checked_add(Duration::from_millis(ms - now_unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BackendReport {
        BackendReport {
            probed: true,
            healthy: true,
            latency_ms: Some(12.5),
            ttft_ms: Some(80.1),
            in_flight: 3,
            cooldown_until_ms: 1_764_000_000_123,
            reported_at_ms: 1_764_000_000_000,
            sent: 0,
            target: None,
        }
    }

    #[test]
    fn encode_is_compact() {
        assert_eq!(
            sample().encode(),
            "h=1;p=1;lat=12.5;ttft=80.1;inf=3;cd=1764000000123;t=1764000000000"
        );
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(BackendReport::decode(&r.encode()), Ok(r));
        let r = BackendReport {
            probed: true,
            healthy: false,
            latency_ms: None,
            ttft_ms: None,
            in_flight: 0,
            cooldown_until_ms: 0,
            reported_at_ms: 7,
            sent: 0,
            target: None,
        };
        assert_eq!(r.encode(), "h=0;p=1;inf=0;cd=0;t=7");
        assert_eq!(BackendReport::decode(&r.encode()), Ok(r));
        let r = r.with_evidence(12, 0xdead_beef);
        assert_eq!(r.encode(), "h=0;p=1;inf=0;cd=0;t=7;n=12;u=deadbeef");
        assert_eq!(BackendReport::decode(&r.encode()), Ok(r));
        assert_ne!(target_id("http://a:1"), target_id("http://a:2"));
    }

    #[test]
    fn decode_rounds_to_tenths_and_ignores_unknown_fields() {
        let r = BackendReport {
            probed: true,
            latency_ms: Some(12.345),
            ..sample()
        };
        let back = BackendReport::decode(&r.encode()).unwrap();
        assert_eq!(back.latency_ms, Some(12.3));
        let back = BackendReport::decode("h=1;future=x;inf=2;t=5").unwrap();
        assert_eq!(back.in_flight, 2);
        assert_eq!(back.cooldown_until_ms, 0);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(
            BackendReport::decode("inf=1;t=5"),
            Err(ReportError::Missing("h"))
        );
        assert_eq!(BackendReport::decode("h=1"), Err(ReportError::Missing("t")));
        assert!(matches!(
            BackendReport::decode("h=2;t=5"),
            Err(ReportError::Invalid { field: "h", .. })
        ));
        assert!(matches!(
            BackendReport::decode("h=1;lat=-3;t=5"),
            Err(ReportError::Invalid { field: "lat", .. })
        ));
        assert!(matches!(
            BackendReport::decode("h=1;lat=NaN;t=5"),
            Err(ReportError::Invalid { field: "lat", .. })
        ));
        assert!(matches!(
            BackendReport::decode("h=1;t"),
            Err(ReportError::Malformed(_))
        ));
    }

    #[test]
    fn from_status_converts_cooldown_and_verdict() {
        let now = Instant::now();
        let status = BackendStatus {
            probed: true,
            available: false,
            healthy: true,
            in_flight: 4,
            latency_ms: Some(20.0),
            ttft_ms: None,
            cooldown_until: Some(now + Duration::from_millis(1500)),
        };
        let r = BackendReport::from_status(&status, now, 1_000_000);
        assert!(r.healthy, "cooling down is not unhealthy");
        assert_eq!(r.cooldown_until_ms, 1_001_500);
        assert_eq!(r.reported_at_ms, 1_000_000);
        // Not available and no cooldown running: ejected → unhealthy verdict.
        let ejected = BackendStatus {
            probed: true,
            cooldown_until: Some(now - Duration::from_millis(1)),
            ..status
        };
        let r = BackendReport::from_status(&ejected, now, 1_000_000);
        assert!(!r.healthy);
        assert_eq!(r.cooldown_until_ms, 0);
    }

    #[test]
    fn freshness() {
        let r = sample();
        assert!(r.is_fresh(r.reported_at_ms + 10_000));
        assert!(!r.is_fresh(r.reported_at_ms + 10_001));
        assert!(
            r.is_fresh(r.reported_at_ms - 5_000),
            "future reports are fresh"
        );
    }

    #[test]
    fn unix_instant_conversions() {
        let now = Instant::now();
        assert_eq!(instant_to_unix_ms(now, now, 1000), 0);
        assert_eq!(
            instant_to_unix_ms(now + Duration::from_micros(1500), now, 1000),
            1002
        );
        assert_eq!(unix_ms_to_instant(1000, now, 1000), None);
        assert_eq!(
            unix_ms_to_instant(1250, now, 1000),
            Some(now + Duration::from_millis(250))
        );
    }
}
