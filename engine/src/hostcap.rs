//! Caps served by the embedding host's own Python code.
//!
//! An application hands `pylon.Sandbox(caps={"kv": obj})` an object; the
//! guest resolves `"kv"` like any other cap and every `invoke` becomes a call
//! of a Python handler `handler(method, payload) -> bytes`. The handler (see
//! `pylon.hostcaps`) owns the policy: CBOR decoding, which methods exist,
//! which exceptions the guest may see. This side owns the mechanism: the run's
//! instance budget, the method and payload limits every cap has, and turning
//! the handler's answer into the WIT result.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use wasmtime::Result;

use crate::bindings::DynError;
use crate::limits::{stop_for, InstanceSlot, RunControl};
use crate::provider::{check_request, LiveProvider};

/// What a resolver returns for a cap the host serves itself.
#[pyclass(module = "pylon._engine", frozen, from_py_object)]
#[derive(Clone)]
pub struct HostCapSpec {
    /// The cap's name, as the guest resolves it.
    #[pyo3(get)]
    pub name: String,
    /// `handler(method: str, payload: bytes) -> bytes`.
    pub handler: Arc<Py<PyAny>>,
    /// Largest request and reply, bytes.
    #[pyo3(get)]
    pub max_payload_bytes: u64,
}

#[pymethods]
impl HostCapSpec {
    #[new]
    #[pyo3(signature = (*, name, handler, max_payload_bytes))]
    fn py_new(name: String, handler: Py<PyAny>, max_payload_bytes: u64) -> Self {
        HostCapSpec {
            name,
            handler: Arc::new(handler),
            max_payload_bytes,
        }
    }

    fn __repr__(&self) -> String {
        format!("HostCapSpec(name={:?})", self.name)
    }
}

/// A resolved host cap, holding one slot of its run's instance budget.
pub struct HostCap {
    spec: HostCapSpec,
    _slot: InstanceSlot,
}

impl HostCap {
    /// The live host cap for `spec`.
    pub fn new(spec: HostCapSpec, slot: InstanceSlot) -> Self {
        HostCap { spec, _slot: slot }
    }

    /// Calls the handler. The outer error stops the run (a `KeyboardInterrupt`
    /// or `SystemExit` in the handler, or the run's own stop); the inner one
    /// is what the guest sees.
    fn invoke(
        &self,
        method: &str,
        payload: &[u8],
        control: &RunControl,
    ) -> Result<Result<Vec<u8>, DynError>> {
        let name = &self.spec.name;
        let limit = self.spec.max_payload_bytes;
        if let Some(bad) = check_request(name, method, payload, limit) {
            return Ok(Err(bad));
        }
        let answer = Python::attach(|py| {
            let reply = self
                .spec
                .handler
                .call1(py, (method, PyBytes::new(py, payload)));
            match reply {
                Ok(obj) => match obj.extract::<&[u8]>(py) {
                    Ok(bytes) if bytes.len() as u64 > limit => {
                        Ok(Err(DynError::LimitExceeded(format!(
                            "reply of {} bytes exceeds cap '{name}''s limit of {limit} bytes",
                            bytes.len()
                        ))))
                    }
                    Ok(bytes) => Ok(Ok(bytes.to_vec())),
                    Err(_) => Ok(Err(DynError::Trapped(format!(
                        "host cap '{name}' answered something other than bytes"
                    )))),
                },
                Err(err) if !err.is_instance_of::<pyo3::exceptions::PyException>(py) => {
                    Err(stop_for(py, err))
                }
                Err(err) => Ok(Err(guest_error(py, name, err))),
            }
        })?;
        // A stop requested while the host's code ran takes effect now.
        control.check()?;
        Ok(answer)
    }
}

/// The handler's exception as the guest sees it: its `dynlink_kind` case and
/// text when it carries one (the handler chose what to tell the guest), else
/// a fixed text (its message may hold host details) while the host's stderr
/// gets the traceback.
fn guest_error(py: Python<'_>, name: &str, err: PyErr) -> DynError {
    let value = err.value(py);
    if let Ok(kind) = value
        .getattr("dynlink_kind")
        .and_then(|k| k.extract::<String>())
    {
        let message = value
            .str()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| format!("host cap '{name}' refused the call"));
        return DynError::from_kind(&kind, message);
    }
    err.print(py);
    DynError::Trapped(format!("host cap '{name}' failed (the host reported why)"))
}

/// The host side of one `instance` resource: a wasm provider in its own
/// Store, or a cap the embedding host serves.
pub enum CapInstance {
    /// A component from the plan.
    Wasm(LiveProvider),
    /// The embedding host's Python object.
    Host(HostCap),
}

impl CapInstance {
    /// Calls `method`; see [`LiveProvider::invoke`].
    pub fn invoke(
        &mut self,
        method: &str,
        payload: &[u8],
        control: &RunControl,
    ) -> Result<Result<Vec<u8>, DynError>> {
        match self {
            CapInstance::Wasm(live) => live.invoke(method, payload),
            CapInstance::Host(host) => host.invoke(method, payload, control),
        }
    }

    /// The cap's typed Python shim, if it ships one (host caps do not).
    pub fn shim(&self) -> Option<&str> {
        match self {
            CapInstance::Wasm(live) => live.shim(),
            CapInstance::Host(_) => None,
        }
    }
}
