//! The README stays true: every field the validator reports as not implemented, and every
//! MeshConfig field it honours, is named in the README's "Fields Strait does not implement".

use strait_discovery::validation::support::{
    MESH_CONFIG_HONOURED, PROXY_CONFIG_HONOURED, unimplemented_fields,
};

fn readme() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_unimplemented_field_is_listed() {
    let readme = readme();
    let section = readme
        .split("### Fields Strait does not implement")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .unwrap_or_default();
    assert!(
        !section.is_empty(),
        "the README has no unimplemented-fields section"
    );
    let rows = unimplemented_fields();
    assert!(rows.len() > 40, "{} rows", rows.len());
    for row in rows {
        let (kind, pattern) = (row.kind, &row.pattern);
        let named = match pattern.split_once('=') {
            Some((_, value)) => value.to_owned(),
            None => pattern.rsplit('.').next().unwrap_or_default().to_owned(),
        };
        // The field as a code span or the end of a dotted path in one: `warmup`, `a.warmup`.
        let listed = section.match_indices(&named).any(|(at, _)| {
            let before = section[..at].chars().next_back();
            let after = section[at + named.len()..].chars().next();
            matches!(before, Some('`' | '.' | ' ')) && matches!(after, Some('`' | ' ' | ','))
        });
        assert!(
            section.contains(kind.as_str()) && listed,
            "README does not list {kind} {pattern} (looked for {named})"
        );
    }
    for field in MESH_CONFIG_HONOURED.iter().chain(PROXY_CONFIG_HONOURED) {
        assert!(
            section.contains(&format!("`{field}`")),
            "README does not name {field}"
        );
    }
}
