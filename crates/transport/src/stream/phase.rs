//! The connection's phase machine: opening, the graceful and immediate
//! closes, half-closes, failures, and the close itself. The legal states
//! are tabled in [`state`](super::state).

use std::io;

use torsion_reactor::{Interest, Readiness};

use super::pipe::Pipe;
use super::state::{Flag, Phase, WriteShutdown};
use super::{Progress, StreamTransport};
use crate::reason::CloseReason;

impl<P: Pipe> StreamTransport<P> {
    /// Finishes a connect in flight, on readiness.
    pub(super) fn finish_connect(&self, readiness: Readiness) -> Progress {
        if !readiness.is_writable() && !readiness.is_readable() && !readiness.is_error() {
            return Progress::Pending;
        }
        match self.with_pipe(Pipe::finish_connect) {
            Ok(()) => {
                self.count_opened();
                self.phase.set(Phase::Open);
                self.update_interest();
                Progress::Connected
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Progress::Pending,
            Err(e) => {
                self.close_unopened();
                Progress::ConnectFailed(e)
            }
        }
    }

    /// Closes the pipe of a connection that never opened: nothing to
    /// report, no producer to stop.
    pub(super) fn close_unopened(&self) {
        self.phase.set(Phase::Closed);
        self.flags.set(Flag::WritesClosed, true);
        self.pipe.borrow_mut().take();
    }

    /// The pipe reported an error condition: takes its pending error
    /// and fails the connection with it, whether or not anything would
    /// have read or written, so a reset on a connection that is paused and
    /// has nothing queued still ends it at once. Returns true if it failed
    /// the connection. (A read or write may have consumed the error
    /// already; the readiness that goes with it then surfaces what is
    /// left.)
    pub(super) fn take_error(&self) -> bool {
        let error = match self.with_pipe(Pipe::take_error) {
            Ok(Some(error)) => error,
            Ok(None) => return false,
            Err(error) => error,
        };
        self.fail(error);
        true
    }

    /// [`Transport::lose_connection`](crate::Transport::lose_connection).
    pub(super) fn lose(&self) {
        let was_open = self.phase.get() == Phase::Open;
        match self.phase.get() {
            Phase::Open => {}
            // Already waiting for the producer to be unregistered.
            Phase::Draining if self.flags.has(Flag::LoseAfterProducer) => return,
            Phase::Draining => {}
            _ => return,
        }
        self.reason.note(CloseReason::Closed);
        self.phase.set(Phase::Draining);
        if was_open && self.producer.is_set() && !self.flags.has(Flag::WritesClosed) {
            // Reading stops now; the producer's writes are still taken,
            // and the close waits for the queue to drain while the
            // producer holds it (see `producer_holds_close`), or for
            // `unregister_producer`.
            self.flags.set(Flag::LoseAfterProducer, true);
            self.update_interest();
            if self.queue.borrow().is_empty() {
                self.poke();
            }
            return;
        }
        self.flags.set(Flag::WritesClosed, true);
        self.update_interest();
        if self.queue.borrow().is_empty() {
            self.poke();
        }
    }

    /// [`Transport::abort_connection`](crate::Transport::abort_connection).
    ///
    /// What was gathered this turn is first handed to the pipe (what it
    /// takes now), as a write made before the abort would have been had
    /// it been tried at once; the rest of the queue is dropped.
    pub(super) fn abort(&self) {
        self.flush_gathered();
        if matches!(
            self.phase.get(),
            Phase::Connecting | Phase::Closing | Phase::Closed
        ) {
            return;
        }
        self.reason.set(CloseReason::Aborted);
        self.close_soon();
    }

    /// [`Transport::lose_write_connection`](crate::Transport::lose_write_connection).
    pub(super) fn lose_write(&self) {
        if self.flags.has(Flag::WritesClosed) || self.phase.get() != Phase::Open {
            return;
        }
        self.flags.set(Flag::WritesClosed, true);
        self.write_shutdown.set(WriteShutdown::Requested);
        if self.queue.borrow().is_empty() {
            self.shutdown_write();
            self.poke();
        }
    }

    /// Shuts the write side down (the peer reads end of stream); the read
    /// side stays open.
    pub(super) fn shutdown_write(&self) {
        if let Err(e) = self.with_pipe(Pipe::shutdown_write) {
            self.fail(e);
            return;
        }
        self.write_shutdown.set(WriteShutdown::Done);
        let mut events = self.half_close_events.get();
        events.write_closed = true;
        self.half_close_events.set(events);
        if self.flags.has(Flag::ReadClosed) {
            // Both directions are done.
            self.reason.note(CloseReason::Closed);
            self.close_soon();
        }
    }

    /// The peer ended its stream: a half-closeable protocol keeps
    /// writing; otherwise reading stops, the queue is flushed, then the
    /// connection closes.
    pub(super) fn peer_closed(&self) {
        tracing::debug!(conn = self.id, peer = %self.peer.get(), "peer closed its end");
        if self.flags.has(Flag::HalfCloseable) {
            self.flags.set(Flag::ReadClosed, true);
            let mut events = self.half_close_events.get();
            events.read_closed = true;
            self.half_close_events.set(events);
            if self.write_shutdown.get() == WriteShutdown::Done {
                self.reason.note(CloseReason::ClosedByPeer);
                self.close_soon();
            } else {
                self.update_interest();
            }
            return;
        }
        self.phase.set(Phase::Draining);
        self.reason.note(CloseReason::ClosedByPeer);
        self.update_interest();
    }

    /// The connection failed: drop the queue and close.
    pub(super) fn fail(&self, error: io::Error) {
        if matches!(self.phase.get(), Phase::Closing | Phase::Closed) {
            return;
        }
        tracing::debug!(conn = self.id, peer = %self.peer.get(), %error, "connection failed");
        self.fail_with(CloseReason::Lost(error));
    }

    /// Drops the queue and closes with `reason`, unless the connection
    /// is closing already.
    pub(super) fn fail_with(&self, reason: CloseReason) {
        if matches!(self.phase.get(), Phase::Closing | Phase::Closed) {
            return;
        }
        self.reason.set(reason);
        self.close_soon();
    }

    /// Moves to `Closing` and makes sure a step runs to finish it.
    pub(super) fn close_soon(&self) {
        self.phase.set(Phase::Closing);
        self.flags.set(Flag::WritesClosed, true);
        self.flags.set(Flag::LoseAfterProducer, false);
        self.flags.set(Flag::Gathered, false);
        self.queue.borrow_mut().clear();
        self.poke();
    }

    /// Makes sure `process` runs again soon, unless it is running now (it
    /// finishes state changes itself before returning).
    pub(super) fn poke(&self) {
        if !self.flags.has(Flag::Processing) {
            self.wake();
        }
    }

    /// Asks the reactor to run `process` soon.
    pub(super) fn wake(&self) {
        if let Some(pipe) = &*self.pipe.borrow() {
            pipe.wake();
        }
    }

    /// Tells the pipe what to watch for, as the state says.
    ///
    /// Inside `process` the change is only noted, and made once at the end
    /// of the step if the connection is still open: a step that changes
    /// its mind (reading stops, then the connection closes) makes one
    /// system call or none.
    pub(super) fn update_interest(&self) {
        if self.flags.has(Flag::Processing) {
            self.flags.set(Flag::InterestStale, true);
            return;
        }
        self.apply_interest();
    }

    /// Makes the pipe's interest what the state says.
    pub(super) fn apply_interest(&self) {
        let interest = Interest::NONE.with_readable(self.reads()).with_writable(
            matches!(self.phase.get(), Phase::Open | Phase::Draining)
                && !self.queue.borrow().is_empty()
                && !self.flags.has(Flag::Gathered),
        );
        let result = match &*self.pipe.borrow() {
            Some(pipe) => pipe.set_interest(interest),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e);
        } else if !self.flags.has(Flag::Processing) {
            // Reading again, as from `resume_reading` (inside a step,
            // `process` does this once at its end).
            self.come_back_for_pending_read();
        }
    }

    /// Wakes the handler if an edge-triggered pipe may hold bytes its
    /// last read left ([`Flag::ReadPending`]) and the transport reads: the
    /// poller will not report them again, and the wake's step reads them.
    /// Without this, reading paused and resumed within one step (no change
    /// of interest reaches the poller), or a read stopped at its bound,
    /// would strand them.
    pub(super) fn come_back_for_pending_read(&self) {
        if self.flags.has(Flag::ReadPending) && self.reads() {
            self.wake();
        }
    }

    /// Closes the pipe if the connection is done.
    pub(super) fn finish(&self) -> Progress {
        match self.phase.get() {
            Phase::Closing => Progress::Closed(self.close()),
            Phase::Draining if self.queue.borrow().is_empty() && !self.producer_holds_close() => {
                Progress::Closed(self.close())
            }
            _ => Progress::Pending,
        }
    }

    /// Closes the pipe and stops the producer; returns the reason for the
    /// caller to report. Every close comes through here, and the caller
    /// tells the protocol only once this has returned, so the producer
    /// always hears `stop_producing` before the protocol hears
    /// `connection_lost`.
    pub(super) fn close(&self) -> CloseReason {
        let reason = self.reason.take().unwrap_or(CloseReason::Closed);
        if matches!(reason, CloseReason::Aborted) {
            if let Some(pipe) = &*self.pipe.borrow() {
                pipe.reset_on_close();
            }
        }
        self.phase.set(Phase::Closed);
        self.flags.set(Flag::WritesClosed, true);
        self.flags.set(Flag::LoseAfterProducer, false);
        self.flags.set(Flag::Gathered, false);
        // Nothing will be read any more.
        self.flags.set(Flag::ReadPending, false);
        self.flags.set(Flag::ReadToEnd, false);
        self.queue.borrow_mut().clear();
        // Dropping the pipe removes it from the reactor and closes it.
        let pipe = self.pipe.borrow_mut().take();
        drop(pipe);
        self.stop_producer();
        tracing::debug!(conn = self.id, peer = %self.peer.get(), %reason, "connection closed");
        self.count_closed(&reason);
        self.check_state();
        reason
    }
}
