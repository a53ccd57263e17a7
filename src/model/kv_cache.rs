//! Per-sequence key/value cache, allocated once for a fixed number of positions.

/// Keys and values of every layer for the positions processed so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    n_layer: usize,
    n_embd: usize,
    capacity: usize,
    len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache {
    /// A cache for `capacity` positions of a model with `n_layer` layers of width `n_embd`.
    pub fn new(n_layer: usize, n_embd: usize, capacity: usize) -> Self {
        let n = n_layer * capacity * n_embd;
        Self {
            n_layer,
            n_embd,
            capacity,
            len: 0,
            k: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position, keeping the memory.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }

    fn range(&self, layer: usize) -> std::ops::Range<usize> {
        debug_assert!(layer < self.n_layer);
        let size = self.capacity * self.n_embd;
        layer * size..(layer + 1) * size
    }

    /// Keys and values of `layer`: `capacity` rows of n_embd each.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> (&mut [f32], &mut [f32]) {
        let r = self.range(layer);
        (&mut self.k[r.clone()], &mut self.v[r])
    }
}
