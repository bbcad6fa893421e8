//! The compile cache: the second load of anything compiles nothing.
//!
//! Keys are the blob's sha256 digest plus a hash of the engine's settings and
//! wasmtime's version, so a config change or an upgrade never loads stale
//! machine code. Entries live in memory for the life of the engine and on
//! disk as `<dir>/<digest hex>-<engine key>.{cwasm,cmod}`, written atomically
//! (temp file, fsync, rename) so a crash never leaves half an artifact.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::error::Context;
use wasmtime::Result;
use wasmtime::{Engine, Module};

/// Whether a load compiled or came from the cache (reported to benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Already in this process's memory.
    Memory,
    /// Deserialized from the disk cache.
    Disk,
    /// Compiled now (and written to the disk cache).
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

/// Compiled artifacts keyed by content digest and engine settings.
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
    components: Mutex<HashMap<String, Component>>,
    modules: Mutex<HashMap<String, Module>>,
}

impl CompileCache {
    /// A cache for `engine`; `dir` of `None` keeps it in memory only.
    ///
    /// # Errors
    /// When `dir` cannot be created.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create compile cache {}", dir.display()))?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        crate::py_api::WASMTIME_VERSION.hash(&mut hasher);
        Ok(CompileCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            components: Mutex::default(),
            modules: Mutex::default(),
        })
    }

    /// The component at `path`, whose content digest is `digest`
    /// (`sha256:<hex>`; empty to have it computed here).
    ///
    /// # Errors
    /// When the file cannot be read or wasmtime cannot compile it.
    pub fn component(
        &self,
        engine: &Engine,
        path: &Path,
        digest: &str,
    ) -> Result<(Component, Origin)> {
        let key = self.key(path, digest)?;
        if let Some(c) = self.components.lock().unwrap().get(&key) {
            return Ok((c.clone(), Origin::Memory));
        }
        let (component, origin) = match self.disk_path(&key, "cwasm") {
            // SAFETY: the cache folder is written only by this module, from
            // bytes wasmtime itself serialized, under a key that includes the
            // engine's compatibility hash.
            Some(p) if p.exists() => match unsafe { Component::deserialize_file(engine, &p) } {
                Ok(c) => (c, Origin::Disk),
                Err(_) => (self.compile_component(engine, path, &p)?, Origin::Compiled),
            },
            Some(p) => (self.compile_component(engine, path, &p)?, Origin::Compiled),
            None => (Component::from_file(engine, path)?, Origin::Compiled),
        };
        self.components
            .lock()
            .unwrap()
            .insert(key, component.clone());
        Ok((component, origin))
    }

    /// A core module, as [`CompileCache::component`] does for components.
    ///
    /// # Errors
    /// When the file cannot be read or wasmtime cannot compile it.
    pub fn module(&self, engine: &Engine, path: &Path, digest: &str) -> Result<(Module, Origin)> {
        let key = self.key(path, digest)?;
        if let Some(m) = self.modules.lock().unwrap().get(&key) {
            return Ok((m.clone(), Origin::Memory));
        }
        let (module, origin) = match self.disk_path(&key, "cmod") {
            // SAFETY: as for components above.
            Some(p) if p.exists() => match unsafe { Module::deserialize_file(engine, &p) } {
                Ok(m) => (m, Origin::Disk),
                Err(_) => (self.compile_module(engine, path, &p)?, Origin::Compiled),
            },
            Some(p) => (self.compile_module(engine, path, &p)?, Origin::Compiled),
            None => (Module::from_file(engine, path)?, Origin::Compiled),
        };
        self.modules.lock().unwrap().insert(key, module.clone());
        Ok((module, origin))
    }

    /// Whether `digest` is compiled already (in memory or on disk), so that
    /// loading it compiles nothing and reads no wasm.
    pub fn is_cached(&self, digest: &str, core: bool) -> bool {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return false;
        };
        let key = format!("{hex}-{}", self.engine_key);
        let in_memory = if core {
            self.modules.lock().unwrap().contains_key(&key)
        } else {
            self.components.lock().unwrap().contains_key(&key)
        };
        in_memory
            || self
                .disk_path(&key, if core { "cmod" } else { "cwasm" })
                .is_some_and(|p| p.exists())
    }

    fn key(&self, path: &Path, digest: &str) -> Result<String> {
        let hex = match digest.strip_prefix("sha256:") {
            Some(hex) if !hex.is_empty() => hex.to_string(),
            _ => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                hex::encode(Sha256::digest(&bytes))
            }
        };
        Ok(format!("{hex}-{}", self.engine_key))
    }

    fn disk_path(&self, key: &str, ext: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key}.{ext}")))
    }

    fn compile_component(&self, engine: &Engine, src: &Path, dst: &Path) -> Result<Component> {
        let component = Component::from_file(engine, src)
            .with_context(|| format!("cannot compile component {}", src.display()))?;
        write_atomically(dst, &component.serialize()?)?;
        Ok(component)
    }

    fn compile_module(&self, engine: &Engine, src: &Path, dst: &Path) -> Result<Module> {
        let module = Module::from_file(engine, src)
            .with_context(|| format!("cannot compile module {}", src.display()))?;
        write_atomically(dst, &module.serialize()?)?;
        Ok(module)
    }
}

fn write_atomically(dst: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dst.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dst)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write compile cache entry {}", dst.display()))
}
