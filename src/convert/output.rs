//! Atomic output: the file is written under a temporary name beside its destination, synced, and
//! renamed over the destination only once complete. A failure (or a dropped writer) removes the
//! temporary file; [`remove_pending`] lets a signal handler do the same before the process exits.
//! The destination therefore holds either its old contents or the whole new file, never a part.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Temporary files being written now.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary file still being written (for a signal handler about to exit);
/// returns how many there were.
pub fn remove_pending() -> usize {
    let mut p = pending();
    let n = p.len();
    for path in p.drain(..) {
        let _ = std::fs::remove_file(path);
    }
    n
}

/// A file written atomically to `dst`.
pub struct AtomicFile {
    tmp: PathBuf,
    dst: PathBuf,
    file: Option<BufWriter<File>>,
}

fn forget(tmp: &Path) {
    pending().retain(|p| p != tmp);
}

impl AtomicFile {
    /// Creates the temporary file next to `dst` (same directory, so the rename is atomic). The
    /// name is new (`O_EXCL`: an existing file or symlink there is never followed or truncated).
    pub fn create(dst: &Path) -> io::Result<Self> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let name = dst.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
        })?;
        let dir = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for _ in 0..16 {
            let tmp = dir.join(format!(
                ".{}.partial-{}-{}-{nanos:x}",
                name.to_string_lossy(),
                std::process::id(),
                SERIAL.fetch_add(1, Ordering::Relaxed)
            ));
            // Registered before it exists, so a signal at any point finds it.
            pending().push(tmp.clone());
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    return Ok(Self {
                        tmp,
                        dst: dst.to_owned(),
                        file: Some(BufWriter::with_capacity(1 << 20, file)),
                    })
                }
                Err(e) => {
                    forget(&tmp);
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary file name beside the output",
        ))
    }

    /// The temporary file's writer.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("open until commit")
    }

    /// Flushes, syncs and renames the file into place; on failure the temporary file is removed.
    pub fn commit(mut self) -> io::Result<()> {
        let w = self.file.take().expect("open until commit");
        let result = (|| {
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&self.tmp, &self.dst)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        forget(&self.tmp);
        result?;
        if let Some(dir) = self.dst.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the rename itself durable; not every filesystem allows syncing a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            forget(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_a_committed_file_appears() {
        let dir = std::env::temp_dir().join(format!("qgpt-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dst = dir.join("out.bin");
        std::fs::write(&dst, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dst).unwrap();
            f.writer().write_all(b"new but abandoned").unwrap();
        }
        assert_eq!(std::fs::read(&dst).unwrap(), b"old");
        let mut f = AtomicFile::create(&dst).unwrap();
        f.writer().write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
