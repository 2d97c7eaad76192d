//! `procactor-relay`: the messaging worker ([`procactor::actors::relay::Relay`]) as a program.

fn main() -> Result<(), procactor::Error> {
    procactor::run_worker(procactor::actors::relay::Relay::default())
}
