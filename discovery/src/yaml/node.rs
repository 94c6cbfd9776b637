//! A YAML document as a tree of nodes that remember where they were written, so that a finding
//! about `spec.http[2].route[0].weight` can point at the exact place in the file. `super::parse`
//! builds the tree from YAML text.

use std::borrow::Cow;

/// A place in a source file: 1-based line and column. Zero means "unknown".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl Position {
    pub const UNKNOWN: Position = Position { line: 0, column: 0 };

    pub fn is_known(self) -> bool {
        self.line != 0
    }
}

/// One YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub position: Position,
}

/// The value of a node, typed the way a YAML 1.1/1.2 reader types plain scalars (as
/// Kubernetes does: `80` is an integer, `"80"` a string, `yes` a boolean).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Entries in source order; keys are nodes so that a finding about a key can point at it.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The entry `key` of a mapping node, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.is_key(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node of the key `key` (not its value), for findings about the key itself.
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.is_key(key)).map(|(k, _)| k),
            _ => None,
        }
    }

    /// The string value of this node, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar the way it reads as a mapping key once converted to JSON
    /// (Kubernetes turns `80:` into the key `"80"`). `None` for sequences and mappings.
    pub fn scalar_text(&self) -> Option<Cow<'_, str>> {
        match &self.value {
            Value::Null => Some(Cow::Borrowed("null")),
            Value::Bool(b) => Some(Cow::Owned(b.to_string())),
            Value::Int(i) => Some(Cow::Owned(i.to_string())),
            Value::Float(f) => Some(Cow::Owned(f.to_string())),
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Whether this is a mapping key that reads as `key`.
    fn is_key(&self, key: &str) -> bool {
        self.scalar_text().is_some_and(|text| text == key)
    }

    /// Removes the mapping entry `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        match &mut self.value {
            Value::Map(entries) => {
                let index = entries.iter().position(|(k, _)| k.is_key(key))?;
                Some(entries.remove(index).1)
            }
            _ => None,
        }
    }

    /// What kind of YAML value this is, in the words a finding uses.
    pub fn type_name(&self) -> &'static str {
        self.value.type_name()
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::String(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "object",
        }
    }
}

/// Why a file could not be read as YAML at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub message: String,
    pub position: Position,
}
