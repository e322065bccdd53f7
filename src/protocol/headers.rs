//! Header names used on every request, by Receive and Deliver alike: a name looked up as a string
//! is parsed and hashed on every lookup, a `HeaderName` only hashed.

use http::HeaderName;

/// The request id a client may send and Sluice passes upstream and answers with.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Anthropic's API key header (a client's key to Sluice, or Sluice's to an Anthropic upstream).
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
