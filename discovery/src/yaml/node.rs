//! A YAML document as a tree of nodes that remember where they were written.
//!
//! serde-saphyr does the YAML work (the YAML 1.2 grammar, anchors and aliases with limits
//! against alias bombs, duplicate-key errors, scalar typing as Kubernetes reads it); this module
//! keeps its result as a small tree in which every node carries its line and column, so that a
//! finding about `spec.http[2].route[0].weight` can point at the exact place in the file.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

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
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node of the key `key` (not its value), for findings about the key itself.
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
                .map(|(k, _)| k),
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
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some("null".to_owned()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::String(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Removes the mapping entry `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        match &mut self.value {
            Value::Map(entries) => {
                let index = entries
                    .iter()
                    .position(|(k, _)| k.scalar_text().as_deref() == Some(key))?;
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

/// Parses every document of a YAML stream. Empty documents (a lone `---`, or only comments)
/// are skipped; positions stay absolute within the file.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
    };
    let mut documents =
        serde_saphyr::from_multiple_with_options::<Node>(text, options).map_err(|error| {
            let position = error
                .location()
                .map(|l| Position {
                    line: u32::try_from(l.line()).unwrap_or(0),
                    column: u32::try_from(l.column()).unwrap_or(0),
                })
                .unwrap_or(Position::UNKNOWN);
            SyntaxError {
                message: first_line(&error.to_string()),
                position,
            }
        })?;
    let lines: Vec<&str> = text.lines().collect();
    for document in &mut documents {
        read_adjacent_colons_as_text(document, &lines);
    }
    Ok(documents)
}

/// Kubernetes reads YAML with go-yaml, which keeps a `:` that touches a flow indicator inside a
/// plain scalar: `[1.2.3.4, 2001:db8::]` is two strings there. YAML 1.2 (and so serde-saphyr)
/// reads the second item as the mapping `{"2001:db8:": null}`. Where the source shows exactly
/// that spelling (a key, `:`, then `,` `]` or `}`), the item is read as go-yaml reads it.
fn read_adjacent_colons_as_text(node: &mut Node, lines: &[&str]) {
    match &mut node.value {
        Value::Seq(items) => {
            for item in items.iter_mut() {
                if let Some(text) = adjacent_colon_text(item, lines) {
                    item.value = Value::String(text);
                } else {
                    read_adjacent_colons_as_text(item, lines);
                }
            }
        }
        Value::Map(entries) => {
            for (_, value) in entries.iter_mut() {
                read_adjacent_colons_as_text(value, lines);
            }
        }
        _ => {}
    }
}

fn adjacent_colon_text(item: &Node, lines: &[&str]) -> Option<String> {
    let Value::Map(entries) = &item.value else {
        return None;
    };
    let [(key, value)] = entries.as_slice() else {
        return None;
    };
    let (Value::String(key_text), Value::Null) = (&key.value, &value.value) else {
        return None;
    };
    let line = lines.get(usize::try_from(key.position.line).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(key.position.column).ok()?.checked_sub(1)?;
    let source: String = line.chars().skip(column).collect();
    let rest = source.strip_prefix(key_text.as_str())?.strip_prefix(':')?;
    rest.starts_with([',', ']', '}'])
        .then(|| format!("{key_text}:"))
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    // serde-saphyr appends " at line L column C"; we report the position separately.
    match line.rfind(" at line ") {
        Some(cut) if cut > 0 => line[..cut].to_owned(),
        _ => line.to_owned(),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            position: Position {
                line: u32::try_from(spanned.referenced.line()).unwrap_or(0),
                column: u32::try_from(spanned.referenced.column()).unwrap_or(0),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_remember_line_and_column() {
        let docs = parse_documents("a: 1\nb:\n  - x\n  - \"80\"\n").unwrap();
        assert_eq!(docs.len(), 1);
        let b = docs[0].get("b").unwrap();
        let Value::Seq(items) = &b.value else {
            panic!("b is not a list: {b:?}")
        };
        assert_eq!(items[1].value, Value::String("80".into()));
        assert_eq!(items[1].position, Position { line: 4, column: 5 });
        assert_eq!(docs[0].get("a").unwrap().value, Value::Int(1));
        assert_eq!(docs[0].key_node("b").unwrap().position.line, 2);
    }

    #[test]
    fn plain_scalars_are_typed_as_kubernetes_types_them() {
        let docs = parse_documents("a: 80\nb: '80'\nc: true\nd: 1.5\ne:\nf: ~\ng: yes\n").unwrap();
        let d = &docs[0];
        assert_eq!(d.get("a").unwrap().value, Value::Int(80));
        assert_eq!(d.get("b").unwrap().value, Value::String("80".into()));
        assert_eq!(d.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(d.get("d").unwrap().value, Value::Float(1.5));
        assert_eq!(d.get("e").unwrap().value, Value::Null);
        assert_eq!(d.get("f").unwrap().value, Value::Null);
        assert_eq!(d.get("g").unwrap().value, Value::Bool(true));
    }

    #[test]
    fn multi_document_streams_keep_positions_absolute() {
        let docs = parse_documents("a: 1\n---\nb: 2\n---\n").unwrap();
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[1].get("b").unwrap().position.line, 3);
    }

    #[test]
    fn a_colon_touching_a_flow_indicator_stays_in_the_scalar_as_in_go_yaml() {
        let docs = parse_documents("a: [1.2.3.4, 001:db8::]\nb: [x: ]\nc: [y: z]\n").unwrap();
        let Value::Seq(a) = &docs[0].get("a").unwrap().value else {
            panic!()
        };
        assert_eq!(a[1].value, Value::String("001:db8::".into()));
        let Value::Seq(b) = &docs[0].get("b").unwrap().value else {
            panic!()
        };
        assert!(
            matches!(b[0].value, Value::Map(_)),
            "a colon and a space is a mapping"
        );
        let Value::Seq(c) = &docs[0].get("c").unwrap().value else {
            panic!()
        };
        assert!(matches!(c[0].value, Value::Map(_)));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let error = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(error.position.is_known(), "{error:?}");
        assert!(!error.message.is_empty());
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let error = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(error.position.line, 2, "{error:?}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse_documents(&text).is_err());
    }
}
