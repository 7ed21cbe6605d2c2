//! The write queue: what the kernel has not taken yet, as reference-counted
//! chunks that are never copied again once queued. The chunk list is
//! allocated the first time something is queued, so a connection whose
//! writes always go straight out carries 16 bytes of queue.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

#[derive(Default)]
pub(crate) struct WriteQueue {
    // Boxed on purpose: an idle connection's queue is then one null
    // pointer instead of an empty 32-byte `VecDeque`.
    #[allow(clippy::box_collection)]
    chunks: Option<Box<VecDeque<Bytes>>>,
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

    pub(crate) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks
                .get_or_insert_with(Box::default)
                .push_back(chunk);
        }
    }

    /// Fills `slices` with the queued chunks, front first, and returns how
    /// many it filled and how many bytes they hold.
    pub(crate) fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> (usize, usize) {
        let mut bytes = 0;
        let mut count = 0;
        let chunks = self.chunks.iter().flat_map(|chunks| chunks.iter());
        for (slot, chunk) in slices.iter_mut().zip(chunks) {
            *slot = IoSlice::new(chunk);
            bytes += chunk.len();
            count += 1;
        }
        (count, bytes)
    }

    /// Drops the first `n` bytes, which the kernel has taken.
    pub(crate) fn advance(&mut self, mut n: usize) {
        self.len -= n;
        let Some(chunks) = self.chunks.as_mut() else {
            assert_eq!(n, 0, "advance within queued bytes");
            return;
        };
        while n > 0 {
            let front = chunks.front_mut().expect("advance within queued bytes");
            if front.len() <= n {
                n -= front.len();
                chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        if let Some(chunks) = &mut self.chunks {
            chunks.clear();
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
