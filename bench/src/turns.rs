//! `torsion-bench turns`: the cost of one loop turn that runs one
//! `call_soon` callback (a wait that returns at once, the dispatch, the
//! end of the turn), so that per-turn work such as publishing the
//! reactor's counters (`docs/observability.md`) can be measured in
//! nanoseconds rather than guessed from the echo suite's spread.

use std::time::{Duration, Instant};

use torsion_protocol::Reactor;

const TURNS: u32 = 1_000_000;

/// Nanoseconds per turn, one run.
fn once() -> f64 {
    let reactor = Reactor::new().expect("a reactor");
    reactor.set_signal_handling(false);
    for _ in 0..10_000 {
        reactor.call_soon(|_| {});
        reactor.iterate(Duration::ZERO).expect("a turn");
    }
    let start = Instant::now();
    for _ in 0..TURNS {
        reactor.call_soon(|_| {});
        reactor.iterate(Duration::ZERO).expect("a turn");
    }
    start.elapsed().as_nanos() as f64 / f64::from(TURNS)
}

/// Prints the median of `rounds` runs.
pub fn run(rounds: usize) {
    let mut samples: Vec<f64> = (0..rounds).map(|_| once()).collect();
    samples.sort_by(f64::total_cmp);
    let rounded: Vec<String> = samples.iter().map(|ns| format!("{ns:.1}")).collect();
    println!(
        "turns: {TURNS} per run, one call_soon each: median {:.1} ns per turn (runs: {})",
        samples[samples.len() / 2],
        rounded.join(", ")
    );
}
