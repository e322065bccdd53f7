//! Reload: beside the pipeline, swapping the config a running node serves. A trigger (SIGHUP,
//! `POST /admin/reload`, a change of the file with `--watch`) asks the [`Reloader`]; `app` loads and
//! validates the new file, refuses what cannot change live ([`diff`]), builds the next
//! [`crate::receive::Pipeline`] reusing what carries over by name, and swaps it in atomically:
//! a request runs start to finish on the pipeline it started with. Imports `config` and `observe`
//! only; what a reload does is `app`'s.

pub mod diff;
mod outcome;
pub mod triggers;

pub use outcome::Outcome;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

/// What runs a reload (`app::App`).
pub trait Reload: Send + Sync {
    /// Load the file again and swap it in, or say why not. `trigger`: `signal`, `admin`, `watch`.
    fn reload(
        self: Arc<Self>,
        trigger: &'static str,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;
    /// The version (short hash of the file) being served.
    fn version(&self) -> String;
}

/// The handle triggers hold: the reload target, set once the node is built.
#[derive(Default)]
pub struct Reloader {
    target: OnceLock<Weak<dyn Reload>>,
}

impl Reloader {
    pub fn set(&self, target: Weak<dyn Reload>) {
        let _ = self.target.set(target);
    }

    pub async fn reload(&self, trigger: &'static str) -> Outcome {
        match self.target.get().and_then(Weak::upgrade) {
            Some(r) => r.reload(trigger).await,
            None => Outcome::unavailable(),
        }
    }

    /// The version served ("" before the node is built).
    pub fn version(&self) -> String {
        self.target
            .get()
            .and_then(Weak::upgrade)
            .map_or_else(String::new, |r| r.version())
    }
}

/// The config version: a short, stable hash of the file's bytes (the same on every node).
pub fn version_of(text: &str) -> String {
    format!("{:012x}", crate::hash::stable_hash(text.as_bytes()) >> 16)
}
