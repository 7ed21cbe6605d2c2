//! I/O sources: the [`Handler`] a source's readiness goes to, the
//! reactor's table of registered sources, and the [`Registration`] that
//! owns a source together with its place in the poller.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use crate::interest::{Interest, Readiness};
use crate::reactor::{Reactor, WeakReactor};
use crate::shared::Shared;
use crate::slab::Slab;

/// Receives readiness for a registered I/O source (Twisted's
/// `IReadDescriptor.doRead` and `IWriteDescriptor.doWrite` in one).
///
/// The reactor calls [`Handler::ready`] on its own thread, never
/// re-entrantly for the same turn of the loop. The handler may use the
/// reactor freely from inside the call: schedule timers, register or drop
/// other sources, drop its own registration, stop the reactor.
///
/// Sources registered with [`Reactor::register`] are watched
/// level-triggered: whatever the handler leaves unconsumed (unread data, a
/// pending error) is reported again on the next turn. A handler must
/// therefore consume what it is told about or lower its interest. Errors
/// and hang-ups reported while the interest is [`Interest::NONE`] are the
/// exception the reactor handles itself: it stops watching the source
/// until the interest changes.
///
/// A source registered with [`Reactor::register_edge`] is watched
/// edge-triggered where the poller can (epoll): readiness is reported
/// when it arises, not again on every turn while it lasts. Its handler
/// must go on reading (or writing) until the kernel says there is nothing
/// more for now, or remember what it left and wake itself
/// ([`Registration::wake`]) to finish it; a change of interest reports
/// whatever is ready at that moment again.
///
/// A panic in a handler is caught, logged and counted (see
/// [`Reactor::caught_panic_count`]); the reactor then stops watching that
/// source (as for [`Interest::NONE`] after an error) and carries on.
#[doc(alias = "IReadDescriptor")]
#[doc(alias = "IWriteDescriptor")]
pub trait Handler {
    /// Called when the source is ready, or was woken.
    fn ready(&self, reactor: &Reactor, readiness: Readiness);

    /// Called once when the reactor shuts down, in the `During` phase of
    /// [`SystemEvent::Shutdown`](crate::SystemEvent::Shutdown): a
    /// listening port stops listening, a connection closes and tells its
    /// protocol. The default does nothing.
    fn shutdown(&self, reactor: &Reactor) {
        let _ = reactor;
    }
}

/// A registered source, as the reactor sees it.
pub(crate) struct Source {
    pub(crate) handler: Rc<dyn Handler>,
    /// The source's descriptor.
    ///
    /// Invariant: open for as long as this entry is in the table. The
    /// [`Registration`] that owns the descriptor removes the entry (and
    /// the descriptor from the poller) before it closes the descriptor, so
    /// code holding the table may borrow it. Unused (-1) for a process
    /// filter (`process`).
    fd: RawFd,
    /// The child process a kqueue process filter watches, in place of a
    /// descriptor ([`Reactor::register_process_exit`]).
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    process: Option<std::num::NonZeroI32>,
    /// What the poller watches for, as last accepted by the poller.
    pub(crate) interest: Interest,
    /// True while the descriptor is out of the poller: after an error or
    /// hang-up with nothing wanted, or after its handler panicked. A
    /// change of interest puts it back.
    parked: bool,
    /// Registered edge-triggered ([`Reactor::register_edge`]).
    edge: bool,
    /// In the reactor's woken list, not dispatched yet: a second wake
    /// before that dispatch adds nothing (see [`Sources::wake`]).
    woken: bool,
    /// Tells this registration from a later one that reuses the key.
    id: u64,
}

impl Source {
    /// Which registration this entry belongs to.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The source's descriptor, borrowed for as long as the table entry.
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: see the invariant on `fd`: the descriptor is open while
        // this entry exists (for a descriptor source: process filters never
        // get here), and the borrow cannot outlive the entry.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// Re-arms a oneshot registration after an event. A process filter
    /// fires once (the child exits once): nothing to re-arm.
    pub(crate) fn rearm(&self, shared: &Shared, key: usize) -> io::Result<()> {
        #[cfg(any(
            target_vendor = "apple",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        ))]
        if self.process.is_some() {
            return Ok(());
        }
        shared.with_poller(|poller| poller.modify(self.fd(), key, self.interest, self.edge))
    }

    /// Takes the source out of the poller.
    fn delete(&self, shared: &Shared) -> io::Result<()> {
        #[cfg(any(
            target_vendor = "apple",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        ))]
        if let Some(pid) = self.process {
            return shared.with_poller(|poller| poller.delete_process(pid));
        }
        shared.with_poller(|poller| poller.delete(self.fd()))
    }
}

/// The reactor's table of registered sources.
pub(crate) struct Sources {
    slab: Slab<Source>,
    next_id: u64,
}

impl Sources {
    pub(crate) fn new() -> Sources {
        Sources {
            slab: Slab::new(),
            next_id: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn get(&self, key: usize) -> Option<&Source> {
        self.slab.get(key)
    }

    /// The entry under `key` if it still belongs to registration `id`.
    fn get_mut(&mut self, key: usize, id: u64) -> Option<&mut Source> {
        self.slab.get_mut(key).filter(|source| source.id == id)
    }

    pub(crate) fn handlers(&self) -> Vec<Rc<dyn Handler>> {
        self.slab
            .iter()
            .map(|source| source.handler.clone())
            .collect()
    }

    /// Takes every entry out (the reactor is going away).
    pub(crate) fn drain(&mut self) -> Vec<Source> {
        self.slab.drain()
    }

    /// Marks registration `key`/`id` woken; true if it was not already
    /// (then the caller queues it). A source is in the woken list at most
    /// once, however often it is woken before its dispatch: a handler
    /// that wakes itself at each step cannot make the list, or a turn,
    /// grow.
    pub(crate) fn wake(&mut self, key: usize, id: u64) -> bool {
        self.get_mut(key, id)
            .is_some_and(|source| !std::mem::replace(&mut source.woken, true))
    }

    /// Clears the woken mark of registration `key`/`id` (its dispatch is
    /// about to run, and a wake from now on queues it again); false if
    /// that registration is gone (its key may have gone to another one,
    /// which must not get its wake-up).
    pub(crate) fn take_woken(&mut self, key: usize, id: u64) -> bool {
        match self.get_mut(key, id) {
            Some(source) => {
                source.woken = false;
                true
            }
            None => false,
        }
    }

    /// Takes registration `key`/`id` out of the poller, if it is still
    /// there, until its interest changes. Returns true if it did.
    pub(crate) fn park(&mut self, shared: &Shared, key: usize, id: u64) -> bool {
        let Some(source) = self.get_mut(key, id) else {
            return false;
        };
        if source.parked {
            return false;
        }
        if let Err(e) = source.delete(shared) {
            tracing::debug!(error = %e, key, "could not take a source out of the poller");
        }
        source.parked = true;
        true
    }
}

impl Reactor {
    /// Queues source `key`/`id` for a [`Readiness::WOKEN`] dispatch, unless
    /// it is queued already.
    fn wake_source(&self, key: usize, id: u64) {
        let inner = self.inner();
        // The table is never borrowed while user code runs; should it be
        // here, queue anyway (a second dispatch is harmless).
        let first = inner
            .sources
            .try_borrow_mut()
            .map_or(true, |mut sources| sources.wake(key, id));
        if first {
            inner.woken.borrow_mut().push((key, id));
        }
    }

    /// Registers `source` with the poller and routes its readiness to
    /// `handler` until the returned [`Registration`] is dropped.
    ///
    /// The registration owns the source: dropping it removes the source
    /// from the poller first, then closes it. The reactor holds `handler`
    /// (strongly) while the registration lives.
    ///
    /// # Errors
    /// If the poller refuses the source.
    pub fn register<S>(
        &self,
        source: S,
        interest: Interest,
        handler: Rc<dyn Handler>,
    ) -> io::Result<Registration<S>>
    where
        S: AsFd + 'static,
    {
        self.register_with(source, interest, false, handler)
    }

    /// Registers `source` as [`Reactor::register`] does, but watched
    /// edge-triggered where the poller supports it (epoll on Linux; see
    /// [`Registration::is_edge_triggered`]): readiness is reported when it
    /// arises, and not again on each turn while it lasts. A wait then
    /// costs the kernel no second look at each source it reported the
    /// time before, which a level-triggered source costs whether or not
    /// it is still ready.
    ///
    /// The handler takes on the rule in [`Handler`]'s documentation:
    /// consume readiness until the kernel reports nothing more, or wake
    /// itself to go on later. A read that returns `WouldBlock` shows
    /// that; so does a TCP read shorter than its buffer, unless the
    /// readiness also told of the peer's end of stream, an error or
    /// urgent data ([`Readiness::is_read_closed`], [`Readiness::is_hangup`],
    /// [`Readiness::is_error`], [`Readiness::is_priority`]), which a read
    /// stops short before. (A Unix stream read also stops short after a
    /// message that carried descriptors, with nothing in the readiness to
    /// say so: Torsion watches Unix connections level-triggered.) Where the poller has no
    /// edge-triggered mode the source is watched as `register` watches it,
    /// which reports at least as often, so such a handler is correct
    /// everywhere.
    ///
    /// # Errors
    /// If the poller refuses the source.
    pub fn register_edge<S>(
        &self,
        source: S,
        interest: Interest,
        handler: Rc<dyn Handler>,
    ) -> io::Result<Registration<S>>
    where
        S: AsFd + 'static,
    {
        self.register_with(source, interest, true, handler)
    }

    fn register_with<S>(
        &self,
        source: S,
        interest: Interest,
        edge: bool,
        handler: Rc<dyn Handler>,
    ) -> io::Result<Registration<S>>
    where
        S: AsFd + 'static,
    {
        let edge = edge && crate::sys::Poller::EDGE_TRIGGERED;
        let inner = self.inner();
        let fd = source.as_fd().as_raw_fd();
        let (key, id) = {
            let mut sources = inner.sources.borrow_mut();
            let id = sources.next_id;
            sources.next_id += 1;
            let key = sources.slab.insert(Source {
                handler,
                fd,
                #[cfg(any(
                    target_vendor = "apple",
                    target_os = "freebsd",
                    target_os = "netbsd",
                    target_os = "openbsd",
                    target_os = "dragonfly"
                ))]
                process: None,
                interest,
                parked: false,
                edge,
                woken: false,
                id,
            });
            (key, id)
        };
        let added = inner.shared.with_poller(|poller| {
            // SAFETY: the `Registration` returned below owns `source`
            // (which is `'static`, so no borrow can end before it), and its
            // `Drop` deletes the source from the poller before the source
            // itself is dropped. If the reactor goes first, the poller is
            // closed and forgets the source by itself.
            unsafe { poller.add(fd, key, interest, edge) }
        });
        if let Err(e) = added {
            let source = inner.sources.borrow_mut().slab.remove(key);
            drop(source);
            return Err(e);
        }
        Ok(Registration {
            source,
            key,
            id,
            edge,
            interest: Cell::new(interest),
            shared: inner.shared.clone(),
            reactor: self.downgrade(),
        })
    }
}

/// A source registered with a reactor, owned together with its
/// descriptor.
///
/// Dropping the registration removes the source from the poller, releases
/// the reactor's reference to the handler, and then closes the source. This
/// is the one place where Torsion upholds the poller's rule that a source
/// must be removed before it is closed.
pub struct Registration<S: AsFd> {
    /// Owned here, so it outlives its entry in the reactor's table and
    /// in the poller (see the invariant on `Source::fd`).
    source: S,
    key: usize,
    id: u64,
    /// Watched edge-triggered (asked for, and the poller can).
    edge: bool,
    interest: Cell<Interest>,
    shared: Arc<Shared>,
    reactor: WeakReactor,
}

impl<S: AsFd> Registration<S> {
    /// The registered source.
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// The key the reactor knows this source by.
    pub fn key(&self) -> usize {
        self.key
    }

    /// The current interest.
    pub fn interest(&self) -> Interest {
        self.interest.get()
    }

    /// True if the poller watches this source edge-triggered: it was
    /// registered with [`Reactor::register_edge`] and the poller has that
    /// mode (epoll). False for [`Reactor::register`], and on the portable
    /// backend, which watches every source as `register` does.
    pub fn is_edge_triggered(&self) -> bool {
        self.edge
    }

    /// Changes what the source is watched for. Does nothing (and makes no
    /// system call) if the interest is unchanged. A source the reactor
    /// stopped watching (see [`Handler`]) is watched again.
    ///
    /// # Errors
    /// If the poller refuses the change; the interest then stays as it
    /// was.
    pub fn set_interest(&self, interest: Interest) -> io::Result<()> {
        if interest == self.interest.get() {
            return Ok(());
        }
        let Some(reactor) = self.reactor.upgrade() else {
            return Ok(());
        };
        let mut sources = reactor.inner().sources.borrow_mut();
        let Some(source) = sources.get_mut(self.key, self.id) else {
            return Ok(());
        };
        let fd = self.source.as_fd();
        if source.parked {
            if !interest.is_none() {
                // SAFETY: as in `Reactor::register`: this registration owns
                // the descriptor and deletes it from the poller before
                // closing it.
                self.shared.with_poller(|poller| unsafe {
                    poller.add(fd.as_raw_fd(), self.key, interest, self.edge)
                })?;
                source.parked = false;
            }
        } else {
            self.shared
                .with_poller(|poller| poller.modify(fd, self.key, interest, self.edge))?;
        }
        // Only what the poller accepted is recorded.
        source.interest = interest;
        self.interest.set(interest);
        Ok(())
    }

    /// Asks the reactor to call this source's handler with
    /// [`Readiness::WOKEN`] at the end of the current turn, after its I/O,
    /// timers and [`Reactor::call_soon`] work and before the loop waits
    /// again (a wake asked for during that last phase is delivered early
    /// in the next turn, which does not wait), outside whatever callback is
    /// running now. Transports use it to finish work that was requested
    /// from elsewhere, such as a close, and to send the writes a turn
    /// gathered. Costs no system call.
    pub fn wake(&self) {
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.wake_source(self.key, self.id);
        }
    }
}

impl<S: AsFd> Drop for Registration<S> {
    fn drop(&mut self) {
        let removed = self.reactor.upgrade().and_then(|reactor| {
            let mut sources = reactor.inner().sources.borrow_mut();
            sources.get_mut(self.key, self.id)?;
            sources.slab.remove(self.key)
        });
        let in_poller = removed.as_ref().is_none_or(|source| !source.parked);
        if in_poller {
            if let Err(e) = self
                .shared
                .with_poller(|poller| poller.delete(self.source.as_fd()))
            {
                tracing::debug!(error = %e, key = self.key, "could not remove a source from the poller");
            }
        }
        // Drop the handler outside the borrow: dropping it may drop other
        // registrations. The source itself closes after this, when the
        // fields drop.
        drop(removed);
    }
}

impl<S: AsFd + fmt::Debug> fmt::Debug for Registration<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("source", &self.source)
            .field("key", &self.key)
            .field("interest", &self.interest.get())
            .field("edge", &self.edge)
            .finish()
    }
}

/// Child-process exits through kqueue (macOS and the BSDs): one cfg for
/// all of it.
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
mod kqueue_process {
    use super::*;

    /// A kqueue process filter registered with a reactor
    /// ([`Reactor::register_process_exit`]): the exit of one child process,
    /// reported to a [`Handler`] as readable. Dropping it removes the filter
    /// (if the child has not exited yet) and releases the handler.
    ///
    /// The filter only tells when: the child is still to be reaped
    /// (`waitpid`) by whoever registered it.
    #[cfg_attr(
        docsrs,
        doc(cfg(any(
            target_vendor = "apple",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        )))
    )]
    pub struct ProcessRegistration {
        pid: std::num::NonZeroI32,
        key: usize,
        id: u64,
        shared: Arc<Shared>,
        reactor: WeakReactor,
    }

    impl ProcessRegistration {
        /// The watched process's id.
        pub fn pid(&self) -> std::num::NonZeroI32 {
            self.pid
        }

        /// Asks the reactor to call the handler with [`Readiness::WOKEN`] at
        /// the end of the current turn, as [`Registration::wake`] does: for a
        /// first look (the child may have exited before the filter was added,
        /// and not every system reports that). Costs no system call.
        pub fn wake(&self) {
            if let Some(reactor) = self.reactor.upgrade() {
                reactor.wake_source(self.key, self.id);
            }
        }
    }

    impl fmt::Debug for ProcessRegistration {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ProcessRegistration")
                .field("pid", &self.pid)
                .field("key", &self.key)
                .finish()
        }
    }

    impl Reactor {
        /// Watches child process `pid` with a kqueue process filter
        /// (`EVFILT_PROC` with `NOTE_EXIT`): when it exits, `handler` is
        /// called once, readable, until the returned registration is dropped.
        /// Only on the systems with kqueue (macOS and the BSDs); on Linux a
        /// pidfd registered with [`Reactor::register`] does this.
        ///
        /// Nothing is reaped: the handler calls `waitpid(pid, WNOHANG)`. A
        /// child that has already exited (a zombie) may be refused (macOS
        /// answers `ESRCH`) or reported at once, as the system does: on an
        /// error, ask `waitpid` directly.
        ///
        /// # Safety
        /// `pid` must be a child of this process that has not been reaped, and
        /// must not be reaped before the returned registration is dropped or
        /// has reported the exit (a reaped pid can be reused by an unrelated
        /// process).
        ///
        /// # Errors
        /// If kqueue refuses the filter.
        #[cfg_attr(
            docsrs,
            doc(cfg(any(
                target_vendor = "apple",
                target_os = "freebsd",
                target_os = "netbsd",
                target_os = "openbsd",
                target_os = "dragonfly"
            )))
        )]
        pub unsafe fn register_process_exit(
            &self,
            pid: std::num::NonZeroI32,
            handler: Rc<dyn Handler>,
        ) -> io::Result<ProcessRegistration> {
            let inner = self.inner();
            let (key, id) = {
                let mut sources = inner.sources.borrow_mut();
                let id = sources.next_id;
                sources.next_id += 1;
                let key = sources.slab.insert(Source {
                    handler,
                    fd: -1,
                    process: Some(pid),
                    interest: Interest::READABLE,
                    parked: false,
                    edge: false,
                    woken: false,
                    id,
                });
                (key, id)
            };
            // SAFETY: forwarded from this function's contract.
            let added = inner
                .shared
                .with_poller(|poller| unsafe { poller.add_process(pid, key) });
            if let Err(e) = added {
                let source = inner.sources.borrow_mut().slab.remove(key);
                drop(source);
                return Err(e);
            }
            Ok(ProcessRegistration {
                pid,
                key,
                id,
                shared: inner.shared.clone(),
                reactor: self.downgrade(),
            })
        }
    }

    impl Drop for ProcessRegistration {
        fn drop(&mut self) {
            let removed = self.reactor.upgrade().and_then(|reactor| {
                let mut sources = reactor.inner().sources.borrow_mut();
                sources.get_mut(self.key, self.id)?;
                sources.slab.remove(self.key)
            });
            if removed.as_ref().is_none_or(|source| !source.parked) {
                // After the exit the kernel has dropped the filter by itself:
                // an error here (ENOENT, ESRCH) is expected then.
                if let Err(e) = self
                    .shared
                    .with_poller(|poller| poller.delete_process(self.pid))
                {
                    tracing::trace!(error = %e, key = self.key, "process filter already gone");
                }
            }
            // The handler drops outside the borrow, as in `Registration`.
            drop(removed);
        }
    }
}

#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
pub use kqueue_process::ProcessRegistration;

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    struct Quiet;

    impl Handler for Quiet {
        fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {}
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot run epoll_ctl on sockets")]
    fn a_refused_interest_change_leaves_table_and_registration_agreeing() {
        let reactor = Reactor::new().unwrap();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let registration = reactor
            .register(ours, Interest::READABLE, Rc::new(Quiet))
            .unwrap();
        // Take the descriptor out of the poller behind the registration's
        // back, so the poller refuses the next change.
        reactor
            .inner()
            .shared
            .with_poller(|poller| poller.delete(registration.get_ref().as_fd()))
            .unwrap();
        assert!(registration.set_interest(Interest::WRITABLE).is_err());
        assert_eq!(registration.interest(), Interest::READABLE);
        let table = reactor
            .inner()
            .sources
            .borrow()
            .get(registration.key())
            .unwrap()
            .interest;
        // Before: the table said WRITABLE while the poller and the
        // registration said READABLE.
        assert_eq!(table, Interest::READABLE);
    }
}
