//! Zero-filled buffers for the KV caches, mapped straight from the kernel: pages cost nothing
//! until written (admitting a request clears nothing on the engine thread), and the mapping asks
//! for transparent huge pages — attention reads 64 key rows far apart for every head, which with
//! 4 KiB pages cost a TLB entry each.

use std::marker::PhantomData;

use bytemuck::Pod;
use memmap2::MmapMut;

/// Alignment that lets whole 2 MiB pages back the buffer.
const HUGE_PAGE: usize = 2 << 20;

/// `len` values of `T`, all zero at first.
pub(crate) struct KvBuf<T> {
    map: MmapMut,
    offset: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> KvBuf<T> {
    /// A zeroed buffer of `len` values. Panics when the system refuses the memory, as a `Vec`
    /// allocation would.
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        // Room to start at a 2 MiB boundary when the buffer spans at least one huge page; the
        // slack is address space only, never touched.
        let slack = if bytes >= HUGE_PAGE { HUGE_PAGE } else { 0 };
        let map = MmapMut::map_anon((bytes + slack).max(1))
            .unwrap_or_else(|e| panic!("allocating {bytes} bytes for a KV cache: {e}"));
        let offset = map.as_ptr().align_offset(HUGE_PAGE).min(slack);
        #[cfg(target_os = "linux")]
        {
            // A hint: without transparent huge pages (or with them off) nothing changes.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Self {
            map,
            offset,
            len,
            _t: PhantomData,
        }
    }

    /// The values.
    pub(crate) fn as_slice(&self) -> &[T] {
        let bytes = self.len * std::mem::size_of::<T>();
        bytemuck::cast_slice(&self.map[self.offset..self.offset + bytes])
    }

    /// The values, writable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        let bytes = self.len * std::mem::size_of::<T>();
        bytemuck::cast_slice_mut(&mut self.map[self.offset..self.offset + bytes])
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
