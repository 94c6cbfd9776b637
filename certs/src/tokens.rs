//! One-time bootstrap tokens for workloads (VMs) that have no identity yet.
//!
//! [`TokenLedger::mint`] returns a token of 256 random bits (base64url, 43 characters) bound to a
//! SPIFFE ID and an expiry; the ledger file keeps only the token's SHA-256, so reading the file
//! does not yield a usable token. [`TokenLedger::redeem`] marks the token used and writes the
//! ledger durably (atomic rewrite with fsync) **before** it returns the ID, so a token can never
//! be redeemed twice, even across a crash. Unknown (forged), malformed, expired and already used
//! tokens are refused, each with its own reason. The ledger file is owner-only; I/O is
//! synchronous and short (call it from a blocking context in async code).
//!
//! Several processes share one ledger (the CA service redeems while `strait ca token` mints):
//! every mint and redeem holds an exclusive lock on a lock file beside the ledger and reads the
//! ledger again under it, so no process writes from a stale copy and a used mark is never lost.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::fs::{self, FsError, PRIVATE_FILE_MODE};
use crate::spiffe::SpiffeId;

/// The ledger's file name inside the CA directory.
pub const LEDGER_FILE: &str = "bootstrap-tokens.json";
/// The lock file beside the ledger.
pub const LOCK_SUFFIX: &str = "lock";
/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// How long an expired or used entry is kept (to report "expired"/"used" rather than "unknown").
pub const RETAIN_AFTER_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a token was refused or the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is unknown")]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token was already used")]
    AlreadyUsed,
    #[error("token randomness unavailable")]
    Random,
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path}: not a token ledger: {reason}")]
    BadLedger { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Hex SHA-256 of the token string.
    sha256: String,
    id: SpiffeId,
    minted_at: u64,
    expires_at: u64,
    used_at: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    tokens: Vec<Entry>,
}

/// The ledger of bootstrap tokens, backed by one file.
#[derive(Debug)]
pub struct TokenLedger {
    path: PathBuf,
    entries: Mutex<Vec<Entry>>,
}

impl TokenLedger {
    /// Opens the ledger at `path` (a missing file is an empty ledger).
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        Ok(Self {
            path: path.to_path_buf(),
            entries: Mutex::new(read_entries(path)?),
        })
    }

    /// Opens the ledger kept in a CA directory.
    pub fn open_in(ca_dir: &Path) -> Result<Self, TokenError> {
        Self::open(&ca_dir.join(LEDGER_FILE))
    }

    /// Mints a one-time token for `id`, valid for `ttl`.
    pub fn mint(&self, id: &SpiffeId, ttl: Duration) -> Result<String, TokenError> {
        self.mint_at(id, ttl, SystemTime::now())
    }

    /// Redeems a token: returns its ID after durably marking it used.
    pub fn redeem(&self, token: &str) -> Result<SpiffeId, TokenError> {
        self.redeem_at(token, SystemTime::now())
    }

    pub(crate) fn mint_at(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, TokenError> {
        let mut random = [0u8; TOKEN_BYTES];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| TokenError::Random)?;
        let token = URL_SAFE_NO_PAD.encode(random);
        let now_s = secs(now);
        let mut entries = self.lock();
        let _file_lock = self.lock_file()?;
        *entries = read_entries(&self.path)?;
        let mut next: Vec<Entry> = entries
            .iter()
            .filter(|e| e.expires_at + RETAIN_AFTER_EXPIRY.as_secs() >= now_s)
            .cloned()
            .collect();
        next.push(Entry {
            sha256: digest_hex(&token),
            id: id.clone(),
            minted_at: now_s,
            expires_at: now_s.saturating_add(ttl.as_secs()),
            used_at: None,
        });
        self.persist(&next)?;
        *entries = next;
        Ok(token)
    }

    pub(crate) fn redeem_at(&self, token: &str, now: SystemTime) -> Result<SpiffeId, TokenError> {
        let well_formed = token.len() == 43
            && URL_SAFE_NO_PAD
                .decode(token)
                .is_ok_and(|bytes| bytes.len() == TOKEN_BYTES);
        if !well_formed {
            return Err(TokenError::Malformed);
        }
        let hash = digest_hex(token);
        let now_s = secs(now);
        let mut entries = self.lock();
        let _file_lock = self.lock_file()?;
        *entries = read_entries(&self.path)?;
        let index = entries
            .iter()
            .position(|e| e.sha256 == hash)
            .ok_or(TokenError::Unknown)?;
        let entry = &entries[index];
        if entry.used_at.is_some() {
            return Err(TokenError::AlreadyUsed);
        }
        if now_s >= entry.expires_at {
            return Err(TokenError::Expired);
        }
        let id = entry.id.clone();
        let mut next = entries.clone();
        next[index].used_at = Some(now_s);
        self.persist(&next)?;
        *entries = next;
        Ok(id)
    }

    fn persist(&self, entries: &[Entry]) -> Result<(), TokenError> {
        let file = LedgerFile {
            tokens: entries.to_vec(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| TokenError::BadLedger {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        fs::write_atomic(&self.path, text.as_bytes(), PRIVATE_FILE_MODE)?;
        Ok(())
    }

    /// Holds the ledger's lock file exclusively until the returned file is dropped.
    fn lock_file(&self) -> Result<std::fs::File, TokenError> {
        let path = self.path.with_extension(LOCK_SUFFIX);
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .mode(PRIVATE_FILE_MODE)
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| FsError::new("open", &path, e))?;
        file.lock().map_err(|e| FsError::new("lock", &path, e))?;
        Ok(file)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A panic elsewhere while holding the lock leaves the last persisted state in memory.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_entries(path: &Path) -> Result<Vec<Entry>, TokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(serde_json::from_str::<LedgerFile>(&text)
            .map_err(|e| TokenError::BadLedger {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
            .tokens),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(FsError::new("read", path, e).into()),
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn digest_hex(token: &str) -> String {
    crate::x509::sha256_hex(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::test_dir::TestDir;

    fn id() -> SpiffeId {
        SpiffeId::parse("spiffe://cluster.local/ns/vms/sa/db").unwrap()
    }

    #[test]
    fn mint_then_redeem_once() {
        let dir = TestDir::new("tokens");
        let ledger = TokenLedger::open_in(dir.path()).unwrap();
        let token = ledger.mint(&id(), Duration::from_secs(3600)).unwrap();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(ledger.redeem(&token).unwrap(), id());
        assert!(matches!(
            ledger.redeem(&token),
            Err(TokenError::AlreadyUsed)
        ));

        // Only the hash is stored; the file is owner-only.
        let path = dir.path().join(LEDGER_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token));
        assert!(text.contains(&digest_hex(&token)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn used_mark_survives_reopen() {
        let dir = TestDir::new("tokens-reopen");
        let path = dir.path().join(LEDGER_FILE);
        let ledger = TokenLedger::open(&path).unwrap();
        let used = ledger.mint(&id(), Duration::from_secs(3600)).unwrap();
        let fresh = ledger.mint(&id(), Duration::from_secs(3600)).unwrap();
        ledger.redeem(&used).unwrap();
        drop(ledger);

        let reopened = TokenLedger::open(&path).unwrap();
        assert!(matches!(
            reopened.redeem(&used),
            Err(TokenError::AlreadyUsed)
        ));
        assert_eq!(reopened.redeem(&fresh).unwrap(), id());
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused() {
        let dir = TestDir::new("tokens-refused");
        let ledger = TokenLedger::open_in(dir.path()).unwrap();
        let t0 = SystemTime::now();
        let token = ledger.mint_at(&id(), Duration::from_secs(60), t0).unwrap();
        assert!(matches!(
            ledger.redeem_at(&token, t0 + Duration::from_secs(60)),
            Err(TokenError::Expired)
        ));
        // Still unused: the refusal did not consume it, and before expiry it works.
        assert_eq!(
            ledger
                .redeem_at(&token, t0 + Duration::from_secs(59))
                .unwrap(),
            id()
        );

        // A well-formed token nobody minted.
        let forged = URL_SAFE_NO_PAD.encode([7u8; TOKEN_BYTES]);
        assert!(matches!(ledger.redeem(&forged), Err(TokenError::Unknown)));
        // A minted token with one character changed.
        let other = ledger.mint(&id(), Duration::from_secs(60)).unwrap();
        let mut tampered = other.into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(ledger.redeem(&tampered), Err(TokenError::Unknown)));

        for bad in ["", "short", &"a".repeat(44), &"*".repeat(43)] {
            assert!(
                matches!(ledger.redeem(bad), Err(TokenError::Malformed)),
                "{bad}"
            );
        }
    }

    #[test]
    fn two_handles_on_one_ledger_see_each_others_writes() {
        let dir = TestDir::new("tokens-shared");
        let server = TokenLedger::open_in(dir.path()).unwrap();
        let cli = TokenLedger::open_in(dir.path()).unwrap();
        // Minted through another handle after `server` was opened: still redeemable there.
        let first = cli.mint(&id(), Duration::from_secs(3600)).unwrap();
        assert_eq!(server.redeem(&first).unwrap(), id());
        // A later mint through the stale handle keeps the used mark written by the other.
        let second = cli.mint(&id(), Duration::from_secs(3600)).unwrap();
        assert!(matches!(
            server.redeem(&first),
            Err(TokenError::AlreadyUsed)
        ));
        assert!(matches!(cli.redeem(&first), Err(TokenError::AlreadyUsed)));
        assert_eq!(server.redeem(&second).unwrap(), id());
    }

    #[test]
    fn corrupt_ledger_is_reported_not_reset() {
        let dir = TestDir::new("tokens-corrupt");
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            TokenLedger::open(&path),
            Err(TokenError::BadLedger { .. })
        ));
    }
}
