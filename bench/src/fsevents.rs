//! Filesystem events: a burst of 100,000 file creations in one watched
//! directory, made by a thread of their own, reported by Torsion's
//! `INotify` on a reactor and by the `notify` crate's inotify backend
//! (`INotifyWatcher`, its own thread). Both watch with the mask `notify`
//! uses (create, open, close-write and the rest), so each file is three
//! kernel events for both. Figures: events delivered per second (wall
//! time until the last event), and the watcher's CPU per event: the
//! process's CPU time less the creating thread's own. Medians of
//! interleaved runs.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use torsion_protocol::{FsMask, INotify, Reactor, WatchOptions};

const FILES: usize = 100_000;
const MARKER: &str = "zz-done";

fn usage(who: libc::c_int) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(who, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct Sample {
    wall: Duration,
    watcher_cpu: Duration,
    events: usize,
    lost: bool,
}

/// Creates the files, then the marker; returns this thread's CPU time.
fn create_files(dir: PathBuf) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        for i in 0..FILES {
            std::fs::File::create(dir.join(format!("f{i}"))).unwrap();
        }
        std::fs::File::create(dir.join(MARKER)).unwrap();
        usage(libc::RUSAGE_THREAD)
    })
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("torsion-bench-fs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `notify`'s inotify mask.
fn mask() -> FsMask {
    FsMask::ATTRIB
        | FsMask::CREATE
        | FsMask::OPEN
        | FsMask::DELETE
        | FsMask::CLOSE_WRITE
        | FsMask::MODIFY
        | FsMask::MOVED
        | FsMask::DELETE_SELF
        | FsMask::MOVE_SELF
}

fn torsion() -> Sample {
    let dir = fresh_dir("torsion");
    let reactor = Reactor::new().unwrap();
    reactor.set_signal_handling(false);
    let notifier = INotify::new(&reactor).unwrap();
    let counts = std::rc::Rc::new(std::cell::Cell::new((0usize, false)));
    let seen = counts.clone();
    let marker = dir.join(MARKER);
    let weak = reactor.downgrade();
    notifier
        .watch(&dir, mask(), WatchOptions::default(), move |_, event| {
            let (events, lost) = seen.get();
            seen.set((events + 1, lost || event.is_overflow()));
            if event.path() == marker && event.mask().contains(FsMask::CLOSE_WRITE) {
                if let Some(reactor) = weak.upgrade() {
                    let _ = reactor.stop();
                }
            }
        })
        .unwrap();
    let (wall, cpu) = (Instant::now(), usage(libc::RUSAGE_SELF));
    let creator = create_files(dir.clone());
    reactor.run().unwrap();
    let wall = wall.elapsed();
    let total_cpu = usage(libc::RUSAGE_SELF) - cpu;
    let creator_cpu = creator.join().unwrap();
    drop(notifier);
    let _ = std::fs::remove_dir_all(&dir);
    let (events, lost) = counts.get();
    Sample {
        wall,
        watcher_cpu: total_cpu.saturating_sub(creator_cpu),
        events,
        lost,
    }
}

fn notify_crate() -> Sample {
    use notify::Watcher;
    let dir = fresh_dir("notify");
    let (done_tx, done) = mpsc::channel();
    let marker = dir.join(MARKER);
    let mut events = 0usize;
    let mut lost = false;
    let mut watcher = notify::INotifyWatcher::new(
        move |result: notify::Result<notify::Event>| {
            events += 1;
            let mut finished = false;
            match result {
                Ok(event) => {
                    lost |= event.need_rescan();
                    finished = matches!(
                        event.kind,
                        notify::EventKind::Access(notify::event::AccessKind::Close(_))
                    ) && event.paths.contains(&marker);
                }
                Err(_) => lost = true,
            }
            if finished {
                let _ = done_tx.send((events, lost));
            }
        },
        notify::Config::default(),
    )
    .unwrap();
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .unwrap();
    let (wall, cpu) = (Instant::now(), usage(libc::RUSAGE_SELF));
    let creator = create_files(dir.clone());
    let (events, lost) = done.recv().unwrap();
    let wall = wall.elapsed();
    let total_cpu = usage(libc::RUSAGE_SELF) - cpu;
    let creator_cpu = creator.join().unwrap();
    drop(watcher);
    let _ = std::fs::remove_dir_all(&dir);
    Sample {
        wall,
        watcher_cpu: total_cpu.saturating_sub(creator_cpu),
        events,
        lost,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Runs `rounds` interleaved rounds and prints the medians.
pub fn run(rounds: usize) {
    let mut results: Vec<(&str, Vec<Sample>)> =
        vec![("torsion INotify", vec![]), ("notify 8 (inotify)", vec![])];
    for _ in 0..rounds {
        results[0].1.push(torsion());
        results[1].1.push(notify_crate());
    }
    println!(
        "filesystem events: {FILES} files created by another thread, 3 events each; medians of {rounds}"
    );
    println!(
        "{:<22} {:>12} {:>16} {:>10} {:>6}",
        "watcher", "events/s", "CPU ns/event", "events", "lost"
    );
    for (name, samples) in &results {
        let rate = median(
            samples
                .iter()
                .map(|s| s.events as f64 / s.wall.as_secs_f64())
                .collect(),
        );
        let cpu = median(
            samples
                .iter()
                .map(|s| s.watcher_cpu.as_nanos() as f64 / s.events.max(1) as f64)
                .collect(),
        );
        let events = median(samples.iter().map(|s| s.events as f64).collect());
        let lost = samples.iter().filter(|s| s.lost).count();
        println!("{name:<22} {rate:>12.0} {cpu:>16.0} {events:>10.0} {lost:>6}");
    }
}
