//! Why an upstream request got no response (the client's and the HTTP/1.1 pool's common error).

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Pooled(#[from] hyper_util::client::legacy::Error),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Protocol(&'static str),
}

impl UpstreamError {
    /// Nothing reached the upstream: no connection could be made.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout => true,
            UpstreamError::Http(_) | UpstreamError::Io(_) | UpstreamError::Protocol(_) => false,
            UpstreamError::Pooled(e) => e.is_connect(),
        }
    }
}
