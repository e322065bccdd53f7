//! Property test: our HTTP/1.1 client is never more lenient than hyper's, and never disagrees with it
//! on content. Thousands of generated answers (deterministic seed) mix status lines, Content-Length
//! and Transfer-Encoding variants, chunk-size lines (valid, signed, `0x`, extensions, BWS, bare LF),
//! missing CRLFs, trailers, bodies cut short and close-delimited bodies. Each is served from a
//! loopback listener that writes it and closes, and fetched once by each client.
//!
//! Whenever ours returns a whole body, hyper must return the same status and bytes. Where hyper
//! accepts and ours rejects, the answer must be one of the cases where we are stricter on purpose
//! (the generator marks them `strict`), all of which RFC 9112 makes faulty:
//! - `chunked` applied twice, or an empty Transfer-Encoding (hyper: last coding decides, or read to
//!   the close);
//! - a malformed Content-Length next to a Transfer-Encoding (hyper ignores the Content-Length);
//! - malformed framing fields in a bodiless (204, 304) answer (hyper does not look at them);
//! - a chunk size with more than 16 hex digits, leading zeros included (hyper: fine if it fits);
//! - a trailer line ended by a bare LF (hyper hands the trailer block to httparse, which takes it).

use super::Pool;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CASES: usize = 3000;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// xorshift64*: deterministic and dependency free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// One generated answer: its bytes, and whether ours may reject it where hyper accepts.
struct Case {
    bytes: Vec<u8>,
    strict: bool,
}

/// Transfer-Encoding values (after `transfer-encoding: `) whose final coding is `chunked`.
const TE_CHUNKED: [&str; 5] = [
    "chunked",
    "Chunked",
    "gzip, chunked",
    "gzip,chunked",
    "gzip\r\ntransfer-encoding: chunked",
];
/// Values whose final coding is not `chunked`: the body runs to the close.
const TE_TO_CLOSE: [&str; 4] = [
    "gzip",
    "identity",
    "chunked, gzip",
    "chunked\r\ntransfer-encoding: gzip",
];

/// A Transfer-Encoding value, whether `chunked` ends its codings, and whether we are stricter than
/// hyper about it.
fn transfer_encoding(rng: &mut Rng) -> (&'static str, bool, bool) {
    match rng.below(10) {
        0..=5 => (rng.pick(&TE_CHUNKED), true, false),
        6..=8 => (rng.pick(&TE_TO_CLOSE), false, false),
        _ => rng.pick(&[("chunked, chunked", true, true), (",", false, true)]),
    }
}

/// A Content-Length value for a body of `n` bytes, and whether it is well-formed.
fn content_length(rng: &mut Rng, n: usize) -> (String, bool) {
    let valid = [
        format!("{n}"),
        format!("{n}"),
        format!("{n}, {n}"),
        format!("0{n}"),
        format!("{n}\r\ncontent-length: {n}"),
        format!("{}", n + 3),
        format!("{}", n.saturating_sub(1)),
        "18446744073709551615".to_string(),
    ];
    let invalid = [
        format!("+{n}"),
        "-1".to_string(),
        format!("0x{n:x}"),
        String::new(),
        format!("{n}, {}", n + 1),
        format!("{n},"),
        format!("{n}\r\ncontent-length: {}", n + 1),
        "99999999999999999999".to_string(),
    ];
    if rng.chance(70) {
        (valid[rng.below(valid.len())].clone(), true)
    } else {
        (invalid[rng.below(invalid.len())].clone(), false)
    }
}

/// `payload` in the chunked coding, with an occasional fault.
fn chunked(rng: &mut Rng, payload: &[u8], strict: &mut bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = payload;
    let mut size_line = |rng: &mut Rng, out: &mut Vec<u8>, n: usize| {
        let mut size = if rng.chance(50) {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        if rng.chance(10) {
            size.insert_str(0, "00");
        }
        if rng.chance(2) {
            size.insert_str(0, "00000000000000000");
            *strict = true;
        }
        let prefix = ["+", "0x", "-", " ", ""];
        if rng.chance(8) {
            size.insert_str(0, rng.pick(&prefix));
        }
        if rng.chance(2) {
            size.clear();
        }
        out.extend_from_slice(size.as_bytes());
        if rng.chance(10) {
            out.extend_from_slice(rng.pick(&[" ", "\t", " \t"]).as_bytes());
        }
        if rng.chance(15) {
            out.extend_from_slice(rng.pick(&[";x", ";name=value", "; q=\"a b\""]).as_bytes());
        }
        out.extend_from_slice(if rng.chance(3) { b"\n" } else { b"\r\n" });
    };
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(16));
        size_line(rng, &mut out, n);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if rng.chance(3) {
            out.extend_from_slice(rng.pick(&[&b""[..], b"\n", b"\r", b"xx"]));
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    size_line(rng, &mut out, 0);
    if rng.chance(20) {
        out.extend_from_slice(b"x-trailer: 1\r\n");
        if rng.chance(15) {
            out.extend_from_slice(b"not a field\r\n");
        }
        if rng.chance(15) {
            out.extend_from_slice(b"x-bare: lf\n");
            *strict = true;
        }
    }
    out.extend_from_slice(if rng.chance(3) { b"\n" } else { b"\r\n" });
    out
}

fn case(rng: &mut Rng) -> Case {
    let mut out = Vec::new();
    let mut strict = false;
    if rng.chance(10) {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let status = rng.pick(&[
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 503 Service Unavailable",
        "HTTP/1.0 200 OK",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified",
        "HTTP/1.1 2x0 OK",
    ]);
    let bodiless = status.contains(" 204 ") || status.contains(" 304 ");
    let payload: Vec<u8> = (0..rng.below(48))
        .map(|_| b' ' + rng.below(95) as u8)
        .collect();
    let te = rng.chance(50).then(|| transfer_encoding(rng));
    let cl = rng
        .chance(if te.is_some() { 30 } else { 75 })
        .then(|| content_length(rng, payload.len()));
    let cl_bad = cl.as_ref().is_some_and(|(_, ok)| !ok);
    strict |= te.is_some_and(|(_, _, s)| s)
        || (te.is_some() && cl_bad)
        || (bodiless && (te.is_some() || cl_bad));
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain\r\n");
    let mut fields = Vec::new();
    if let Some((v, _, _)) = te {
        fields.push(format!("transfer-encoding: {v}\r\n"));
    }
    if let Some((v, _)) = &cl {
        fields.push(format!("content-length: {v}\r\n"));
    }
    if rng.chance(10) {
        fields.push("connection: close\r\n".into());
    }
    if rng.chance(50) {
        fields.reverse();
    }
    out.extend(fields.iter().flat_map(|f| f.bytes()));
    out.extend_from_slice(b"\r\n");
    let head = out.len();
    match te {
        Some((_, true, _)) => out.extend(chunked(rng, &payload, &mut strict)),
        _ => out.extend_from_slice(&payload),
    }
    if rng.chance(10) && out.len() > head {
        // The server closes early.
        let cut = head + rng.below(out.len() - head);
        out.truncate(cut);
    }
    Case { bytes: out, strict }
}

/// A listener that answers every connection with `bytes` (after reading the request head) and
/// closes it.
async fn serve(bytes: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let bytes = Arc::new(bytes);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut chunk = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = sock.write_all(&bytes).await;
            });
        }
    });
    addr
}

type Outcome = Result<(u16, Bytes), String>;

/// An answer's status and whole body.
async fn whole<B>(resp: http::Response<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await;
    Ok((status, body.map_err(|e| e.to_string())?.to_bytes()))
}

async fn fetch_h1(addr: &str) -> Outcome {
    let pool = Arc::new(Pool::new(addr.into(), FETCH_TIMEOUT, FETCH_TIMEOUT).unwrap());
    let req = http::Request::post("/").body(Bytes::new()).unwrap();
    let resp = pool.send(req).await.map_err(|e| e.to_string())?;
    whole(resp).await
}

async fn fetch_hyper(addr: &str) -> Outcome {
    let io = TokioIo::new(TcpStream::connect(addr).await.map_err(|e| e.to_string())?);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post("/")
        .header(http::header::HOST, addr)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    whole(resp).await
}

async fn bounded(f: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(FETCH_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test]
async fn never_more_lenient_than_hyper() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut both_ok, mut both_rejected, mut stricter, mut h1_rejected, mut hyper_rejected) =
        (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for i in 0..CASES {
        let c = case(&mut rng);
        let addr = serve(c.bytes.clone()).await;
        let (ours, theirs) = tokio::join!(bounded(fetch_h1(&addr)), bounded(fetch_hyper(&addr)));
        h1_rejected += usize::from(ours.is_err());
        hyper_rejected += usize::from(theirs.is_err());
        let text = String::from_utf8_lossy(&c.bytes);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) if a == b => both_ok += 1,
            (Err(_), Err(_)) => both_rejected += 1,
            (Err(_), Ok(_)) if c.strict => stricter += 1,
            _ => failures.push(format!(
                "case {i}: {text:?}\n  h1: {ours:?}\n  hyper: {theirs:?}"
            )),
        }
        assert!(
            !matches!(&ours, Err(e) if e == "timed out"),
            "case {i}: h1 timed out: {text:?}"
        );
    }
    println!(
        "{CASES} answers: both accepted {both_ok}, both rejected {both_rejected}, h1 stricter on \
         purpose {stricter}; h1 rejected {h1_rejected}, hyper rejected {hyper_rejected}"
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    // The generator is balanced: a fair share of answers is accepted and rejected by both.
    assert!(
        both_ok > CASES / 5 && both_rejected > CASES / 5,
        "{both_ok} / {both_rejected}"
    );
}
