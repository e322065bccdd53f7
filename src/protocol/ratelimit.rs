//! The providers' rate-limit headers, both families, both ways: the simulator writes them, Deliver
//! reads them on every upstream answer (streams included: they come with the head). Values that do
//! not parse are ignored, never an error.
//!
//! - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; resets are durations as Go
//!   prints them (`1s`, `6m0s`, `250ms`, `1h2m3.5s`): the time until the window is whole again.
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`;
//!   resets are RFC 3339 instants (`2025-01-01T00:00:30Z`, fractions and offsets allowed).

use crate::calendar::{civil_from_days, days_from_civil};
use http::{HeaderMap, HeaderValue};

/// One window as a header family reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub limit: Option<u64>,
    pub remaining: u64,
    /// Milliseconds from the answer until the window is whole again.
    pub reset_ms: u64,
}

/// The windows, by index: requests, tokens, input tokens, output tokens.
pub const WINDOWS: usize = 4;

/// What every name of OpenAI's family begins with.
pub const OPENAI_PREFIX: &str = "x-ratelimit-";
/// What every name of Anthropic's family begins with.
pub const ANTHROPIC_PREFIX: &str = "anthropic-ratelimit-";

/// Window index and its `limit`, `remaining`, `reset` header names.
type Names = (usize, [&'static str; 3]);

const OPENAI: [Names; 2] = [
    (
        0,
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
    ),
    (
        1,
        [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    ),
];

const ANTHROPIC: [Names; 4] = [
    (
        0,
        [
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ],
    ),
    (
        1,
        [
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ],
    ),
    (
        2,
        [
            "anthropic-ratelimit-input-tokens-limit",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ],
    ),
    (
        3,
        [
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ],
    ),
];

/// Every window either family reports in `h`, by index; `now_ms` (unix ms) is when the answer
/// came. A window needs a valid `remaining` and `reset`; its `limit` is optional. Where a name
/// repeats, its first value counts.
///
/// One pass over the answer's few headers, comparing names only where the family prefix matches:
/// looking up each of the 18 names by string hashed and parsed every name on every answer, a sixth
/// of the proxy's instructions per request.
pub fn read(h: &HeaderMap, now_ms: u64) -> [Option<Limit>; WINDOWS] {
    let texts = texts(h);
    let mut out = [None; WINDOWS];
    if texts.iter().flatten().all(Option::is_none) {
        return out;
    }
    let number = |t: Option<&str>| t.and_then(parse_count);
    for (k, (i, _)) in OPENAI.iter().enumerate() {
        let [limit, remaining, reset] = texts[k];
        let reset = reset.and_then(parse_duration_ms);
        out[*i] = window(number(limit), number(remaining), reset);
    }
    for (k, (i, _)) in ANTHROPIC.iter().enumerate() {
        if out[*i].is_some() {
            continue;
        }
        let [limit, remaining, reset] = texts[OPENAI.len() + k];
        let reset = reset
            .and_then(parse_rfc3339_ms)
            .map(|at| at.saturating_sub(now_ms));
        out[*i] = window(number(limit), number(remaining), reset);
    }
    out
}

/// The trimmed text of each family name found in `h`: OpenAI's windows, then Anthropic's.
fn texts(h: &HeaderMap) -> [[Option<&str>; 3]; OPENAI.len() + ANTHROPIC.len()] {
    let mut texts = [[None; 3]; OPENAI.len() + ANTHROPIC.len()];
    for (name, value) in h {
        let name = name.as_str();
        let (family, from) = if name.starts_with(OPENAI_PREFIX) {
            (&OPENAI[..], 0)
        } else if name.starts_with(ANTHROPIC_PREFIX) {
            (&ANTHROPIC[..], OPENAI.len())
        } else {
            continue;
        };
        let found = family.iter().enumerate().find_map(|(k, (_, names))| {
            names.iter().position(|n| *n == name).map(|j| (from + k, j))
        });
        if let Some((k, j)) = found
            && texts[k][j].is_none()
        {
            texts[k][j] = Some(value.to_str().map_or("", str::trim));
        }
    }
    texts
}

fn window(limit: Option<u64>, remaining: Option<u64>, reset_ms: Option<u64>) -> Option<Limit> {
    Some(Limit {
        limit,
        remaining: remaining?,
        reset_ms: reset_ms?,
    })
}

/// A count: a whole number (a fraction is floored; negatives and garbage are `None`).
fn parse_count(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

/// Write window `i` in `openai`'s or Anthropic's family; `now_ms` dates Anthropic's reset.
pub fn write(h: &mut HeaderMap, openai: bool, i: usize, l: &Limit, now_ms: u64) {
    let names = if openai {
        OPENAI.iter().find(|(j, _)| *j == i)
    } else {
        ANTHROPIC.iter().find(|(j, _)| *j == i)
    };
    let Some((_, [limit, remaining, reset])) = names else {
        return;
    };
    let reset_value = if openai {
        format_duration_ms(l.reset_ms)
    } else {
        format_rfc3339_ms(now_ms.saturating_add(l.reset_ms))
    };
    if let Some(n) = l.limit {
        h.insert(*limit, HeaderValue::from(n));
    }
    h.insert(*remaining, HeaderValue::from(l.remaining));
    if let Ok(v) = HeaderValue::from_str(&reset_value) {
        h.insert(*reset, v);
    }
}

/// A Go duration (`6m0s`, `1.5s`, `250ms`, `20us`) in ms, rounded up; a bare number is seconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return ms_of(secs * 1000.0);
    }
    let mut rest = s;
    let mut total = 0.0;
    while !rest.is_empty() {
        let num = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num].parse().ok()?;
        rest = &rest[num..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += n * match &rest[..unit] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 1e-3,
            "ns" => 1e-6,
            _ => return None,
        };
        rest = &rest[unit..];
    }
    ms_of(total)
}

/// Longest reset believed: a day.
const MAX_RESET_MS: f64 = 86_400_000.0;

fn ms_of(ms: f64) -> Option<u64> {
    (ms.is_finite() && (0.0..=MAX_RESET_MS).contains(&ms)).then(|| ms.ceil() as u64)
}

/// `ms` as Go prints a duration: `250ms` under a second, else `1s`, `59.3s`, `6m0s`, `1h0m0s`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let s = ms % 60_000;
    let secs = if s.is_multiple_of(1000) {
        format!("{}s", s / 1000)
    } else {
        format!("{}s", (s as f64 / 1000.0))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// An RFC 3339 instant (`2025-01-01T00:00:30Z`, `…30.25+01:00`) in unix ms.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = b.get(from..to)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0.0;
    if sep(i, b".") {
        let end = b[i + 1..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |p| i + 1 + p);
        let digits = std::str::from_utf8(&b[i..end]).ok()?;
        frac_ms = format!("0{digits}").parse::<f64>().ok()? * 1000.0;
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(c @ (b'+' | b'-')) if b.len() == i + 6 && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            let m = oh * 60 + om;
            if *c == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    let ms = secs.checked_mul(1000)? + frac_ms.floor() as i64;
    u64::try_from(ms).ok()
}

/// Unix ms as RFC 3339 UTC with milliseconds: `2025-01-01T00:00:30.250Z`.
pub fn format_rfc3339_ms(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (s, ms) in [
            ("1s", 1000),
            ("6m0s", 360_000),
            ("250ms", 250),
            ("1h2m3.5s", 3_723_500),
            ("59.3s", 59_300),
            ("20us", 1),
            ("0s", 0),
            ("2", 2000),
            ("0.5", 500),
        ] {
            assert_eq!(parse_duration_ms(s), Some(ms), "{s}");
        }
        for bad in [
            "", "s", "1x", "-1s", "1s2", "abc", "1..2s", "NaN", "inf", "99999h",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
        for ms in [0, 250, 1000, 59_300, 360_000, 3_723_500, 3_600_000] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(format_duration_ms(360_000), "6m0s");
        assert_eq!(format_duration_ms(250), "250ms");
        assert_eq!(format_duration_ms(1000), "1s");
        assert_eq!(format_duration_ms(3_723_500), "1h2m3.5s");
    }

    #[test]
    fn rfc3339_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2025-01-01T00:00:30Z"),
            Some(1_735_689_630_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-01-01T01:00:30.25+01:00"),
            Some(1_735_689_630_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-12-31t23:00:30.123456-01:00"),
            Some(1_735_689_630_123)
        );
        for bad in [
            "",
            "2025-01-01",
            "2025-01-01T00:00:30",
            "2025-13-01T00:00:30Z",
            "2025-01-01T24:00:30Z",
            "2025-01-01T00:00:30.Z",
            "2025-01-01T00:00:30+0100",
            "2025-01-01T00:00:30Zjunk",
            "yyyy-01-01T00:00:30Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        for ms in [0, 1_735_689_630_250, 951_782_400_000, 4_102_444_800_999] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            format_rfc3339_ms(1_735_689_630_250),
            "2025-01-01T00:00:30.250Z"
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_openai_headers() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let w = read(&h, 0);
        assert_eq!(
            w[0],
            Some(Limit {
                limit: Some(60),
                remaining: 59,
                reset_ms: 1000
            })
        );
        assert_eq!(w[1].map(|l| l.reset_ms), Some(360_000));
        assert_eq!((w[2], w[3]), (None, None));
    }

    #[test]
    fn reads_anthropic_headers() {
        let now = 1_735_689_600_000;
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2025-01-01T00:00:30Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "1000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-01-01T00:00:01.5Z",
            ),
            // In the past: whole again now.
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2024-12-31T23:59:00Z",
            ),
        ]);
        let w = read(&h, now);
        assert_eq!(
            w[0],
            Some(Limit {
                limit: Some(50),
                remaining: 49,
                reset_ms: 30_000
            })
        );
        assert_eq!(w[1], None);
        assert_eq!(
            w[2],
            Some(Limit {
                limit: None,
                remaining: 1000,
                reset_ms: 1500
            })
        );
        assert_eq!(w[3].map(|l| l.reset_ms), Some(0));
    }

    #[test]
    fn malformed_values_are_ignored() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "lots"),
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "-5"),
            ("x-ratelimit-reset-tokens", "1s"),
            ("anthropic-ratelimit-tokens-remaining", "7"),
            ("anthropic-ratelimit-tokens-reset", "tomorrow"),
            ("anthropic-ratelimit-input-tokens-remaining", "7"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-01-01T00:00:30Z",
            ),
        ]);
        let w = read(&h, 0);
        assert_eq!(
            w[0],
            Some(Limit {
                limit: None,
                remaining: 12,
                reset_ms: 1000
            }),
            "a bad limit only loses the limit"
        );
        assert_eq!(w, [w[0], None, None, None]);
        let mut bin = HeaderMap::new();
        bin.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        bin.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
        assert_eq!(read(&bin, 0), [None; WINDOWS]);
    }

    #[test]
    fn written_headers_read_back() {
        let l = Limit {
            limit: Some(60),
            remaining: 3,
            reset_ms: 57_250,
        };
        let now = 1_735_689_600_000;
        for openai in [true, false] {
            let mut h = HeaderMap::new();
            write(&mut h, openai, 0, &l, now);
            assert_eq!(read(&h, now)[0], Some(l), "openai: {openai}");
        }
        let mut h = HeaderMap::new();
        write(&mut h, true, 3, &l, now);
        assert!(h.is_empty(), "openai has no output-token window");
    }
}
