//! A request's priority class (tenant tier, request type, priority header) and its deadline header.

use crate::config::{Priority, PriorityConfig};
use std::time::Duration;
use tokio::time::Instant;

/// The class of a request. The tier map and the request-type map each may give a class; with both, the
/// less important one wins; with neither, `cfg.default`. The header (`critical|high|normal|low|batch`,
/// any case) may then lower it, and raise it only with `header_can_raise`; unknown values are ignored.
pub fn classify(
    cfg: &PriorityConfig,
    header: Option<&str>,
    tier: &str,
    request_type: &str,
) -> Priority {
    let base = match (cfg.tiers.get(tier), cfg.request_types.get(request_type)) {
        (Some(a), Some(b)) => (*a).max(*b),
        (Some(a), None) => *a,
        (None, Some(b)) => *b,
        (None, None) => cfg.default,
    };
    match header.and_then(Priority::parse) {
        Some(h) if h >= base || cfg.header_can_raise => h,
        _ => base,
    }
}

/// The deadline header's value: whole milliseconds from `now`, above 0. Absent: `Ok(None)`.
pub fn parse_deadline(header: Option<&str>, now: Instant) -> Result<Option<Instant>, String> {
    let Some(raw) = header else {
        return Ok(None);
    };
    let bad = || {
        format!(
            "invalid deadline header value {raw:?}: expected a whole number of milliseconds from now, above 0"
        )
    };
    let v = raw.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms: u64 = v.parse().map_err(|_| bad())?;
    if ms == 0 {
        return Err(bad());
    }
    now.checked_add(Duration::from_millis(ms))
        .map(Some)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(can_raise: bool) -> PriorityConfig {
        let mut c = PriorityConfig {
            header_can_raise: can_raise,
            ..PriorityConfig::default()
        };
        c.tiers.insert("premium".into(), Priority::High);
        c.tiers.insert("free".into(), Priority::Low);
        c.request_types.insert("embeddings".into(), Priority::Batch);
        c.request_types.insert("chat".into(), Priority::Normal);
        c
    }

    #[test]
    fn maps_combine_to_the_less_important_class() {
        let c = cfg(false);
        assert_eq!(classify(&c, None, "premium", "chat"), Priority::Normal);
        assert_eq!(classify(&c, None, "premium", "messages"), Priority::High);
        assert_eq!(classify(&c, None, "free", "chat"), Priority::Low);
        assert_eq!(classify(&c, None, "premium", "embeddings"), Priority::Batch);
        assert_eq!(classify(&c, None, "other", "completions"), Priority::Normal);
    }

    #[test]
    fn header_lowers_always_raises_only_when_allowed() {
        let c = cfg(false);
        assert_eq!(classify(&c, Some("batch"), "premium", "x"), Priority::Batch);
        assert_eq!(classify(&c, Some("High"), "premium", "x"), Priority::High);
        assert_eq!(
            classify(&c, Some("critical"), "premium", "x"),
            Priority::High
        );
        assert_eq!(classify(&c, Some("urgent!"), "free", "x"), Priority::Low);
        let c = cfg(true);
        assert_eq!(
            classify(&c, Some(" critical "), "free", "embeddings"),
            Priority::Critical
        );
        assert_eq!(classify(&c, Some("nope"), "free", "x"), Priority::Low);
    }

    #[test]
    fn deadline_is_milliseconds_from_now() {
        let now = Instant::now();
        assert_eq!(parse_deadline(None, now), Ok(None));
        assert_eq!(
            parse_deadline(Some("2500"), now),
            Ok(Some(now + Duration::from_millis(2500)))
        );
        assert_eq!(
            parse_deadline(Some(" 1 "), now),
            Ok(Some(now + Duration::from_millis(1)))
        );
        for bad in [
            "",
            "0",
            "-5",
            "+5",
            "1.5",
            "soon",
            "99999999999999999999999",
        ] {
            let err = parse_deadline(Some(bad), now).unwrap_err();
            assert!(err.contains("deadline header"), "{err}");
        }
    }
}
