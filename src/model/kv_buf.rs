//! Zero-filled buffers for the KV caches, mapped straight from the kernel: pages cost nothing
//! until written, so admitting a request clears nothing on the engine thread.
//!
//! No transparent huge pages: with them (`madvise`), a fresh cache's first write made the kernel
//! compact memory for 2 MiB pages inside the forward pass (measured on GPT-2 124M, 2 threads: a
//! step that started a request took 28–32 ms instead of 9), more than the few per cent that
//! fewer TLB misses gave attention.

use std::marker::PhantomData;

use bytemuck::Pod;
use memmap2::MmapMut;

/// `len` values of `T`, all zero at first (or, when reused, whatever the last user left).
pub(crate) struct KvBuf<T> {
    map: MmapMut,
    len: usize,
    /// Values allocated (`len` may be less after [`KvBuf::reuse`]).
    cap: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> KvBuf<T> {
    /// A zeroed buffer of `len` values. Panics when the system refuses the memory, as a `Vec`
    /// allocation would.
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        let map = MmapMut::map_anon(bytes.max(1))
            .unwrap_or_else(|e| panic!("allocating {bytes} bytes for a KV cache: {e}"));
        Self {
            map,
            len,
            cap: len,
            _t: PhantomData,
        }
    }

    /// Values the mapping has room for.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// The same memory as a buffer of `len` values (at most [`KvBuf::capacity`]), holding what
    /// it held. Panics if `len` does not fit.
    pub(crate) fn reuse(mut self, len: usize) -> Self {
        assert!(
            len <= self.capacity(),
            "{len} values > capacity {}",
            self.capacity()
        );
        self.len = len;
        self
    }

    /// The values.
    pub(crate) fn as_slice(&self) -> &[T] {
        let bytes = self.len * std::mem::size_of::<T>();
        bytemuck::cast_slice(&self.map[..bytes])
    }

    /// The values, writable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        let bytes = self.len * std::mem::size_of::<T>();
        bytemuck::cast_slice_mut(&mut self.map[..bytes])
    }
}

impl<T: Pod> Clone for KvBuf<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.len);
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        copy
    }
}

impl<T> std::fmt::Debug for KvBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvBuf({} values)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_zeroed_and_keep_what_is_written() {
        for len in [0, 1, 1000, (3 << 20) / 2 + 7] {
            let mut b = KvBuf::<half::f16>::zeroed(len);
            assert_eq!(b.as_slice().len(), len);
            assert!(b.as_slice().iter().all(|x| x.to_bits() == 0));
            if len > 0 {
                b.as_mut_slice()[len - 1] = half::f16::ONE;
                let c = b.clone();
                assert_eq!(c.as_slice()[len - 1], half::f16::ONE);
            }
        }
    }
}
