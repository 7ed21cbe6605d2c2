//! Threads and the reactor: blocking work on the reactor's worker pool
//! with `defer_to_thread`, and a thread of our own reporting back with
//! `call_from_thread`.
//!
//! ```text
//! cargo run --example threads
//! ```

use std::time::Duration;

use torsion_protocol::Reactor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let reactor = Reactor::new()?;

    // Blocking work (here a slow sum) runs off the loop; its result comes
    // back to the reactor's thread.
    reactor.defer_to_thread(
        || {
            std::thread::sleep(Duration::from_millis(20));
            (1..=1000u64).sum::<u64>()
        },
        |_, result| println!("defer_to_thread: sum = {}", result.expect("no panic")),
    );

    // A thread of our own sends work to the reactor; the last message stops
    // it.
    let handle = reactor.handle();
    let worker = std::thread::spawn(move || {
        for i in 1..=3 {
            handle
                .call_from_thread(move |_| println!("call_from_thread: message {i}"))
                .expect("reactor alive");
        }
        std::thread::sleep(Duration::from_millis(50));
        handle
            .call_from_thread(|reactor| {
                println!("call_from_thread: stopping");
                reactor.stop().expect("running");
            })
            .expect("reactor alive");
    });

    reactor.run()?;
    worker.join().expect("worker finished");
    Ok(())
}
