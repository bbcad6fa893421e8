//! Pylon's engine: the part of Pylon that must be fast, exposed to Python.
//!
//! Python owns policy (plans, the blob store, trust); this crate owns the
//! mechanism: one wasmtime [`Engine`](wasmtime::Engine) with a compile cache,
//! the guest's Store, one Store per resolved provider, the
//! `compose:dynlink/linker` host implementation, and per-provider limits.
//!
//! How the pieces relate:
//!
//! * [`engine::Shared`] wraps the wasmtime engine, the epoch ticker and the
//!   [`cache::CompileCache`]; every other type holds an `Arc` to it.
//! * [`guest::run_guest`] instantiates `pylon.wasm` in a Store whose data is a
//!   [`linker::GuestState`]. When the guest calls `resolve-by-id`, the state
//!   asks the Python resolver (trust gate + fetch) for a [`provider::ProviderSpec`]
//!   and instantiates a [`provider::LiveProvider`] in a Store of its own.
//! * `invoke` on an instance resource runs the provider under its limits;
//!   a trap kills that provider only.
//!
//! Errors cross into Python in one place, [`errors`].
#![deny(missing_docs)]

mod bindings;
mod cache;
mod core_p1;
mod engine;
mod errors;
mod guest;
mod handles;
mod hostcap;
mod limits;
mod linker;
mod output;
mod provider;
mod py_api;
mod sealed;

use pyo3::prelude::*;

/// The Python module `pylon._engine`: the whole Rust surface in one place.
#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<py_api::Engine>()?;
    m.add_class::<py_api::Provider>()?;
    m.add_class::<py_api::Interrupt>()?;
    m.add_class::<py_api::Guest>()?;
    m.add_class::<py_api::Session>()?;
    m.add_class::<py_api::Outcome>()?;
    m.add_class::<provider::ProviderSpec>()?;
    m.add_class::<hostcap::HostCapSpec>()?;
    m.add("WASMTIME_VERSION", "48.0.8")?;
    Ok(())
}
