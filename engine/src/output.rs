//! Where a guest's stdout and stderr go: the host's own, a bounded buffer
//! the embedding host reads after the run, or a Python callback per write.
//!
//! wasmtime-wasi's `MemoryOutputPipe` traps the guest once its capacity is
//! reached; a guest that prints too much should lose output, not its run, so
//! the capture here keeps the first `limit` bytes and counts the rest.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What the embedding host asked for one stream.
pub enum OutputMode {
    /// The host process's own stdout / stderr (the CLI).
    Inherit,
    /// Kept in memory, at most this many bytes.
    Capture(usize),
    /// Each write handed to `callback(bytes)` as it happens.
    Stream(Py<PyAny>),
    /// Written straight to this file (the CLI's server: the stream of the
    /// `composectl run` process that handed it over).
    File(std::fs::File),
}

/// What the guest reads on stdin.
pub enum InputMode {
    /// The host's stdin when both outputs are inherited (the CLI), else nothing.
    Default,
    /// These bytes, then end of file (the embedding API).
    Bytes(Vec<u8>),
    /// This file (the CLI's server: the stdin of the `composectl run` process).
    File(std::fs::File),
}

/// A guest output stream that captures or forwards what the guest writes.
#[derive(Clone)]
pub struct Output {
    state: Arc<Mutex<State>>,
}

struct State {
    kept: Vec<u8>,
    limit: usize,
    dropped: u64,
    callback: Option<Arc<Py<PyAny>>>,
}

impl Output {
    /// A capture of at most `limit` bytes.
    pub fn capture(limit: usize) -> Self {
        Self::new(limit, None)
    }

    /// A stream that calls `callback(bytes)` on each write.
    pub fn stream(callback: Py<PyAny>) -> Self {
        Self::new(0, Some(Arc::new(callback)))
    }

    fn new(limit: usize, callback: Option<Arc<Py<PyAny>>>) -> Self {
        Output {
            state: Arc::new(Mutex::new(State {
                kept: Vec::new(),
                limit,
                dropped: 0,
                callback,
            })),
        }
    }

    /// Takes what was captured so far (a session reads it after each call)
    /// and how many bytes were dropped over the limit.
    pub fn take(&self) -> (Vec<u8>, u64) {
        let mut state = self.state.lock().unwrap();
        let dropped = std::mem::take(&mut state.dropped);
        (std::mem::take(&mut state.kept), dropped)
    }

    fn accept(&self, bytes: &[u8]) {
        let callback = {
            let mut state = self.state.lock().unwrap();
            match &state.callback {
                Some(cb) => cb.clone(),
                None => {
                    let room = state.limit.saturating_sub(state.kept.len());
                    let kept = room.min(bytes.len());
                    state.kept.extend_from_slice(&bytes[..kept]);
                    state.dropped += (bytes.len() - kept) as u64;
                    return;
                }
            }
        };
        // Outside the lock: the callback is the host's Python code.
        Python::attach(|py| {
            if let Err(e) = callback.call1(py, (PyBytes::new(py, bytes),)) {
                // The host's callback failed; the guest's run goes on.
                e.print(py);
            }
        });
    }
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Output {
    async fn ready(&mut self) {}
}

impl OutputStream for Output {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always room: what passes the limit is counted, not refused.
        Ok(64 << 10)
    }
}

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_first_bytes_and_counts_the_rest() {
        let out = Output::capture(5);
        let mut stream = out.clone();
        OutputStream::write(&mut stream, Bytes::from_static(b"abc")).unwrap();
        OutputStream::write(&mut stream, Bytes::from_static(b"defgh")).unwrap();
        assert_eq!(out.take(), (b"abcde".to_vec(), 3));
        // Taken: the next call of a session starts empty.
        assert_eq!(out.take(), (Vec::new(), 0));
    }
}
