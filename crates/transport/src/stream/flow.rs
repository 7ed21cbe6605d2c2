//! Flow control: the write buffer's watermarks, push and pull producers,
//! the built-in read throttle, and the guard every producer call goes
//! through.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use super::pipe::Pipe;
use super::state::{Flag, Phase};
use super::StreamTransport;
use crate::reason::CloseReason;
use crate::transport::Producer;
use torsion_reactor::panic_message;

/// Requests to a pull producer per step whose answers all go straight
/// to the pipe; past this the next loop turn goes on asking.
const MAX_PULLS_PER_STEP: usize = 16;

/// A producer callback, for [`StreamTransport::call_producer`].
#[derive(Clone, Copy)]
enum ProducerCall {
    Pause,
    Resume,
    Stop,
}

impl ProducerCall {
    fn name(self) -> &'static str {
        match self {
            ProducerCall::Pause => "pause_producing",
            ProducerCall::Resume => "resume_producing",
            ProducerCall::Stop => "stop_producing",
        }
    }
}

impl<P: Pipe> StreamTransport<P> {
    /// [`Transport::register_producer`](crate::Transport::register_producer).
    pub(super) fn add_producer(
        &self,
        producer: Rc<dyn Producer>,
        streaming: bool,
    ) -> io::Result<()> {
        if self.producer.is_set() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a producer is already registered with this transport",
            ));
        }
        if self.is_closed() {
            self.call_producer(&*producer, ProducerCall::Stop);
            return Ok(());
        }
        self.producer.set(producer.clone());
        self.flags.set(Flag::Streaming, streaming);
        self.flags.set(Flag::ProducerPaused, false);
        self.flags.set(Flag::PullPending, false);
        if streaming {
            self.queue_grew();
        } else {
            // A pull producer writes when asked; ask now (Twisted does).
            self.call_producer(&*producer, ProducerCall::Resume);
        }
        Ok(())
    }

    /// [`Transport::unregister_producer`](crate::Transport::unregister_producer).
    pub(super) fn remove_producer(&self) {
        self.producer.take();
        self.flags.set(Flag::ProducerPaused, false);
        self.flags.set(Flag::PullPending, false);
        if self.flags.replace(Flag::LoseAfterProducer, false) {
            // The close `lose_connection` asked for: drain, then close.
            self.flags.set(Flag::WritesClosed, true);
        }
        // A draining connection the producer held open may close now.
        if self.phase.get() == Phase::Draining && self.queue.borrow().is_empty() {
            self.poke();
        }
    }

    /// True while a registered producer keeps a draining connection open
    /// although everything queued has gone out, as Twisted's
    /// `FileDescriptor.doWrite` does: a pull producer (it is asked for
    /// more until it unregisters) or a paused streaming producer (the
    /// drained queue resumes it). An unpaused streaming producer does not
    /// hold it: the connection closes once what it wrote has gone out, so
    /// a `lose_connection` made without unregistering — Twisted's
    /// port-forwarding idiom, or a timeout that cannot know about the
    /// producer — still closes.
    pub(super) fn producer_holds_close(&self) -> bool {
        self.producer.is_set()
            && !self.flags.has(Flag::WritesClosed)
            && (!self.flags.has(Flag::Streaming) || self.flags.has(Flag::ProducerPaused))
    }

    /// Stops the registered producer for good, if there is one: the
    /// connection is closing.
    pub(super) fn stop_producer(&self) {
        self.flags.set(Flag::ProducerPaused, false);
        self.flags.set(Flag::PullPending, false);
        if let Some(producer) = self.producer.take() {
            self.call_producer(&*producer, ProducerCall::Stop);
        }
    }

    /// [`Transport::set_write_buffer_limits`](crate::Transport::set_write_buffer_limits).
    pub(super) fn set_limits(&self, high: usize, low: usize) {
        let high = u32::try_from(high).unwrap_or(u32::MAX);
        let low = u32::try_from(low).unwrap_or(u32::MAX);
        self.high_water.set(high);
        self.low_water.set(low.min(high));
        self.queue_grew();
        self.queue_shrank();
    }

    /// [`Transport::enable_read_throttle`](crate::Transport::enable_read_throttle).
    pub(super) fn enable_throttle(&self) {
        self.flags.set(Flag::ReadThrottle, true);
        self.queue_grew();
    }

    /// Everything written went out at once: a pull producer is to be asked
    /// for more, at the end of this step or at the next one (never from
    /// inside the write, which may be its own answer).
    pub(super) fn wrote(&self) {
        if self.producer.is_set()
            && !self.flags.has(Flag::Streaming)
            && !self.flags.replace(Flag::PullPending, true)
        {
            self.poke();
        }
    }

    /// The queue grew: above the high watermark, pause reading (read
    /// throttle) and a streaming producer.
    pub(super) fn queue_grew(&self) {
        if self.queue.borrow().len() <= self.high_water.get() as usize {
            return;
        }
        // Above the watermark the queue may not be flushed for a long
        // time (a peer that does not read): note its size now. Below it,
        // the next flush notes it.
        let queued = self.queue.borrow().len();
        self.counters.write_buffer_size(queued);
        // One pause per episode, however many of reading and a streaming
        // producer this crossing pauses.
        let was_paused = self.paused_for_queue();
        if self.flags.has(Flag::ReadThrottle) && !self.flags.replace(Flag::Throttled, true) {
            tracing::debug!(
                conn = self.id,
                queued = self.queue.borrow().len(),
                "write buffer above high watermark; reading paused"
            );
            self.update_interest();
        }
        let pause_producer = !self.flags.has(Flag::ProducerPaused)
            && self.flags.has(Flag::Streaming)
            && self.producer.get().is_some();
        // Counted before the producer is called: its pause_producing may
        // unregister it.
        if !was_paused && (pause_producer || self.flags.has(Flag::Throttled)) {
            self.counters.write_buffer_paused();
        }
        if pause_producer {
            self.pause_streaming_producer();
        }
    }

    /// Whether the queue above its watermark holds back reading or a
    /// streaming producer.
    fn paused_for_queue(&self) -> bool {
        self.flags.has(Flag::Throttled) || self.flags.has(Flag::ProducerPaused)
    }

    /// Pauses the registered streaming producer, if any.
    fn pause_streaming_producer(&self) {
        if let Some(producer) = self.producer.get() {
            tracing::debug!(
                conn = self.id,
                queued = self.queue.borrow().len(),
                "write buffer above high watermark; pausing producer"
            );
            self.flags.set(Flag::ProducerPaused, true);
            self.call_producer(&*producer, ProducerCall::Pause);
        }
    }

    /// The queue shrank: at or below the low watermark, resume reading
    /// (read throttle) and a paused streaming producer, or note that a
    /// pull producer is to be asked for more (see
    /// [`Self::ask_pull_producer`]).
    pub(super) fn queue_shrank(&self) {
        if self.queue.borrow().len() > self.low_water.get() as usize {
            return;
        }
        if self.flags.replace(Flag::Throttled, false) {
            tracing::debug!(
                conn = self.id,
                "write buffer below low watermark; reading resumed"
            );
            // The poller reports data that arrived meanwhile (see
            // `resume_reading`).
            self.update_interest();
        }
        let Some(producer) = self.producer.get() else {
            return;
        };
        if self.flags.has(Flag::Streaming) {
            if self.flags.replace(Flag::ProducerPaused, false) {
                tracing::debug!(
                    conn = self.id,
                    "write buffer below low watermark; resuming producer"
                );
                self.call_producer(&*producer, ProducerCall::Resume);
            }
        } else if !self.flags.replace(Flag::PullPending, true) {
            self.poke();
        }
    }

    /// Asks a pull producer for more if its output has gone out (Twisted
    /// asks again each time the buffer has drained). What it writes in
    /// answer may go out whole and earn another request: those are made
    /// here, in a loop rather than by recursion, and past
    /// [`MAX_PULLS_PER_STEP`] the next turn continues, so neither the
    /// stack nor one connection's loop turn grows without bound. A request
    /// noted while output is still queued above the low watermark is
    /// dropped: the flush that drains the queue notes another.
    ///
    /// Gathered writes are sent first, before each request (the producer
    /// is asked once its output has gone out) and once more at the end, so
    /// the step ends with nothing gathered.
    pub(super) fn ask_pull_producer(&self) {
        for _ in 0..MAX_PULLS_PER_STEP {
            self.flush_gathered();
            if !self.flags.replace(Flag::PullPending, false)
                || !matches!(self.phase.get(), Phase::Open | Phase::Draining)
                || self.queue.borrow().len() > self.low_water.get() as usize
            {
                self.settle_gathered();
                return;
            }
            let Some(producer) = self.producer.get() else {
                self.settle_gathered();
                return;
            };
            self.call_producer(&*producer, ProducerCall::Resume);
        }
        self.settle_gathered();
        if self.flags.has(Flag::PullPending) {
            self.wake();
        }
    }

    /// Leaves the step with nothing gathered: a send that drains the queue
    /// may resume a streaming producer, whose write is gathered again
    /// (inside the step, nothing wakes the connection for it). Sends again
    /// a bounded number of times, then leaves the rest to a wake-up.
    fn settle_gathered(&self) {
        for _ in 0..MAX_PULLS_PER_STEP {
            if !self.flags.has(Flag::Gathered) {
                return;
            }
            self.flush_gathered();
        }
        if self.flags.has(Flag::Gathered) {
            self.wake();
        }
    }

    /// Runs one producer callback. Every producer call goes through here,
    /// whatever called the transport (its own flush, a protocol's write,
    /// a timer), so a panic is caught before it can unwind through the
    /// transport or out of the reactor. It is logged once and costs the
    /// producer its connection: the queue is dropped and the connection
    /// closes with [`CloseReason::ProducerPanicked`], as Twisted loses a
    /// connection whose producer raised. A panic in `stop_producing` comes
    /// while the connection is closing anyway: it is logged, and the
    /// connection keeps its reason.
    fn call_producer(&self, producer: &dyn Producer, call: ProducerCall) {
        let result = panic::catch_unwind(AssertUnwindSafe(|| match call {
            ProducerCall::Pause => producer.pause_producing(),
            ProducerCall::Resume => producer.resume_producing(),
            ProducerCall::Stop => producer.stop_producing(),
        }));
        let Err(payload) = result else {
            return;
        };
        let message = panic_message(&*payload);
        tracing::error!(
            conn = self.id,
            peer = %self.peer.get(),
            panic = message,
            "producer panicked in {}; closing its connection",
            call.name()
        );
        if !matches!(call, ProducerCall::Stop) {
            self.fail_with(CloseReason::ProducerPanicked {
                callback: call.name(),
                message: message.to_owned(),
            });
        }
    }
}
