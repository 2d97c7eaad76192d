//! `procactor-relay`: the messaging test worker (`relay.rs`) as a program.

#[path = "relay.rs"]
mod relay;

fn main() -> Result<(), procactor::Error> {
    procactor::run_worker(relay::Relay::default())
}
