//! HTTP bodies on either side: the response body type Sluice answers with, and whole bodies read
//! into one buffer, bounded in size (the client's request before admission, an upstream's
//! non-streamed answer). A body that arrives in one frame (the usual case) is handed on as is,
//! without copying or an intermediate list.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body Sluice sends: whole, or streamed.
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body sent as these pieces, in order, its length known (zero-copy slices of other buffers).
pub fn pieces_body(pieces: Vec<Bytes>) -> RespBody {
    Pieces {
        len: pieces.iter().map(|b| b.len() as u64).sum(),
        pieces: pieces.into(),
    }
    .boxed_unsync()
}

struct Pieces {
    pieces: std::collections::VecDeque<Bytes>,
    len: u64,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let next = self.pieces.pop_front();
        if let Some(b) = &next {
            self.len -= b.len() as u64;
        }
        std::task::Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

pub fn full_body(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Body(E),
}

/// All data frames of `body` (trailers are dropped), or [`ReadError::TooLarge`] past `max` bytes.
pub async fn read_whole<B>(mut body: B, max: usize) -> Result<Bytes, ReadError<B::Error>>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut len = 0usize;
    // A declared length (Content-Length) sizes the buffer once: about 1× the body, not the 2×
    // that growing by doubling can leave.
    let declared = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= max);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Body)?.into_data() else {
            continue;
        };
        len += data.len();
        if len > max {
            return Err(ReadError::TooLarge(max));
        }
        match (&mut first, &mut more) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut buf =
                    BytesMut::with_capacity(declared.map_or(len.max(f.len() * 2), |n| n.max(len)));
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                more = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, more) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::{ReadError, read_whole};
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    fn chunks(
        parts: &[&'static str],
    ) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .chain(std::iter::once(Ok(Frame::trailers(http::HeaderMap::new()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn joins_frames_and_keeps_a_single_one_as_is() {
        let one = Bytes::from_static(b"{\"a\":1}");
        let got = read_whole(Full::new(one.clone()), 100).await.unwrap();
        assert_eq!(got.as_ptr(), one.as_ptr(), "a single frame is not copied");
        assert_eq!(
            read_whole(chunks(&["ab", "cd", "e"]), 5).await.unwrap(),
            "abcde"
        );
        assert_eq!(read_whole(chunks(&[]), 5).await.unwrap(), "");
    }

    #[tokio::test]
    async fn stops_past_the_limit_and_passes_errors_on() {
        assert!(matches!(
            read_whole(chunks(&["abc", "def"]), 5).await,
            Err(ReadError::TooLarge(5))
        ));
        let failing = StreamBody::new(futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err(std::io::Error::other("reset")),
        ]));
        match read_whole(failing, 5).await {
            Err(ReadError::Body(e)) => assert_eq!(e.to_string(), "reset"),
            other => panic!("{other:?}"),
        }
    }
}
