//! Host bindings generated from `wit/dynlink` by wasmtime's `bindgen!`.

/// The guest-facing side: `compose:dynlink/linker` as the host implements it.
pub mod host {
    wasmtime::component::bindgen!({
        world: "dynlink-host",
        path: "../wit/dynlink",
        // Trappable: a run being stopped (timeout, Ctrl-C) must unwind the
        // guest from inside a host call, not come back as a cap error.
        imports: { default: trappable },
        with: {
            "compose:dynlink/linker.instance": crate::hostcap::CapInstance,
        },
    });
}

/// The provider-facing side: what every cap exports.
pub mod cap {
    wasmtime::component::bindgen!({
        world: "cap",
        path: "../wit/dynlink",
    });
}

pub use cap::compose::dynlink::types::Error as CapError;
pub use host::compose::dynlink::types::Error as DynError;

/// The two generated copies of the shared `error` variant are distinct Rust
/// types; a provider's error is passed to the guest unchanged.
impl From<CapError> for DynError {
    fn from(e: CapError) -> Self {
        match e {
            CapError::Denied(m) => DynError::Denied(m),
            CapError::NotFound(m) => DynError::NotFound(m),
            CapError::BadMethod(m) => DynError::BadMethod(m),
            CapError::Trapped(m) => DynError::Trapped(m),
            CapError::LimitExceeded(m) => DynError::LimitExceeded(m),
            CapError::BadPayload(m) => DynError::BadPayload(m),
        }
    }
}

impl DynError {
    /// The WIT case name, as Python sees it (`"limit-exceeded"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            DynError::Denied(_) => "denied",
            DynError::NotFound(_) => "not-found",
            DynError::BadMethod(_) => "bad-method",
            DynError::Trapped(_) => "trapped",
            DynError::LimitExceeded(_) => "limit-exceeded",
            DynError::BadPayload(_) => "bad-payload",
        }
    }

    /// The human message carried by any case.
    pub fn message(&self) -> &str {
        match self {
            DynError::Denied(m)
            | DynError::NotFound(m)
            | DynError::BadMethod(m)
            | DynError::Trapped(m)
            | DynError::LimitExceeded(m)
            | DynError::BadPayload(m) => m,
        }
    }

    /// Builds a case from its WIT name; unknown names become `not-found`.
    pub fn from_kind(kind: &str, message: String) -> Self {
        match kind {
            "denied" => DynError::Denied(message),
            "bad-method" => DynError::BadMethod(message),
            "trapped" => DynError::Trapped(message),
            "limit-exceeded" => DynError::LimitExceeded(message),
            "bad-payload" => DynError::BadPayload(message),
            _ => DynError::NotFound(message),
        }
    }
}
