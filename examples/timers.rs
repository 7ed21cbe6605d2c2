//! Timers on the reactor: `call_later`, cancel, reset, delay, and a
//! `LoopingCall` that stops the reactor after five beats.
//!
//! ```text
//! cargo run --example timers
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::{LoopingCall, Reactor};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let reactor = Reactor::new()?;

    // Runs 50 ms from now.
    reactor.call_later(ms(50), |_| println!("50 ms: call_later fired"));

    // Scheduled, then cancelled: never runs.
    let cancelled = reactor.call_later(ms(60), |_| println!("never printed"));
    cancelled.cancel()?;
    println!("cancelled: {}", cancelled.cancelled());

    // Scheduled for 10 ms, then moved to 120 ms from now.
    let reset = reactor.call_later(ms(10), |_| println!("120 ms: reset call fired"));
    reset.reset(ms(120))?;

    // Scheduled for 40 ms, then pushed 40 ms later.
    let delayed = reactor.call_later(ms(40), |_| println!("80 ms: delayed call fired"));
    delayed.delay(ms(40))?;

    // A heartbeat every 100 ms, starting now; after five beats it stops
    // itself and the reactor.
    let beats = Rc::new(Cell::new(0));
    let count = beats.clone();
    let heartbeat = LoopingCall::new(&reactor, move |call| {
        count.set(count.get() + 1);
        println!(
            "beat {} ({} interval(s) since the last)",
            count.get(),
            call.elapsed_intervals()
        );
        if count.get() == 5 {
            call.stop().expect("running");
            call.reactor().expect("alive").stop().expect("running");
        }
    });
    heartbeat.start(ms(100), true)?;

    reactor.run()?;
    println!("done after {} beats", beats.get());
    Ok(())
}
