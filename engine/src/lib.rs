use pyo3::prelude::*;
#[pymodule]
fn _engine(_m: &Bound<'_, PyModule>) -> PyResult<()> { let _ = wasmtime::Engine::default(); let _ = wasmtime_wasi::WasiCtx::builder(); Ok(()) }
