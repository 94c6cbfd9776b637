//! The configuration directory as a source of objects: read, validated, with the last good
//! version of each object kept.
//!
//! An object with validation errors is rejected alone; when an earlier version of it (same kind,
//! namespace and name) was accepted, that version stays in force. A file that cannot be read or
//! parsed at all keeps the objects it held last time. Everything else applies: a directory
//! change never empties the configuration because one file is broken.
//!
//! Changes are found by polling a fingerprint of the files (path, size, modification time),
//! which works the same for plain directories, editors that replace files, and Kubernetes
//! ConfigMap mounts that swap a symlink.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::findings::{Finding, Level, ObjectRef};
use crate::resources::{LoadOptions, Loaded, Object, config_files_of, load_text, read_text};
use crate::validation::{ValidateOptions, analyze, validate_object};

/// What one read of the directory yields.
#[derive(Debug)]
pub struct Revision {
    /// The objects in force: the valid ones read now, and the last good version of the ones
    /// rejected now.
    pub objects: Vec<Arc<Object>>,
    /// Every finding of this read, in file order.
    pub findings: Vec<Finding>,
    /// Objects rejected now whose last good version stays in force.
    pub kept: Vec<ObjectRef>,
    /// Objects rejected now with no earlier version to keep.
    pub rejected: Vec<ObjectRef>,
}

/// A configuration directory (or files) read again whenever it changes.
///
/// A file whose text is the same as last time is not parsed or validated again: its objects
/// and their own findings are kept from then (how objects relate is always checked again).
#[derive(Debug)]
pub struct DirectorySource {
    paths: Vec<PathBuf>,
    load: LoadOptions,
    validate: ValidateOptions,
    /// Accepted objects by `(kind, namespace, name)`.
    last_good: BTreeMap<ObjectRef, Arc<Object>>,
    /// What each file read last time held.
    files: HashMap<PathBuf, FileRead>,
}

/// Files read in parallel at most: beyond this, reading is bound by memory, not CPU.
const MAX_READ_THREADS: usize = 8;

/// A file's path, its name in findings, its text, and what it held last time when the text is
/// the same.
type FileText = (PathBuf, Arc<str>, String, Option<FileRead>);

/// One file as read and validated: its text, its objects, and the findings about them alone.
#[derive(Debug)]
struct FileRead {
    text: Arc<str>,
    objects: Vec<Arc<Object>>,
    findings: Vec<Finding>,
}

impl DirectorySource {
    pub fn new(
        paths: Vec<PathBuf>,
        load: LoadOptions,
        validate: ValidateOptions,
    ) -> DirectorySource {
        DirectorySource {
            paths,
            load,
            validate,
            last_good: BTreeMap::new(),
            files: HashMap::new(),
        }
    }

    /// Reads and validates everything, keeping last good versions of what is rejected now.
    pub fn read(&mut self) -> Revision {
        let (files, mut findings) = config_files_of(&self.paths);
        let mut previous = std::mem::take(&mut self.files);
        // Each file's text, and what it held last time when the text is the same.
        let mut texts = Vec::new();
        for path in files {
            let shown: Arc<str> = Arc::from(path.display().to_string());
            match read_text(&path, &shown) {
                Ok(text) => {
                    let kept = previous.remove(&path).filter(|file| *file.text == *text);
                    texts.push((path, shown, text, kept));
                }
                Err(finding) => findings.push(*finding),
            }
        }
        let read = self.read_changed(texts);
        let mut objects: Vec<Arc<Object>> = Vec::new();
        for (path, file) in read {
            findings.extend(file.findings.iter().cloned());
            objects.extend(file.objects.iter().cloned());
            self.files.insert(path, file);
        }
        let all: Vec<&Object> = objects.iter().map(|object| &**object).collect();
        analyze(&all, &self.validate, &mut findings);
        drop(all);
        findings.sort_by(|a, b| {
            (a.file.as_deref(), a.position, a.level).cmp(&(b.file.as_deref(), b.position, b.level))
        });
        // Errors name the object, or (when a file could not be parsed) only the file.
        let mut rejected_objects: BTreeSet<(Option<&str>, &ObjectRef)> = BTreeSet::new();
        let mut broken_files: BTreeSet<&str> = BTreeSet::new();
        for finding in findings.iter().filter(|f| f.level == Level::Error) {
            match (&finding.object, finding.file.as_deref()) {
                (Some(object), file) => {
                    rejected_objects.insert((file, object));
                }
                (None, Some(file)) => {
                    broken_files.insert(file);
                }
                (None, None) => {}
            }
        }
        let mut accepted: BTreeMap<ObjectRef, Arc<Object>> = BTreeMap::new();
        let mut kept = Vec::new();
        let mut rejected = Vec::new();
        for object in objects {
            let key = object.object_ref();
            if rejected_objects.contains(&(Some(&*object.source.file), &key)) {
                match self.last_good.get(&key) {
                    Some(previous) => {
                        accepted.insert(key.clone(), previous.clone());
                        kept.push(key);
                    }
                    None => rejected.push(key),
                }
            } else {
                accepted.entry(key).or_insert(object);
            }
        }
        // A file that could not be read keeps what it held.
        for (key, previous) in &self.last_good {
            if broken_files.contains(&*previous.source.file) && !accepted.contains_key(key) {
                accepted.insert(key.clone(), previous.clone());
                kept.push(key.clone());
            }
        }
        self.last_good = accepted.clone();
        Revision {
            objects: accepted.into_values().collect(),
            findings,
            kept,
            rejected,
        }
    }

    /// Parses and validates the files that changed, on as many threads as there are CPUs (each
    /// file on its own; the order stays that of `texts`).
    fn read_changed(&self, texts: Vec<FileText>) -> Vec<(PathBuf, FileRead)> {
        let changed = texts.iter().filter(|(.., kept)| kept.is_none()).count();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_READ_THREADS)
            .min(changed);
        if threads <= 1 {
            return texts
                .into_iter()
                .map(|(path, shown, text, kept)| {
                    let file = kept.unwrap_or_else(|| self.read_file(&shown, text));
                    (path, file)
                })
                .collect();
        }
        let pending: Vec<Mutex<Option<FileText>>> =
            texts.into_iter().map(|t| Mutex::new(Some(t))).collect();
        let next = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = pending.get(index) else {
                    return done;
                };
                let taken = slot.lock().map(|mut slot| slot.take());
                if let Ok(Some((path, shown, text, kept))) = taken {
                    let file = kept.unwrap_or_else(|| self.read_file(&shown, text));
                    done.push((index, path, file));
                }
            }
        };
        let mut read: Vec<(usize, PathBuf, FileRead)> = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut read = work();
            for helper in helpers {
                match helper.join() {
                    Ok(done) => read.extend(done),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            read
        });
        read.sort_by_key(|(index, ..)| *index);
        read.into_iter()
            .map(|(_, path, file)| (path, file))
            .collect()
    }

    /// Parses and validates one file's text. The objects keep the text instead of their node
    /// trees, which a finding found later reads again.
    fn read_file(&self, shown: &Arc<str>, text: String) -> FileRead {
        let mut loaded = Loaded::default();
        load_text(shown, &text, &self.load, &mut loaded);
        let mut findings = loaded.findings;
        for object in &loaded.objects {
            validate_object(object, &mut findings);
        }
        let text: Arc<str> = Arc::from(text);
        let objects = loaded
            .objects
            .into_iter()
            .map(|mut object| {
                object.source.keep_text_only(&text);
                Arc::new(object)
            })
            .collect();
        FileRead {
            text,
            objects,
            findings,
        }
    }
}

/// A fingerprint of every file under `paths` (path, size, modification time): it changes when
/// a file is added, removed, or written.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        fingerprint_path(path, &mut hasher, 0);
    }
    hasher.finish()
}

fn fingerprint_path(path: &Path, hasher: &mut DefaultHasher, depth: usize) {
    path.hash(hasher);
    let Ok(meta) = std::fs::metadata(path) else {
        0u8.hash(hasher);
        return;
    };
    if meta.is_dir() {
        if depth > 16 {
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => return,
        };
        entries.sort();
        for entry in entries {
            // `..data` and friends are followed through the links that point into them.
            let hidden = entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden {
                fingerprint_path(&entry, hasher, depth + 1);
            }
        }
    } else {
        meta.len().hash(hasher);
        if let Ok(modified) = meta.modified() {
            modified.hash(hasher);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "strait-source-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const GOOD: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: default}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n";
    const BAD: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: default}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 70000, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.2}]\n";

    fn address(revision: &Revision) -> Option<String> {
        revision.objects.iter().find_map(|o| match &o.spec {
            crate::resources::Spec::ServiceEntry(se) => {
                se.endpoints.as_ref()?.first()?.address.clone()
            }
            _ => None,
        })
    }

    #[test]
    fn a_rejected_object_keeps_its_last_good_version() {
        let root = dir();
        let file = root.join("se.yaml");
        std::fs::write(&file, GOOD).unwrap();
        let mut source = DirectorySource::new(
            vec![root.clone()],
            LoadOptions::default(),
            ValidateOptions::default(),
        );
        let first = source.read();
        assert_eq!(address(&first).as_deref(), Some("10.0.0.1"));
        std::fs::write(&file, BAD).unwrap();
        let second = source.read();
        assert_eq!(
            address(&second).as_deref(),
            Some("10.0.0.1"),
            "the last good version stays"
        );
        assert_eq!(second.kept.len(), 1);
        assert!(second.findings.iter().any(|f| f.level == Level::Error));
        // A file that does not parse keeps its objects too.
        std::fs::write(&file, "kind: [unclosed").unwrap();
        let third = source.read();
        assert_eq!(address(&third).as_deref(), Some("10.0.0.1"));
        // Removing the file is a valid change: the object goes.
        std::fs::remove_file(&file).unwrap();
        assert!(source.read().objects.is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_invalid_object_with_no_history_is_rejected() {
        let root = dir();
        std::fs::write(root.join("se.yaml"), BAD).unwrap();
        let mut source = DirectorySource::new(
            vec![root.clone()],
            LoadOptions::default(),
            ValidateOptions::default(),
        );
        let revision = source.read();
        assert!(revision.objects.is_empty());
        assert_eq!(revision.rejected.len(), 1);
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Findings of every kind: a field error, warnings about how objects relate (found after the
    /// node trees were dropped), a duplicate, and objects inside a `List`.
    const MIXED: &str = "# gateways\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
        metadata: {name: web, namespace: default}\nspec:\n  hosts: [web.example.com]\n  \
        gateways: [missing]\n  http:\n  - route:\n    - destination: {host: nowhere.example.com}\n\
        ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
        metadata: {name: web, namespace: default}\nspec:\n  hosts: [web.example.com]\n  \
        gateways: [missing-too]\n  http:\n  - timeout: nonsense\n    route:\n    \
        - destination: {host: web.example.com}\n";
    const LIST: &str = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  \
        kind: DestinationRule\n  metadata: {name: dr}\n  spec:\n    host: nowhere.example.com\n    \
        subsets: [{name: v1, labels: {version: v1}}]\n- apiVersion: networking.istio.io/v1\n  \
        kind: VirtualService\n  metadata: {name: listed}\n  spec:\n    hosts: [listed.example.com]\n    \
        gateways: [absent]\n    http:\n    - route:\n      - destination: {host: nowhere.example.com, subset: v2}\n";

    #[test]
    fn findings_name_the_same_places_as_validating_the_files() {
        let root = dir();
        std::fs::write(root.join("a.yaml"), MIXED).unwrap();
        std::fs::write(root.join("b.yaml"), LIST).unwrap();
        std::fs::write(root.join("c.yaml"), GOOD).unwrap();
        let paths = vec![root.clone()];
        let expected = crate::validation::validate_paths(
            &paths,
            &LoadOptions::default(),
            &ValidateOptions::default(),
        )
        .findings;
        assert!(
            expected.iter().any(|f| f.level == Level::Error)
                && expected
                    .iter()
                    .filter(|f| f.level == Level::Warning)
                    .count()
                    >= 3,
            "{expected:#?}"
        );
        let mut source =
            DirectorySource::new(paths, LoadOptions::default(), ValidateOptions::default());
        assert_eq!(source.read().findings, expected);
        assert_eq!(
            source.read().findings,
            expected,
            "and again from what was kept"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn only_files_that_changed_are_read_again() {
        let root = dir();
        std::fs::write(root.join("a.yaml"), GOOD).unwrap();
        std::fs::write(root.join("b.yaml"), LIST).unwrap();
        let mut source = DirectorySource::new(
            vec![root.clone()],
            LoadOptions::default(),
            ValidateOptions::default(),
        );
        let first = source.read();
        let listed = |revision: &Revision| {
            revision
                .objects
                .iter()
                .find(|o| o.name() == "listed")
                .cloned()
                .unwrap()
        };
        std::fs::write(root.join("a.yaml"), GOOD.replace("10.0.0.1", "10.0.0.9")).unwrap();
        let second = source.read();
        assert_eq!(address(&second).as_deref(), Some("10.0.0.9"));
        assert!(
            Arc::ptr_eq(&listed(&first), &listed(&second)),
            "an unchanged file's objects are kept as they were"
        );
        // The same length and a rewrite in the same instant still count: the text is compared.
        std::fs::write(root.join("a.yaml"), GOOD.replace("10.0.0.1", "10.0.0.8")).unwrap();
        assert_eq!(address(&source.read()).as_deref(), Some("10.0.0.8"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_fingerprint_follows_writes_additions_and_removals() {
        let root = dir();
        let paths = vec![root.clone()];
        let empty = fingerprint(&paths);
        std::fs::write(root.join("a.yaml"), "x").unwrap();
        let one = fingerprint(&paths);
        assert_ne!(empty, one);
        assert_eq!(one, fingerprint(&paths), "stable while nothing changes");
        std::fs::write(root.join("a.yaml"), "xy").unwrap();
        assert_ne!(one, fingerprint(&paths));
        std::fs::remove_file(root.join("a.yaml")).unwrap();
        assert_eq!(empty, fingerprint(&paths));
        std::fs::remove_dir_all(root).unwrap();
    }
}
