//! The [`Store`] in sled (0.34), at `DATA/store`.
//!
//! sled has open reports of corruption after abrupt termination, so opening checks more than
//! sled does: every stored value must decode, and the store must still hold its identity (a
//! random id written into it when it was made, and into the file `STORE/strait-store-id`
//! beside sled's own files). sled opens a truncated or overwritten log without a word, as an
//! empty (or older) store; the missing identity is how that is noticed. A store that fails to
//! open, panics while opening, lost its identity, or holds a value that does not decode is
//! moved aside (`store.corrupt-UNIXMS`), reported as an error naming both paths and the cause,
//! and a new, empty store is opened in its place: its content is rebuildable (DNS answers come
//! back from DNS, or from the last-known-good snapshot meanwhile). Every write is flushed
//! before it returns.
//!
//! What this cannot notice: a log cut short after the identity record reads back as the store
//! was at an earlier write (answers written since are gone, silently); they come back the same
//! way.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use super::{StateError, Store, StoredAnswer, move_aside};

/// How sled says another process holds the store's lock.
const LOCKED: &str = "could not acquire lock";
/// How long a locked store is waited for: `LOCK_RETRIES` x `LOCK_RETRY_INTERVAL`.
const LOCK_RETRIES: u32 = 20;
const LOCK_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The key (in sled's default tree) and the file (in the store's directory) of its identity.
const IDENTITY: &str = "strait-store-id";

/// The tree of DNS answers: name -> JSON [`StoredAnswer`].
const DNS_ANSWERS: &str = "dns_answers";

/// The sled store.
#[derive(Debug)]
pub struct SledStore {
    path: PathBuf,
    dns_answers: sled::Tree,
    // Kept so the database lives as long as the store.
    _db: sled::Db,
}

/// A store as opened: and, when the one found could not be used, what became of it.
#[derive(Debug)]
pub struct Opened {
    pub store: SledStore,
    /// "the store PATH could not be used (WHY); it was moved to PATH2 and rebuilt".
    pub rebuilt: Option<String>,
}

impl SledStore {
    /// Opens (or creates) the store at `path`; a damaged one is moved aside and rebuilt.
    /// Fails only when even a new store cannot be made there.
    pub fn open(path: &Path) -> Result<Opened, StateError> {
        let mut opened = open_checked(path);
        // A process that was just killed may hold the lock for a moment longer.
        for _ in 0..LOCK_RETRIES {
            match &opened {
                Err(why) if why.contains(LOCKED) => {
                    std::thread::sleep(LOCK_RETRY_INTERVAL);
                    opened = open_checked(path);
                }
                _ => break,
            }
        }
        let damage = match opened {
            Ok(store) => {
                return Ok(Opened {
                    store,
                    rebuilt: None,
                });
            }
            // Another process has it open: it is in use, not damaged; it is left alone.
            Err(why) if why.contains(LOCKED) => {
                return Err(StateError::Store {
                    path: path.to_path_buf(),
                    what: format!("{why} (is another strait using the same --data?)"),
                });
            }
            Err(why) => why,
        };
        let moved = move_aside(path).map_err(|e| StateError::Store {
            path: path.to_path_buf(),
            what: format!("{damage}; moving it aside failed too: {e}"),
        })?;
        let message = format!(
            "the store {} could not be used ({damage}); it was moved to {} and is rebuilt from DNS and the last-known-good snapshot",
            path.display(),
            moved.display()
        );
        tracing::error!("{message}");
        let store = open_checked(path).map_err(|what| StateError::Store {
            path: path.to_path_buf(),
            what: format!("a new store cannot be made: {what}"),
        })?;
        Ok(Opened {
            store,
            rebuilt: Some(message),
        })
    }

    fn error(&self, what: impl std::fmt::Display) -> StateError {
        StateError::Store {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }

    fn flush(&self) -> Result<(), StateError> {
        self.dns_answers
            .flush()
            .map(drop)
            .map_err(|e| self.error(format!("flush: {e}")))
    }
}

/// Opens the store and decodes everything in it; why not, when it cannot be used.
fn open_checked(path: &Path) -> Result<SledStore, String> {
    let opened = catch_unwind(AssertUnwindSafe(|| -> Result<SledStore, String> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| format!("sled cannot open it: {e}"))?;
        let dns_answers = db
            .open_tree(DNS_ANSWERS)
            .map_err(|e| format!("sled cannot open its {DNS_ANSWERS} tree: {e}"))?;
        for entry in dns_answers.iter() {
            let (key, value) = entry.map_err(|e| format!("sled cannot read it: {e}"))?;
            let answer: StoredAnswer = serde_json::from_slice(&value).map_err(|e| {
                format!(
                    "the DNS answer stored under {:?} does not decode: {e}",
                    String::from_utf8_lossy(&key)
                )
            })?;
            if answer.name.as_bytes() != &*key {
                return Err(format!(
                    "the DNS answer stored under {:?} is for {:?}",
                    String::from_utf8_lossy(&key),
                    answer.name
                ));
            }
        }
        check_identity(&db, path)?;
        Ok(SledStore {
            path: path.to_path_buf(),
            dns_answers,
            _db: db,
        })
    }));
    match opened {
        Ok(result) => result,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown cause".to_owned());
            Err(format!("sled panicked opening it: {why}"))
        }
    }
}

/// Checks that the store still holds the identity its directory records; gives a new store
/// one.
fn check_identity(db: &sled::Db, path: &Path) -> Result<(), String> {
    let file = path.join(IDENTITY);
    let recorded = match std::fs::read(&file) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{} cannot be read: {e}", file.display())),
    };
    let held = db
        .get(IDENTITY)
        .map_err(|e| format!("sled cannot read it: {e}"))?
        .map(|v| v.to_vec());
    match (recorded, held) {
        (Some(recorded), Some(held)) if recorded == held => Ok(()),
        (Some(_), Some(_)) => Err("it holds another store's identity".to_owned()),
        (Some(_), None) => Err(
            "it lost its content: its identity record is gone (its files were truncated or overwritten)"
                .to_owned(),
        ),
        // Made, but the process stopped before the file was written: write it now.
        (None, Some(held)) => write_identity(&file, &held),
        (None, None) => {
            let id = format!("{}-{}", super::now_ms(), std::process::id()).into_bytes();
            db.insert(IDENTITY, id.as_slice())
                .and_then(|_| db.flush())
                .map_err(|e| format!("sled cannot write it: {e}"))?;
            write_identity(&file, &id)
        }
    }
}

fn write_identity(file: &Path, id: &[u8]) -> Result<(), String> {
    strait_certs::fs::write_atomic(file, id, strait_certs::fs::PRIVATE_FILE_MODE)
        .map_err(|e| e.to_string())
}

impl Store for SledStore {
    fn dns_answers(&self) -> Result<Vec<StoredAnswer>, StateError> {
        let mut answers = Vec::new();
        for entry in self.dns_answers.iter() {
            let (_, value) = entry.map_err(|e| self.error(format!("read: {e}")))?;
            let answer =
                serde_json::from_slice(&value).map_err(|e| self.error(format!("decode: {e}")))?;
            answers.push(answer);
        }
        Ok(answers)
    }

    fn put_dns_answer(&self, answer: &StoredAnswer) -> Result<(), StateError> {
        let value = serde_json::to_vec(answer).map_err(|e| self.error(format!("encode: {e}")))?;
        self.dns_answers
            .insert(answer.name.as_bytes(), value)
            .map_err(|e| self.error(format!("write: {e}")))?;
        self.flush()
    }

    fn remove_dns_answer(&self, name: &str) -> Result<(), StateError> {
        self.dns_answers
            .remove(name.as_bytes())
            .map_err(|e| self.error(format!("remove: {e}")))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_dir::TestDir;
    use super::*;

    fn answer(name: &str, ip: &str) -> StoredAnswer {
        StoredAnswer {
            name: name.to_owned(),
            addresses: vec![ip.parse().unwrap()],
            resolved_at_ms: 1_700_000_000_000,
            ttl_seconds: 30,
        }
    }

    #[test]
    fn answers_survive_reopening() {
        let dir = TestDir::new("sled-reopen");
        let path = dir.path().join("store");
        {
            let opened = SledStore::open(&path).unwrap();
            assert!(opened.rebuilt.is_none());
            opened
                .store
                .put_dns_answer(&answer("a.test", "10.0.0.1"))
                .unwrap();
            opened
                .store
                .put_dns_answer(&answer("b.test", "10.0.0.2"))
                .unwrap();
            opened
                .store
                .put_dns_answer(&answer("a.test", "10.0.0.3"))
                .unwrap();
            opened.store.remove_dns_answer("b.test").unwrap();
        }
        let opened = SledStore::open(&path).unwrap();
        assert!(opened.rebuilt.is_none());
        assert_eq!(
            opened.store.dns_answers().unwrap(),
            vec![answer("a.test", "10.0.0.3")]
        );
    }

    #[test]
    fn a_value_that_does_not_decode_moves_the_store_aside() {
        let dir = TestDir::new("sled-garbled-value");
        let path = dir.path().join("store");
        {
            let db = sled::open(&path).unwrap();
            let tree = db.open_tree(DNS_ANSWERS).unwrap();
            tree.insert("a.test", &b"\x00not json"[..]).unwrap();
            tree.flush().unwrap();
        }
        let opened = SledStore::open(&path).unwrap();
        let message = opened.rebuilt.expect("the damage is reported");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("a.test") && message.contains("moved to"),
            "{message}"
        );
        assert!(
            opened.store.dns_answers().unwrap().is_empty(),
            "rebuilt empty"
        );
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("store.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "the old store is kept for inspection");
    }

    #[test]
    fn garbled_files_are_moved_aside_and_the_store_rebuilt() {
        let dir = TestDir::new("sled-garbled-files");
        let path = dir.path().join("store");
        {
            let opened = SledStore::open(&path).unwrap();
            opened
                .store
                .put_dns_answer(&answer("a.test", "10.0.0.1"))
                .unwrap();
        }
        // Every file of the store overwritten with noise.
        for entry in walk(&path) {
            let len = std::fs::metadata(&entry).unwrap().len().max(64);
            let noise: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
            std::fs::write(&entry, noise).unwrap();
        }
        let opened = SledStore::open(&path).unwrap();
        let message = opened.rebuilt.expect("the damage is noticed");
        assert!(message.contains("moved to"), "{message}");
        assert!(opened.store.dns_answers().unwrap().is_empty());
        opened
            .store
            .put_dns_answer(&answer("c.test", "10.0.0.4"))
            .unwrap();
    }

    #[test]
    fn a_truncated_or_overwritten_log_is_noticed_though_sled_opens_it() {
        for damage in ["truncate", "overwrite"] {
            let dir = TestDir::new("sled-log");
            let path = dir.path().join("store");
            {
                let opened = SledStore::open(&path).unwrap();
                opened
                    .store
                    .put_dns_answer(&answer("a.test", "10.0.0.1"))
                    .unwrap();
            }
            let log = path.join("db");
            match damage {
                "truncate" => std::fs::write(&log, b"").unwrap(),
                _ => {
                    let bytes: Vec<u8> = std::fs::read(&log)
                        .unwrap()
                        .iter()
                        .map(|b| b ^ 0xa5)
                        .collect();
                    std::fs::write(&log, bytes).unwrap();
                }
            }
            let opened = SledStore::open(&path).unwrap();
            let message = opened
                .rebuilt
                .unwrap_or_else(|| panic!("{damage}: not noticed"));
            assert!(message.contains("lost its content"), "{damage}: {message}");
            // The new store is whole: reopening it finds nothing wrong.
            drop(opened.store);
            assert!(SledStore::open(&path).unwrap().rebuilt.is_none());
        }
    }

    #[test]
    fn a_store_in_use_is_not_moved_aside() {
        let dir = TestDir::new("sled-locked");
        let path = dir.path().join("store");
        let first = SledStore::open(&path).unwrap();
        first
            .store
            .put_dns_answer(&answer("a.test", "10.0.0.1"))
            .unwrap();
        // sled locks with flock, which another open file description in this process sees.
        let error = SledStore::open(&path).unwrap_err().to_string();
        assert!(error.contains("another strait"), "{error}");
        assert_eq!(first.store.dns_answers().unwrap().len(), 1);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")),
            "nothing moved aside"
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
