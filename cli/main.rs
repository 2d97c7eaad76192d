//! `procactor`: the operator's daemon and CLI.

fn main() {}
