//! Durable file writes for authoritative material (CA keys and certificates, the token ledger).
//!
//! Every write goes to a temporary file in the same directory, is flushed with `fsync`, renamed
//! over the target and followed by an `fsync` of the directory, so that a crash leaves either the
//! old or the new content, never a torn file. Private material is created owner-only (0600) and
//! directories holding it owner-only (0700).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of files holding private keys or secrets.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of files anyone on the machine may read (certificates, bundles).
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of directories holding private material.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// A file-system operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FsError {
    /// What was being done ("write", "read", "create directory", ...).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    pub(crate) fn new(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Creates `dir` (and its parents) if missing, and makes it owner-only.
pub fn create_private_dir(dir: &Path) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|e| FsError::new("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
        .map_err(|e| FsError::new("set permissions of", dir, e))
}

/// Writes `contents` to `path` atomically with the given permission `mode`: temporary file,
/// fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    write_atomic_with(path, mode, |out| out.write_all(contents))
}

/// [`write_atomic`] with the contents written by `write` as they are produced, through a
/// buffer, so that a large file is never held in memory whole.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let result = write_then_rename(&tmp, path, write, mode);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir)
}

fn write_then_rename(
    tmp: &Path,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    mode: u32,
) -> Result<(), FsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| FsError::new("create", tmp, e))?;
    // The umask may have narrowed the mode; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| FsError::new("set permissions of", tmp, e))?;
    let mut buffered = BufWriter::with_capacity(64 * 1024, &mut file);
    write(&mut buffered)
        .and_then(|()| buffered.flush())
        .map_err(|e| FsError::new("write", tmp, e))?;
    drop(buffered);
    file.sync_all().map_err(|e| FsError::new("fsync", tmp, e))?;
    drop(file);
    fs::rename(tmp, path).map_err(|e| FsError::new("rename into", path, e))
}

/// Flushes a directory's entries (a completed rename) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("fsync directory", dir, e))
}

/// Reads a whole file as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String, FsError> {
    fs::read_to_string(path).map_err(|e| FsError::new("read", path, e))
}

fn unique_suffix() -> u64 {
    let mut bytes = [0u8; 8];
    // A failing system RNG only makes the name less unique; `create_new` still refuses clashes.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
pub(crate) mod test_dir {
    //! A temporary directory removed on drop, for tests.
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct TestDir(PathBuf);

    impl TestDir {
        pub fn new(name: &str) -> Self {
            let mut bytes = [0u8; 8];
            aws_lc_rs::rand::fill(&mut bytes).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "strait-certs-{name}-{}-{:016x}",
                std::process::id(),
                u64::from_le_bytes(bytes)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = test_dir::TestDir::new("fs");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", PRIVATE_FILE_MODE).unwrap();
        write_atomic(&path, b"two", PRIVATE_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn private_dir_is_owner_only() {
        let dir = test_dir::TestDir::new("fs-dir");
        let sub = dir.path().join("ca");
        create_private_dir(&sub).unwrap();
        let mode = fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
