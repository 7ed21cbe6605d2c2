//! The send queue of a datagram port: datagrams written while the reactor
//! dispatches wait here and go out together, in one `sendmmsg` per batch
//! on Linux (one call per datagram elsewhere), before the loop waits.
//!
//! On Linux a UDP port also uses segmentation offload (GSO, the
//! `UDP_SEGMENT` control message): queued datagrams to one address of one
//! size (the last may be shorter) go down the stack as one buffer the
//! kernel cuts into datagrams, one message of the `sendmmsg`. The queue is
//! regrouped for that — per destination the order is kept; datagrams to
//! different destinations may leave in another order than written.
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

/// Largest datagram sent as a segment of a GSO buffer to an IPv4 address:
/// one that fits an Ethernet frame (1,500 bytes less 28 of headers). A
/// larger one is sent alone (a segment larger than the route's MTU makes
/// the kernel refuse the whole buffer).
#[cfg(target_os = "linux")]
const MAX_SEGMENT: usize = 1472;

/// The same to an IPv6 address (1,500 bytes less 48 of headers).
#[cfg(target_os = "linux")]
const MAX_SEGMENT_V6: usize = 1452;

/// A segment size every path is taken to carry: the payload of the
/// smallest IPv6 MTU (1,280 bytes). A buffer of larger segments refused
/// with `EINVAL` whose datagrams then go alone lowers the port's limit to
/// this; one of segments this small turns segmentation off.
#[cfg(target_os = "linux")]
const SAFE_SEGMENT: usize = 1232;

/// How many datagrams in a row to other addresses (or already taken) a
/// run looks past for one more of its own before it ends: keeps
/// regrouping linear when every datagram goes somewhere else.
#[cfg(target_os = "linux")]
const MAX_LOOK_AHEAD: usize = 8;

/// Most datagrams in one GSO buffer (the kernel's `UDP_MAX_SEGMENTS` was
/// 64 before Linux 6.9).
#[cfg(target_os = "linux")]
const MAX_SEGMENTS: usize = 64;

/// Most bytes in one GSO buffer: the largest UDP payload over IPv4.
#[cfg(target_os = "linux")]
const MAX_GSO_BYTES: usize = 65_507;

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
    /// Of the datagrams sent, those that went as segments of a GSO buffer
    /// of two or more.
    pub(super) segmented: usize,
    /// The kernel refused a GSO buffer in a way that says it cannot
    /// segment (the error): segmentation is now off for the port, and the
    /// buffer's datagrams were sent one by one.
    pub(super) segmentation_refused: Option<i32>,
}

/// What one send step did.
#[derive(Debug)]
enum Sent {
    /// The kernel took the first `count` queued datagrams (0: its buffer
    /// is full), `segmented` of them inside GSO buffers.
    Datagrams { count: usize, segmented: usize },
    /// Nothing was sent and nothing settled: send again, one datagram per
    /// message (a GSO buffer was refused; `refused`: with this error,
    /// which turned segmentation off).
    #[cfg(target_os = "linux")]
    Again { refused: Option<i32> },
}

/// The control message of one GSO buffer: `UDP_SEGMENT` with the segment
/// size, aligned as the kernel reads control messages.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SegmentControl([u8; SegmentControl::SPACE]);

#[cfg(target_os = "linux")]
impl SegmentControl {
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) } as usize;
    const LEN: usize = Self::SPACE;
    const EMPTY: SegmentControl = SegmentControl([0; Self::SPACE]);

    /// Writes the header and `size` (at most `MAX_SEGMENT`, so it fits).
    fn set_segment_size(&mut self, size: usize) {
        // SAFETY: CMSG_LEN only computes a size.
        let len = unsafe { libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) };
        let header = libc::cmsghdr {
            cmsg_len: len as _,
            cmsg_level: libc::SOL_UDP,
            cmsg_type: libc::UDP_SEGMENT,
        };
        let size = size as u16;
        // SAFETY: the buffer is 8-aligned and SPACE bytes long: a cmsghdr
        // followed by the (aligned) room for a u16, which CMSG_DATA points
        // at; both writes stay inside it.
        unsafe {
            let first = self.0.as_mut_ptr().cast::<libc::cmsghdr>();
            first.write(header);
            libc::CMSG_DATA(first).cast::<u16>().write_unaligned(size);
        }
    }

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// True if the kernel under `socket` (a UDP socket) knows
/// `UDP_SEGMENT` (Linux 4.18 and later): older ones refuse the option,
/// and would ignore the control message, sending the run as one datagram.
#[cfg(target_os = "linux")]
pub(super) fn gso_supported(socket: &Socket) -> bool {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a c_int and its length, alive for the call.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    result == 0
}

/// A refused GSO buffer being sent again one datagram per message.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Split {
    /// Its datagrams not yet settled (they are at the head of the queue).
    left: usize,
    /// The error that refused it.
    code: i32,
    /// Its segment size.
    size: usize,
    /// One of its datagrams failed alone too.
    failed: bool,
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
    /// Runs of datagrams to one address are sent as GSO buffers.
    segmentation: bool,
    /// A refused GSO buffer whose datagrams are being sent one per
    /// message (the refusal may be one datagram's: each hears its own).
    #[cfg(target_os = "linux")]
    split: Option<Split>,
    /// A segment size limit below the usual one, learnt from a refused
    /// buffer (a route with a smaller MTU).
    #[cfg(target_os = "linux")]
    segment_limit: Option<usize>,
    /// The socket is IPv6: the connected peer's segments are limited as
    /// for an IPv6 address.
    #[cfg(target_os = "linux")]
    ipv6: bool,
    /// Where the queue is regrouped (kept between flushes, so regrouping
    /// allocates nothing once warm).
    #[cfg(target_os = "linux")]
    regrouped: Vec<Queued>,
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

    /// Turns segmentation offload on or off (and forgets a segment size
    /// limit learnt before) for a UDP socket (`ipv6`: of that family)
    /// whose kernel has it (see `gso_supported`).
    #[cfg(target_os = "linux")]
    pub(super) fn set_segmentation(&mut self, on: bool, ipv6: bool) {
        self.segmentation = on;
        self.segment_limit = None;
        self.ipv6 = ipv6;
    }

    /// True while runs of datagrams to one address go as GSO buffers.
    pub(super) fn segmentation(&self) -> bool {
        self.segmentation
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
        #[cfg(target_os = "linux")]
        {
            self.split = None;
        }
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
        // A datagram of a refused run being split failed: the refusal was
        // not (only) about segmentation.
        #[cfg(target_os = "linux")]
        let _ = self.split_settled(1, true);
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
                Ok(Sent::Datagrams { count: 0, .. }) => {
                    self.blocked = true;
                    self.compact();
                    return flushed;
                }
                Ok(Sent::Datagrams { count, segmented }) => {
                    for _ in 0..count {
                        flushed.sent_bytes += self.entries[self.head].len;
                        self.settle_head(None);
                    }
                    flushed.sent += count;
                    flushed.settled += count;
                    flushed.segmented += segmented;
                    #[cfg(target_os = "linux")]
                    if let Some(code) = self.split_settled(count, false) {
                        flushed.segmentation_refused = Some(code);
                    }
                }
                #[cfg(target_os = "linux")]
                Ok(Sent::Again { refused }) => {
                    if refused.is_some() {
                        flushed.segmentation_refused = refused;
                    }
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
                    #[cfg(target_os = "linux")]
                    self.split_settled(1, true);
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

    /// Keeps a failure for a message (the `count` datagrams from `index`)
    /// the kernel took only `sent` bytes of (never seen for datagrams;
    /// reported rather than assumed away).
    fn check_whole(&mut self, index: usize, count: usize, sent: usize) {
        let entries = &self.entries[index..index + count];
        let len: usize = entries.iter().map(|entry| entry.len).sum();
        if sent != len {
            let failure = SendFailure::Failed {
                to: entries[0].to.as_ref().map(super::datagram_address),
                error: io::Error::other(format!(
                    "only {sent} of the {count} datagram(s)' {len} bytes were sent"
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
        // Regrouping may have put a later-written datagram first: keep
        // the bytes from the earliest one still queued.
        let offset = self.entries[self.head..]
            .iter()
            .map(|entry| entry.start)
            .min()
            .unwrap_or(self.bytes.len());
        self.bytes.drain(..offset);
        self.entries.drain(..self.head);
        for entry in &mut self.entries {
            entry.start -= offset;
        }
        self.head = 0;
    }

    /// One `sendmmsg` of up to `SEND_BATCH` datagrams from the head,
    /// regrouped into GSO buffers when segmentation is on; returns how
    /// many datagrams were sent. An error is the head message's.
    ///
    /// When a later message of the batch fails, the kernel returns the
    /// count sent before it (and drops the error), so the next flush step
    /// starts with that message and hears its error at once.
    ///
    /// A GSO buffer is all or nothing: the kernel takes it whole or
    /// refuses it whole, and nothing is sent twice. See `buffer_refused`.
    #[cfg(target_os = "linux")]
    fn send_some(&mut self, socket: &Socket) -> io::Result<Sent> {
        use std::os::fd::AsRawFd;
        let mut pending = self.len().min(SEND_BATCH);
        let mut counts = [1u8; SEND_BATCH];
        if let Some(split) = &self.split {
            // Only the refused buffer's datagrams go one per message.
            pending = pending.min(split.left);
        }
        let grouped = self.segmentation && self.split.is_none();
        let messages = if grouped {
            self.regroup(pending, &mut counts)
        } else {
            pending
        };
        let pending = &self.entries[self.head..self.head + pending];
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; SEND_BATCH];
        for (iovec, entry) in iovecs.iter_mut().zip(pending) {
            let data = &self.bytes[entry.start..entry.start + entry.len];
            iovec.iov_base = data.as_ptr().cast_mut().cast();
            iovec.iov_len = data.len();
        }
        let mut controls = [SegmentControl::EMPTY; SEND_BATCH];
        // SAFETY: mmsghdr is plain data (pointers, lengths, flags); all
        // zeros is a valid, empty header.
        let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        // One pointer for all the headers' iovecs (not one borrow of the
        // array per header, which would invalidate the earlier ones).
        let iovec_base = iovecs.as_mut_ptr();
        let mut first = 0;
        for ((header, control), &count) in headers
            .iter_mut()
            .zip(&mut controls)
            .zip(&counts)
            .take(messages)
        {
            let count = usize::from(count);
            let entry = &pending[first];
            if let Some(to) = &entry.to {
                header.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
                header.msg_hdr.msg_namelen = to.len();
            }
            // SAFETY: `first + count <= pending <= SEND_BATCH`: inside
            // `iovecs`.
            header.msg_hdr.msg_iov = unsafe { iovec_base.add(first) };
            header.msg_hdr.msg_iovlen = count as _;
            if count > 1 {
                control.set_segment_size(entry.len);
                header.msg_hdr.msg_control = control.as_mut_ptr();
                header.msg_hdr.msg_controllen = SegmentControl::LEN as _;
            }
            first += count;
        }
        // SAFETY: the first `messages` headers each point at `count`
        // consecutive iovecs (over bytes of `self.bytes`, through the one
        // pointer `iovec_base`, which stays valid: `iovecs` is not touched
        // again until the call returns), at an address
        // owned by an entry and, for a GSO buffer, at its control message,
        // all alive and unchanged for the call; sendmmsg only reads them
        // (and writes each header's msg_len).
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                messages as libc::c_uint,
                crate::sys::SEND_FLAGS,
            )
        };
        if sent < 0 {
            let error = io::Error::last_os_error();
            if counts[0] > 1 {
                let run = usize::from(counts[0]);
                let size = self.entries[self.head].len;
                return self.buffer_refused(error, run, size);
            }
            return Err(error);
        }
        let mut count = 0;
        let mut segmented = 0;
        for (header, &segments) in headers.iter().zip(&counts).take(sent as usize) {
            let segments = usize::from(segments);
            self.check_whole(self.head + count, segments, header.msg_len as usize);
            if segments > 1 {
                segmented += segments;
            }
            count += segments;
        }
        Ok(Sent::Datagrams { count, segmented })
    }

    /// What to do when the kernel refused a whole GSO buffer (at the
    /// head: `run` datagrams of `size` bytes, the last maybe shorter).
    ///
    /// - `EIO`, `ENOPROTOOPT`, `EOPNOTSUPP`: the kernel or the device
    ///   cannot segment: segmentation is turned off for the port.
    /// - A full buffer waits, an interrupted call is made again, and the
    ///   connected peer's refusal (reported once by the kernel) settles the
    ///   head datagram, as without GSO.
    /// - Anything else (`EINVAL` for a destination port 0 or, on older
    ///   kernels, a segment above the route's MTU; `EMSGSIZE` for the
    ///   latter on current ones; an unreachable network): the buffer's
    ///   datagrams go one per message until they are all settled, each
    ///   hearing its own error. `EMSGSIZE` also lowers the port's segment
    ///   limit below `size`. `EINVAL` whose datagrams then all go alone was
    ///   about segmentation: see `split_settled`.
    #[cfg(target_os = "linux")]
    fn buffer_refused(&mut self, error: io::Error, run: usize, size: usize) -> io::Result<Sent> {
        match error.raw_os_error() {
            Some(code @ (libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)) => {
                self.segmentation = false;
                Ok(Sent::Again {
                    refused: Some(code),
                })
            }
            _ if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
            {
                Err(error)
            }
            Some(libc::ECONNREFUSED) if self.entries[self.head].to.is_none() => Err(error),
            code => {
                if code == Some(libc::EMSGSIZE) {
                    self.lower_segment_limit(size);
                }
                self.split = Some(Split {
                    left: run,
                    code: code.unwrap_or(0),
                    size,
                    failed: false,
                });
                Ok(Sent::Again { refused: None })
            }
        }
    }

    /// Counts `settled` datagrams (`failed`: one failed) against a refused
    /// buffer being sent one per message. When its last is settled and
    /// none failed although the kernel said `EINVAL` for the buffer, the
    /// refusal was the segmentation's: segments above `SAFE_SEGMENT` lower
    /// the port's limit to it (an older kernel's answer to a segment
    /// above the route's MTU), smaller ones turn segmentation off, and the
    /// error is returned.
    #[cfg(target_os = "linux")]
    fn split_settled(&mut self, settled: usize, failed: bool) -> Option<i32> {
        let split = self.split.as_mut()?;
        split.failed |= failed;
        split.left = split.left.saturating_sub(settled);
        if split.left > 0 {
            return None;
        }
        let split = self.split.take()?;
        if split.failed || split.code != libc::EINVAL {
            return None;
        }
        if split.size > SAFE_SEGMENT {
            self.lower_segment_limit(SAFE_SEGMENT + 1);
            None
        } else {
            self.segmentation = false;
            Some(split.code)
        }
    }

    /// Sends no more segments of `refused` bytes or more in GSO buffers
    /// (until segmentation is turned on again).
    #[cfg(target_os = "linux")]
    fn lower_segment_limit(&mut self, refused: usize) {
        let limit = refused.saturating_sub(1);
        self.segment_limit = Some(self.segment_limit.map_or(limit, |old| old.min(limit)));
        tracing::debug!(
            limit,
            "UDP GSO buffer refused: segments above {limit} bytes go alone on this port"
        );
    }

    /// The largest segment in a GSO buffer to `to` (`None`: the connected
    /// peer).
    #[cfg(target_os = "linux")]
    fn segment_limit_for(&self, to: Option<&SockAddr>) -> usize {
        let ipv6 = to.map_or(self.ipv6, SockAddr::is_ipv6);
        let family = if ipv6 { MAX_SEGMENT_V6 } else { MAX_SEGMENT };
        self.segment_limit.map_or(family, |limit| limit.min(family))
    }

    /// Regroups the first `pending` queued datagrams (at most
    /// `SEND_BATCH`) into messages: each a run of datagrams to one address,
    /// of one size but the last, which may be shorter, at most
    /// `MAX_SEGMENTS` and `MAX_GSO_BYTES`. The runs are put one after
    /// another in the queue, in the order of their first datagram, and
    /// their lengths written to `counts`; returns how many there are.
    ///
    /// Per destination the order stays the order of writing: a run takes
    /// datagrams to its address in order and ends at the first that cannot
    /// join it, which starts a later run. A run also ends after
    /// `MAX_LOOK_AHEAD` datagrams in a row that are not its own, so a batch
    /// to as many addresses as datagrams costs a few comparisons each.
    #[cfg(target_os = "linux")]
    fn regroup(&mut self, pending: usize, counts: &mut [u8; SEND_BATCH]) -> usize {
        let window = &self.entries[self.head..self.head + pending];
        let mut order = [0u8; SEND_BATCH];
        let mut taken = [false; SEND_BATCH];
        let mut placed = 0;
        let mut messages = 0;
        let mut moved = false;
        for i in 0..pending {
            if taken[i] {
                continue;
            }
            taken[i] = true;
            moved |= placed != i;
            order[placed] = i as u8;
            placed += 1;
            let size = window[i].len;
            let mut count = 1;
            if (1..=self.segment_limit_for(window[i].to.as_ref())).contains(&size) {
                let mut total = size;
                let mut misses = 0;
                for j in i + 1..pending {
                    if taken[j] || window[j].to != window[i].to {
                        misses += 1;
                        if misses == MAX_LOOK_AHEAD {
                            break;
                        }
                        continue;
                    }
                    misses = 0;
                    let len = window[j].len;
                    if len == 0
                        || len > size
                        || count == MAX_SEGMENTS
                        || total + len > MAX_GSO_BYTES
                    {
                        break;
                    }
                    taken[j] = true;
                    moved |= placed != j;
                    order[placed] = j as u8;
                    placed += 1;
                    count += 1;
                    total += len;
                    if len < size {
                        break;
                    }
                }
            }
            counts[messages] = count as u8;
            messages += 1;
        }
        if moved {
            let window = &mut self.entries[self.head..self.head + pending];
            self.regrouped.clear();
            for &i in &order[..pending] {
                let entry = &mut window[usize::from(i)];
                self.regrouped.push(Queued {
                    start: entry.start,
                    len: entry.len,
                    to: entry.to.take(),
                });
            }
            for (slot, entry) in window.iter_mut().zip(self.regrouped.drain(..)) {
                *slot = entry;
            }
        }
        messages
    }

    /// One datagram per call elsewhere.
    #[cfg(not(target_os = "linux"))]
    fn send_some(&mut self, socket: &Socket) -> io::Result<Sent> {
        let entry = &self.entries[self.head];
        let data = &self.bytes[entry.start..entry.start + entry.len];
        let sent = match &entry.to {
            Some(to) => socket.send_to_with_flags(data, to, crate::sys::SEND_FLAGS),
            None => socket.send_with_flags(data, crate::sys::SEND_FLAGS),
        }?;
        self.check_whole(self.head, 1, sent);
        Ok(Sent::Datagrams {
            count: 1,
            segmented: 0,
        })
    }
}
