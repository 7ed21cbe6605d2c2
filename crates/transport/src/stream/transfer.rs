//! The write and read paths: writes made while the reactor dispatches are
//! gathered and sent together at the end of the step or turn; others go
//! to the pipe at once when nothing is queued; what the pipe does not take
//! is queued and flushed with vectored writes. Reads go into one buffer
//! per thread, lent to the caller.

use std::cell::Cell;
use std::io::{self, IoSlice};

use torsion_reactor::Readiness;

use super::pipe::Pipe;
use super::state::{Flag, Phase, WriteShutdown};
use super::{StreamTransport, READ_BUFFER_SIZE};
use crate::queue::WriteQueue;

/// Reads per readiness event before yielding to other sources. What is
/// left is reported again on the next turn (level-triggered pipes) or read
/// on the transport's own wake-up at the end of this one (edge-triggered:
/// see `Flag::ReadPending`).
const MAX_READS_PER_EVENT: usize = 8;

/// Slices per vectored write (well under every platform's `IOV_MAX`).
const MAX_IOVECS: usize = 64;

/// Writes larger than this are not gathered: they are a send of their own,
/// tried at once (after what was gathered before them), not copied. Past a
/// few kilobytes the copy costs more than the send call it saves: with a
/// 16 KiB cut-off, echoing 8 streams of 16 KiB messages cost 4 % more CPU
/// per message than without gathering; with 4 KiB, nothing measurable.
const MAX_GATHERED_WRITE: usize = 4 * 1024;

thread_local! {
    static READ_BUFFER: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// Lends the thread's read buffer to `f`. A nested call (which the reactor
/// never makes) gets a fresh buffer instead of panicking.
fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = READ_BUFFER
        .take()
        .unwrap_or_else(|| vec![0; READ_BUFFER_SIZE].into_boxed_slice());
    let result = f(&mut buf);
    READ_BUFFER.set(Some(buf));
    result
}

impl<P: Pipe> StreamTransport<P> {
    /// Runs `f` on the pipe; `NotConnected` once it is closed.
    pub(super) fn with_pipe<R>(&self, f: impl FnOnce(&P) -> io::Result<R>) -> io::Result<R> {
        match &*self.pipe.borrow() {
            Some(pipe) => f(pipe),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Sends what the pipe takes now; `WouldBlock` counts as zero.
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.send_with(|pipe| pipe.send(data))
    }

    /// Sends the slices in one call, as [`Self::send`].
    fn send_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_with(|pipe| pipe.send_vectored(slices))
    }

    fn send_with(&self, send: impl Fn(&P) -> io::Result<usize>) -> io::Result<usize> {
        loop {
            match self.with_pipe(&send) {
                Ok(n) => {
                    self.counters.bytes_written(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn accepts_writes(&self) -> bool {
        !self.flags.has(Flag::WritesClosed)
            && matches!(self.phase.get(), Phase::Open | Phase::Draining)
    }

    /// True if a write made now is gathered for the end of the step or
    /// turn rather than tried at once: the reactor is dispatching (see
    /// [`Reactor::is_dispatching`](torsion_reactor::Reactor::is_dispatching)).
    fn gathers(&self) -> bool {
        self.flags.has(Flag::Processing)
            || self
                .reactor
                .upgrade()
                .is_some_and(|reactor| reactor.is_dispatching())
    }

    /// Decides where a write of `len` bytes goes when it arrives: `true`
    /// if it is to be queued behind what is queued (or gathered), `false`
    /// if it is to be tried on the pipe at once. Sends what was gathered
    /// first when a write is too large to gather.
    fn queues(&self, len: usize) -> bool {
        if self.queue.borrow().is_empty() {
            if !self.gathers() || len > MAX_GATHERED_WRITE {
                return false;
            }
            self.gather();
            return true;
        }
        if len > MAX_GATHERED_WRITE && self.flags.has(Flag::Gathered) {
            // A large write is a send of its own: send what was gathered
            // before it now, and try the write itself at once if all of
            // that went out, rather than copy it into the queue.
            self.flush();
            return !self.queue.borrow().is_empty() || !self.accepts_writes();
        }
        true
    }

    /// Marks what is about to be queued as gathered, and makes sure it is
    /// sent: by `process` itself if it is running, else by a wake at the
    /// end of the turn.
    fn gather(&self) {
        if !self.flags.replace(Flag::Gathered, true) {
            self.poke();
        }
    }

    /// Sends what was gathered, if anything was.
    pub(super) fn flush_gathered(&self) {
        if self.flags.has(Flag::Gathered) {
            self.flush();
        }
    }

    /// Writes `data`: tried on the pipe at once when nothing is queued and
    /// the reactor is not dispatching; otherwise queued (gathered), the
    /// unsent rest copied or sliced by `queue_rest`.
    pub(super) fn write_with(&self, data: &[u8], queue_rest: impl FnOnce(&mut WriteQueue, usize)) {
        if data.is_empty() || !self.accepts_writes() {
            return;
        }
        if self.queues(data.len()) {
            if self.accepts_writes() {
                queue_rest(&mut self.queue.borrow_mut(), 0);
                self.queue_grew();
            }
            return;
        }
        match self.send(data) {
            Ok(sent) if sent == data.len() => self.wrote(),
            Ok(sent) => {
                queue_rest(&mut self.queue.borrow_mut(), sent);
                self.update_interest();
                self.queue_grew();
            }
            Err(e) => self.fail(e),
        }
    }

    /// Writes several buffers as one: in one vectored call if tried at
    /// once, and what is queued copied into the queue's tail.
    pub(super) fn write_gathered(&self, data: &[&[u8]]) {
        let total: usize = data.iter().map(|part| part.len()).sum();
        if total == 0 || !self.accepts_writes() {
            return;
        }
        let mut sent = 0;
        if !self.queues(total) {
            let slices: Vec<IoSlice<'_>> = data
                .iter()
                .filter(|part| !part.is_empty())
                .take(MAX_IOVECS)
                .map(|part| IoSlice::new(part))
                .collect();
            match self.send_vectored(&slices) {
                Ok(n) if n == total => return self.wrote(),
                Ok(n) => sent = n,
                Err(e) => return self.fail(e),
            }
        } else if !self.accepts_writes() {
            return;
        }
        // Queue the rest, copied into the queue's tail.
        if sent == 0 {
            self.queue.borrow_mut().push_copies(data, total);
        } else {
            let mut queue = self.queue.borrow_mut();
            let mut skip = sent;
            for part in data {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                queue.push_copy(&part[skip..]);
                skip = 0;
            }
        }
        if sent > 0 {
            self.update_interest();
        }
        self.queue_grew();
    }

    /// Hands the pipe what it takes of the queue, then shuts the write
    /// side down if that was asked for and the queue is empty.
    pub(super) fn flush(&self) {
        self.flags.set(Flag::Gathered, false);
        loop {
            let result = {
                let queue = self.queue.borrow();
                if queue.is_empty() {
                    break;
                }
                // The peak is the size before the first send; noting each
                // is a compare.
                self.counters.write_buffer_size(queue.len());
                if let Some(only) = queue.single() {
                    // The common case (one reply, or a turn's replies
                    // gathered into one buffer): a plain send, cheaper
                    // than a vectored one.
                    self.send(only).map(|sent| (sent, only.len()))
                } else {
                    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                    let (count, bytes) = queue.fill(&mut slices);
                    self.send_vectored(&slices[..count])
                        .map(|sent| (sent, bytes))
                }
            };
            match result {
                Ok((sent, bytes)) => {
                    self.queue.borrow_mut().advance(sent);
                    if sent < bytes {
                        break;
                    }
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
        if self.queue.borrow().is_empty() && self.write_shutdown.get() == WriteShutdown::Requested {
            self.shutdown_write();
        }
        self.update_interest();
        self.queue_shrank();
    }

    /// Reads what is available, handing each chunk to `on_data`, until
    /// the pipe is drained for now, reading stops, or the per-event bound
    /// is reached.
    pub(super) fn read(&self, readiness: Readiness, on_data: &mut dyn FnMut(&[u8])) {
        // An edge-triggered pipe does not report again what is left of
        // this readiness: until a read shows the pipe drained, bytes may
        // be pending (`process` comes back for them). A short read shows
        // it, unless the readiness told of something a read stops before.
        if self.is_edge_triggered() {
            self.flags.set(Flag::ReadPending, true);
            if readiness.is_read_closed()
                || readiness.is_hangup()
                || readiness.is_error()
                || readiness.is_priority()
            {
                self.flags.set(Flag::ReadToEnd, true);
            }
        }
        let drained = || {
            self.flags.set(Flag::ReadPending, false);
            self.flags.set(Flag::ReadToEnd, false);
        };
        with_read_buffer(|buf| {
            for _ in 0..MAX_READS_PER_EVENT {
                if !self.reads() {
                    return;
                }
                let n = match self.with_pipe(|pipe| pipe.recv(buf)) {
                    Ok(0) => {
                        drained();
                        self.peer_closed();
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained();
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        drained();
                        self.fail(e);
                        return;
                    }
                };
                // Counted before the data is handed on: a handler that
                // unwinds loses no count.
                self.counters.bytes_read(n);
                on_data(&buf[..n]);
                if n < buf.len() && !self.flags.has(Flag::ReadToEnd) {
                    // Drained for now (a stream read stops short when
                    // nothing more is there, or before an end, error or
                    // urgent byte, which `ReadToEnd` watches for); the
                    // poller tells us if more arrives.
                    drained();
                    return;
                }
            }
        });
    }

    /// True if the transport reads in its present state.
    pub(super) fn reads(&self) -> bool {
        self.phase.get() == Phase::Open
            && !self.flags.has(Flag::ReadingPaused)
            && !self.flags.has(Flag::Throttled)
            && !self.flags.has(Flag::ReadClosed)
    }
}
