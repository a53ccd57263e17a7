//! Atomic output: the file is written under a temporary name beside its destination, synced, and
//! renamed over the destination only once complete. A failure (or a dropped writer) removes the
//! temporary file; [`remove_pending`] lets a signal handler do the same before the process exits.
//! The destination therefore holds either its old contents or the whole new file, never a part.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files being written now.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary file still being written (for a signal handler about to exit).
pub fn remove_pending() {
    for p in pending().drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// A file written atomically to `dst`.
pub struct AtomicFile {
    tmp: PathBuf,
    dst: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temporary file next to `dst` (same directory, so the rename is atomic).
    pub fn create(dst: &Path) -> io::Result<Self> {
        let name = dst.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
        })?;
        let dir = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp)?;
        pending().push(tmp.clone());
        Ok(Self {
            tmp,
            dst: dst.to_owned(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The temporary file's writer.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("open until commit")
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> io::Result<()> {
        let mut w = self.file.take().expect("open until commit");
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dst)?;
        pending().retain(|p| p != &self.tmp);
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
            pending().retain(|p| p != &self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
