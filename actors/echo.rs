//! `procactor-echo`: the reference worker ([`procactor::actors::echo::Echo`]) as a program.

fn main() -> Result<(), procactor::Error> {
    procactor::run_worker(procactor::actors::echo::Echo::default())
}
