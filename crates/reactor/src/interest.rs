//! What a source is watched for ([`Interest`]) and what the poller
//! reported about it ([`Readiness`]).
//!
//! These are the leaf types of the crate: the platform pollers under
//! `sys/` depend on this module and nothing else of the reactor's.

/// What a registered source wants to hear about.
///
/// Interests combine with `|`: `Interest::READABLE | Interest::WRITABLE`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Interest {
    readable: bool,
    writable: bool,
}

impl Interest {
    /// Neither readable nor writable: the source stays registered but
    /// quiet. Errors and hang-ups are still reported once (see
    /// [`Readiness::is_error`]); if the handler leaves the interest at
    /// `NONE` after hearing one, the reactor stops watching the source
    /// until its interest changes, so a condition nobody consumes cannot
    /// make the loop spin.
    pub const NONE: Interest = Interest {
        readable: false,
        writable: false,
    };
    /// Readiness to read (or to accept, for a listening socket).
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Readiness to write (or a finished connect).
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };

    /// True if readable readiness is wanted.
    pub fn is_readable(self) -> bool {
        self.readable
    }

    /// True if writable readiness is wanted.
    pub fn is_writable(self) -> bool {
        self.writable
    }

    /// True if neither readable nor writable readiness is wanted.
    pub fn is_none(self) -> bool {
        !self.readable && !self.writable
    }

    /// This interest with readable readiness turned on or off.
    #[must_use]
    pub fn with_readable(self, readable: bool) -> Interest {
        Interest { readable, ..self }
    }

    /// This interest with writable readiness turned on or off.
    #[must_use]
    pub fn with_writable(self, writable: bool) -> Interest {
        Interest { writable, ..self }
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest {
            readable: self.readable || rhs.readable,
            writable: self.writable || rhs.writable,
        }
    }
}

/// What the reactor reports to a [`Handler`](crate::Handler).
///
/// Readiness is a hint, not a promise: a handler must treat `WouldBlock`
/// as "nothing after all" and must tolerate being called with nothing to
/// do.
///
/// `readable` and `writable` are reported only for what the source's
/// [`Interest`] asks for. An error or a hang-up on the source is reported
/// whatever the interest ([`Readiness::is_error`],
/// [`Readiness::is_hangup`]), and also as readable and writable where the
/// interest asks for those, so the next read or write surfaces it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Readiness(u8);

const READABLE: u8 = 1;
const WRITABLE: u8 = 1 << 1;
const ERROR: u8 = 1 << 2;
const HANGUP: u8 = 1 << 3;
const READ_CLOSED: u8 = 1 << 4;
const WOKEN: u8 = 1 << 5;
const PRIORITY: u8 = 1 << 6;

impl Readiness {
    /// The source may be read (or accepted from) without blocking.
    pub const READABLE: Readiness = Readiness(READABLE);
    /// The source may be written (or its connect has finished).
    pub const WRITABLE: Readiness = Readiness(WRITABLE);
    /// No I/O readiness: the handler was woken through
    /// [`Registration::wake`](crate::Registration::wake) to look at its own
    /// state.
    pub const WOKEN: Readiness = Readiness(WOKEN);

    /// Readiness as a platform poller reports it: the two directions, an
    /// error condition, a hang-up (both directions closed), the peer
    /// having closed its writing side, and urgent data (the last two not
    /// reported by every platform).
    pub(crate) fn from_poller(
        readable: bool,
        writable: bool,
        error: bool,
        hangup: bool,
        read_closed: bool,
        priority: bool,
    ) -> Readiness {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        Readiness(
            bit(readable, READABLE)
                | bit(writable, WRITABLE)
                | bit(error, ERROR)
                | bit(hangup, HANGUP)
                | bit(read_closed, READ_CLOSED)
                | bit(priority, PRIORITY),
        )
    }

    /// Keeps only the directions `interest` asks for (the peer's end of
    /// stream and urgent data go with reading); errors, hang-ups and
    /// wake-ups stay.
    pub(crate) fn masked(self, interest: Interest) -> Readiness {
        let mut keep = !(READABLE | WRITABLE | READ_CLOSED | PRIORITY);
        if interest.is_readable() {
            keep |= READABLE | READ_CLOSED | PRIORITY;
        }
        if interest.is_writable() {
            keep |= WRITABLE;
        }
        Readiness(self.0 & keep)
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// True if the source reported readable.
    pub fn is_readable(self) -> bool {
        self.has(READABLE)
    }

    /// True if the source reported writable.
    pub fn is_writable(self) -> bool {
        self.has(WRITABLE)
    }

    /// True if the source reported an error condition (epoll's
    /// `EPOLLERR`): for a socket, a pending error such as a reset, which
    /// the socket's `SO_ERROR` option holds. Reported whatever the
    /// interest.
    pub fn is_error(self) -> bool {
        self.has(ERROR)
    }

    /// True if the source reported a hang-up (epoll's `EPOLLHUP`): both
    /// directions are closed. Data the peer sent before may still wait to
    /// be read. Reported whatever the interest.
    pub fn is_hangup(self) -> bool {
        self.has(HANGUP)
    }

    /// True if the peer has closed its writing side (epoll's
    /// `EPOLLRDHUP`): once the data already received is read, a read
    /// returns end of file. Reported only with readable interest, and only
    /// where the platform tells (Linux's direct backend); elsewhere the end
    /// shows up as a read that returns zero bytes.
    pub fn is_read_closed(self) -> bool {
        self.has(READ_CLOSED)
    }

    /// True if the source reported urgent data (epoll's `EPOLLPRI`; for a
    /// TCP socket, data the peer sent out of band), with the readable
    /// flag set as well. Asked for only by sources registered with
    /// [`Reactor::register_edge`](crate::Reactor::register_edge), with
    /// readable interest, on Linux's direct backend. A TCP read stops
    /// short at the urgent byte, so a short read then does not mean the
    /// socket is drained.
    pub fn is_priority(self) -> bool {
        self.has(PRIORITY)
    }

    /// True if the handler was woken by
    /// [`Registration::wake`](crate::Registration::wake).
    pub fn is_woken(self) -> bool {
        self.has(WOKEN)
    }
}

impl std::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (READABLE, "READABLE"),
            (WRITABLE, "WRITABLE"),
            (ERROR, "ERROR"),
            (HANGUP, "HANGUP"),
            (READ_CLOSED, "READ_CLOSED"),
            (WOKEN, "WOKEN"),
            (PRIORITY, "PRIORITY"),
        ];
        let mut first = true;
        f.write_str("Readiness(")?;
        for (bit, name) in names {
            if self.has(bit) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_errors_and_hangups_whatever_the_interest() {
        let all = Readiness::from_poller(true, true, true, true, true, true);
        let none = all.masked(Interest::NONE);
        assert!(!none.is_readable() && !none.is_writable());
        assert!(none.is_error() && none.is_hangup() && !none.is_read_closed());
        assert!(!none.is_priority());
        let read = all.masked(Interest::READABLE);
        assert!(read.is_readable() && !read.is_writable() && read.is_read_closed());
        assert!(read.is_priority());
        assert_eq!(
            format!("{:?}", Readiness::READABLE | Readiness::WOKEN),
            "Readiness(READABLE | WOKEN)"
        );
    }
}
