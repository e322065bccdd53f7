//! Request ids: the client's `x-request-id` when it is short and printable, else a fresh one
//! (`req-<node prefix>-<hex counter>`).

use crate::protocol::headers::X_REQUEST_ID;
use http::HeaderMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            prefix: format!("{:08x}", rand::random::<u32>()),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    pub fn for_request(&self, headers: &HeaderMap) -> String {
        if let Some(v) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
            && !v.is_empty()
            && v.len() <= 128
            && v.bytes().all(|c| c.is_ascii_graphic())
        {
            return v.to_string();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(32);
        id.push_str("req-");
        id.push_str(&self.prefix);
        id.push('-');
        push_hex(&mut id, n);
        id
    }
}

/// `n` in lowercase hex, without going through the formatting machinery (once per request).
fn push_hex(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|b| char::from(*b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_the_formatter() {
        for n in [0u64, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, u64::MAX] {
            let mut s = String::new();
            push_hex(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
        }
    }

    #[test]
    fn keeps_a_printable_client_id_and_numbers_the_rest() {
        let ids = RequestIds::default();
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(ids.for_request(&h), "abc-123");
        h.insert("x-request-id", "x".repeat(129).parse().unwrap());
        let a = ids.for_request(&h);
        let b = ids.for_request(&HeaderMap::new());
        assert!(a.starts_with("req-") && a.ends_with("-1"), "{a}");
        assert!(b.ends_with("-2"), "{b}");
    }
}
