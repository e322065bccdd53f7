//! OpenAI embeddings (`POST /v1/embeddings`): deterministic small vectors, floats or base64.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{MockBody, error, json_ok};
use super::control::Snapshot;
use super::legacy::prompt_facts;
use super::request::parse;
use crate::protocol::Protocol;

/// Embeddings request.
#[derive(Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    model: String,
    input: Option<Value>,
    dimensions: Option<u32>,
    encoding_format: Option<String>,
}

/// Default embedding size.
const EMBEDDING_DIMS: usize = 16;

/// `POST /v1/embeddings`: deterministic vectors (a hash of each input seeds them).
pub(crate) async fn embeddings(snap: &Snapshot, body: &[u8]) -> Response<MockBody> {
    let req: EmbeddingRequest = match parse(body) {
        Ok(r) => r,
        Err(bad) => return bad.into_response(Protocol::Openai),
    };
    let inputs: Vec<&Value> = match &req.input {
        Some(Value::Array(items)) if items.first().is_some_and(|v| !v.is_number()) => {
            items.iter().collect()
        }
        Some(v @ (Value::String(_) | Value::Array(_))) => vec![v],
        _ => {
            let msg = "'input' must be a string, an array of strings, or token arrays.";
            return error(Protocol::Openai, StatusCode::BAD_REQUEST, msg);
        }
    };
    let dims = req
        .dimensions
        .map_or(EMBEDDING_DIMS, |d| (d as usize).clamp(1, 4096));
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let mut prompt_tokens = 0u32;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let (tokens, _) = prompt_facts(input);
            prompt_tokens = prompt_tokens.saturating_add(tokens);
            let vector = embedding(&input.to_string(), dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    if !snap.ttft.is_zero() {
        tokio::time::sleep(snap.ttft).await;
    }
    json_ok(&json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
}

/// A unit-length vector derived from `seed_text` (FNV-1a seeded splitmix64).
fn embedding(seed_text: &str, dims: usize) -> Vec<f32> {
    let mut x = seed_text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = v.iter().map(|f| f * f).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|f| *f /= norm);
    }
    v
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("\"hello\"", 16);
        assert_eq!(a, embedding("\"hello\"", 16));
        assert_ne!(a, embedding("\"world\"", 16));
        let norm: f32 = a.iter().map(|f| f * f).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
