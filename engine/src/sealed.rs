//! Artifact bytes in memory nobody can change: a sealed `memfd`.
//!
//! A compiled artifact must be checked on bytes that cannot change between
//! the check and their use as code. Reading a 60 MB artifact into a `Vec`
//! and letting wasmtime copy it again costs ~70 ms here (two fresh buffers,
//! page fault by page fault). Instead the kernel copies the file into an
//! anonymous memory file (`copy_file_range`/`sendfile`), which is then
//! sealed against every write, shrink and grow (`F_SEAL_WRITE`...): from
//! then on its bytes are fixed for everyone, this process included. The
//! tag is checked on a read-only mapping of those sealed bytes, and wasmtime
//! maps the same sealed file (through `/proc/self/fd`), so what runs is
//! exactly what was checked, without a second copy.
//!
//! Linux only; elsewhere (or when memfds are unavailable) callers fall back
//! to plain bytes in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// Sealed bytes, mapped read-only for as long as this lives.
pub struct SealedBytes {
    file: File,
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and its bytes are sealed; sharing a
// pointer to immutable memory between threads is sound.
unsafe impl Send for SealedBytes {}
unsafe impl Sync for SealedBytes {}

impl SealedBytes {
    /// Copies `src` from byte `offset` to its end into a sealed memfd.
    ///
    /// # Errors
    /// When memfds or sealing are unavailable, or the copy fails.
    pub fn copy_from(src: &mut File, offset: u64) -> std::io::Result<Self> {
        // SAFETY: a valid NUL-terminated name and flags; the result is checked.
        let fd = unsafe {
            libc::memfd_create(
                c"pylon-artifact".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let mut file = unsafe { File::from_raw_fd(fd) };
        src.seek(SeekFrom::Start(offset))?;
        // std turns this into copy_file_range / sendfile between two files.
        let len = std::io::copy(&mut src.take(u64::MAX), &mut file)?;
        let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::FileTooLarge)?;
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if len == 0 {
            return Ok(SealedBytes {
                file,
                ptr: std::ptr::null_mut(),
                len,
            });
        }
        // SAFETY: a read-only shared mapping of `len` bytes of a file we own.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SealedBytes { file, ptr, len })
    }

    /// The sealed bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives,
        // and the seals keep them from changing.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// A path that opens the same sealed file (for loaders that take a path).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

impl Drop for SealedBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the mapping made in `copy_from`.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn copies_the_tail_and_refuses_writes() {
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(b"HEADERbody bytes").unwrap();
        let sealed = SealedBytes::copy_from(&mut src, 6).unwrap();
        assert_eq!(sealed.bytes(), b"body bytes");
        let mut again = std::fs::OpenOptions::new()
            .write(true)
            .open(sealed.proc_path())
            .unwrap_or_else(|_| File::open(sealed.proc_path()).unwrap());
        assert!(
            again.write_all(b"x").is_err(),
            "a sealed memfd must refuse writes"
        );
        assert_eq!(std::fs::read(sealed.proc_path()).unwrap(), b"body bytes");
    }
}
