//! Worker actors that ship with procactor, each also built as a binary in `actors/`.
//!
//! - [`echo::Echo`] (`procactor-echo`): the reference worker that benchmarks and tests use.

pub mod echo;
