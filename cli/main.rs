//! `procactor`: the operator's daemon and CLI.

#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the commands use it (next commit)")
)]
mod client;
mod conn;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "start and apply read files (next commit)")
)]
mod file;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the commands use it (next commit)")
)]
mod handshake;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the daemon maps each app with it")
)]
mod mapping;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "apply plans with it (a later step)")
)]
mod plan;
mod proto;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the commands use it (next commit)")
)]
mod socket;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "`procactor startup` prints it (next commit)")
)]
mod startup;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the daemon saves it, resurrect reads it")
)]
mod state;

fn main() {}
