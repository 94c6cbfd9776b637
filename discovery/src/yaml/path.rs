//! Field paths such as `spec.http[2].route[0].weight`.
//!
//! A `FieldPath` is a shared, immutable chain of segments: stepping into a field or a list item
//! adds one small link and leaves the parent untouched, so paths are cheap to hand around and to
//! chain (`path.field("port").field("number")`).

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

use super::node::{Node, Value};

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A field of an object (`spec`, `http`).
    Field(Cow<'static, str>),
    /// An item of a list (`[2]`).
    Index(usize),
    /// An entry of a map whose keys are data, not field names (`labels.app`, `portLevelMtls["80"]`).
    Key(Box<str>),
}

/// A path from the document root to a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(Option<Rc<Link>>);

#[derive(Debug, PartialEq, Eq)]
struct Link {
    parent: FieldPath,
    segment: Segment,
}

impl FieldPath {
    /// The document root.
    pub const ROOT: FieldPath = FieldPath(None);

    pub fn field(&self, name: impl Into<Cow<'static, str>>) -> FieldPath {
        self.push(Segment::Field(name.into()))
    }

    pub fn index(&self, index: usize) -> FieldPath {
        self.push(Segment::Index(index))
    }

    pub fn key(&self, key: &str) -> FieldPath {
        self.push(Segment::Key(key.into()))
    }

    fn push(&self, segment: Segment) -> FieldPath {
        FieldPath(Some(Rc::new(Link {
            parent: self.clone(),
            segment,
        })))
    }

    /// The last segment, if this is not the root.
    pub fn last(&self) -> Option<&Segment> {
        self.0.as_ref().map(|link| &link.segment)
    }

    /// Segments from the root down.
    pub fn segments(&self) -> Vec<&Segment> {
        let mut out = Vec::new();
        let mut at = self;
        while let Some(link) = &at.0 {
            out.push(&link.segment);
            at = &link.parent;
        }
        out.reverse();
        out
    }

    /// The deepest node on this path that exists in `root`: the node itself when it exists, else
    /// its nearest existing ancestor (a missing required field points at its parent).
    pub fn locate<'n>(&self, root: &'n Node) -> &'n Node {
        let mut node = root;
        for segment in self.segments() {
            let next = match (segment, &node.value) {
                (Segment::Field(name), Value::Map(_)) => node.get(name),
                (Segment::Key(name), Value::Map(_)) => node.get(name),
                (Segment::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments().into_iter().enumerate() {
            let name: &str = match segment {
                Segment::Index(index) => {
                    write!(f, "[{index}]")?;
                    continue;
                }
                Segment::Field(name) => name,
                Segment::Key(key) => key,
            };
            // A name that would not read back as one step (a misspelt field can hold anything) is
            // quoted.
            if is_plain_key(name) {
                write!(f, "{}{name}", if i == 0 { "" } else { "." })?;
            } else {
                write!(f, "[{name:?}]")?;
            }
        }
        Ok(())
    }
}

/// Keys that read unambiguously after a dot: `labels.app`, `headers.end-user`.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;

    #[test]
    fn renders_like_kubernetes_field_paths() {
        let spec = FieldPath::ROOT.field("spec");
        let weight = spec
            .field("http")
            .index(2)
            .field("route")
            .index(0)
            .field("weight");
        assert_eq!(weight.to_string(), "spec.http[2].route[0].weight");
        assert_eq!(
            spec.field("labels").key("app").to_string(),
            "spec.labels.app"
        );
        assert_eq!(
            spec.field("portLevelMtls").key("80").to_string(),
            "spec.portLevelMtls[\"80\"]"
        );
        assert_eq!(FieldPath::ROOT.to_string(), "");
        assert_eq!(spec.to_string(), "spec", "the parent is untouched");
    }

    #[test]
    fn locates_the_deepest_existing_node() {
        let docs = parse_documents("spec:\n  http:\n  - route:\n    - weight: 5\n").unwrap();
        let first = FieldPath::ROOT
            .field("spec")
            .field("http")
            .index(0)
            .field("route")
            .index(0);
        assert_eq!(first.field("weight").locate(&docs[0]).position.line, 4);
        assert_eq!(first.field("missing").locate(&docs[0]).position.line, 4);
        let beyond = FieldPath::ROOT
            .field("spec")
            .field("http")
            .index(0)
            .field("route")
            .index(7);
        assert_eq!(beyond.locate(&docs[0]).position.line, 4);
    }
}
