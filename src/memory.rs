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

/// The `NAME: <n> kB` field of a /proc file, in bytes.
fn proc_bytes(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl Resident {
    /// The current figures, or `None` where `/proc` is unavailable.
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Self {
            anon: proc_bytes(&status, "RssAnon:")?,
            file: proc_bytes(&status, "RssFile:")?,
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

/// Makes a SIGBUS (a memory-mapped file, the model, shrank under the process, or its storage
/// failed to read) end the process with a message that says so and exit code 135, instead of an
/// anonymous crash (and without a core dump). The
/// mapping is the price of zero-copy loading; README "Security" gives the operator's side: serve
/// models from read-only volumes and replace files by rename, never in place.
pub fn report_sigbus() {
    #[cfg(unix)]
    {
        extern "C" fn on_sigbus(_: libc::c_int) {
            const MSG: &[u8] = b"qgpt: SIGBUS reading a memory-mapped file (the model): it was \
truncated while in use, or its storage failed; serve models from read-only volumes and replace \
them by rename, not in place\n";
            // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
            unsafe {
                libc::write(2, MSG.as_ptr().cast(), MSG.len());
                libc::_exit(135);
            }
        }
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
        // calls async-signal-safe functions and never returns, so the faulting access is never
        // retried.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    }
}

/// The memory this process may use: the smallest of the cgroup limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) and the machine's RAM (`MemTotal`); `None` where none is readable.
pub fn memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup_v2 = read("/sys/fs/cgroup/memory.max").and_then(|s| s.trim().parse::<u64>().ok());
    let cgroup_v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&b| b < 1 << 60); // "no limit" is a huge number
    let total = read("/proc/meminfo").and_then(|s| proc_bytes(&s, "MemTotal:"));
    [cgroup_v2, cgroup_v1, total].into_iter().flatten().min()
}
