//! The one place Rust errors become Python exceptions.
//!
//! They become the classes of `pylon.errors`, so Python code catches one
//! tree whatever layer failed: engine failures are `EngineError`, a failed
//! cap call is `CapError` with a `kind` attribute holding the WIT case
//! (`"trapped"`, `"limit-exceeded"`, ...).

use pyo3::prelude::*;

use crate::bindings::DynError;
use crate::cache::DigestMismatch;
use crate::limits::{Stop, Stopped};

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

/// An engine failure as its `pylon.errors` class: a stopped run is
/// `GuestTimeout` / `GuestInterrupted` (with `.seconds`), a blob that does
/// not match its digest is `DigestMismatch`, anything else (compile, link,
/// instantiate, trap) is `EngineError`. A Python exception already pending
/// (a `KeyboardInterrupt` raised in a resolver) is passed on unchanged.
pub fn engine_error(err: wasmtime::Error) -> PyErr {
    Python::attach(|py| {
        if let Some(pending) = PyErr::take(py) {
            return pending;
        }
        if let Some(stopped) = err.downcast_ref::<Stopped>() {
            let class = match stopped.why {
                Stop::TimedOut => "GuestTimeout",
                Stop::Interrupted => "GuestInterrupted",
                Stop::OutOfFuel => "GuestOutOfFuel",
            };
            let e = pylon_error(py, class, format!("the guest {stopped}"));
            let _ = e.value(py).setattr("seconds", stopped.after.as_secs_f64());
            return e;
        }
        if let Some(bad) = err.downcast_ref::<DigestMismatch>() {
            let args = (
                bad.expected.clone(),
                bad.found.clone(),
                bad.path.display().to_string(),
            );
            if let Ok(cls) = py
                .import("pylon.errors")
                .and_then(|m| m.getattr("DigestMismatch"))
            {
                if let Ok(instance) = cls.call1(args) {
                    return PyErr::from_value(instance);
                }
            }
        }
        pylon_error(py, "EngineError", format!("{err:#}"))
    })
}

/// A failed cap call as `CapError`, its WIT case in `.kind`.
pub fn cap_error(err: DynError) -> PyErr {
    Python::attach(|py| {
        let e = pylon_error(py, "CapError", err.message().to_string());
        let _ = e.value(py).setattr("kind", err.kind());
        e
    })
}
