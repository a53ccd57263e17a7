//! Resident memory of this process, split into anonymous (heap) and file-backed (mapped) pages, so
//! that zero-copy loading can be seen: a mapped model shows up as file-backed, shareable memory.

/// Resident set in bytes, from `/proc/self/status` (Linux only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Heap, stacks and other private memory (`RssAnon`).
    pub anon: u64,
    /// Pages of mapped files, such as the model (`RssFile`).
    pub file: u64,
}

impl Resident {
    /// The current figures, or `None` where `/proc` is unavailable.
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib * 1024)
        };
        Some(Self {
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }
}

impl std::fmt::Display for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "resident: {:.1} MiB anonymous, {:.1} MiB file-backed",
            mib(self.anon),
            mib(self.file)
        )
    }
}

/// Drops the resident pages of `map[offset..offset + len]`: a tool streaming once through a
/// mapped file (the converter) keeps its resident set bounded instead of growing to the file's
/// size. The pages are read again from the file if touched later. Best effort: errors are ignored.
pub fn release_mapped(map: &memmap2::Mmap, offset: usize, len: usize) {
    #[cfg(unix)]
    {
        let len = len.min(map.len().saturating_sub(offset));
        if len > 0 {
            // SAFETY: the map is a read-only mapping of a file (never written); MADV_DONTNEED only
            // discards resident pages, which the kernel reloads from the file on the next access,
            // so every outstanding `&[u8]` into the map keeps reading the same bytes.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
    }
    #[cfg(not(unix))]
    let _ = (map, offset, len);
}
