//! Root rotation with two overlapping anchors, in three steps an operator runs in order:
//!
//! 1. [`prepare`]: a new root and issuing intermediate are made in `next/` (owner-only, written
//!    to a temporary folder and renamed into place), and the new root is **added** to
//!    `root-cert.pem`. The bundle sequence rises; the CA stream carries the two-root bundle to
//!    every proxy, which then trusts certificates under either root.
//! 2. [`switch`]: once the proxies have the bundle, the new intermediate becomes the signing one
//!    (the replaced files are kept in `previous/`). A running CA service loads it without a
//!    restart and tells the proxies, which renew onto the new chain at once.
//! 3. [`finish`]: the old root is **removed** from `root-cert.pem` (the sequence rises again)
//!    and `previous/` is deleted. Refused while the signing chain is still the old one, and,
//!    unless forced, while certificates issued under the old root may still be live (the
//!    longest workload lifetime since the switch has not passed).
//!
//! The state is `rotation.json` (phase, fingerprints of the new root and intermediate, times),
//! written by these steps only. Every step is idempotent: run again after it completed it
//! changes nothing; run again after a crash it completes what was left. A step out of order is
//! refused with a message naming the step to run.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::material::Material;
use super::{
    AuthorityError, AuthorityOptions, AuthorityOrigin, NewCa, bad_file, files,
    published_trust_bundle, read_meta, write,
};
use crate::bundle::{TrustBundle, certs_to_pem, parse_pem_certs};
use crate::fs::{self, FsError, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use crate::x509;

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotationPhase {
    /// Both roots are published; the old intermediate still signs.
    Prepared,
    /// Both roots are published; the new intermediate signs.
    Switched,
    /// Only the new root is published (the last rotation is complete).
    Finished,
}

impl std::fmt::Display for RotationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Prepared => "prepared",
            Self::Switched => "switched",
            Self::Finished => "finished",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RotationRecord {
    phase: RotationPhase,
    /// Hex SHA-256 of the new root's DER.
    new_root_sha256: String,
    /// Hex SHA-256 of the new issuing CA certificate's DER.
    new_ca_sha256: String,
    /// Unix seconds.
    prepared_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    switched_at: Option<u64>,
    /// Unix seconds until which a certificate issued under the old root may be valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    old_leaves_valid_until: Option<u64>,
}

/// What a step left in place.
#[derive(Debug, Clone)]
pub struct RotationStatus {
    /// The phase now; `None` when the CA was never rotated.
    pub phase: Option<RotationPhase>,
    /// Whether this call changed anything (false: the step had been done).
    pub changed: bool,
    /// The bundle published now (its roots and sequence).
    pub bundle: TrustBundle,
    /// After `switch`: until when certificates under the old root may be in use.
    pub old_leaves_valid_until: Option<SystemTime>,
}

/// The current state, without changing anything but the recorded bundle sequence (see
/// [`published_trust_bundle`]).
pub fn status(dir: &Path) -> Result<RotationStatus, AuthorityError> {
    let record = read_record(dir)?;
    report(dir, record.as_ref(), false)
}

/// Step 1: makes the new root and intermediate in `next/` and adds the new root to the
/// published bundle. `options` gives their lifetimes.
pub fn prepare(dir: &Path, options: &AuthorityOptions) -> Result<RotationStatus, AuthorityError> {
    let meta = read_meta(dir)?;
    if meta.origin == AuthorityOrigin::PlugIn {
        return Err(order(
            "this CA's root was plugged in (`strait ca init --plug-in`); its owner rotates it: make new plug-in files under a new root and add that root to root-cert.pem",
        ));
    }
    // The roots in place now get their sequence recorded first (a CA whose bundle was never
    // read for publishing has none yet), so that adding the new root raises it.
    published_trust_bundle(dir)?;
    let record = read_record(dir)?;
    match record.as_ref().map(|r| r.phase) {
        Some(RotationPhase::Switched) => {
            return Err(order(
                "a rotation is switched and not finished: run `strait ca rotate finish` before preparing another",
            ));
        }
        Some(RotationPhase::Prepared) => {
            let next = read_next(dir, &meta.trust_domain)?;
            let changed = add_root(dir, &next.roots[0])?;
            return report(dir, record.as_ref(), changed);
        }
        Some(RotationPhase::Finished) | None => {}
    }
    let previous = dir.join(files::PREVIOUS);
    if previous.exists() {
        if record.is_none() {
            return Err(order(&format!(
                "{} exists but no rotation is recorded in {}; move it away before preparing",
                previous.display(),
                files::ROTATION
            )));
        }
        // Left by a finish that stopped before deleting it.
        remove_dir(&previous)?;
    }

    // A `next/` that is complete (an earlier prepare stopped before recording) is kept, so the
    // bundle never gains two different new roots.
    let next_dir = dir.join(files::NEXT);
    let next = match read_next(dir, &meta.trust_domain) {
        Ok(next) => next,
        Err(_) => {
            if next_dir.exists() {
                remove_dir(&next_dir)?;
            }
            let made = NewCa::generate(&meta.trust_domain, options)?;
            let staging = dir.join(format!(".{}.tmp-{}", files::NEXT, std::process::id()));
            if staging.exists() {
                remove_dir(&staging)?;
            }
            fs::create_private_dir(&staging)?;
            made.write(&staging, &made.root_pem)?;
            std::fs::rename(&staging, &next_dir)
                .map_err(|e| FsError::new("rename into", &next_dir, e))?;
            fs::sync_dir(dir)?;
            read_next(dir, &meta.trust_domain)?
        }
    };
    let record = RotationRecord {
        phase: RotationPhase::Prepared,
        new_root_sha256: x509::sha256_hex(&next.roots[0]),
        new_ca_sha256: x509::sha256_hex(&next.ca_cert),
        prepared_at: unix(SystemTime::now()),
        switched_at: None,
        old_leaves_valid_until: None,
    };
    write_record(dir, &record)?;
    add_root(dir, &next.roots[0])?;
    report(dir, Some(&record), true)
}

/// Step 2: the new intermediate becomes the signing one; the replaced files move to
/// `previous/`.
pub fn switch(dir: &Path) -> Result<RotationStatus, AuthorityError> {
    let meta = read_meta(dir)?;
    let mut record = match read_record(dir)? {
        Some(record) if record.phase != RotationPhase::Finished => record,
        _ => {
            return Err(order(
                "no rotation is prepared: run `strait ca rotate prepare` first",
            ));
        }
    };
    let next_dir = dir.join(files::NEXT);
    if record.phase == RotationPhase::Switched {
        // Left by a switch that stopped before deleting it.
        if next_dir.exists() {
            remove_dir(&next_dir)?;
        }
        return report(dir, Some(&record), false);
    }
    let next = read_next(dir, &meta.trust_domain)?;
    if x509::sha256_hex(&next.ca_cert) != record.new_ca_sha256 {
        return Err(bad_file(
            &next_dir.join(files::CA_CERT),
            "not the intermediate `prepare` recorded",
        ));
    }
    let roots = read_roots(dir)?;
    if !roots
        .iter()
        .any(|r| x509::sha256_hex(r) == record.new_root_sha256)
    {
        return Err(order(&format!(
            "{} does not hold the new root: run `strait ca rotate prepare` again",
            files::ROOT_CERT
        )));
    }

    let previous = dir.join(files::PREVIOUS);
    if !previous.exists() {
        keep_previous(dir, &meta.trust_domain, &roots, &record)?;
    }
    let old = Material::read(&previous)?.check(&meta.trust_domain)?;
    let now = x509::whole_seconds(SystemTime::now());
    let max_ttl = Duration::from_secs(meta.max_workload_ttl_secs);
    let old_leaves_valid_until = (now + max_ttl).min(old.not_after);

    // The key before the certificate: a reader between the two sees a mismatch and refuses
    // (the CA service keeps the chain it has), never a certificate it cannot sign for.
    for (name, mode) in [
        (files::ROOT_KEY, PRIVATE_FILE_MODE),
        (files::CA_KEY, PRIVATE_FILE_MODE),
        (files::CA_CERT, PUBLIC_FILE_MODE),
        (files::CERT_CHAIN, PUBLIC_FILE_MODE),
    ] {
        let text = fs::read_text(&next_dir.join(name))?;
        write(dir, name, text.as_bytes(), mode)?;
    }
    record.phase = RotationPhase::Switched;
    record.switched_at = Some(unix(now));
    record.old_leaves_valid_until = Some(unix(old_leaves_valid_until));
    write_record(dir, &record)?;
    remove_dir(&next_dir)?;
    report(dir, Some(&record), true)
}

/// Step 3: removes the old root from the published bundle and deletes `previous/`.
///
/// Certificates issued under the old root may be live until the switch plus the CA's longest
/// workload lifetime (capped at the old chain's expiry); `max_workload_ttl` shortens that
/// lifetime when the issuer granted less (the control role's `--workload-ttl`). `force`
/// finishes before that time.
pub fn finish(
    dir: &Path,
    force: bool,
    max_workload_ttl: Option<Duration>,
) -> Result<RotationStatus, AuthorityError> {
    finish_at(dir, force, max_workload_ttl, SystemTime::now())
}

pub(crate) fn finish_at(
    dir: &Path,
    force: bool,
    max_workload_ttl: Option<Duration>,
    now: SystemTime,
) -> Result<RotationStatus, AuthorityError> {
    let meta = read_meta(dir)?;
    let Some(mut record) = read_record(dir)? else {
        return Err(order("no rotation is in progress: nothing to finish"));
    };
    let previous = dir.join(files::PREVIOUS);
    match record.phase {
        RotationPhase::Prepared => {
            return Err(order(
                "the signing chain is still the old one: run `strait ca rotate switch` first",
            ));
        }
        RotationPhase::Finished => {
            if previous.exists() {
                remove_dir(&previous)?;
            }
            return report(dir, Some(&record), false);
        }
        RotationPhase::Switched => {}
    }
    let current = Material::read(dir)?;
    current.check(&meta.trust_domain)?;
    if x509::sha256_hex(&current.ca_cert) != record.new_ca_sha256 {
        return Err(order(&format!(
            "the signing chain in {} is not the new one (an interrupted switch?): run `strait ca rotate switch` again",
            dir.display()
        )));
    }
    let mut until = UNIX_EPOCH + Duration::from_secs(record.old_leaves_valid_until.unwrap_or(0));
    if let (Some(ttl), Some(switched_at)) = (max_workload_ttl, record.switched_at) {
        until = until.min(UNIX_EPOCH + Duration::from_secs(switched_at) + ttl);
    }
    if !force && let Ok(left) = until.duration_since(now) {
        return Err(AuthorityError::OldCertificatesLive {
            until_unix: unix(until),
            left_secs: left.as_secs().max(1),
        });
    }
    let roots = read_roots(dir)?;
    let kept: Vec<CertificateDer<'static>> = roots
        .iter()
        .filter(|r| x509::sha256_hex(r) == record.new_root_sha256)
        .cloned()
        .collect();
    if kept.is_empty() {
        return Err(bad_file(
            &dir.join(files::ROOT_CERT),
            "the new root is missing; restore it before finishing",
        ));
    }
    if kept != roots {
        write(
            dir,
            files::ROOT_CERT,
            certs_to_pem(&kept).as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
    }
    record.phase = RotationPhase::Finished;
    write_record(dir, &record)?;
    if previous.exists() {
        remove_dir(&previous)?;
    }
    report(dir, Some(&record), true)
}

/// Copies the signing files about to be replaced, and the roots before `prepare`, to
/// `previous/` (staged, then renamed into place).
fn keep_previous(
    dir: &Path,
    trust_domain: &crate::spiffe::TrustDomain,
    roots: &[CertificateDer<'static>],
    record: &RotationRecord,
) -> Result<(), AuthorityError> {
    // The signing files must still be the old, working chain.
    let current = Material::read(dir)?;
    current.check(trust_domain)?;
    if x509::sha256_hex(&current.ca_cert) == record.new_ca_sha256 {
        return Err(bad_file(
            &dir.join(files::CA_CERT),
            "already the new intermediate, but previous/ is missing",
        ));
    }
    let previous = dir.join(files::PREVIOUS);
    let staging = dir.join(format!(".{}.tmp-{}", files::PREVIOUS, std::process::id()));
    if staging.exists() {
        remove_dir(&staging)?;
    }
    fs::create_private_dir(&staging)?;
    for (name, mode) in [
        (files::ROOT_KEY, PRIVATE_FILE_MODE),
        (files::CA_KEY, PRIVATE_FILE_MODE),
        (files::CA_CERT, PUBLIC_FILE_MODE),
        (files::CERT_CHAIN, PUBLIC_FILE_MODE),
    ] {
        let source = dir.join(name);
        if name == files::ROOT_KEY && !source.exists() {
            continue;
        }
        let text = fs::read_text(&source)?;
        write(&staging, name, text.as_bytes(), mode)?;
    }
    let old_roots: Vec<CertificateDer<'static>> = roots
        .iter()
        .filter(|r| x509::sha256_hex(r) != record.new_root_sha256)
        .cloned()
        .collect();
    write(
        &staging,
        files::ROOT_CERT,
        certs_to_pem(&old_roots).as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    std::fs::rename(&staging, &previous).map_err(|e| FsError::new("rename into", &previous, e))?;
    Ok(fs::sync_dir(dir)?)
}

/// The material in `next/`, checked: one root, an intermediate under it.
fn read_next(
    dir: &Path,
    trust_domain: &crate::spiffe::TrustDomain,
) -> Result<Material, AuthorityError> {
    let next_dir = dir.join(files::NEXT);
    let next = Material::read(&next_dir)?;
    next.check(trust_domain)?;
    if next.roots.len() != 1 {
        return Err(bad_file(
            &next_dir.join(files::ROOT_CERT),
            "expected exactly the new root",
        ));
    }
    Ok(next)
}

/// Adds `root` to `root-cert.pem` unless it is there; returns whether it wrote.
fn add_root(dir: &Path, root: &CertificateDer<'static>) -> Result<bool, AuthorityError> {
    let mut roots = read_roots(dir)?;
    if roots.contains(root) {
        return Ok(false);
    }
    roots.push(root.clone());
    write(
        dir,
        files::ROOT_CERT,
        certs_to_pem(&roots).as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    Ok(true)
}

fn read_roots(dir: &Path) -> Result<Vec<CertificateDer<'static>>, AuthorityError> {
    let path = dir.join(files::ROOT_CERT);
    parse_pem_certs(&fs::read_text(&path)?).map_err(|e| bad_file(&path, e))
}

fn read_record(dir: &Path) -> Result<Option<RotationRecord>, AuthorityError> {
    let path = dir.join(files::ROTATION);
    if !path.exists() {
        return Ok(None);
    }
    serde_json::from_str(&fs::read_text(&path)?)
        .map(Some)
        .map_err(|e| bad_file(&path, e))
}

fn write_record(dir: &Path, record: &RotationRecord) -> Result<(), AuthorityError> {
    let path = dir.join(files::ROTATION);
    let text = serde_json::to_string_pretty(record).map_err(|e| bad_file(&path, e))?;
    write(dir, files::ROTATION, text.as_bytes(), PUBLIC_FILE_MODE)
}

/// The status after a step; reading the published bundle records a changed set of roots under
/// a higher sequence.
fn report(
    dir: &Path,
    record: Option<&RotationRecord>,
    changed: bool,
) -> Result<RotationStatus, AuthorityError> {
    Ok(RotationStatus {
        phase: record.map(|r| r.phase),
        changed,
        bundle: published_trust_bundle(dir)?,
        old_leaves_valid_until: record
            .filter(|r| r.phase == RotationPhase::Switched)
            .and_then(|r| r.old_leaves_valid_until)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
    })
}

fn remove_dir(path: &Path) -> Result<(), AuthorityError> {
    std::fs::remove_dir_all(path).map_err(|e| FsError::new("remove", path, e))?;
    if let Some(parent) = path.parent() {
        fs::sync_dir(parent)?;
    }
    Ok(())
}

fn order(message: &str) -> AuthorityError {
    AuthorityError::RotationOrder(message.to_owned())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
