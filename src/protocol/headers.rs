//! Header names used on every request, by Receive and Deliver alike: a name looked up as a string
//! is parsed and hashed on every lookup, a `HeaderName` only hashed.

use http::HeaderName;

/// The request id a client may send and Sluice passes upstream and answers with.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Anthropic's API key header (a client's key to Sluice, or Sluice's to an Anthropic upstream).
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Whether any stage reads the upstream answer's field `name` (any case): the body's type, when to
/// retry, and the providers' rate-limit families ([`super::ratelimit::read`]). The lean HTTP/1.1
/// client keeps only these fields of an answer (each kept one is hashed into a map; the `Date`,
/// `Server`, cookies and a provider's dozen others would be hashed for nothing). A stage that comes
/// to read another field of the answer adds it here.
pub fn read_from_answer(name: &[u8]) -> bool {
    let starts = |prefix: &str| {
        name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    name.eq_ignore_ascii_case(b"content-type")
        || name.eq_ignore_ascii_case(b"retry-after")
        || starts(super::ratelimit::OPENAI_PREFIX)
        || starts(super::ratelimit::ANTHROPIC_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::read_from_answer;

    #[test]
    fn the_answer_fields_a_stage_reads_are_kept_in_any_case() {
        for kept in [
            "content-type",
            "Content-Type",
            "retry-after",
            "RETRY-AFTER",
            "x-ratelimit-remaining-tokens",
            "X-RateLimit-Reset-Requests",
            "anthropic-ratelimit-output-tokens-reset",
            "Anthropic-RateLimit-Requests-Limit",
        ] {
            assert!(read_from_answer(kept.as_bytes()), "{kept}");
        }
        for dropped in [
            "date",
            "server",
            "set-cookie",
            "content-length",
            "transfer-encoding",
            "content-typo",
            "x-ratelimit",
            "x-request-id",
            "retry-after-ms",
            "anthropic-ratelimit",
            "",
        ] {
            assert!(!read_from_answer(dropped.as_bytes()), "{dropped}");
        }
    }
}
