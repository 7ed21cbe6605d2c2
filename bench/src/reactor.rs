//! Reactor benchmarks: timers against tokio's, the idle cost of a
//! reactor, and `call_from_thread` throughput.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use torsion_protocol::Reactor;

/// Counts the bytes currently allocated, to measure memory per timer.
pub struct CountingAllocator;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        std::alloc::System.realloc(ptr, layout, new)
    }
}

pub fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

const N: usize = 1_000_000;

/// Delays spread over one millisecond, the same for every contender.
fn delay(i: usize) -> Duration {
    Duration::from_nanos((i as u64 * 7919) % 1_000_000)
}

struct Row {
    name: &'static str,
    /// Nanoseconds per timer, scheduling through firing or cancelling.
    ns_per_timer: f64,
    bytes_per_pending: Option<f64>,
}

fn torsion_schedule_cancel() -> Row {
    let reactor = Reactor::new().unwrap();
    let before = allocated();
    let start = Instant::now();
    let mut calls = Vec::with_capacity(N);
    for i in 0..N {
        calls.push(reactor.call_later(Duration::from_secs(60) + delay(i), |_| {}));
    }
    let bytes = (allocated() - before) as f64 - (N * std::mem::size_of_val(&calls[0])) as f64;
    for call in &calls {
        call.cancel().unwrap();
    }
    drop(calls);
    let elapsed = start.elapsed();
    Row {
        name: "torsion call_later + cancel",
        ns_per_timer: elapsed.as_nanos() as f64 / N as f64,
        bytes_per_pending: Some(bytes / N as f64),
    }
}

fn torsion_schedule_fire() -> Row {
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let fired = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    for i in 0..N {
        let fired = fired.clone();
        // Fire-and-forget: the handle is dropped at once.
        reactor.call_later(delay(i), move |reactor| {
            fired.set(fired.get() + 1);
            if fired.get() == N {
                reactor.stop().unwrap();
            }
        });
    }
    reactor.run().unwrap();
    Row {
        name: "torsion call_later, fired",
        ns_per_timer: start.elapsed().as_nanos() as f64 / N as f64,
        bytes_per_pending: None,
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn tokio_sleep_cancel() -> Row {
    tokio_runtime().block_on(async {
        let mut cx = Context::from_waker(Waker::noop());
        let before = allocated();
        let start = Instant::now();
        let mut sleeps = Vec::with_capacity(N);
        for i in 0..N {
            let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(60) + delay(i)));
            // A sleep joins the timer wheel when first polled.
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
            sleeps.push(sleep);
        }
        let bytes = (allocated() - before) as f64 - (N * std::mem::size_of::<usize>()) as f64;
        drop(sleeps);
        Row {
            name: "tokio sleep (polled) + drop",
            ns_per_timer: start.elapsed().as_nanos() as f64 / N as f64,
            bytes_per_pending: Some(bytes / N as f64),
        }
    })
}

fn delay_queue_cancel() -> Row {
    tokio_runtime().block_on(async {
        let before = allocated();
        let start = Instant::now();
        let mut queue: tokio_util::time::DelayQueue<Box<dyn FnOnce()>> =
            tokio_util::time::DelayQueue::with_capacity(N);
        let mut keys = Vec::with_capacity(N);
        for i in 0..N {
            keys.push(queue.insert(Box::new(|| {}), Duration::from_secs(60) + delay(i)));
        }
        let bytes = (allocated() - before) as f64 - (N * std::mem::size_of_val(&keys[0])) as f64;
        for key in &keys {
            queue.remove(key);
        }
        Row {
            name: "tokio DelayQueue insert + remove",
            ns_per_timer: start.elapsed().as_nanos() as f64 / N as f64,
            bytes_per_pending: Some(bytes / N as f64),
        }
    })
}

fn delay_queue_fire() -> Row {
    tokio_runtime().block_on(async {
        let fired = Rc::new(Cell::new(0usize));
        let start = Instant::now();
        let mut queue: tokio_util::time::DelayQueue<Box<dyn FnOnce()>> =
            tokio_util::time::DelayQueue::with_capacity(N);
        for i in 0..N {
            let fired = fired.clone();
            queue.insert(Box::new(move || fired.set(fired.get() + 1)), delay(i));
        }
        while let Some(expired) = poll_fn(|cx| queue.poll_expired(cx)).await {
            (expired.into_inner())();
        }
        assert_eq!(fired.get(), N);
        Row {
            name: "tokio DelayQueue, expired",
            ns_per_timer: start.elapsed().as_nanos() as f64 / N as f64,
            bytes_per_pending: None,
        }
    })
}

/// CPU time of the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn idle_cost() -> (Duration, Duration) {
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    reactor.call_later(Duration::from_secs(3600), |_| {});
    reactor.call_later(Duration::from_secs(1), |r| r.stop().unwrap());
    let cpu = thread_cpu();
    let start = Instant::now();
    reactor.run().unwrap();
    (start.elapsed(), thread_cpu() - cpu)
}

fn thread_calls() -> f64 {
    const PER_THREAD: usize = 1_000_000;
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    thread_local!(static COUNT: Cell<usize> = const { Cell::new(0) });
    COUNT.with(|c| c.set(0));
    let start = Instant::now();
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let handle = reactor.handle();
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    handle
                        .call_from_thread(|reactor| {
                            let n = COUNT.with(|c| {
                                c.set(c.get() + 1);
                                c.get()
                            });
                            if n == 2 * PER_THREAD {
                                reactor.stop().unwrap();
                            }
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    reactor.run().unwrap();
    for sender in senders {
        sender.join().unwrap();
    }
    (2 * PER_THREAD) as f64 / start.elapsed().as_secs_f64()
}

/// Runs every reactor benchmark `rounds` times, interleaved, and prints
/// medians.
pub fn run(rounds: usize) {
    let contenders: [fn() -> Row; 5] = [
        torsion_schedule_cancel,
        tokio_sleep_cancel,
        delay_queue_cancel,
        torsion_schedule_fire,
        delay_queue_fire,
    ];
    let mut rows: Vec<Vec<Row>> = (0..contenders.len()).map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, contender) in contenders.iter().enumerate() {
            rows[i].push(contender());
        }
    }
    println!("timers: {N} per run, medians of {rounds} run(s)");
    println!(
        "{:<34} {:>12} {:>22}",
        "", "ns per timer", "bytes per pending timer"
    );
    for runs in &rows {
        let mut ns: Vec<f64> = runs.iter().map(|r| r.ns_per_timer).collect();
        ns.sort_by(|a, b| a.total_cmp(b));
        let bytes = runs[0]
            .bytes_per_pending
            .map_or("-".to_owned(), |b| format!("{b:.0}"));
        println!(
            "{:<34} {:>12.1} {:>22}",
            runs[0].name,
            ns[ns.len() / 2],
            bytes
        );
    }
    println!();
    let (wall, cpu) = idle_cost();
    println!(
        "idle: a reactor with one far-future timer used {:?} of CPU over {:?}",
        cpu, wall
    );
    let mut rates: Vec<f64> = (0..rounds).map(|_| thread_calls()).collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "call_from_thread from 2 threads: {:.1} million calls/s (median of {rounds})",
        rates[rates.len() / 2] / 1e6
    );
    println!();
}
