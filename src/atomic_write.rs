//! Output files written completely or not at all (`sana-run` stages a generation's files and commits them
//! together): the bytes go to a temporary file beside the target, which is
//! synced and renamed over it only once complete, so a failure never leaves a truncated file behind. What is not a
//! regular file (a device, a FIFO such as `/dev/stdout` or a pipe) is written into, never replaced; a symbolic link
//! is written through, replacing the file it points to. The replacement keeps the permissions of the file it
//! replaces; a new file gets the usual 0666 less the umask. A temporary file is registered where a signal handler
//! can remove it ([`remove_pending_temps_in_signal_handler`]).

#[cfg(unix)]
mod pending_temps;
#[cfg(unix)]
pub use pending_temps::remove_pending_temps_in_signal_handler;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file written in full beside its target, not yet in place: [`Self::commit`] renames it over the target;
/// dropping it uncommitted removes it. Several staged files committed together make a set of outputs that appears
/// only when every one of them could be written.
#[derive(Debug)]
pub struct StagedFile {
    /// The temporary file; `None` for a device or FIFO, which was written into directly.
    tmp: Option<PathBuf>,
    target: PathBuf,
    /// Unregistered when dropped, after `tmp` was renamed or removed.
    #[cfg(unix)]
    _pending: Option<pending_temps::PendingTemp>,
}

impl StagedFile {
    /// Moves the file into place; the error names the target.
    pub fn commit(mut self) -> crate::Result<()> {
        match self.tmp.take() {
            Some(tmp) => std::fs::rename(&tmp, &self.target).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                crate::Error::io(
                    &self.target,
                    std::io::Error::other(format!(
                        "cannot rename {} into place: {e}",
                        tmp.display()
                    )),
                )
            }),
            None => Ok(()),
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            // Best effort: the temporary file is hidden (a dot file) and named after this process.
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `write`'s bytes for `path` into a synced temporary file beside it (through links), or, for a device or
/// FIFO, into `path` itself.
pub(crate) fn stage(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), String>,
) -> Result<StagedFile, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err("is a folder".into()),
        Ok(m) if !m.is_file() => {
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| format!("cannot open for writing: {e}"))?;
            write(&mut file)?;
            return Ok(StagedFile {
                tmp: None,
                target: path.to_path_buf(),
                #[cfg(unix)]
                _pending: None,
            });
        }
        _ => {}
    }
    let target = through_links(path);
    let name = target
        .file_name()
        .ok_or_else(|| "the path does not name a file".to_string())?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    #[cfg(unix)]
    let pending = pending_temps::PendingTemp::register(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| format!("cannot create temporary file {}: {e}", tmp.display()))?;
    // From here the guard removes the temporary file on every failure.
    let staged = StagedFile {
        tmp: Some(tmp),
        target,
        #[cfg(unix)]
        _pending: Some(pending),
    };
    if let Ok(existing) = std::fs::metadata(&staged.target) {
        // Replacing a file keeps its permissions, as writing into it would.
        file.set_permissions(existing.permissions())
            .map_err(|e| format!("cannot copy the permissions of the file it replaces: {e}"))?;
    }
    write(&mut file)?;
    file.sync_all().map_err(|e| format!("sync: {e}"))?;
    Ok(staged)
}

/// The file a chain of symbolic links at `path` ends at (`path` itself when it is not a link; a dangling link's
/// target, resolved beside the link).
fn through_links(path: &Path) -> PathBuf {
    let mut at = path.to_path_buf();
    // A bounded walk: a loop of links ends here and fails at the rename with the OS's own message.
    for _ in 0..40 {
        match std::fs::read_link(&at) {
            Ok(next) => {
                at = match at.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                }
            }
            Err(_) => break,
        }
    }
    at
}
