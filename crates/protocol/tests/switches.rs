//! Mode switches under hostile input: a peer that sends one read of many
//! small requests, each switching a line receiver into raw mode and back,
//! must cost constant stack and memory linear in the read (the receiver
//! once recursed per switch and copied the rest of the read each time,
//! which aborted the process with a stack overflow).
//!
//! A test binary of its own: it counts the heap with a global allocator,
//! and the peak would be disturbed by tests running alongside (its own
//! tests take turns through `ONE_AT_A_TIME`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::testing::ProtocolHarness;
use torsion_protocol::TransportRef;

/// Counts the bytes allocated now and the most at any time.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = NOW.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; it only
// adds up sizes on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by each test for its whole run: the heap counters are global, so
/// a test measuring a peak must not overlap another that allocates.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A line `R` announces one raw byte: the handler switches to raw mode,
/// takes the byte, and hands the rest back in line mode.
#[derive(Default)]
struct Switcher {
    lines: usize,
    raw_bytes: usize,
    raw_left: usize,
}

impl LineHandler for Switcher {
    fn line_received(&mut self, lines: &mut LineState, _t: &TransportRef, line: &[u8]) {
        assert_eq!(line, b"R");
        self.lines += 1;
        self.raw_left = 1;
        lines.set_raw_mode();
    }

    fn raw_data_received(&mut self, lines: &mut LineState, _t: &TransportRef, data: &[u8]) {
        let take = self.raw_left.min(data.len());
        self.raw_left -= take;
        self.raw_bytes += take;
        if self.raw_left == 0 {
            lines.set_line_mode(&data[take..]);
        }
    }
}

/// 64 KiB of `R\r\nx`: 16,384 requests, 32,768 mode switches, in one read.
fn hostile_read() -> Vec<u8> {
    b"R\r\nx".repeat(16 * 1024)
}

/// Runs `test` on a thread with the default stack size of spawned threads
/// (2 MiB), as a server's reactor thread may be.
fn on_default_stack(test: impl FnOnce() + Send + 'static) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(test)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_read_of_many_mode_switches_runs_in_constant_stack_and_linear_memory() {
    on_default_stack(|| {
        let read = hostile_read();
        let mut harness = ProtocolHarness::new(LineReceiver::new(Switcher::default()));
        let before = NOW.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        harness.receive(&read);
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let handler = harness.protocol().handler();
        assert_eq!((handler.lines, handler.raw_bytes), (16 * 1024, 16 * 1024));
        assert_eq!(harness.protocol().buffered(), 0);
        // Well under one copy of the read: the switches copy nothing.
        assert!(peak < read.len(), "{peak} bytes allocated at the peak");
    });
}

#[test]
fn mode_switches_split_across_reads_keep_memory_bounded() {
    on_default_stack(|| {
        let read = hostile_read();
        let mut harness = ProtocolHarness::new(LineReceiver::new(Switcher::default()));
        // Cut mid-request everywhere: the unfinished request is all that
        // is kept between reads.
        for piece in read.chunks(4093) {
            harness.receive(piece);
            assert!(harness.protocol().buffered() <= 3);
        }
        let handler = harness.protocol().handler();
        assert_eq!((handler.lines, handler.raw_bytes), (16 * 1024, 16 * 1024));
    });
}
