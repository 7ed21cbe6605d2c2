//! `torsion-bench async`: the cost of tasks on the reactor against
//! tokio's `LocalSet::spawn_local`, and a timer-wait round trip
//! (`sleep(0)`) on each. The async echo server is benchmarked by the echo
//! comparison (`echo --servers torsion,torsion-async,tokio-ct`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion_protocol::Reactor;

use crate::reactor::thread_cpu;

/// Tasks spawned per run, in batches of `BATCH` (each batch is spawned,
/// then run to completion).
const TASKS: usize = 1_000_000;
const BATCH: usize = 1_000;
/// Sleep round trips per run. tokio rounds a deadline up to its next
/// millisecond tick, so its `sleep(0)` waits up to a millisecond of wall
/// time: fewer of them, and CPU time is the figure to compare.
const SLEEPS: usize = 200_000;
const TOKIO_SLEEPS: usize = 2_000;

/// Wall and CPU nanoseconds per item of the work `f` does on this thread.
fn measure(items: usize, f: impl FnOnce()) -> (f64, f64) {
    let cpu = thread_cpu();
    let start = Instant::now();
    f();
    let wall = start.elapsed().as_nanos() as f64 / items as f64;
    let cpu = (thread_cpu() - cpu).as_nanos() as f64 / items as f64;
    (wall, cpu)
}

fn torsion_spawn() -> (f64, f64) {
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let done = Rc::new(Cell::new(0usize));
    let result = measure(TASKS, || {
        for _ in 0..TASKS / BATCH {
            for _ in 0..BATCH {
                let done = done.clone();
                reactor
                    .spawn(async move { done.set(done.get() + 1) })
                    .detach();
            }
            while reactor.task_count() > 0 {
                reactor.iterate(Duration::ZERO).unwrap();
            }
        }
    });
    assert_eq!(done.get(), TASKS);
    result
}

/// The same shape as `torsion_spawn`: spawn a batch of detached tasks,
/// then run the set until it has none left. A `LocalSet` is itself a
/// future that ticks its tasks (61 per tick) and completes when it is
/// empty, so no driver task of ours is polled meanwhile.
fn tokio_spawn() -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut local = tokio::task::LocalSet::new();
    let done = Rc::new(Cell::new(0usize));
    let result = measure(TASKS, || {
        for _ in 0..TASKS / BATCH {
            for _ in 0..BATCH {
                let done = done.clone();
                // Dropping a tokio JoinHandle detaches the task.
                drop(local.spawn_local(async move { done.set(done.get() + 1) }));
            }
            runtime.block_on(&mut local);
        }
    });
    assert_eq!(done.get(), TASKS);
    result
}

fn torsion_sleep() -> (f64, f64) {
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let r = reactor.clone();
    measure(SLEEPS, || {
        reactor
            .run_until_complete(async move {
                for _ in 0..SLEEPS {
                    r.sleep(Duration::ZERO).await;
                }
            })
            .unwrap();
    })
}

fn tokio_sleep() -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    measure(TOKIO_SLEEPS, || {
        runtime.block_on(async {
            for _ in 0..TOKIO_SLEEPS {
                tokio::time::sleep(Duration::ZERO).await;
            }
        });
    })
}

/// A benchmark: wall and CPU nanoseconds per item.
type Contender = fn() -> (f64, f64);

fn median(values: &[(f64, f64)], pick: impl Fn(&(f64, f64)) -> f64) -> f64 {
    let mut values: Vec<f64> = values.iter().map(pick).collect();
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn run(rounds: usize) {
    let contenders: [(&str, Contender); 4] = [
        ("torsion spawn + complete", torsion_spawn),
        ("tokio LocalSet spawn_local + complete", tokio_spawn),
        ("torsion sleep(0) round trip", torsion_sleep),
        ("tokio sleep(0) round trip", tokio_sleep),
    ];
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); contenders.len()];
    // Interleaved: drift hits every contender alike.
    for _ in 0..rounds {
        for (i, (_, contender)) in contenders.iter().enumerate() {
            runs[i].push(contender());
        }
    }
    println!(
        "tasks: {TASKS} spawned in batches of {BATCH}; {SLEEPS} sleeps ({TOKIO_SLEEPS} on tokio); medians of {rounds} runs"
    );
    println!("{:<40} {:>12} {:>12}", "", "wall ns", "CPU ns");
    for ((name, _), values) in contenders.iter().zip(runs) {
        println!(
            "{name:<40} {:>12.1} {:>12.1}",
            median(&values, |v| v.0),
            median(&values, |v| v.1)
        );
    }
    println!();
}
