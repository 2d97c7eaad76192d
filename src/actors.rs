//! Worker actors that ship with procactor, each also built as a binary in `actors/`.
//!
//! - [`echo::Echo`] (`procactor-echo`): the reference worker that benchmarks and tests use.
//! - `http::HttpWorker` (`procactor-http`): an actix-web server on the cluster's shared
//!   listener `"http"`, drained gracefully on stop (also runs alone under socket activation).
//!   It needs the `http` feature (on by default), the only one that compiles actix-web.
//!
//! The test fixtures (the relay worker of the messaging tests, the chaos worker of the fault
//! tests) are programs in `actors/`, not part of the library.

pub mod echo;
#[cfg(feature = "http")]
pub mod http;
