//! How long `strait validate` takes on a mesh of 10,000 objects: reading the YAML into typed
//! objects, then validating each object and the relations between them.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use strait_bench::config::{OBJECTS_PER_SERVICE, mesh_files};
use strait_discovery::resources::{LoadOptions, Loaded, load_text};
use strait_discovery::validation::{ValidateOptions, validate};

const OBJECTS: usize = 10_000;

fn load(files: &[(Arc<str>, String)]) -> Loaded {
    let mut loaded = Loaded::default();
    for (name, text) in files {
        load_text(name, text, &LoadOptions::default(), &mut loaded);
    }
    loaded
}

fn bench_validate(c: &mut Criterion) {
    let services = OBJECTS.div_ceil(OBJECTS_PER_SERVICE);
    let files: Vec<(Arc<str>, String)> = mesh_files(services, 20)
        .into_iter()
        .map(|(name, text)| (Arc::from(name), text))
        .collect();
    let bytes: usize = files.iter().map(|(_, text)| text.len()).sum();
    eprintln!(
        "{} objects of YAML in {} files, {} bytes",
        services * OBJECTS_PER_SERVICE,
        files.len(),
        bytes
    );
    let loaded = load(&files);
    assert_eq!(loaded.objects.len(), services * OBJECTS_PER_SERVICE);
    let findings = validate(&loaded.objects, &ValidateOptions::default());
    assert!(
        findings
            .iter()
            .all(|f| f.level != strait_discovery::findings::Level::Error),
        "the generated mesh must be valid: {:?}",
        findings.first()
    );

    let mut group = c.benchmark_group("validate 10,000 objects");
    group.sample_size(20);
    group.bench_function("read YAML into objects", |b| b.iter(|| load(&files)));
    group.bench_function("validate objects and relations", |b| {
        b.iter(|| validate(&loaded.objects, &ValidateOptions::default()))
    });
    group.bench_function("read and validate", |b| {
        b.iter(|| {
            let loaded = load(&files);
            validate(&loaded.objects, &ValidateOptions::default())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
