//! YAML with positions: a node tree that remembers lines and columns, field paths into it,
//! and a serde deserializer that reads typed configuration from it while collecting findings.
//!
//! Nothing here knows Istio; `crate::resources` builds on it.

mod de;
mod node;
mod parse;
mod path;

pub use de::from_node;
pub use node::{Node, Position, SyntaxError, Value};
pub use parse::{parse_document_at, parse_documents, parse_documents_with_lines};
pub use path::{FieldPath, Segment};
