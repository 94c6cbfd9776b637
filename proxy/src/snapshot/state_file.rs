//! The snapshot as Strait's own state file (the last-known-good copy under `--data`), as opposed
//! to `/config_dump`.
//!
//! Both are the same serde serialization, with two differences that only a state-file
//! serialization in progress turns on: private keys are written (the state file is the
//! owner-only authoritative copy; a config dump never shows them), and compiled regexes are
//! written with the exact expression compiled (a dump shows only the configured source).
//! The switch is scoped to one call on one thread: [`to_json_writer`] sets it and clears it
//! when it returns or unwinds, so nothing else serialized meanwhile sees it.

use std::cell::Cell;

use serde::Serialize;
use serde::de::DeserializeOwned;

thread_local! {
    static STATE_FILE: Cell<bool> = const { Cell::new(false) };
}

/// Clears the switch when dropped, even on unwinding.
struct Scope;

impl Drop for Scope {
    fn drop(&mut self) {
        STATE_FILE.with(|active| active.set(false));
    }
}

/// `value` as JSON for a state file, private keys and exact regexes included, written to `out`
/// as it is produced.
pub fn to_json_writer<T: Serialize>(
    out: &mut dyn std::io::Write,
    value: &T,
) -> std::io::Result<()> {
    STATE_FILE.with(|active| active.set(true));
    let _scope = Scope;
    serde_json::to_writer(out, value).map_err(std::io::Error::from)
}

/// A value read back from a state file written by [`to_json_writer`].
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice(bytes)
}

/// Whether a state file is being written on this thread.
pub(crate) fn active() -> bool {
    STATE_FILE.with(Cell::get)
}

/// `skip_serializing_if` for private keys: left out of everything but state files.
pub(crate) fn redacts(_key: &String) -> bool {
    !active()
}
