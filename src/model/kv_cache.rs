//! Per-sequence key/value cache, allocated once for a fixed number of positions.
//!
//! Layout, per layer and head: keys transposed (`head_dim` rows of `capacity` positions), values
//! as they come (`capacity` rows of `head_dim`). Attention then reads keys as rows of
//! consecutive positions, so that the scores of many positions are one vector operation per
//! dimension, and values as rows of consecutive dimensions. Elements are F16 by default
//! (half the memory and bandwidth of F32; F32 is selectable).

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::kv_buf::KvBuf;
use crate::kernels::prefetch::{prefetch_range, Level};

/// The element type of a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// IEEE half precision: 2 bytes an element.
    #[default]
    F16,
    /// IEEE single precision: 4 bytes an element.
    F32,
}

impl KvType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }

    /// "f16" or "f32", as llama.cpp names cache types.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }
}

#[derive(Debug, Clone)]
enum Data {
    F16 { k: KvBuf<f16>, v: KvBuf<f16> },
    F32 { k: KvBuf<f32>, v: KvBuf<f32> },
}

/// One head of one layer: keys transposed (`head_dim` × `capacity`), values (`capacity` ×
/// `head_dim`). Positions at or past the cache's length hold stale data.
#[derive(Debug, Clone, Copy)]
pub enum KvHead<'a> {
    F16 { kt: &'a [f16], v: &'a [f16] },
    F32 { kt: &'a [f32], v: &'a [f32] },
}

/// Keys and values of every layer for the positions processed so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    n_layer: usize,
    n_head: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
    data: Data,
    /// A position's key and value rows in f16, on their way in.
    row: Vec<f16>,
}

/// The memory of a cache that is no longer used, to build another on: fresh pages are cleared
/// by the kernel on first write, a cost paid inside the forward pass.
#[derive(Debug)]
pub struct KvMemory {
    data: Data,
}

impl KvMemory {
    /// Keys (and as many values) the memory has room for.
    pub fn elements(&self) -> usize {
        match &self.data {
            Data::F16 { k, .. } => k.capacity(),
            Data::F32 { k, .. } => k.capacity(),
        }
    }

    /// The element type.
    pub fn kv_type(&self) -> KvType {
        match self.data {
            Data::F16 { .. } => KvType::F16,
            Data::F32 { .. } => KvType::F32,
        }
    }

    /// Bytes of keys and values.
    pub fn bytes(&self) -> usize {
        2 * self.elements() * self.kv_type().size()
    }
}

impl KvCache {
    /// A cache for `capacity` positions of a model with `n_layer` layers of `n_head` heads of
    /// `head_dim` values, holding `ty` elements.
    pub fn new(
        n_layer: usize,
        n_head: usize,
        head_dim: usize,
        capacity: usize,
        ty: KvType,
    ) -> Self {
        Self::with_memory(n_layer, n_head, head_dim, capacity, ty, None)
    }

    /// Elements of keys (and of values) a cache of this shape holds.
    pub fn elements_for(n_layer: usize, n_head: usize, head_dim: usize, capacity: usize) -> usize {
        n_layer * n_head * head_dim * capacity
    }

    /// As [`KvCache::new`], on `memory` when it holds `ty` elements and has room (else on fresh
    /// zero pages). What the memory held is never read: attention reads only the positions a
    /// cache has filled, or masks the others out of the softmax.
    pub fn with_memory(
        n_layer: usize,
        n_head: usize,
        head_dim: usize,
        capacity: usize,
        ty: KvType,
        memory: Option<KvMemory>,
    ) -> Self {
        let n = Self::elements_for(n_layer, n_head, head_dim, capacity);
        let memory = memory.filter(|m| m.kv_type() == ty && m.elements() >= n);
        let data = match (ty, memory) {
            (_, Some(KvMemory { data })) => match data {
                Data::F16 { k, v } => Data::F16 {
                    k: k.reuse(n),
                    v: v.reuse(n),
                },
                Data::F32 { k, v } => Data::F32 {
                    k: k.reuse(n),
                    v: v.reuse(n),
                },
            },
            // Fresh zero pages (`KvBuf`): admitting a request does not stall the batch while
            // megabytes are cleared (measured when they were written out: 2 ms for 144
            // positions of GPT-2 124M, 7 ms for 513).
            (KvType::F16, None) => Data::F16 {
                k: KvBuf::zeroed(n),
                v: KvBuf::zeroed(n),
            },
            (KvType::F32, None) => Data::F32 {
                k: KvBuf::zeroed(n),
                v: KvBuf::zeroed(n),
            },
        };
        Self {
            n_layer,
            n_head,
            head_dim,
            capacity,
            len: 0,
            data,
            row: match ty {
                KvType::F16 => vec![f16::ZERO; 2 * n_head * head_dim],
                KvType::F32 => Vec::new(),
            },
        }
    }

    /// The cache's memory, for another cache to reuse.
    pub fn into_memory(self) -> KvMemory {
        KvMemory { data: self.data }
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

    /// The element type.
    pub fn kv_type(&self) -> KvType {
        match self.data {
            Data::F16 { .. } => KvType::F16,
            Data::F32 { .. } => KvType::F32,
        }
    }

    /// Bytes held for keys and values.
    pub fn bytes(&self) -> usize {
        2 * self.n_layer * self.n_head * self.head_dim * self.capacity * self.kv_type().size()
    }

    /// Forgets every position, keeping the memory.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "{len} positions > capacity {}",
            self.capacity
        );
        self.len = len;
    }

    /// Elements of one (layer, head) block.
    fn block(&self) -> usize {
        self.head_dim * self.capacity
    }

    /// Stores the key and value rows (`n_head · head_dim` each) of position `pos` in `layer`.
    ///
    /// Panics if `pos` is past the capacity or a row has the wrong length.
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (hd, cap, nh) = (self.head_dim, self.capacity, self.n_head);
        assert!(
            layer < self.n_layer && pos < cap,
            "layer {layer}, position {pos}"
        );
        assert!(k.len() == nh * hd && v.len() == nh * hd, "row length");
        let block = self.block();
        let base = layer * nh * block;
        let at = Layout {
            base,
            block,
            cap,
            hd,
            pos,
        };
        match &mut self.data {
            Data::F16 { k: kd, v: vd } => {
                // Whole rows converted at once (vectorized), then stored.
                let (kh, vh) = self.row.split_at_mut(k.len());
                kh.convert_from_f32_slice(k);
                vh.convert_from_f32_slice(v);
                put(kd.as_mut_slice(), vd.as_mut_slice(), kh, vh, at);
            }
            Data::F32 { k: kd, v: vd } => put(kd.as_mut_slice(), vd.as_mut_slice(), k, v, at),
        }
    }

    /// Asks the memory system for what attention reads first from one head of `layer`: keys
    /// and values of positions 0..n (a hint only: nothing changes if it is ignored).
    pub(crate) fn prefetch(&self, layer: usize, head: usize, n: usize) {
        let n = n.min(self.capacity);
        let (kt, v, size) = match self.head(layer, head) {
            KvHead::F16 { kt, v } => (kt.as_ptr().cast::<u8>(), v.as_ptr().cast::<u8>(), 2),
            KvHead::F32 { kt, v } => (kt.as_ptr().cast::<u8>(), v.as_ptr().cast::<u8>(), 4),
        };
        for d in 0..self.head_dim {
            prefetch_range(
                kt.wrapping_add(d * self.capacity * size),
                n * size,
                Level::L2,
            );
        }
        prefetch_range(v, n * self.head_dim * size, Level::L2);
    }

    /// Keys (transposed) and values of one head of `layer`.
    pub(crate) fn head(&self, layer: usize, head: usize) -> KvHead<'_> {
        assert!(
            layer < self.n_layer && head < self.n_head,
            "layer {layer}, head {head}"
        );
        let block = self.block();
        let r = (layer * self.n_head + head) * block..(layer * self.n_head + head + 1) * block;
        match &self.data {
            Data::F16 { k, v } => KvHead::F16 {
                kt: &k.as_slice()[r.clone()],
                v: &v.as_slice()[r],
            },
            Data::F32 { k, v } => KvHead::F32 {
                kt: &k.as_slice()[r.clone()],
                v: &v.as_slice()[r],
            },
        }
    }
}

/// Stores one position's key row (transposed: one value per row of `capacity` positions) and
/// value row of every head.
fn put<E: Copy>(kd: &mut [E], vd: &mut [E], k: &[E], v: &[E], at: Layout) {
    for (h, (kh, vh)) in k.chunks_exact(at.hd).zip(v.chunks_exact(at.hd)).enumerate() {
        let b = at.base + h * at.block;
        for (d, &x) in kh.iter().enumerate() {
            kd[b + d * at.cap + at.pos] = x;
        }
        vd[b + at.pos * at.hd..][..at.hd].copy_from_slice(vh);
    }
}

/// Where one position's values go.
#[derive(Clone, Copy)]
struct Layout {
    base: usize,
    block: usize,
    cap: usize,
    hd: usize,
    pos: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_transposed_and_values_by_row() {
        for ty in [KvType::F16, KvType::F32] {
            // 1 layer, 2 heads of 2, 3 positions.
            let mut c = KvCache::new(1, 2, 2, 3, ty);
            c.write(0, 1, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
            let get = |h: KvHead<'_>| -> (Vec<f32>, Vec<f32>) {
                match h {
                    KvHead::F16 { kt, v } => (
                        kt.iter().map(|x| x.to_f32()).collect(),
                        v.iter().map(|x| x.to_f32()).collect(),
                    ),
                    KvHead::F32 { kt, v } => (kt.to_vec(), v.to_vec()),
                }
            };
            let (kt, v) = get(c.head(0, 1));
            // Head 1, dims (3, 4) at position 1: kt[d][p], v[p][d].
            assert_eq!(kt, [0.0, 3.0, 0.0, 0.0, 4.0, 0.0]);
            assert_eq!(v, [0.0, 0.0, 7.0, 8.0, 0.0, 0.0]);
            assert_eq!(c.bytes(), 2 * 2 * 2 * 3 * ty.size());
        }
    }
}
