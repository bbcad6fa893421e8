//! Hashes Pylon's patches to pinned crates (engine/patches/) into
//! `PYLON_CRATE_PATCHES`, which the compile cache folds into its key
//! (src/cache.rs): a patched adapter generator emits different machine code
//! for the same component, and wasmtime's own compatibility hash does not see
//! patches, so an artifact compiled by a differently patched engine must not
//! be loaded.
use sha2::{Digest, Sha256};
use std::path::Path;

fn main() {
    let dir = Path::new("patches");
    println!("cargo:rerun-if-changed=patches");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut hasher = Sha256::new();
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let bytes = std::fs::read(path).expect("cannot read a patch file");
        // Length-prefixed, so no two different sets hash the same.
        for part in [name.as_bytes(), bytes.as_slice()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=PYLON_CRATE_PATCHES={digest}");
}
