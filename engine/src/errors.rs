//! The one place Rust errors become Python exceptions.
//!
//! They become the classes of `pylon.errors`, so Python code catches one
//! tree whatever layer failed: engine failures are `EngineError`, a failed
//! cap call is `CapError` with a `kind` attribute holding the WIT case
//! (`"trapped"`, `"limit-exceeded"`, ...).

use pyo3::prelude::*;

use crate::bindings::DynError;

fn pylon_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    match py.import("pylon.errors").and_then(|m| m.getattr(class)) {
        Ok(cls) => match cls.call1((message.clone(),)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        // Only when `pylon` itself is missing (the extension used alone).
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
    }
}

/// An engine failure (compile, link, instantiate, trap) as `EngineError`.
pub fn engine_error(err: wasmtime::Error) -> PyErr {
    Python::attach(|py| pylon_error(py, "EngineError", format!("{err:#}")))
}

/// A failed cap call as `CapError`, its WIT case in `.kind`.
pub fn cap_error(err: DynError) -> PyErr {
    Python::attach(|py| {
        let e = pylon_error(py, "CapError", err.message().to_string());
        let _ = e.value(py).setattr("kind", err.kind());
        e
    })
}
