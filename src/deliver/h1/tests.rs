//! The HTTP/1.1 client against a scripted server on loopback: framings, reuse, stale connections,
//! malformed answers.

use super::Pool;
use crate::deliver::client::{POOL_IDLE_TIMEOUT, UpstreamError};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request: write these pieces (pausing between them), then either keep
/// the connection open for the next request or close it.
#[derive(Clone)]
struct Reply {
    pieces: Vec<&'static str>,
    close: bool,
}

fn reply(pieces: &[&'static str]) -> Reply {
    Reply {
        pieces: pieces.to_vec(),
        close: false,
    }
}

/// A server answering requests in order from `replies`; returns its address, the number of
/// connections it accepted, and the request heads it saw.
async fn server(
    replies: Vec<Reply>,
) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let replies = Arc::new(std::sync::Mutex::new(replies.into_iter()));
    let (a, s) = (accepted.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let (replies, seen) = (replies.clone(), s.clone());
            tokio::spawn(async move {
                loop {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    seen.lock().unwrap().push(req);
                    let Some(r) = replies.lock().unwrap().next() else {
                        return;
                    };
                    for p in r.pieces {
                        if sock.write_all(p.as_bytes()).await.is_err() {
                            return;
                        }
                        sock.flush().await.ok();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    if r.close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, seen)
}

/// One request (head and content-length body) as text.
async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(String::from_utf8_lossy(&buf[..end + 4 + len]).to_string());
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A reply after which the server closes the connection.
fn closing(pieces: &[&'static str]) -> Reply {
    Reply {
        pieces: pieces.to_vec(),
        close: true,
    }
}

fn pool(addr: &str) -> Arc<Pool> {
    Arc::new(Pool::new(addr.to_string(), Duration::from_secs(2), POOL_IDLE_TIMEOUT).unwrap())
}

fn post(body: &'static str) -> http::Request<Bytes> {
    http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap()
}

async fn call(p: &Arc<Pool>, body: &'static str) -> Result<(u16, String), String> {
    let resp = p.send(post(body)).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).to_string()))
}

/// Two requests in a row against `replies`: their answers, and how many connections they took.
async fn two_calls(replies: Vec<Reply>, want: [(u16, &str); 2], connections: usize) {
    let (addr, accepted, _) = server(replies).await;
    let p = pool(&addr);
    for (status, body) in want {
        assert_eq!(call(&p, "{}").await.unwrap(), (status, body.to_string()));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), connections);
}

#[tokio::test]
async fn content_length_answers_reuse_one_connection() {
    let ok =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
    let (addr, accepted, seen) = server(vec![reply(&[ok]), reply(&[ok]), reply(&[ok])]).await;
    let p = pool(&addr);
    for _ in 0..3 {
        assert_eq!(
            call(&p, "{\"x\":1}").await.unwrap(),
            (200, "{\"a\":1}".into())
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "keep-alive reuses the connection"
    );
    let first = seen.lock().unwrap()[0].clone();
    assert!(
        first.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{first}"
    );
    assert!(first.contains(&format!("host: {addr}\r\n")), "{first}");
    assert!(first.contains("content-length: 7\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\n{\"x\":1}"), "{first}");
}

#[tokio::test]
async fn chunked_answers_split_anywhere_are_decoded() {
    let pieces = [
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        "7\r\ndata: ",
        "a\r",
        "\n5;ext=1\r\nhello\r\n",
        "0\r\n",
        "x-trailer: 1\r\n\r\n",
    ];
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let replies = vec![reply(&pieces), reply(&[ok])];
    let want = [(200, "data: ahello"), (200, "ok")];
    // A finished chunked body frees the connection.
    two_calls(replies, want, 1).await;
}

#[tokio::test]
async fn interim_answers_are_skipped_and_close_is_honoured() {
    let pieces = [
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 201 Created\r\nconnection: close\r\ncontent-length: 3\r\n\r\nnew",
    ];
    let until_close = closing(&["HTTP/1.0 200 OK\r\n\r\nall of ", "it"]);
    // `connection: close` is not reused.
    two_calls(
        vec![reply(&pieces), until_close],
        [(201, "new"), (200, "all of it")],
        2,
    )
    .await;
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let first = closing(&[ok]);
    let (addr, accepted, _) = server(vec![first, reply(&[ok])]).await;
    let p = pool(&addr);
    assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
    // The server closed after answering (without saying so): the pooled connection is dead by the
    // time the next request comes. Wait until the runtime has seen the close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while p
        .idle
        .lock()
        .unwrap()
        .first()
        .is_some_and(|c| c.is_usable())
    {
        assert!(tokio::time::Instant::now() < deadline, "close never seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A server for the reuse race: the first connection answers `first` and keeps the connection open,
/// then hangs up on the next request that arrives on it without answering (`reset`: without reading
/// it either, so the client sees a reset rather than an end of stream). Every later connection
/// answers `ok`. Returns its address and the number of connections it accepted.
async fn hangs_up_on_reuse(first: &'static str, reset: bool) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let n = a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if n > 0 {
                    while read_request(&mut sock).await.is_some() {
                        if sock.write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                if read_request(&mut sock).await.is_none()
                    || sock.write_all(first.as_bytes()).await.is_err()
                {
                    return;
                }
                // The idle connection's close races the next request: it happens when that request
                // arrives, after the client has checked the connection out as usable.
                if reset {
                    let _ = sock.readable().await;
                } else {
                    let _ = read_request(&mut sock).await;
                }
                drop(sock);
            });
        }
    });
    (addr, accepted)
}

/// The upstream closes an idle kept-alive connection just as the next request is checked out. The
/// request never got an answer on it, so it is sent again, once, on a fresh connection.
#[tokio::test]
async fn a_pooled_connection_closed_as_it_is_reused_is_replaced_by_a_fresh_one() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    for reset in [false, true] {
        let (addr, accepted) = hangs_up_on_reuse(ok, reset).await;
        let p = pool(&addr);
        assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
        // No waiting: the connection is checked out while the upstream still holds it open.
        assert_eq!(p.idle.lock().unwrap().len(), 1);
        assert_eq!(
            call(&p, "{}").await,
            Ok((200, "ok".into())),
            "reset: {reset}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "reset: {reset}");
    }
}

/// Only a reused connection is retried, and only once: a fresh connection that is hung up on is an
/// error, as is a retry that is hung up on again.
#[tokio::test]
async fn a_hang_up_on_a_fresh_connection_is_not_retried() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (addr, accepted, _) = server(vec![closing(&[])]).await;
    let err = call(&pool(&addr), "{}").await.unwrap_err();
    assert!(err.contains("before answering"), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let (addr, accepted, _) = server(vec![reply(&[ok]), closing(&[]), closing(&[])]).await;
    let p = pool(&addr);
    assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
    let err = call(&p, "{}").await.unwrap_err();
    assert!(err.contains("before answering"), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn broken_answers_are_errors() {
    let cases: [(&[&'static str], &str); 4] = [
        (&["HTTP/1.1 2x0 OK\r\n\r\n"], "malformed"),
        (
            &["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            "mid-body",
        ),
        (
            &["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            "chunk size",
        ),
        (
            &["HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx"],
            "conflicting",
        ),
    ];
    for (pieces, want) in cases {
        let r = closing(pieces);
        let (addr, _, _) = server(vec![r]).await;
        let err = call(&pool(&addr), "{}").await.unwrap_err();
        assert!(err.contains(want), "{pieces:?}: {err}");
    }
    // Nobody listening: a connect error, which failover treats as "never reached the upstream".
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let err = pool(&addr).send(post("{}")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err}");
    assert!(err.is_connect());
}

#[tokio::test]
async fn a_large_body_goes_out_whole_and_an_unread_answer_frees_nothing() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let long = "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nonly the start";
    let (addr, accepted, seen) = server(vec![reply(&[ok]), reply(&[long]), reply(&[ok])]).await;
    let p = pool(&addr);
    let big: &'static str = Box::leak("x".repeat(100_000).into_boxed_str());
    assert_eq!(call(&p, big).await.unwrap(), (200, "ok".into()));
    assert!(
        seen.lock().unwrap()[0].ends_with(big),
        "the whole body arrived"
    );
    // An answer dropped before its body ended takes its connection with it.
    let resp = p.send(post("{}")).await.unwrap();
    drop(resp);
    assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// RFC 9112 §6.3 rule 3: Transfer-Encoding frames the body even with a Content-Length, and the
/// connection is not reused. Rule 4: a final coding other than chunked runs the body to the close.
#[tokio::test]
async fn transfer_encoding_wins_and_ambiguous_framings_are_not_reused() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let both = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    two_calls(
        vec![reply(&[both]), reply(&[ok])],
        [(200, "hello"), (200, "ok")],
        2,
    )
    .await;
    for te in [
        "gzip",
        "chunked, gzip",
        "gzip\r\ntransfer-encoding: identity",
    ] {
        let head =
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\ncontent-length: 1\r\n\r\n");
        let head: &'static str = Box::leak(head.into_boxed_str());
        let replies = vec![
            closing(&[head, "5\r\nhello\r\n", "0\r\n\r\n"]),
            reply(&[ok]),
        ];
        two_calls(replies, [(200, "5\r\nhello\r\n0\r\n\r\n"), (200, "ok")], 2).await;
    }
}

/// An answer served alone, the server closing after it: its status and body, or the error.
async fn once(answer: &str) -> Result<(u16, String), String> {
    let answer: &'static str = Box::leak(answer.to_string().into_boxed_str());
    let (addr, _, _) = server(vec![closing(&[answer])]).await;
    call(&pool(&addr), "{}").await
}

#[tokio::test]
async fn content_length_is_digits_only() {
    for (cl, want) in [
        ("5", Some("hello")),
        ("5, 5", Some("hello")),
        ("05", Some("hello")),
    ] {
        let r = once(&format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {cl}\r\n\r\nhello"
        ))
        .await;
        assert_eq!(r.ok().map(|(_, b)| b).as_deref(), want, "{cl:?}");
    }
    let rejected = [
        "+5",
        "-1",
        "0x5",
        "",
        "5,",
        "5, 6",
        "5 5",
        "18446744073709551616",
        "99999999999999999999999",
    ];
    for cl in rejected {
        let err = once(&format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {cl}\r\n\r\nhello"
        ))
        .await
        .unwrap_err();
        assert!(err.contains("content-length"), "{cl:?}: {err}");
    }
    for te in [
        "chunked, chunked",
        ",",
        "chunked\r\ntransfer-encoding: chunked",
    ] {
        let r = once(&format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n0\r\n\r\n"
        ))
        .await;
        assert!(r.is_err(), "{te:?}: {r:?}");
    }
    let r = once("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert!(r.unwrap_err().contains("http/1.0"));
}

#[tokio::test]
async fn chunk_lines_are_strict() {
    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    // Chunk-size lines for ten bytes of data.
    let sizes_ok = ["A", "a", "0000000000000a", "a;name=value", "a \t;x", "a\t"];
    let sizes_bad = [
        "+a",
        "0xa",
        "-a",
        "",
        " a",
        "a a",
        "00000000000000000a",
        "a;x\ry",
        "a\n",
    ];
    let mut cases: Vec<(String, bool)> = Vec::new();
    for (sizes, ok) in [(&sizes_ok[..], true), (&sizes_bad[..], false)] {
        cases.extend(
            sizes
                .iter()
                .map(|s| (format!("{s}\r\n0123456789\r\n0\r\n\r\n"), ok)),
        );
    }
    cases.push((
        "a\r\n0123456789\r\n0;last\r\nx-trailer: 1\r\nx-other:\r\n\r\n".into(),
        true,
    ));
    // Bad framing after the size line: a bare LF anywhere, no CRLF after the data, a malformed
    // trailer, an overflowing size, a body cut short.
    for rest in [
        "0123456789\n0\r\n\r\n",
        "0123456789xx0\r\n\r\n",
        "0123456789\r\n0\n\r\n",
        "0123456789\r\n0\r\n\n",
        "0123456789\r\n0\r\nx-trailer: 1\n\r\n",
        "0123456789\r\n0\r\nnot a field\r\n\r\n",
        "0123456789\r\n10000000000000000\r\n",
        "0123456789\r\n0\r\n",
        "01234",
    ] {
        cases.push((format!("a\r\n{rest}"), false));
    }
    for (body, ok) in cases {
        let r = once(&format!("{head}{body}")).await;
        if ok {
            assert_eq!(r, Ok((200, "0123456789".into())), "{body:?}");
        } else {
            assert!(r.is_err(), "{body:?}: {r:?}");
        }
    }
}

/// Let `d` pass on the runtime's clock at once.
async fn idle_for(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

/// A pooled connection idle longer than the pool's idle timeout is dropped, not reused.
#[tokio::test]
async fn idle_connections_expire() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (addr, accepted, _) = server(vec![reply(&[ok]); 3]).await;
    let p = pool(&addr);
    assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
    idle_for(POOL_IDLE_TIMEOUT - Duration::from_secs(1)).await;
    assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "still fresh: reused");
    idle_for(POOL_IDLE_TIMEOUT + Duration::from_secs(1)).await;
    assert_eq!(call(&p, "{}").await.unwrap(), (200, "ok".into()));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "expired: a new connection"
    );
    assert_eq!(p.idle.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_answer_keeps_the_fields_a_stage_reads_and_checks_every_field() {
    let answer = "HTTP/1.1 429 Too Many Requests\r\nDate: Sat, 28 Nov 2026 11:00:00 GMT\r\n\
        Server: upstream\r\nContent-Type: application/json\r\nRetry-After: 3\r\n\
        Set-Cookie: a=b\r\nX-RateLimit-Remaining-Requests: 0\r\nx-ratelimit-reset-requests: 3s\r\n\
        anthropic-ratelimit-tokens-remaining: 10\r\nX-Request-Id: up-1\r\ncontent-length: 2\r\n\r\n{}";
    let (addr, _, _) = server(vec![closing(&[answer])]).await;
    let resp = pool(&addr).send(post("{}")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let mut kept: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    kept.sort();
    let want = [
        ("anthropic-ratelimit-tokens-remaining", "10"),
        ("content-type", "application/json"),
        ("retry-after", "3"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "3s"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(kept, want);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "{}",
        "the framing fields still frame the body"
    );
    // A field nobody reads is still checked: a control byte in its value fails the answer.
    for bad in [
        "HTTP/1.1 200 OK\r\nServer: up\x01stream\r\ncontent-length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\nSer ver: upstream\r\ncontent-length: 2\r\n\r\n{}",
    ] {
        let err = once(bad).await.unwrap_err();
        assert!(err.contains("malformed"), "{bad:?}: {err}");
    }
}
