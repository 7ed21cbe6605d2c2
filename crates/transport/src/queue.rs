//! The write queue: what the kernel has not taken yet.
//!
//! Two kinds of bytes are queued, in order: `Bytes` chunks, held as they
//! are (never copied), and copies of borrowed slices, appended to one
//! growable tail buffer (so a turn's small writes gathered for one send
//! cost no allocation each). The tail is logically after every chunk; a
//! chunk queued after copied bytes first turns the tail into a chunk.
//!
//! The storage (chunk list and tail) is taken from a small per-thread pool
//! when something is queued and given back when the queue drains, so an
//! idle connection carries 16 bytes of queue and a busy one allocates
//! nothing in the steady state.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Storage kept in the per-thread pool, at most. A connection's own
/// writes are sent, and its storage given back, at the end of its step,
/// so one or two serve the common case; the bound keeps what an idle
/// thread holds small (at most 32 KiB of tails: only a tail that was never
/// split or advanced, whose capacity is what it holds, is pooled).
const POOL_SIZE: usize = 2;

/// A tail buffer that grew beyond this is freed rather than pooled.
const POOLED_TAIL_CAPACITY: usize = 16 * 1024;

#[derive(Default)]
struct Storage {
    chunks: VecDeque<Bytes>,
    /// Copied bytes, after every chunk.
    tail: BytesMut,
    /// The tail was split or advanced: it may be a small view that keeps a
    /// large allocation alive, and its `capacity()` no longer says how much
    /// memory it holds, so it is not pooled.
    tail_shared: bool,
}

thread_local! {
    // Boxed on purpose: a queue holds its storage boxed, and moves the box
    // in and out of the pool without allocating.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Storage>>> = const { RefCell::new(Vec::new()) };
}

fn take_storage() -> Box<Storage> {
    POOL.with_borrow_mut(Vec::pop).unwrap_or_default()
}

fn give_back(mut storage: Box<Storage>) {
    if storage.tail_shared {
        // Pool the list, not a tail whose size cannot be known.
        storage.tail = BytesMut::new();
        storage.tail_shared = false;
    }
    if storage.tail.capacity() > POOLED_TAIL_CAPACITY {
        return;
    }
    storage.chunks.clear();
    storage.tail.clear();
    // Ignored if the thread is exiting.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_SIZE {
            pool.push(storage);
        }
    });
}

#[derive(Default)]
pub(crate) struct WriteQueue {
    storage: Option<Box<Storage>>,
    len: usize,
}

impl WriteQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queued bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn storage(&mut self) -> &mut Storage {
        self.storage.get_or_insert_with(take_storage)
    }

    /// Queues `chunk` as it is.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        let storage = self.storage();
        if !storage.tail.is_empty() {
            let copied = storage.tail.split().freeze();
            storage.tail_shared = true;
            storage.chunks.push_back(copied);
        }
        storage.chunks.push_back(chunk);
    }

    /// Queues a copy of `data`, appended to the tail buffer.
    pub(crate) fn push_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.storage().tail.extend_from_slice(data);
    }

    /// Queues copies of `parts`, in order, appended to the tail buffer;
    /// `total` is their summed length.
    pub(crate) fn push_copies(&mut self, parts: &[&[u8]], total: usize) {
        if total == 0 {
            return;
        }
        self.len += total;
        let tail = &mut self.storage().tail;
        tail.reserve(total);
        for part in parts {
            tail.extend_from_slice(part);
        }
    }

    /// The queued bytes, if they are one contiguous slice (one chunk, or
    /// copied bytes only).
    pub(crate) fn single(&self) -> Option<&[u8]> {
        let storage = self.storage.as_deref()?;
        match (storage.chunks.len(), storage.tail.is_empty()) {
            (0, false) => Some(&storage.tail[..]),
            (1, true) => storage.chunks.front().map(|chunk| &chunk[..]),
            _ => None,
        }
    }

    /// Fills `slices` with the queued bytes, front first, and returns how
    /// many it filled and how many bytes they hold.
    pub(crate) fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> (usize, usize) {
        let mut bytes = 0;
        let mut count = 0;
        let Some(storage) = self.storage.as_deref() else {
            return (0, 0);
        };
        let tail = (!storage.tail.is_empty()).then_some(&storage.tail[..]);
        let parts = storage.chunks.iter().map(|chunk| &chunk[..]).chain(tail);
        for (slot, part) in slices.iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
            bytes += part.len();
            count += 1;
        }
        (count, bytes)
    }

    /// Drops the first `n` bytes, which the kernel has taken.
    pub(crate) fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advance within queued bytes");
        self.len -= n;
        if self.len == 0 {
            self.clear();
            return;
        }
        let Some(storage) = self.storage.as_deref_mut() else {
            return;
        };
        while n > 0 {
            let Some(front) = storage.chunks.front_mut() else {
                storage.tail.advance(n);
                storage.tail_shared = true;
                return;
            };
            if front.len() <= n {
                n -= front.len();
                storage.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Drops everything queued and gives the storage back to the pool.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        if let Some(storage) = self.storage.take() {
            give_back(storage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(q: &WriteQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 8];
        let (count, bytes) = q.fill(&mut slices);
        let all: Vec<u8> = slices[..count].iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(all.len(), bytes);
        all
    }

    #[test]
    fn advance_across_chunks() {
        let mut q = WriteQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::new());
        q.push(Bytes::from_static(b"defg"));
        assert_eq!(q.len(), 7);
        q.advance(4);
        assert_eq!(q.len(), 3);
        let mut slices = [IoSlice::new(&[]); 4];
        let (count, bytes) = q.fill(&mut slices);
        assert_eq!((count, bytes), (1, 3));
        assert_eq!(&*slices[0], b"efg");
        q.advance(3);
        assert!(q.is_empty());
    }

    #[test]
    fn copies_and_chunks_keep_their_order() {
        let mut q = WriteQueue::default();
        q.push_copy(b"ab");
        q.push_copy(b"cd");
        q.push(Bytes::from_static(b"EF"));
        q.push_copy(b"gh");
        assert_eq!(q.len(), 8);
        assert_eq!(contents(&q), b"abcdEFgh");
        q.advance(3);
        assert_eq!(contents(&q), b"dEFgh");
        q.advance(3);
        assert_eq!(contents(&q), b"gh");
        q.advance(1);
        q.push_copy(b"ij");
        assert_eq!(contents(&q), b"hij");
        q.advance(3);
        assert!(q.is_empty());
        assert_eq!(contents(&q), b"");
    }

    #[test]
    fn copied_bytes_go_out_in_one_slice() {
        let mut q = WriteQueue::default();
        for _ in 0..100 {
            q.push_copy(b"line\r\n");
        }
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(q.fill(&mut slices), (1, 600));
        assert_eq!(q.single().map(<[u8]>::len), Some(600));
        q.push(Bytes::from_static(b"x"));
        assert_eq!(q.single(), None);
        q.advance(600);
        assert_eq!(q.single(), Some(&b"x"[..]));
    }

    #[test]
    fn a_split_or_advanced_tail_is_not_pooled() {
        // A slow peer made a 4 MiB tail; a chunk queued after it split
        // the tail, whose remaining view still holds the allocation.
        let mut q = WriteQueue::default();
        q.push_copy(&vec![7u8; 4 << 20]);
        q.push(Bytes::from_static(b"x"));
        let total = q.len();
        q.advance(total);
        // The same through advancing the tail itself.
        let mut q = WriteQueue::default();
        q.push_copy(&vec![1u8; 1 << 20]);
        q.advance((1 << 20) - 1);
        q.advance(1);
        // Before: the pooled tails reported a capacity of 0 while holding
        // megabytes (a counting allocator measured 4,194,568 bytes kept).
        POOL.with_borrow(|pool| {
            for storage in pool {
                assert!(!storage.tail_shared);
                assert!(storage.tail.capacity() <= POOLED_TAIL_CAPACITY);
            }
        });
    }
}
