//! Counters a reactor keeps as it runs, and the snapshots other threads
//! read.
//!
//! The reactor's thread counts in plain cells ([`Counters`]): a counted
//! event costs one non-atomic add, no locked instruction. At the end of
//! every loop turn (and whenever [`Reactor::stats`] is called) the counts
//! are copied into a block of atomics shared with the reactor's
//! [`ReactorHandle`]s, with relaxed stores fenced by a sequence number, so
//! [`ReactorHandle::stats`] on any thread reads a whole snapshot of one
//! moment, without a lock and without disturbing the reactor.
//!
//! The reactor counts what it does itself (turns, events, timers, calls,
//! tasks, panics). Connections, bytes, write buffers and accepts are
//! counted by the layers above through the methods of [`Counters`]
//! ([`Reactor::counters`]); the reactor only stores them.
//!
//! [`ReactorHandle`]: crate::ReactorHandle
//! [`ReactorHandle::stats`]: crate::ReactorHandle::stats

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(doc)]
use crate::reactor::Reactor;

/// Why a connection closed, as the transport layer classifies it (its
/// `CloseReason`), for [`Counters::connection_closed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseKind {
    /// This side closed cleanly (`lose_connection`), everything sent.
    Clean,
    /// The peer ended the stream, and everything queued was sent.
    ByPeer,
    /// This side aborted (`abort_connection`), or a protocol callback
    /// panicked (which aborts its connection).
    Aborted,
    /// The connection failed with an error from the operating system (a
    /// reset, a broken pipe, a timeout).
    Lost,
    /// The reactor shut down with the connection still open.
    Shutdown,
    /// This side closed because the peer broke the protocol (an oversized
    /// or malformed frame).
    ProtocolError,
    /// The producer registered with the transport panicked.
    ProducerPanicked,
    // A new kind goes before `ProducerPanicked`, or `CLOSE_KINDS` moves
    // to the new last one.
}

/// How many [`CloseKind`]s there are: the last one's index plus one.
const CLOSE_KINDS: usize = CloseKind::ProducerPanicked as usize + 1;

/// Why an accept failed, for [`Counters::accept_failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcceptErrorKind {
    /// The process or the system ran out of file descriptors (`EMFILE`,
    /// `ENFILE`).
    OutOfDescriptors,
    /// The kernel ran out of socket memory (`ENOBUFS`, `ENOMEM`).
    OutOfMemory,
    /// The peer gave up, or the network failed, before the connection was
    /// accepted (`ECONNABORTED`, `EPROTO` and the other network errors
    /// accept(2) passes on from the new socket).
    PeerAborted,
    /// Any other error.
    Other,
    // A new kind goes before `Other`, or `ACCEPT_ERROR_KINDS` moves to
    // the new last one.
}

/// How many [`AcceptErrorKind`]s there are: the last one's index plus one.
const ACCEPT_ERROR_KINDS: usize = AcceptErrorKind::Other as usize + 1;

/// Connections closed, by why they closed ([`CloseKind`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CloseCounts {
    /// Closed cleanly by this side ([`CloseKind::Clean`]).
    pub clean: u64,
    /// Closed cleanly by the peer ([`CloseKind::ByPeer`]).
    pub by_peer: u64,
    /// Aborted by this side ([`CloseKind::Aborted`]).
    pub aborted: u64,
    /// Failed with an operating-system error ([`CloseKind::Lost`]).
    pub lost: u64,
    /// Closed by the reactor's shutdown ([`CloseKind::Shutdown`]).
    pub shutdown: u64,
    /// Closed for a protocol error ([`CloseKind::ProtocolError`]).
    pub protocol_error: u64,
    /// Closed because their producer panicked
    /// ([`CloseKind::ProducerPanicked`]).
    pub producer_panicked: u64,
}

impl CloseCounts {
    /// Every connection closed, whatever the reason.
    pub fn total(&self) -> u64 {
        self.clean
            + self.by_peer
            + self.aborted
            + self.lost
            + self.shutdown
            + self.protocol_error
            + self.producer_panicked
    }
}

/// Failed accepts, by kind ([`AcceptErrorKind`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct AcceptErrorCounts {
    /// Out of file descriptors ([`AcceptErrorKind::OutOfDescriptors`]).
    pub out_of_descriptors: u64,
    /// Out of socket memory ([`AcceptErrorKind::OutOfMemory`]).
    pub out_of_memory: u64,
    /// The peer gave up first ([`AcceptErrorKind::PeerAborted`]).
    pub peer_aborted: u64,
    /// Any other error ([`AcceptErrorKind::Other`]).
    pub other: u64,
}

impl AcceptErrorCounts {
    /// Every failed accept, whatever the kind.
    pub fn total(&self) -> u64 {
        self.out_of_descriptors + self.out_of_memory + self.peer_aborted + self.other
    }
}

/// A snapshot of a reactor's counters, from [`Reactor::stats`] (exact, on
/// the reactor's thread) or [`ReactorHandle::stats`] (any thread: as of
/// the end of the reactor's latest turn).
///
/// Counters (`turns`, `timers_fired`, `bytes_read`, ...) count from the
/// reactor's creation and only grow; gauges (`timers_pending`,
/// `connections_open`, `sources`, `tasks_alive`) are the value at the
/// moment of the snapshot. All fields of one snapshot were taken at the
/// same moment. What each counts, and when it moves, is described in
/// `docs/observability.md`.
///
/// [`ReactorHandle::stats`]: crate::ReactorHandle::stats
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ReactorStats {
    /// Loop turns: waits for events, each followed by the dispatch of what
    /// is ready.
    pub turns: u64,
    /// Readiness events from the poller handed to a source's handler.
    pub io_events: u64,
    /// Sources dispatched because they woke themselves
    /// (`Registration::wake`), not because of the poller.
    pub wakes: u64,
    /// Delayed calls scheduled and not yet run or cancelled (gauge).
    pub timers_pending: u64,
    /// Delayed calls that ran (including looping calls' runs).
    pub timers_fired: u64,
    /// [`Reactor::call_soon`] calls that ran.
    pub soon_calls: u64,
    /// Calls from other threads that ran (`call_from_thread`, and the
    /// continuations of `defer_to_thread`).
    pub thread_calls: u64,
    /// Tasks alive: spawned, not finished, not cancelled (gauge).
    pub tasks_alive: u64,
    /// Tasks spawned.
    pub tasks_spawned: u64,
    /// Polls of tasks.
    pub task_polls: u64,
    /// Panics caught by the reactor's panic policy in callbacks it ran.
    pub callbacks_panicked: u64,
    /// I/O sources registered with the reactor: listening ports,
    /// connections, anything [`Reactor::register`]ed (gauge).
    pub sources: u64,
    /// Stream connections open: opened and not yet closed (gauge).
    pub connections_open: u64,
    /// Stream connections that opened: accepted, connected, or adopted.
    pub connections_opened: u64,
    /// Connections accepted by listening ports and handed to a protocol.
    pub connections_accepted: u64,
    /// Connections accepted by listening ports but closed at once because
    /// the factory declined them (or panicked), or because they could not
    /// be registered.
    pub connections_refused: u64,
    /// Stream connections closed, by reason.
    pub closed: CloseCounts,
    /// Bytes read from stream connections.
    pub bytes_read: u64,
    /// Bytes written to stream connections (handed to the kernel).
    pub bytes_written: u64,
    /// The largest write buffer any stream connection has held, in bytes.
    pub write_buffer_peak: u64,
    /// Times a write buffer above its high watermark paused a producer or
    /// the connection's reading (backpressure episodes).
    pub write_buffer_pauses: u64,
    /// Failed accepts on listening ports, by kind.
    pub accept_errors: AcceptErrorCounts,
    /// Datagrams received whole by datagram (UDP, Unix datagram) ports.
    pub datagrams_received: u64,
    /// Bytes of the datagrams received whole.
    pub datagram_bytes_read: u64,
    /// Datagrams received larger than the port's largest datagram, and
    /// dropped as truncated.
    pub datagrams_truncated: u64,
    /// Datagrams sent by datagram ports (handed to the kernel).
    pub datagrams_sent: u64,
    /// Bytes of the datagrams sent.
    pub datagram_bytes_written: u64,
}

/// Words in a published snapshot.
const WORDS: usize = 36;

impl ReactorStats {
    fn to_words(self) -> [u64; WORDS] {
        let c = self.closed;
        let a = self.accept_errors;
        [
            self.turns,
            self.io_events,
            self.wakes,
            self.timers_pending,
            self.timers_fired,
            self.soon_calls,
            self.thread_calls,
            self.tasks_alive,
            self.tasks_spawned,
            self.task_polls,
            self.callbacks_panicked,
            self.sources,
            self.connections_open,
            self.connections_opened,
            self.connections_accepted,
            self.connections_refused,
            c.clean,
            c.by_peer,
            c.aborted,
            c.lost,
            c.shutdown,
            c.protocol_error,
            c.producer_panicked,
            self.bytes_read,
            self.bytes_written,
            self.write_buffer_peak,
            self.write_buffer_pauses,
            a.out_of_descriptors,
            a.out_of_memory,
            a.peer_aborted,
            a.other,
            self.datagrams_received,
            self.datagram_bytes_read,
            self.datagrams_truncated,
            self.datagrams_sent,
            self.datagram_bytes_written,
        ]
    }

    fn from_words(w: [u64; WORDS]) -> ReactorStats {
        ReactorStats {
            turns: w[0],
            io_events: w[1],
            wakes: w[2],
            timers_pending: w[3],
            timers_fired: w[4],
            soon_calls: w[5],
            thread_calls: w[6],
            tasks_alive: w[7],
            tasks_spawned: w[8],
            task_polls: w[9],
            callbacks_panicked: w[10],
            sources: w[11],
            connections_open: w[12],
            connections_opened: w[13],
            connections_accepted: w[14],
            connections_refused: w[15],
            closed: CloseCounts {
                clean: w[16],
                by_peer: w[17],
                aborted: w[18],
                lost: w[19],
                shutdown: w[20],
                protocol_error: w[21],
                producer_panicked: w[22],
            },
            bytes_read: w[23],
            bytes_written: w[24],
            write_buffer_peak: w[25],
            write_buffer_pauses: w[26],
            accept_errors: AcceptErrorCounts {
                out_of_descriptors: w[27],
                out_of_memory: w[28],
                peer_aborted: w[29],
                other: w[30],
            },
            datagrams_received: w[31],
            datagram_bytes_read: w[32],
            datagrams_truncated: w[33],
            datagrams_sent: w[34],
            datagram_bytes_written: w[35],
        }
    }
}

pub(crate) fn bump(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

fn add(cell: &Cell<u64>, n: usize) {
    cell.set(cell.get().wrapping_add(n as u64));
}

/// The counters of one reactor, kept on its thread in plain cells; from
/// [`Reactor::counters`].
///
/// The reactor counts its own work. The methods here are for the layers
/// above it, which know what a connection or an accept is: the stream
/// transports of `torsion-transport` and the listening ports of
/// `torsion-protocol` call them, and a new transport or listener built on
/// the reactor should too, so that its work shows in [`ReactorStats`].
/// Applications read [`Reactor::stats`] instead.
///
/// Each call is a plain add on the reactor's thread: no lock, no atomic
/// instruction, no allocation.
#[derive(Default, Debug)]
pub struct Counters {
    pub(crate) turns: Cell<u64>,
    pub(crate) io_events: Cell<u64>,
    pub(crate) wakes: Cell<u64>,
    pub(crate) timers_fired: Cell<u64>,
    pub(crate) soon_calls: Cell<u64>,
    pub(crate) thread_calls: Cell<u64>,
    pub(crate) tasks_spawned: Cell<u64>,
    pub(crate) panics: Cell<u64>,
    connections_opened: Cell<u64>,
    connections_accepted: Cell<u64>,
    connections_refused: Cell<u64>,
    closed: [Cell<u64>; CLOSE_KINDS],
    bytes_read: Cell<u64>,
    bytes_written: Cell<u64>,
    write_buffer_peak: Cell<u64>,
    write_buffer_pauses: Cell<u64>,
    accept_errors: [Cell<u64>; ACCEPT_ERROR_KINDS],
    datagrams_received: Cell<u64>,
    datagram_bytes_read: Cell<u64>,
    datagrams_truncated: Cell<u64>,
    datagrams_sent: Cell<u64>,
    datagram_bytes_written: Cell<u64>,
}

impl Counters {
    /// A stream connection opened (was accepted, connected or adopted).
    pub fn connection_opened(&self) {
        bump(&self.connections_opened);
    }

    /// A stream connection that had opened closed, for `kind`.
    pub fn connection_closed(&self, kind: CloseKind) {
        bump(&self.closed[kind as usize]);
    }

    /// A listening port accepted a connection and handed it to a protocol.
    pub fn connection_accepted(&self) {
        bump(&self.connections_accepted);
    }

    /// A listening port accepted a connection but closed it at once (the
    /// factory declined, or it could not be registered).
    pub fn connection_refused(&self) {
        bump(&self.connections_refused);
    }

    /// An accept on a listening port failed.
    pub fn accept_failed(&self, kind: AcceptErrorKind) {
        bump(&self.accept_errors[kind as usize]);
    }

    /// `bytes` were read from a stream connection.
    pub fn bytes_read(&self, bytes: usize) {
        self.bytes_read
            .set(self.bytes_read.get().wrapping_add(bytes as u64));
    }

    /// `bytes` were written to a stream connection.
    pub fn bytes_written(&self, bytes: usize) {
        self.bytes_written
            .set(self.bytes_written.get().wrapping_add(bytes as u64));
    }

    /// A stream connection's write buffer holds `bytes`: raises the peak
    /// if this is more.
    pub fn write_buffer_size(&self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes > self.write_buffer_peak.get() {
            self.write_buffer_peak.set(bytes);
        }
    }

    /// A write buffer above its high watermark paused a producer or a
    /// connection's reading.
    pub fn write_buffer_paused(&self) {
        bump(&self.write_buffer_pauses);
    }

    /// A datagram port received `datagrams` whole datagrams of `bytes`
    /// bytes in all, and `truncated` too large to keep: one call per
    /// receive system call.
    pub fn datagrams_received(&self, datagrams: usize, bytes: usize, truncated: usize) {
        add(&self.datagrams_received, datagrams);
        add(&self.datagram_bytes_read, bytes);
        add(&self.datagrams_truncated, truncated);
    }

    /// A datagram port sent `datagrams` datagrams of `bytes` bytes in all
    /// (one call per send system call: a batch counts once).
    pub fn datagrams_sent(&self, datagrams: usize, bytes: usize) {
        add(&self.datagrams_sent, datagrams);
        add(&self.datagram_bytes_written, bytes);
    }

    /// The counters as a snapshot, with the gauges the reactor supplies.
    pub(crate) fn snapshot(&self, gauges: Gauges) -> ReactorStats {
        let c = &self.closed;
        let closed = CloseCounts {
            clean: c[CloseKind::Clean as usize].get(),
            by_peer: c[CloseKind::ByPeer as usize].get(),
            aborted: c[CloseKind::Aborted as usize].get(),
            lost: c[CloseKind::Lost as usize].get(),
            shutdown: c[CloseKind::Shutdown as usize].get(),
            protocol_error: c[CloseKind::ProtocolError as usize].get(),
            producer_panicked: c[CloseKind::ProducerPanicked as usize].get(),
        };
        let a = &self.accept_errors;
        let opened = self.connections_opened.get();
        // Only connections counted as opened are counted as closed.
        debug_assert!(
            opened >= closed.total(),
            "{} closes counted for {opened} opens",
            closed.total()
        );
        ReactorStats {
            turns: self.turns.get(),
            io_events: self.io_events.get(),
            wakes: self.wakes.get(),
            timers_pending: gauges.timers_pending,
            timers_fired: self.timers_fired.get(),
            soon_calls: self.soon_calls.get(),
            thread_calls: self.thread_calls.get(),
            tasks_alive: gauges.tasks_alive,
            tasks_spawned: self.tasks_spawned.get(),
            task_polls: gauges.task_polls,
            callbacks_panicked: self.panics.get(),
            sources: gauges.sources,
            connections_open: opened.saturating_sub(closed.total()),
            connections_opened: opened,
            connections_accepted: self.connections_accepted.get(),
            connections_refused: self.connections_refused.get(),
            closed,
            bytes_read: self.bytes_read.get(),
            bytes_written: self.bytes_written.get(),
            write_buffer_peak: self.write_buffer_peak.get(),
            write_buffer_pauses: self.write_buffer_pauses.get(),
            accept_errors: AcceptErrorCounts {
                out_of_descriptors: a[AcceptErrorKind::OutOfDescriptors as usize].get(),
                out_of_memory: a[AcceptErrorKind::OutOfMemory as usize].get(),
                peer_aborted: a[AcceptErrorKind::PeerAborted as usize].get(),
                other: a[AcceptErrorKind::Other as usize].get(),
            },
            datagrams_received: self.datagrams_received.get(),
            datagram_bytes_read: self.datagram_bytes_read.get(),
            datagrams_truncated: self.datagrams_truncated.get(),
            datagrams_sent: self.datagrams_sent.get(),
            datagram_bytes_written: self.datagram_bytes_written.get(),
        }
    }
}

/// What the reactor measures rather than counts, at the moment of a
/// snapshot.
pub(crate) struct Gauges {
    pub(crate) timers_pending: u64,
    pub(crate) tasks_alive: u64,
    pub(crate) task_polls: u64,
    pub(crate) sources: u64,
}

/// The snapshot shared with other threads: a sequence lock over atomics.
/// One writer (the reactor's thread) stores with relaxed stores between
/// two bumps of `seq`; readers retry while `seq` is odd or has moved.
///
/// Aligned to 128 bytes (two cache lines, the unit some CPUs prefetch):
/// the fields of `Shared` next to it, written by threads calling
/// `call_from_thread`, do not share a line with the snapshot.
#[repr(align(128))]
pub(crate) struct Published {
    seq: AtomicU64,
    words: [AtomicU64; WORDS],
}

impl Default for Published {
    fn default() -> Self {
        Published {
            seq: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Published {
    /// Stores `stats`. Only the reactor's thread calls this.
    pub(crate) fn store(&self, stats: ReactorStats) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (word, value) in self.words.iter().zip(stats.to_words()) {
            word.store(value, Ordering::Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The latest stored snapshot, whole.
    pub(crate) fn load(&self) -> ReactorStats {
        let mut tries = 0u32;
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 0 {
                let words: [u64; WORDS] =
                    std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return ReactorStats::from_words(words);
                }
            }
            tries += 1;
            if tries % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Snapshots and the handle that reads them cross threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<ReactorStats>();
    send_sync::<crate::ReactorHandle>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_survives_publication_word_for_word() {
        let mut words = [0u64; WORDS];
        for (i, word) in words.iter_mut().enumerate() {
            *word = i as u64 + 1;
        }
        let stats = ReactorStats::from_words(words);
        assert_eq!(stats.to_words(), words);
        let published = Published::default();
        published.store(stats);
        assert_eq!(published.load(), stats);
    }

    #[test]
    fn readers_on_other_threads_never_see_a_torn_snapshot() {
        let published = std::sync::Arc::new(Published::default());
        let reader = {
            let published = published.clone();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    let stats = published.load();
                    // The writer keeps every counter equal to `turns`.
                    assert_eq!(stats.bytes_read, stats.turns);
                    assert_eq!(stats.accept_errors.other, stats.turns);
                }
            })
        };
        for turn in 1..=200_000u64 {
            published.store(ReactorStats::from_words([turn; WORDS]));
            if reader.is_finished() {
                break;
            }
        }
        reader.join().unwrap();
    }
}
