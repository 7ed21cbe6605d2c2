//! Child processes: spawn-and-reap throughput (`/bin/true`, 1,000 times,
//! 16 at a time) and pipe throughput (1 GiB written to `cat` and read
//! back), Torsion's `spawn_process` against tokio's `process::Command` on
//! a current-thread runtime. Wall time and our own CPU time (user +
//! system of this process, children excluded), medians of interleaved
//! runs.

use std::cell::{Cell, RefCell};
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion_protocol::{
    Bytes, ProcessOptions, ProcessProtocol, ProcessReason, ProcessTransportRef, Producer, Reactor,
    ReactorProcess, Transport,
};

const SPAWNS: usize = 1_000;
const PARALLEL: usize = 16;
const PIPE_BYTES: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;

/// CPU time of this process (all threads), children excluded.
fn cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn measure(f: impl FnOnce()) -> Sample {
    let (wall, cpu_start) = (Instant::now(), cpu());
    f();
    Sample {
        wall: wall.elapsed(),
        cpu: cpu() - cpu_start,
    }
}

/// Spawns the next child when one ends, until `SPAWNS` have run.
struct Spawner {
    reactor: Reactor,
    started: Cell<usize>,
    ended: Cell<usize>,
}

struct OneTrue(Rc<Spawner>);

impl ProcessProtocol for OneTrue {
    fn process_ended(&mut self, reason: ProcessReason) {
        assert!(reason.is_clean());
        let spawner = &self.0;
        spawner.ended.set(spawner.ended.get() + 1);
        if spawner.ended.get() == SPAWNS {
            spawner.reactor.stop().unwrap();
        } else {
            spawn_one(spawner);
        }
    }
}

fn spawn_one(spawner: &Rc<Spawner>) {
    if spawner.started.get() < SPAWNS {
        spawner.started.set(spawner.started.get() + 1);
        spawner
            .reactor
            .spawn_process(
                OneTrue(spawner.clone()),
                "/bin/true",
                [] as [&str; 0],
                ProcessOptions::new(),
            )
            .unwrap();
    }
}

fn torsion_spawn() -> Sample {
    measure(|| {
        let reactor = Reactor::new().unwrap();
        let spawner = Rc::new(Spawner {
            reactor: reactor.clone(),
            started: Cell::new(0),
            ended: Cell::new(0),
        });
        for _ in 0..PARALLEL {
            spawn_one(&spawner);
        }
        reactor.run().unwrap();
        assert_eq!(spawner.ended.get(), SPAWNS);
    })
}

fn tokio_spawn() -> Sample {
    measure(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..PARALLEL {
                let count = SPAWNS / PARALLEL + usize::from(t < SPAWNS % PARALLEL);
                tasks.push(tokio::spawn(async move {
                    for _ in 0..count {
                        let status = tokio::process::Command::new("/bin/true")
                            .stdin(Stdio::piped())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .status()
                            .await
                            .unwrap();
                        assert!(status.success());
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
    })
}

/// Writes `PIPE_BYTES` to the child's stdin as a pull producer, one
/// shared chunk at a time (no copy), then closes it.
struct Feeder {
    transport: RefCell<Option<ProcessTransportRef>>,
    left: Cell<u64>,
    chunk: Bytes,
}

impl Producer for Feeder {
    fn resume_producing(&self) {
        let Some(transport) = self.transport.borrow().clone() else {
            return;
        };
        // Two chunks per request keeps the pipe busy while we are away.
        for _ in 0..2 {
            let n = self.left.get().min(CHUNK as u64);
            if n == 0 {
                transport.unregister_producer();
                transport.close_stdin();
                self.transport.borrow_mut().take();
                return;
            }
            transport.write_bytes(self.chunk.slice(..n as usize));
            self.left.set(self.left.get() - n);
        }
    }
}

struct Cat {
    received: Rc<Cell<u64>>,
    reactor: Reactor,
}

impl ProcessProtocol for Cat {
    fn connection_made(&mut self, transport: &ProcessTransportRef) {
        let feeder = Rc::new(Feeder {
            transport: RefCell::new(Some(transport.clone())),
            left: Cell::new(PIPE_BYTES),
            chunk: Bytes::from(vec![b'x'; CHUNK]),
        });
        transport.register_producer(feeder, false).unwrap();
    }
    fn out_received(&mut self, _transport: &ProcessTransportRef, data: &[u8]) {
        self.received.set(self.received.get() + data.len() as u64);
    }
    fn process_ended(&mut self, reason: ProcessReason) {
        assert!(reason.is_clean());
        self.reactor.stop().unwrap();
    }
}

fn torsion_pipe() -> Sample {
    measure(|| {
        let reactor = Reactor::new().unwrap();
        let received = Rc::new(Cell::new(0));
        reactor
            .spawn_process(
                Cat {
                    received: received.clone(),
                    reactor: reactor.clone(),
                },
                "cat",
                [] as [&str; 0],
                ProcessOptions::new(),
            )
            .unwrap();
        reactor.run().unwrap();
        assert_eq!(received.get(), PIPE_BYTES);
    })
}

fn tokio_pipe() -> Sample {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    measure(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut child = tokio::process::Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let writer = tokio::spawn(async move {
                let chunk = vec![b'x'; CHUNK];
                let mut left = PIPE_BYTES;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    stdin.write_all(&chunk[..n]).await.unwrap();
                    left -= n as u64;
                }
                drop(stdin);
            });
            let mut buf = vec![0; 64 * 1024];
            let mut received = 0u64;
            loop {
                let n = stdout.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                received += n as u64;
            }
            writer.await.unwrap();
            assert!(child.wait().await.unwrap().success());
            assert_eq!(received, PIPE_BYTES);
        });
    })
}

fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by_key(|s| s.wall);
    let wall = samples[samples.len() / 2].wall;
    let mut cpus: Vec<Duration> = samples.iter().map(|s| s.cpu).collect();
    cpus.sort();
    Sample {
        wall,
        cpu: cpus[cpus.len() / 2],
    }
}

/// Runs both benchmarks, `rounds` interleaved rounds each, and prints
/// the medians.
pub fn run(rounds: usize) {
    let mut spawn = (Vec::new(), Vec::new());
    let mut pipe = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        spawn.0.push(torsion_spawn());
        spawn.1.push(tokio_spawn());
        pipe.0.push(torsion_pipe());
        pipe.1.push(tokio_pipe());
    }
    println!(
        "spawn and reap /bin/true, {SPAWNS} times, {PARALLEL} at a time (medians of {rounds}):"
    );
    for (name, samples) in [("torsion", spawn.0), ("tokio", spawn.1)] {
        let s = median(samples);
        println!(
            "  {name:8} {:7.0} children/s  {:6.1} µs CPU per child",
            SPAWNS as f64 / s.wall.as_secs_f64(),
            s.cpu.as_secs_f64() * 1e6 / SPAWNS as f64
        );
    }
    println!("1 GiB through cat, written and read back (medians of {rounds}):");
    for (name, samples) in [("torsion", pipe.0), ("tokio", pipe.1)] {
        let s = median(samples);
        println!(
            "  {name:8} {:7.0} MiB/s  {:6.2} s CPU",
            PIPE_BYTES as f64 / (1 << 20) as f64 / s.wall.as_secs_f64(),
            s.cpu.as_secs_f64()
        );
    }
}
