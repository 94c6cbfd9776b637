//! Istio's own configuration corpus (`../shared/corpus/istio`, copied from istio/istio): every
//! valid file validates without an error, and every invalid document of a supported kind is
//! rejected for the field and reason Istio's test expects (its `_err` key).
//!
//! The corpus lives beside the repository; where it is absent the tests say so and pass, except
//! under CI, where its absence is a failure.

// Test helpers fail loudly on a broken corpus, which is what a test should do.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strait_discovery::findings::{Finding, Level};
use strait_discovery::resources::{self, LoadOptions, Loaded};
use strait_discovery::validation::{ValidateOptions, validate, validate_paths};
use strait_discovery::yaml::{self, Node};

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("STRAIT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/istio"));
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the Istio corpus is missing at {} and CI is set: it must be present",
        dir.display()
    );
    eprintln!(
        "SKIPPED: the Istio corpus is not at {} (set STRAIT_CORPUS to its path)",
        dir.display()
    );
    None
}

fn yaml_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {suffix} files in {}", dir.display());
    files
}

fn errors(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn bookinfo_and_multicluster_files_validate_without_errors() {
    let Some(corpus) = corpus() else { return };
    for dir in ["bookinfo", "multicluster"] {
        for file in yaml_files(&corpus.join(dir), ".yaml") {
            let report = validate_paths(
                std::slice::from_ref(&file),
                &LoadOptions::default(),
                &ValidateOptions::default(),
            );
            assert!(report.objects > 0, "{}: no objects", file.display());
            let errors = errors(&report.findings);
            assert!(
                errors.is_empty(),
                "{}:\n{}",
                file.display(),
                errors.join("\n")
            );
        }
    }
}

#[test]
fn valid_validation_files_validate_without_errors() {
    let Some(corpus) = corpus() else { return };
    for file in yaml_files(&corpus.join("validation"), "-valid.yaml") {
        let report = validate_paths(
            std::slice::from_ref(&file),
            &LoadOptions::default(),
            &ValidateOptions::default(),
        );
        let errors = errors(&report.findings);
        assert!(
            errors.is_empty(),
            "{}:\n{}",
            file.display(),
            errors.join("\n")
        );
    }
}

/// Istio's expected error: an optional field path, then a reason.
struct Expected {
    path: Option<String>,
    reason: String,
}

impl Expected {
    /// `spec.hosts: Required value`, `audiences[0] in body should be ...`, or a bare reason.
    fn parse(text: &str) -> Expected {
        for separator in [": ", " in body "] {
            if let Some((path, reason)) = text.split_once(separator) {
                let looks_like_path = !path.is_empty()
                    && path
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c))
                    && (path.contains('.')
                        || path.contains('[')
                        || path == "spec"
                        || separator == " in body ");
                if looks_like_path {
                    return Expected {
                        path: Some(path.to_owned()),
                        reason: reason.to_owned(),
                    };
                }
            }
        }
        Expected {
            path: None,
            reason: text.to_owned(),
        }
    }

    fn matched_by(&self, finding: &Finding) -> bool {
        let path_ok = match &self.path {
            None => true,
            Some(path) => {
                finding.field == *path
                    || finding
                        .field
                        .strip_suffix(path.as_str())
                        .is_some_and(|before| before.ends_with('.'))
            }
        };
        finding.level == Level::Error && path_ok && finding.message.contains(&self.reason)
    }
}

/// Rejections Istio expects that Strait does not implement yet. Each entry is reported in the
/// README; an entry that starts passing must be removed (the test fails on it).
const KNOWN_GAPS: &[(&str, &str)] = &[];

#[test]
fn invalid_documents_are_rejected_for_the_expected_field_and_reason() {
    let Some(corpus) = corpus() else { return };
    let mut checked = 0;
    let mut unsupported = 0;
    for file in yaml_files(&corpus.join("validation"), "-invalid.yaml") {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown: Arc<str> = Arc::from(file.display().to_string());
        for mut node in yaml::parse_documents(&text).unwrap() {
            let expected = node
                .remove("_err")
                .and_then(|e| e.as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("{shown}: a document without _err"));
            let name = name_of(&node);
            let mut loaded = Loaded::default();
            resources::load_document(&shown, node, &LoadOptions::default(), &mut loaded);
            let mut findings = loaded.findings;
            if loaded.objects.is_empty() {
                assert!(
                    findings.iter().any(|f| f.code == "kind-not-supported"),
                    "{shown} {name}: neither read nor reported as unsupported: {findings:?}"
                );
                unsupported += 1;
                continue;
            }
            findings.extend(validate(&loaded.objects, &ValidateOptions::default()));
            let expectation = Expected::parse(&expected);
            let found = findings.iter().any(|f| expectation.matched_by(f));
            let gap = KNOWN_GAPS
                .iter()
                .any(|(f, n)| shown.ends_with(f) && *n == name);
            if gap {
                assert!(
                    !found,
                    "{shown} {name}: listed as a known gap but now rejected; remove it"
                );
                continue;
            }
            assert!(
                found,
                "{shown} {name}: expected an error matching {expected:?}, found:\n{}",
                findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} invalid documents checked");
    assert!(
        unsupported > 0,
        "the corpus holds kinds Strait does not read"
    );
    eprintln!(
        "{checked} invalid documents rejected as expected; {unsupported} of unsupported kinds"
    );
}

fn name_of(node: &Node) -> String {
    node.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or("?")
        .to_owned()
}
