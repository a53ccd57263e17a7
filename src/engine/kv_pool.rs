//! Memory of finished requests' KV caches, kept for the next ones: a fresh cache's pages are
//! cleared by the kernel on first write, inside the forward pass that every running request
//! waits on (the transposed keys make a request's first token touch every key page at once).
//!
//! Bounded: the caches in use and those kept stay within the KV budget in bytes; a kept cache is
//! reused only by a request that needs at least 4/5 of it (a small request does not hold a large
//! cache), so a request holds at most 1.25 times the memory it reserved.

use crate::model::KvMemory;

/// Freed cache memory, oldest first.
#[derive(Debug, Default)]
pub(super) struct KvPool {
    free: Vec<KvMemory>,
    limit: usize,
}

impl KvPool {
    /// A pool that keeps the caches in use and those kept within `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            free: Vec::new(),
            limit,
        }
    }

    /// Bytes kept.
    pub(super) fn bytes(&self) -> usize {
        self.free.iter().map(KvMemory::bytes).sum()
    }

    /// The smallest kept memory with room for `elements` and at most a quarter more.
    pub(super) fn take(&mut self, elements: usize) -> Option<KvMemory> {
        let fits = |m: &KvMemory| (elements..=elements + elements / 4).contains(&m.elements());
        let (i, _) = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, m)| fits(m))
            .min_by_key(|(_, m)| m.elements())?;
        Some(self.free.remove(i))
    }

    /// Drops the oldest kept memory until `in_use` bytes more fit under the limit.
    pub(super) fn make_room(&mut self, in_use: usize) {
        while !self.free.is_empty() && self.bytes() + in_use > self.limit {
            self.free.remove(0);
        }
    }

    /// Keeps `memory` if it fits beside `in_use` bytes of caches in use, making room by dropping
    /// the oldest kept first.
    pub(super) fn put(&mut self, memory: KvMemory, in_use: usize) {
        if memory.bytes() + in_use > self.limit {
            return;
        }
        self.make_room(in_use + memory.bytes());
        self.free.push(memory);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KvCache, KvType};

    fn memory(positions: usize) -> KvMemory {
        KvCache::new(1, 1, 4, positions, KvType::F16).into_memory()
    }

    #[test]
    fn reuses_close_fits_and_stays_within_the_limit() {
        let per_position = memory(1).bytes();
        let mut pool = KvPool::new(100 * per_position);
        pool.put(memory(40), 0);
        pool.put(memory(20), 0);
        // 40 positions' memory is too large for 20 (more than a quarter over), fine for 36.
        assert_eq!(pool.take(4 * 20).map(|m| m.elements()), Some(4 * 20));
        assert!(pool.take(4 * 20).is_none());
        assert_eq!(pool.take(4 * 36).map(|m| m.elements()), Some(4 * 40));
        // Keeping more than the limit beside what is in use drops the oldest.
        pool.put(memory(30), 0);
        pool.put(memory(30), 50 * per_position);
        assert_eq!(pool.bytes(), 30 * per_position);
        pool.make_room(90 * per_position);
        assert_eq!(pool.bytes(), 0);
        // Memory larger than the room left is not kept.
        pool.put(memory(60), 50 * per_position);
        assert_eq!(pool.bytes(), 0);
    }
}
