//! The send queue of a datagram port: datagrams written while the reactor
//! dispatches wait here and go out together, in one `sendmmsg` per batch
//! on Linux (one call per datagram elsewhere), before the loop waits.
//!
//! The queue is bounded (in datagrams and in bytes) and keeps its
//! allocations between turns, so queueing a datagram allocates nothing
//! once the port has warmed up. Errors the kernel reports for a queued
//! datagram are kept (a bounded number) until the port's protocol can
//! hear them.

use std::collections::VecDeque;
use std::io;

use socket2::{SockAddr, Socket};

use crate::address::Address;

/// Datagrams larger than this are not copied into the queue: they are a
/// send of their own, tried at once (after what was queued before them),
/// as stream transports treat large writes.
pub(super) const MAX_GATHERED_DATAGRAM: usize = 4 * 1024;

/// Most datagrams the queue holds.
pub(super) const MAX_QUEUED_DATAGRAMS: usize = 1024;

/// Most bytes the queue holds (datagrams of a full batch of 64 KiB fit).
pub(super) const MAX_QUEUED_BYTES: usize = 256 * 1024;

/// Most datagrams one `sendmmsg` call sends (Linux).
#[cfg(target_os = "linux")]
const SEND_BATCH: usize = 64;

/// Bytes and entries a queue keeps allocated after a burst that blocked
/// it has drained (a burst grows it up to the bounds above).
const KEPT_BYTES: usize = 16 * 1024;
const KEPT_ENTRIES: usize = 64;

/// Most send failures kept for the protocol between two deliveries; more
/// are counted (and logged once per flush), not kept.
const MAX_PENDING_FAILURES: usize = 64;

/// A send failure waiting to be reported to the protocol.
#[derive(Debug)]
pub(super) enum SendFailure {
    /// The connected peer refused (ECONNREFUSED on send).
    Refused,
    /// The kernel refused one datagram.
    Failed {
        /// Where it was going (`None`: the connected peer).
        to: Option<Address>,
        /// Why.
        error: io::Error,
    },
}

/// One queued datagram: its bytes in [`SendQueue::bytes`] and its
/// destination (`None`: the connected peer).
struct Queued {
    start: usize,
    len: usize,
    to: Option<SockAddr>,
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Flushed {
    /// Datagrams sent or given up on (with a failure kept).
    pub(super) settled: usize,
    /// System calls made.
    pub(super) calls: u64,
    /// Datagrams the kernel took.
    pub(super) sent: usize,
    /// Their bytes.
    pub(super) sent_bytes: usize,
}

/// The queue itself.
#[derive(Default)]
pub(super) struct SendQueue {
    bytes: Vec<u8>,
    entries: Vec<Queued>,
    /// The first entry not yet sent.
    head: usize,
    /// Bytes of the entries from `head` on.
    queued_bytes: usize,
    /// The socket's buffer was full: wait for it to become writable.
    blocked: bool,
    failures: VecDeque<SendFailure>,
    /// Failures not kept because `failures` was full, since the port last
    /// logged them.
    lost_failures: u64,
}

impl SendQueue {
    /// True when nothing waits to be sent.
    pub(super) fn is_empty(&self) -> bool {
        self.head == self.entries.len()
    }

    /// Datagrams waiting to be sent.
    pub(super) fn len(&self) -> usize {
        self.entries.len() - self.head
    }

    /// True while the socket's buffer is full and the queue waits for it
    /// to become writable.
    pub(super) fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// True if a datagram of `len` bytes does not fit.
    pub(super) fn is_full_for(&self, len: usize) -> bool {
        self.len() >= MAX_QUEUED_DATAGRAMS || self.queued_bytes + len > MAX_QUEUED_BYTES
    }

    /// Queues a datagram (the caller checked that it fits).
    pub(super) fn push(&mut self, data: &[u8], to: Option<SockAddr>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.entries.push(Queued {
            start,
            len: data.len(),
            to,
        });
        self.queued_bytes += data.len();
    }

    /// Addresses the queued datagrams meant for the connected peer to `to`
    /// (the port is about to connect elsewhere).
    pub(super) fn address_to(&mut self, to: &SockAddr) {
        for entry in &mut self.entries[self.head..] {
            if entry.to.is_none() {
                entry.to = Some(to.clone());
            }
        }
    }

    /// Takes the next failure to report.
    pub(super) fn take_failure(&mut self) -> Option<SendFailure> {
        self.failures.pop_front()
    }

    /// True if one more failure would be kept for the protocol.
    pub(super) fn keeps_failures(&self) -> bool {
        self.failures.len() < MAX_PENDING_FAILURES
    }

    /// True if failures wait to be reported.
    pub(super) fn has_failures(&self) -> bool {
        !self.failures.is_empty()
    }

    /// Forgets everything queued, and failures not yet reported (the
    /// socket is closing); returns how many datagrams were dropped.
    pub(super) fn discard(&mut self) -> usize {
        let dropped = self.len();
        self.clear();
        self.failures.clear();
        self.blocked = false;
        dropped
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.head = 0;
        self.queued_bytes = 0;
    }

    /// Marks the head datagram as settled: sent, or failed with `failure`.
    fn settle_head(&mut self, failure: Option<SendFailure>) {
        self.queued_bytes -= self.entries[self.head].len;
        self.head += 1;
        if let Some(failure) = failure {
            self.keep_failure(failure);
        }
    }

    fn keep_failure(&mut self, failure: SendFailure) {
        if self.failures.len() < MAX_PENDING_FAILURES {
            self.failures.push_back(failure);
        } else {
            // Counted, and logged once per flush by the port: a peer
            // cannot make the log grow by a line per datagram.
            self.lost_failures += 1;
        }
    }

    /// How many failures were not kept since the last call.
    pub(super) fn take_lost_failures(&mut self) -> u64 {
        std::mem::take(&mut self.lost_failures)
    }

    /// Gives up on the head datagram because the socket keeps refusing it
    /// although it reported room (an unconnected Unix datagram socket
    /// whose receiver is full does that): reported as `WouldBlock`, so a
    /// level-triggered loop cannot spin on it.
    pub(super) fn drop_stuck_head(&mut self) {
        if self.is_empty() {
            return;
        }
        let to = self.head_destination();
        self.settle_head(Some(SendFailure::Failed {
            to,
            error: io::Error::new(
                io::ErrorKind::WouldBlock,
                "the receiver's queue stayed full; the datagram was dropped",
            ),
        }));
        if self.is_empty() {
            self.clear();
            self.blocked = false;
        }
    }

    fn head_destination(&self) -> Option<Address> {
        self.entries[self.head]
            .to
            .as_ref()
            .map(super::datagram_address)
    }

    /// Sends what is queued, in order, until the queue is empty or the
    /// socket's buffer is full (then the queue is blocked until the socket
    /// is writable). A datagram the kernel refuses for another reason is
    /// settled with a kept failure and the rest still go out.
    pub(super) fn flush(&mut self, socket: &Socket) -> Flushed {
        let mut flushed = Flushed::default();
        while !self.is_empty() {
            flushed.calls += 1;
            match self.send_some(socket) {
                // Nothing sent without an error: wait for room rather
                // than ask again at once.
                Ok(0) => {
                    self.blocked = true;
                    self.compact();
                    return flushed;
                }
                Ok(sent) => {
                    for _ in 0..sent {
                        flushed.sent_bytes += self.entries[self.head].len;
                        self.settle_head(None);
                    }
                    flushed.sent += sent;
                    flushed.settled += sent;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    self.compact();
                    return flushed;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Only the connected peer's refusal is a refusal of
                    // the port; one by another address names it.
                    let to_peer = self.entries[self.head].to.is_none();
                    let failure = if to_peer && e.kind() == io::ErrorKind::ConnectionRefused {
                        SendFailure::Refused
                    } else {
                        let len = self.entries[self.head].len;
                        SendFailure::Failed {
                            to: self.head_destination(),
                            error: super::send_error(e, len),
                        }
                    };
                    self.settle_head(Some(failure));
                    flushed.settled += 1;
                }
            }
        }
        self.clear();
        if std::mem::take(&mut self.blocked) {
            // A burst is over: give back what it grew beyond a floor.
            self.bytes.shrink_to(KEPT_BYTES);
            self.entries.shrink_to(KEPT_ENTRIES);
        }
        flushed
    }

    /// Keeps a failure for a datagram the kernel took only `sent` bytes of
    /// (never seen for datagrams; reported rather than assumed away).
    fn check_whole(&mut self, index: usize, sent: usize) {
        let entry = &self.entries[index];
        if sent != entry.len {
            let failure = SendFailure::Failed {
                to: entry.to.as_ref().map(super::datagram_address),
                error: io::Error::other(format!(
                    "only {sent} of the datagram's {} bytes were sent",
                    entry.len
                )),
            };
            self.keep_failure(failure);
        }
    }

    /// Moves what is still queued to the front, so a blocked queue does not
    /// keep the bytes it already sent.
    fn compact(&mut self) {
        if self.head == 0 {
            return;
        }
        let offset = self.entries[self.head].start;
        self.bytes.drain(..offset);
        self.entries.drain(..self.head);
        for entry in &mut self.entries {
            entry.start -= offset;
        }
        self.head = 0;
    }

    /// One `sendmmsg` of up to `SEND_BATCH` datagrams from the head;
    /// returns how many were sent. An error is the head datagram's.
    ///
    /// When a later datagram of the batch fails, the kernel returns the
    /// count sent before it and keeps the error for the socket's next
    /// call, which the next flush step makes at once for that datagram: so
    /// the error is reported for it. (A kernel that did not keep it would
    /// have that datagram simply sent again.)
    #[cfg(target_os = "linux")]
    fn send_some(&mut self, socket: &Socket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let pending = &self.entries[self.head..];
        let count = pending.len().min(SEND_BATCH);
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; SEND_BATCH];
        // SAFETY: mmsghdr is plain data (pointers, lengths, flags); all
        // zeros is a valid, empty header.
        let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        for ((header, iovec), entry) in headers.iter_mut().zip(&mut iovecs).zip(pending) {
            let data = &self.bytes[entry.start..entry.start + entry.len];
            iovec.iov_base = data.as_ptr().cast_mut().cast();
            iovec.iov_len = data.len();
            if let Some(to) = &entry.to {
                header.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
                header.msg_hdr.msg_namelen = to.len();
            }
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` headers each point at one iovec over
        // bytes of `self.bytes` and at an address owned by its entry, all
        // alive and unchanged for the call; sendmmsg only reads them (and
        // writes each header's msg_len).
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as libc::c_uint,
                crate::sys::SEND_FLAGS,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let sent = sent as usize;
        for (i, header) in headers.iter().take(sent).enumerate() {
            self.check_whole(self.head + i, header.msg_len as usize);
        }
        Ok(sent)
    }

    /// One datagram per call elsewhere.
    #[cfg(not(target_os = "linux"))]
    fn send_some(&mut self, socket: &Socket) -> io::Result<usize> {
        let entry = &self.entries[self.head];
        let data = &self.bytes[entry.start..entry.start + entry.len];
        let sent = match &entry.to {
            Some(to) => socket.send_to_with_flags(data, to, crate::sys::SEND_FLAGS),
            None => socket.send_with_flags(data, crate::sys::SEND_FLAGS),
        }?;
        self.check_whole(self.head, sent);
        Ok(1)
    }
}
