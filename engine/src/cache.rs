//! The compile cache: the second load of anything compiles nothing, and no
//! load ever runs bytes the engine has not verified.
//!
//! Two rules make it safe to keep machine code on disk:
//!
//! * **Only verified wasm is compiled.** A blob is read into memory once,
//!   its sha256 is compared with the digest the caller names (the plan's),
//!   and those same bytes are compiled ([`read_verified`]). Nothing is
//!   compiled from a path that could change after it was hashed.
//! * **Only authenticated artifacts are deserialized.** wasmtime does not
//!   validate a precompiled artifact: any bytes accepted there are native
//!   code. Every artifact this cache writes carries a keyed BLAKE3 tag over
//!   its cache key and its bytes, under a per-install secret (`artifact.key`,
//!   `0600`, beside the artifacts, in a `0700` folder no guest may open). On
//!   load the file's code is copied into memory that can no longer change
//!   (a sealed memfd, [`crate::sealed`]; else a private buffer), the tag is
//!   checked on those bytes, and wasmtime loads exactly them. The artifact
//!   *file* is never handed to wasmtime: `deserialize_file` maps it and would
//!   run whatever it holds later. A file that fails is deleted and rebuilt
//!   from the verified blob.
//!
//! Keys are `<blob sha256 hex>-<engine key>`, where the engine key is the
//! sha256 of wasmtime's compatibility hash and version and of our patches to
//! wasmtime's crates (engine/patches/, hashed by build.rs), so a config
//! change, an upgrade or a changed patch never loads stale code. The tag covers the key too: an
//! artifact renamed to another blob's key fails. Files are written through a
//! uniquely named temp file (safe with concurrent threads and processes),
//! fsynced, then renamed into place.
//!
//! Why BLAKE3 and not HMAC-SHA256: both are MACs under a secret key (BLAKE3's
//! keyed mode is a PRF by design); the guest artifact is ~33 MB and read on
//! every run, and keyed BLAKE3 hashes it several times faster here, which
//! keeps artifact authentication inside the warm-run budget.

use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions};
use std::hash::Hasher;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::sealed::SealedBytes;
use wasmtime::component::Component;
use wasmtime::error::Context;
use wasmtime::{bail, format_err, Result};
use wasmtime::{Engine, Module};

/// First bytes of every artifact file: format and version.
const MAGIC: &[u8; 8] = b"PYLNART1";
/// Length of the authentication tag after [`MAGIC`].
const TAG_LEN: usize = 32;
/// Where the serialized code starts in an artifact file.
const HEADER_LEN: usize = MAGIC.len() + TAG_LEN;
/// Artifacts from this size on are checked in sealed memory ([`SealedBytes`]);
/// smaller ones are simply read into a buffer (cap artifacts are tens of KiB).
const SEAL_FROM_BYTES: usize = 4 << 20;
/// sha256 of engine/patches/ at build time (build.rs), part of every key.
const CRATE_PATCHES: &str = env!("PYLON_CRATE_PATCHES");
/// Name of the per-install secret inside the cache folder.
const KEY_FILE: &str = "artifact.key";

/// Whether a load compiled or came from the cache (reported to benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Already in this process's memory.
    Memory,
    /// Deserialized from an authenticated artifact on disk.
    Disk,
    /// Compiled now from verified bytes (and written to the disk cache).
    Compiled,
}

impl Origin {
    /// Lower-case name for Python.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Memory => "memory",
            Origin::Disk => "disk",
            Origin::Compiled => "compiled",
        }
    }
}

/// A blob's bytes did not hash to the digest they were named by.
#[derive(Debug)]
pub struct DigestMismatch {
    /// The digest the caller asked for.
    pub expected: String,
    /// The digest of the bytes found.
    pub found: String,
    /// The file that held them.
    pub path: PathBuf,
}

impl std::fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "digest mismatch for {}: expected {}, found {}",
            self.path.display(),
            self.expected,
            self.found
        )
    }
}

impl std::error::Error for DigestMismatch {}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Reads `path` once and checks its bytes against `digest` (`sha256:<hex>`);
/// an empty `digest` accepts the bytes and names them by their own hash.
/// Returns the bytes and their digest.
///
/// # Errors
/// When the file cannot be read, `digest` is malformed, or the bytes do not
/// match ([`DigestMismatch`]).
pub fn read_verified(path: &Path, digest: &str) -> Result<(Vec<u8>, String)> {
    if !digest.is_empty() {
        digest_hex(digest)?;
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let found = sha256_digest(&bytes);
    if !digest.is_empty() && found != digest {
        return Err(wasmtime::Error::new(DigestMismatch {
            expected: digest.to_string(),
            found,
            path: path.to_path_buf(),
        }));
    }
    Ok((bytes, found))
}

fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => bail!("not a digest: {digest:?} (expected sha256: and 64 lowercase hex digits)"),
    }
}

/// An authenticated artifact's code, in memory that no longer changes.
pub enum Code {
    /// In a sealed memfd (Linux).
    Sealed(SealedBytes),
    /// In this process's own buffer (where memfds are unavailable).
    Bytes(Vec<u8>),
}

impl Code {
    fn bytes(&self) -> &[u8] {
        match self {
            Code::Sealed(sealed) => sealed.bytes(),
            Code::Bytes(bytes) => bytes,
        }
    }
}

/// What kind of artifact: part of the tag, so one cannot pass for the other.
#[derive(Clone, Copy)]
enum Kind {
    Component,
    Module,
}

impl Kind {
    fn ext(self) -> &'static str {
        match self {
            Kind::Component => "cwasm",
            Kind::Module => "cmod",
        }
    }
}

/// Compiled artifacts keyed by content digest and engine settings.
pub struct CompileCache {
    disk: Option<Disk>,
    engine_key: String,
    components: Mutex<HashMap<String, Component>>,
    modules: Mutex<HashMap<String, Module>>,
}

/// The on-disk half: a private folder and the secret that signs its files.
struct Disk {
    dir: PathBuf,
    key: [u8; 32],
}

/// Feeds a `Hash` impl into sha256, so the engine key is stable across Rust
/// releases (std's `DefaultHasher` promises no such thing).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the sha256 state is read")
    }
}

impl CompileCache {
    /// A cache for `engine`; `dir` of `None` keeps it in memory only.
    ///
    /// The folder is created `0700` and refused when another user owns it or
    /// can write it; the artifact key inside it is created `0600` on first
    /// use and refused when anyone else could read or write it.
    ///
    /// # Errors
    /// When `dir` or the key cannot be created, or either is unsafe.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self> {
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        hasher.write(crate::py_api::WASMTIME_VERSION.as_bytes());
        // Our patches to wasmtime's crates change the code it generates (the
        // fused adapters: engine/patches/), which the compatibility hash does
        // not cover; build.rs hashes them.
        hasher.write(CRATE_PATCHES.as_bytes());
        let engine_key = hex::encode(hasher.0.finalize());
        let disk = match dir {
            Some(dir) => {
                private_dir(&dir)?;
                remove_stale_temps(&dir);
                let key = load_or_create_key(&dir.join(KEY_FILE))?;
                Some(Disk { dir, key })
            }
            None => None,
        };
        Ok(CompileCache {
            disk,
            engine_key,
            components: Mutex::default(),
            modules: Mutex::default(),
        })
    }

    /// The component whose blob is at `path` and whose digest is `digest`.
    ///
    /// The blob is read only when there is no authenticated artifact for
    /// it; then it is verified against `digest` and compiled from the bytes
    /// read. An empty `digest` names the bytes by their own hash.
    ///
    /// # Errors
    /// When the blob cannot be read, does not match `digest`
    /// ([`DigestMismatch`]), or wasmtime cannot compile it.
    pub fn component(
        &self,
        engine: &Engine,
        path: &Path,
        digest: &str,
    ) -> Result<(Component, Origin)> {
        self.load(engine, &self.components, digest, || {
            read_verified(path, digest)
        })
    }

    /// The component of already verified `bytes` named `digest`.
    ///
    /// # Errors
    /// When wasmtime cannot compile it.
    pub fn component_from_verified(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, Origin)> {
        self.load(engine, &self.components, digest, || {
            Ok((bytes.to_vec(), digest.to_string()))
        })
    }

    /// A core module, as [`CompileCache::component`] does for components.
    ///
    /// # Errors
    /// As for [`CompileCache::component`].
    pub fn module(&self, engine: &Engine, path: &Path, digest: &str) -> Result<(Module, Origin)> {
        self.load(engine, &self.modules, digest, || {
            read_verified(path, digest)
        })
    }

    /// Whether `digest` is compiled already (in memory, or an artifact file
    /// exists on disk; it is authenticated when loaded).
    pub fn is_cached(&self, digest: &str, core: bool) -> bool {
        let Ok(hex) = digest_hex(digest) else {
            return false;
        };
        let key = self.key_for(hex);
        let in_memory = if core {
            self.modules.lock().unwrap().contains_key(&key)
        } else {
            self.components.lock().unwrap().contains_key(&key)
        };
        let kind = if core { Kind::Module } else { Kind::Component };
        in_memory || self.artifact_path(&key, kind).is_some_and(|p| p.is_file())
    }

    fn key_for(&self, hex: &str) -> String {
        format!("{hex}-{}", self.engine_key)
    }

    fn artifact_path(&self, key: &str, kind: Kind) -> Option<PathBuf> {
        self.disk
            .as_ref()
            .map(|d| d.dir.join(format!("{key}.{}", kind.ext())))
    }

    fn load<T: Compiled>(
        &self,
        engine: &Engine,
        memory: &Mutex<HashMap<String, T>>,
        digest: &str,
        read: impl FnOnce() -> Result<(Vec<u8>, String)>,
    ) -> Result<(T, Origin)> {
        // Without a digest the key is only known once the bytes are read.
        let mut read = Some(read);
        let (mut wasm, key) = if digest.is_empty() {
            let (bytes, found) = (read.take().unwrap())()?;
            let key = self.key_for(digest_hex(&found)?);
            (Some(bytes), key)
        } else {
            (None, self.key_for(digest_hex(digest)?))
        };
        if let Some(found) = memory.lock().unwrap().get(&key) {
            return Ok((found.clone(), Origin::Memory));
        }
        let artifact = self.artifact_path(&key, T::KIND);
        if let (Some(disk), Some(file)) = (&self.disk, &artifact) {
            if let Some(code) = disk.read_authentic(file, T::KIND, &key) {
                if let Ok(found) = load_code::<T>(engine, &code) {
                    memory.lock().unwrap().insert(key, found.clone());
                    return Ok((found, Origin::Disk));
                }
            }
        }
        let bytes = match (wasm.take(), read) {
            (Some(bytes), _) => bytes,
            (None, Some(read)) => read()?.0,
            (None, None) => unreachable!("the bytes were read above"),
        };
        let compiled = T::compile(engine, &bytes).context("cannot compile")?;
        if let (Some(disk), Some(file)) = (&self.disk, &artifact) {
            disk.write(file, T::KIND, &key, &compiled.serialize()?)?;
        }
        memory.lock().unwrap().insert(key, compiled.clone());
        Ok((compiled, Origin::Compiled))
    }
}

/// What the cache holds: compiled from wasm, written out, loaded back.
trait Compiled: Clone {
    const KIND: Kind;
    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Self>;
    fn serialize(&self) -> Result<Vec<u8>>;
    /// # Safety
    /// `code` must be an artifact this engine serialized (wasmtime checks
    /// only its header; anything else is arbitrary native code).
    unsafe fn deserialize(engine: &Engine, code: &[u8]) -> Result<Self>;
    /// # Safety
    /// As for `deserialize`, and the file must never change while in use.
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> Result<Self>;
}

impl Compiled for Component {
    const KIND: Kind = Kind::Component;
    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Self> {
        Component::new(engine, wasm)
    }
    fn serialize(&self) -> Result<Vec<u8>> {
        Component::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, code: &[u8]) -> Result<Self> {
        // SAFETY: the caller's contract.
        unsafe { Component::deserialize(engine, code) }
    }
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> Result<Self> {
        // SAFETY: the caller's contract.
        unsafe { Component::deserialize_file(engine, path) }
    }
}

impl Compiled for Module {
    const KIND: Kind = Kind::Module;
    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Self> {
        Module::new(engine, wasm)
    }
    fn serialize(&self) -> Result<Vec<u8>> {
        Module::serialize(self)
    }
    unsafe fn deserialize(engine: &Engine, code: &[u8]) -> Result<Self> {
        // SAFETY: the caller's contract.
        unsafe { Module::deserialize(engine, code) }
    }
    unsafe fn deserialize_file(engine: &Engine, path: &Path) -> Result<Self> {
        // SAFETY: the caller's contract.
        unsafe { Module::deserialize_file(engine, path) }
    }
}

/// Loads authenticated `code`.
fn load_code<T: Compiled>(engine: &Engine, code: &Code) -> Result<T> {
    // SAFETY: `code` passed `Disk::read_authentic`: this cache wrote it, from
    // wasm it verified and compiled with this engine's settings, and it can
    // no longer change: a sealed memfd (mapped by wasmtime through its
    // /proc/self/fd path, which names that same sealed file, never the
    // artifact file) or this process's own buffer.
    unsafe {
        match code {
            Code::Sealed(sealed) => T::deserialize_file(engine, &sealed.proc_path())
                .or_else(|_| T::deserialize(engine, sealed.bytes())),
            Code::Bytes(bytes) => T::deserialize(engine, bytes),
        }
    }
}

impl Disk {
    fn tag(&self, kind: Kind, key: &str, code: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(b"pylon-artifact-v1\0");
        mac.update(kind.ext().as_bytes());
        mac.update(b"\0");
        mac.update(key.as_bytes());
        mac.update(b"\0");
        if code.len() >= SEAL_FROM_BYTES {
            // Both cores: the guest's artifact is ~60 MB and checked on every run.
            mac.update_rayon(code);
        } else {
            // Small inputs: waking rayon's pool would cost more than it saves.
            mac.update(code);
        }
        mac.finalize()
    }

    /// The artifact's code, if the file carries a valid tag for it;
    /// otherwise the file is deleted (it will be rebuilt from the verified
    /// blob) and `None`. The code is checked where it will run from: sealed
    /// memory where the platform has it ([`SealedBytes`]), else a buffer.
    fn read_authentic(&self, file: &Path, kind: Kind, key: &str) -> Option<Code> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(file)
            .ok()?; // missing (the usual case) or unreadable
        let mut header = [0u8; HEADER_LEN];
        let big = f
            .metadata()
            .is_ok_and(|m| m.len() >= SEAL_FROM_BYTES as u64);
        let code = match f.read_exact(&mut header) {
            Ok(()) if header.starts_with(MAGIC) => {
                // A small artifact is cheaper to copy than to seal.
                match big.then(|| SealedBytes::copy_from(&mut f, HEADER_LEN as u64)) {
                    Some(Ok(sealed)) => Some(Code::Sealed(sealed)),
                    _ => {
                        let mut rest = Vec::new();
                        f.seek(std::io::SeekFrom::Start(HEADER_LEN as u64))
                            .and_then(|_| f.read_to_end(&mut rest))
                            .ok()
                            .map(|_| Code::Bytes(rest))
                    }
                }
            }
            _ => None,
        };
        let tag = blake3::Hash::from_bytes(header[MAGIC.len()..].try_into().unwrap());
        // blake3::Hash compares in constant time.
        match code {
            Some(code) if !code.bytes().is_empty() && tag == self.tag(kind, key, code.bytes()) => {
                Some(code)
            }
            _ => {
                let _ = std::fs::remove_file(file);
                None
            }
        }
    }

    fn write(&self, file: &Path, kind: Kind, key: &str, code: &[u8]) -> Result<()> {
        let tag = self.tag(kind, key, code);
        let mut out = Vec::with_capacity(HEADER_LEN + code.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(code);
        write_atomically(&self.dir, file, &out)
    }
}

/// Creates `dir` `0700` if missing; refuses it unless we own it and only we
/// can write it.
fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create compile cache {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    check_owned(dir, &meta, 0o022, "writable by other users")
}

fn check_owned(path: &Path, meta: &std::fs::Metadata, forbidden: u32, what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        bail!(
            "refusing to use {}: it is owned by uid {}, not by you (uid {uid})",
            path.display(),
            meta.uid()
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & forbidden != 0 {
        bail!(
            "refusing to use {}: it is {what} (mode {mode:o})",
            path.display()
        );
    }
    Ok(())
}

/// The per-install artifact key: read it, or create it exactly once even
/// when several processes start together (written to a temp file, then
/// hard-linked into place, which fails rather than replaces).
fn load_or_create_key(path: &Path) -> Result<[u8; 32]> {
    let dir = path.parent().expect("the key lives in the cache folder");
    for _ in 0..2 {
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(mut f) => {
                let meta = f.metadata()?;
                check_owned(path, &meta, 0o077, "readable or writable by other users")?;
                let mut data = Vec::new();
                f.read_to_end(&mut data)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                return <[u8; 32]>::try_from(data.as_slice()).map_err(|_| {
                    format_err!(
                        "refusing to use {}: it is not a Pylon artifact key (32 bytes); delete it \
                         and Pylon makes a new one (compiled artifacts are then rebuilt)",
                        path.display()
                    )
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| {
                    wasmtime::format_err!("no randomness for the artifact key: {e}")
                })?;
                let tmp = tempfile::Builder::new()
                    .prefix(".tmp-key-")
                    .permissions(std::fs::Permissions::from_mode(0o600))
                    .tempfile_in(dir)?;
                tmp.as_file().write_all(&key)?;
                tmp.as_file().sync_all()?;
                match std::fs::hard_link(tmp.path(), path) {
                    Ok(()) => return Ok(key),
                    // Another process won the race: read its key.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot create {}", path.display()))
                    }
                }
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        }
    }
    bail!("cannot read or create {}", path.display())
}

/// Removes temp files a killed process left behind (a write takes seconds;
/// an hour-old temp file has no writer). Best effort.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(".tmp-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn write_atomically(dir: &Path, dst: &Path, bytes: &[u8]) -> Result<()> {
    (|| -> Result<()> {
        // A unique name per call: threads and processes never share a temp file.
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(dst)?;
        Ok(())
    })()
    .with_context(|| format!("cannot write compile cache entry {}", dst.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    const WAT: &str = "(module (func (export \"f\") (result i32) i32.const 7))";

    fn blob(dir: &Path) -> (PathBuf, String) {
        let wasm = wat::parse_str(WAT).unwrap();
        let path = dir.join("blob.wasm");
        std::fs::write(&path, &wasm).unwrap();
        (path, sha256_digest(&wasm))
    }

    #[test]
    fn second_load_comes_from_disk_and_tampering_recompiles() {
        let tmp = tempfile::tempdir().unwrap();
        let cache_dir = tmp.path().join("compiled");
        let (path, digest) = blob(tmp.path());
        let e = engine();
        let cache = CompileCache::new(&e, Some(cache_dir.clone())).unwrap();
        assert_eq!(
            cache.module(&e, &path, &digest).unwrap().1,
            Origin::Compiled
        );
        let cache = CompileCache::new(&e, Some(cache_dir.clone())).unwrap();
        assert_eq!(cache.module(&e, &path, &digest).unwrap().1, Origin::Disk);

        // Flip one byte of the code: the tag fails, the file goes, it recompiles.
        let artifact = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "cmod"))
            .unwrap();
        let mut bytes = std::fs::read(&artifact).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&artifact, &bytes).unwrap();
        let cache = CompileCache::new(&e, Some(cache_dir.clone())).unwrap();
        assert_eq!(
            cache.module(&e, &path, &digest).unwrap().1,
            Origin::Compiled
        );
    }

    #[test]
    fn a_big_artifact_is_checked_in_sealed_memory_and_tampering_recompiles() {
        let tmp = tempfile::tempdir().unwrap();
        let cache_dir = tmp.path().join("compiled");
        // A data segment makes the artifact larger than SEAL_FROM_BYTES.
        let data = "\\01".repeat(SEAL_FROM_BYTES + 4096);
        let wat = format!("(module (memory 128) (data (i32.const 0) \"{data}\"))");
        let wasm = wat::parse_str(&wat).unwrap();
        let path = tmp.path().join("big.wasm");
        std::fs::write(&path, &wasm).unwrap();
        let digest = sha256_digest(&wasm);
        let e = engine();
        let cache = CompileCache::new(&e, Some(cache_dir.clone())).unwrap();
        assert_eq!(
            cache.module(&e, &path, &digest).unwrap().1,
            Origin::Compiled
        );
        let artifact = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "cmod"))
            .unwrap();
        assert!(std::fs::metadata(&artifact).unwrap().len() >= SEAL_FROM_BYTES as u64);
        let cache = CompileCache::new(&e, Some(cache_dir.clone())).unwrap();
        assert_eq!(cache.module(&e, &path, &digest).unwrap().1, Origin::Disk);
        let mut bytes = std::fs::read(&artifact).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&artifact, &bytes).unwrap();
        let cache = CompileCache::new(&e, Some(cache_dir)).unwrap();
        assert_eq!(
            cache.module(&e, &path, &digest).unwrap().1,
            Origin::Compiled
        );
    }

    #[test]
    fn a_blob_that_does_not_match_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _) = blob(tmp.path());
        let e = engine();
        let cache = CompileCache::new(&e, None).unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = cache.module(&e, &path, &wrong).unwrap_err();
        assert!(err.downcast_ref::<DigestMismatch>().is_some());
    }

    #[test]
    fn engine_key_is_a_sha256() {
        let cache = CompileCache::new(&engine(), None).unwrap();
        assert_eq!(cache.engine_key.len(), 64);
    }

    #[test]
    fn a_world_writable_cache_or_readable_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(CompileCache::new(&engine(), Some(dir.clone())).is_err());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        CompileCache::new(&engine(), Some(dir.clone())).unwrap();
        let key = dir.join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(CompileCache::new(&engine(), Some(dir)).is_err());
    }
}
