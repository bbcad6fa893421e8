//! The host's half of a cap's handle table (docs/cap-interface.md, "Handles"
//! and "Reserved methods").
//!
//! A cap that hands out handles keeps a table of them per instance. The host
//! owns two calls into it, under names a guest may never use (`$pylon/...`,
//! refused in [`crate::provider::check_request`]):
//!
//! * `$pylon/init` right after the instance starts: the key its handle tags
//!   are made with (fresh OS randomness per instance, so a token is worthless
//!   anywhere else) and `max-handles`;
//! * `$pylon/release-all` when the instance is dropped, so every resource the
//!   run left open has its destructor run, counted in the run's [`RunLog`].
//!
//! The two payloads are fixed shapes of a few bytes, so they are encoded and
//! decoded here by hand: a CBOR crate would be a dependency for ~40 lines.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;

/// Method names starting with this belong to the host.
pub const RESERVED_PREFIX: &str = "$pylon/";
/// Host to cap, once, right after the instance starts.
pub const INIT: &str = "$pylon/init";
/// Host to cap, when the instance is dropped.
pub const RELEASE_ALL: &str = "$pylon/release-all";
/// `$pylon/release-all`'s request: CBOR `null`.
pub const RELEASE_ALL_REQUEST: &[u8] = &[0xf6];
/// Bytes of the key a cap's handle tags are made with (SipHash-2-4 takes 16,
/// the contract gives 32 so a cap may use another keyed generator).
pub const KEY_BYTES: usize = 32;
/// Longest `$pylon/release-all` may run, whatever the cap's per-call limit: it
/// runs while a run is being torn down (possibly after a timeout), and the
/// caller is waiting for the run's result.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// The CBOR head of major type `major` with argument `arg`, shortest form.
fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let mt = major << 5;
    match arg {
        0..=23 => out.push(mt | arg as u8),
        24..=0xff => out.extend_from_slice(&[mt | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(mt | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(mt | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(mt | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

/// `$pylon/init`'s request: CBOR `[key: bytes(32), max-handles: uint]`.
pub fn init_request(key: &[u8; KEY_BYTES], max_handles: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + KEY_BYTES + 9);
    put_head(&mut out, 4, 2); // array of 2
    put_head(&mut out, 2, KEY_BYTES as u64); // byte string of 32
    out.extend_from_slice(key);
    put_head(&mut out, 0, max_handles);
    out
}

/// The count in a `$pylon/release-all` reply: exactly one CBOR unsigned
/// integer (any head width), nothing after it. `None` for anything else.
pub fn decode_count(reply: &[u8]) -> Option<u64> {
    let (&first, rest) = reply.split_first()?;
    if first >> 5 != 0 {
        return None;
    }
    let info = first & 0x1f;
    let width = match info {
        0..=23 => return rest.is_empty().then_some(u64::from(info)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return None, // reserved or indefinite: not a uint
    };
    if rest.len() != width {
        return None;
    }
    Some(rest.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// What a run's providers tell the host: details the guest must not see, and
/// how many handles each cap released at drop time. One per run, shared by
/// the guest's Store and every provider it resolves, so a provider dropped
/// on any thread still adds to the run it belonged to.
pub struct RunLog {
    report: Option<Py<PyAny>>,
    released: Mutex<BTreeMap<String, u64>>,
}

impl RunLog {
    /// A log reporting to `report(message)` (`None`: this process's stderr).
    pub fn new(report: Option<Py<PyAny>>) -> Self {
        RunLog {
            report,
            released: Mutex::new(BTreeMap::new()),
        }
    }

    /// Tells the host (never the guest) something.
    pub fn report(&self, message: String) {
        let Some(report) = &self.report else {
            eprintln!("pylon: {message}");
            return;
        };
        // try_attach: a provider may be dropped while the interpreter shuts
        // down (the retiring thread), when attaching would abort the process.
        let told = Python::try_attach(|py| {
            if let Err(e) = report.call1(py, (message.clone(),)) {
                e.print(py);
            }
        });
        if told.is_none() {
            eprintln!("pylon: {message}");
        }
    }

    /// Counts `n` handles released by cap `name`.
    pub fn add_released(&self, name: &str, n: u64) {
        let mut released = self.released.lock().unwrap();
        let total = released.entry(name.to_string()).or_insert(0);
        *total = total.saturating_add(n);
    }

    /// The counts so far (cap name -> handles released), emptied: a session
    /// reads them after each call.
    pub fn take_released(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.released.lock().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_request_is_a_two_item_array_of_key_and_max() {
        let key = [7u8; KEY_BYTES];
        let out = init_request(&key, 4096);
        // 0x82: array(2); 0x58 0x20: bytes(32); then 0x19 0x10 0x00: uint 4096.
        assert_eq!(&out[..3], &[0x82, 0x58, 0x20]);
        assert_eq!(&out[3..35], &key);
        assert_eq!(&out[35..], &[0x19, 0x10, 0x00]);
        assert_eq!(init_request(&key, 1)[35..], [0x01]);
        assert_eq!(
            init_request(&key, 1_000_000)[35..],
            [0x1a, 0x00, 0x0f, 0x42, 0x40]
        );
        assert_eq!(
            init_request(&key, u64::MAX)[35..],
            [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn heads_are_shortest() {
        for (arg, len) in [
            (0u64, 1),
            (23, 1),
            (24, 2),
            (255, 2),
            (256, 3),
            (65_535, 3),
            (65_536, 5),
            (u64::from(u32::MAX), 5),
            (1 << 32, 9),
        ] {
            let mut out = Vec::new();
            put_head(&mut out, 0, arg);
            assert_eq!(out.len(), len, "{arg}");
            assert_eq!(decode_count(&out), Some(arg), "{arg} round-trips");
        }
    }

    #[test]
    fn count_is_exactly_one_uint() {
        assert_eq!(decode_count(&[0x00]), Some(0));
        assert_eq!(decode_count(&[0x03]), Some(3));
        assert_eq!(decode_count(&[0x18, 0x05]), Some(5)); // non-shortest is still a uint
        assert_eq!(decode_count(&[0x19, 0x01, 0x00]), Some(256));
        assert_eq!(decode_count(&[]), None);
        assert_eq!(decode_count(&[0xf6]), None); // null
        assert_eq!(decode_count(&[0x20]), None); // -1
        assert_eq!(decode_count(&[0x03, 0x00]), None); // trailing bytes
        assert_eq!(decode_count(&[0x19, 0x01]), None); // truncated
        assert_eq!(decode_count(&[0x1c]), None); // reserved info
        assert_eq!(decode_count(&[0x1f]), None); // indefinite
        assert_eq!(decode_count(&[0x41, 0x03]), None); // bytes
    }

    #[test]
    fn release_all_request_is_null() {
        assert_eq!(RELEASE_ALL_REQUEST, [0xf6]);
    }

    #[test]
    fn released_counts_add_up_per_cap_and_are_taken_once() {
        let log = RunLog::new(None);
        log.add_released("a", 2);
        log.add_released("b", 1);
        log.add_released("a", 3);
        let taken = log.take_released();
        assert_eq!(taken.get("a"), Some(&5));
        assert_eq!(taken.get("b"), Some(&1));
        assert!(log.take_released().is_empty());
    }
}
