//! Worker actors that ship with procactor, each also built as a binary in `actors/`.
//!
//! - [`echo::Echo`] (`procactor-echo`): the reference worker that benchmarks and tests use.
//! - [`http::HttpWorker`] (`procactor-http`): an actix-web server on the cluster's shared
//!   listener `"http"`, drained gracefully on stop (also runs alone under socket activation).
//! - [`relay::Relay`] (`procactor-relay`): exercises messaging between processes (peers,
//!   broadcast, groups, confirmations, controls) on command, and records what it receives.

pub mod echo;
pub mod http;
pub mod relay;
