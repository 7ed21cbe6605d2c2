//! Startup and shutdown: system event triggers, `call_when_running`, and
//! the orderly shutdown that SIGINT (Ctrl-C) or SIGTERM starts.
//!
//! ```text
//! cargo run --example shutdown           # stops itself after 2 s
//! cargo run --example shutdown -- wait   # runs until Ctrl-C or SIGTERM
//! ```

use std::time::Duration;

use torsion_protocol::{Phase, Reactor, SystemEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let wait = std::env::args().nth(1).as_deref() == Some("wait");
    let reactor = Reactor::new()?;

    for (phase, event) in [
        (Phase::Before, SystemEvent::Startup),
        (Phase::After, SystemEvent::Startup),
        (Phase::Before, SystemEvent::Shutdown),
        (Phase::During, SystemEvent::Shutdown),
        (Phase::After, SystemEvent::Shutdown),
    ] {
        reactor.add_system_event_trigger(phase, event, move |_| {
            println!("{phase:?} {event:?}");
        });
    }
    reactor.call_when_running(move |reactor| {
        println!("running");
        if !wait {
            reactor.call_later(Duration::from_secs(2), |reactor| {
                reactor.stop().expect("running");
            });
        }
    });
    reactor.run()?;
    println!("run() returned");
    Ok(())
}
