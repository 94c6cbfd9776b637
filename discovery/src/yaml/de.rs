//! Reading typed configuration out of a `Node` tree, collecting every problem on the way.
//!
//! This is a serde `Deserializer` that never gives up on the first problem. It knows every
//! field a type declares (serde hands it the list), so an unknown key is reported as an error
//! with its path and position and then skipped; a value of the wrong type is reported and
//! replaced by an empty one so the rest of the object is still read. Types read this way
//! declare every field optional (`#[serde(default)]`): which fields are required is a
//! validation rule with an Istio-shaped message, not a parse failure.
//!
//! Numbers follow protobuf's JSON mapping, which Istio uses for files: an integer field accepts
//! `80` and `"80"` (int-or-string), a float field accepts integers too.
//!
//! Where the reader is in the document is kept as a borrowed `Trail`, which costs nothing to
//! extend; it becomes a `FieldPath` only when a finding is made.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::node::{Node, Position, Value};
use super::path::FieldPath;
use crate::findings::{Finding, Level};

/// Reads `T` from `node`, whose path in the document is `path`, adding findings to `out`.
/// Always returns a value: where the input is wrong, the finding says so and the value holds
/// what could be read.
pub fn from_node<T: DeserializeOwned + Default>(
    node: &Node,
    path: FieldPath,
    out: &mut Vec<Finding>,
) -> T {
    let sink = RefCell::new(Vec::new());
    let result = T::deserialize(NodeDeserializer {
        node,
        trail: Trail::Root(&path),
        sink: &sink,
    });
    out.append(&mut sink.into_inner());
    match result {
        Ok(value) => value,
        Err(error) => {
            // Our own deserializer recovers from every problem it finds; an error can only come
            // from a type's own `Deserialize` rejecting a value. Report it where it happened.
            out.push(
                Finding::new(Level::Error, "invalid-value", error.message)
                    .at(error.path, error.position),
            );
            T::default()
        }
    }
}

/// Where the reader is: a chain of borrowed steps back to the path it started from.
#[derive(Clone, Copy)]
enum Trail<'a> {
    Root(&'a FieldPath),
    Field(&'a Trail<'a>, &'static str),
    Key(&'a Trail<'a>, &'a str),
    Index(&'a Trail<'a>, usize),
}

impl Trail<'_> {
    fn path(&self) -> FieldPath {
        match self {
            Trail::Root(path) => (*path).clone(),
            Trail::Field(parent, name) => parent.path().field(*name),
            Trail::Key(parent, key) => parent.path().key(key),
            Trail::Index(parent, index) => parent.path().index(*index),
        }
    }

    fn is_list_item(&self) -> bool {
        matches!(self, Trail::Index(..))
    }
}

/// An error a type's `Deserialize` impl raised; carries where it happened once known.
#[derive(Debug)]
pub struct Error {
    message: String,
    path: String,
    position: Position,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error {
            message: message.to_string(),
            path: String::new(),
            position: Position::UNKNOWN,
        }
    }
}

struct NodeDeserializer<'n, 't, 's> {
    node: &'n Node,
    trail: Trail<'t>,
    sink: &'s RefCell<Vec<Finding>>,
}

impl NodeDeserializer<'_, '_, '_> {
    fn report(&self, code: &'static str, message: String) {
        self.sink.borrow_mut().push(
            Finding::new(Level::Error, code, message).at(self.trail.path(), self.node.position),
        );
    }

    fn wrong_type(&self, expected: &str) {
        let hint = match (&self.node.value, expected) {
            (Value::Int(_) | Value::Float(_) | Value::Bool(_), "string") => {
                " (quote the value to make it a string)"
            }
            _ => "",
        };
        self.report(
            "wrong-type",
            format!(
                "must be of type {expected}, found {}{hint}",
                self.node.type_name()
            ),
        );
    }

    /// Attaches this node's position to an error a type raised at or below it, once.
    fn locate(&self, error: Error) -> Error {
        locate(&self.trail, self.node, error)
    }

    fn integer(&self, min: i128, max: i128) -> Option<i128> {
        let value = match &self.node.value {
            Value::Int(i) => *i,
            Value::String(s) => match s.trim().parse::<i128>() {
                Ok(i) => i,
                Err(_) => {
                    self.report(
                        "wrong-type",
                        format!("type conversion error from string {s:?} to integer"),
                    );
                    return None;
                }
            },
            _ => {
                self.wrong_type("integer");
                return None;
            }
        };
        if value < min || value > max {
            self.report(
                "out-of-range",
                format!("{value} is out of range: must be between {min} and {max}"),
            );
            return None;
        }
        Some(value)
    }

    fn float(&self) -> Option<f64> {
        match &self.node.value {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => Some(f),
                Err(_) => {
                    self.report(
                        "wrong-type",
                        format!("type conversion error from string {s:?} to number"),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type("number");
                None
            }
        }
    }
}

/// Gives an error raised by a type's own `Deserialize` the innermost position it passed.
fn locate(trail: &Trail<'_>, node: &Node, mut error: Error) -> Error {
    if !error.position.is_known() {
        error.path = trail.path().to_string();
        error.position = node.position;
    }
    error
}

macro_rules! integer_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let value = self
                .integer(<$ty>::MIN as i128, <$ty>::MAX as i128)
                .and_then(|v| <$ty>::try_from(v).ok())
                .unwrap_or_default();
            visitor.$visit(value).map_err(|e| self.locate(e))
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_, '_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => visitor.visit_i64(i),
                Err(_) => visitor.visit_i128(*i),
            },
            Value::Float(f) => visitor.visit_f64(*f),
            Value::String(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqReader::new(items, self.trail, self.sink)),
            Value::Map(entries) => {
                visitor.visit_map(MapReader::new(entries, self.trail, self.sink))
            }
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = match &self.node.value {
            Value::Bool(b) => *b,
            _ => {
                self.wrong_type("boolean");
                false
            }
        };
        visitor.visit_bool(value).map_err(|e| self.locate(e))
    }

    integer_method!(deserialize_i8, visit_i8, i8);
    integer_method!(deserialize_i16, visit_i16, i16);
    integer_method!(deserialize_i32, visit_i32, i32);
    integer_method!(deserialize_i64, visit_i64, i64);
    integer_method!(deserialize_u8, visit_u8, u8);
    integer_method!(deserialize_u16, visit_u16, u16);
    integer_method!(deserialize_u32, visit_u32, u32);
    integer_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = self.float().unwrap_or_default();
        visitor.visit_f64(value).map_err(|e| self.locate(e))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::String(s) => visitor.visit_str(s),
            _ => {
                self.wrong_type("string");
                visitor.visit_str("")
            }
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    /// A `null` (or `~`, or nothing after the colon) means the field is not set, as Kubernetes
    /// reads it.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Null => visitor.visit_none(),
            _ => {
                let (trail, node) = (self.trail, self.node);
                visitor
                    .visit_some(self)
                    .map_err(|e| locate(&trail, node, e))
            }
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A list. `null` reads as an empty list (the field is unset).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(SeqReader::new(items, self.trail, self.sink)),
            Value::Null => visitor.visit_seq(SeqReader::new(&[], self.trail, self.sink)),
            _ => {
                self.wrong_type("list");
                visitor.visit_seq(SeqReader::new(&[], self.trail, self.sink))
            }
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    /// A map whose keys are data (labels, headers, ports). Keys read as strings, the way JSON
    /// has them; `null` reads as an empty map.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Map(entries) => {
                visitor.visit_map(MapReader::new(entries, self.trail, self.sink))
            }
            Value::Null => visitor.visit_map(MapReader::new(&[], self.trail, self.sink)),
            _ => {
                self.wrong_type("object");
                visitor.visit_map(MapReader::new(&[], self.trail, self.sink))
            }
        };
        result.map_err(|e| self.locate(e))
    }

    /// An object with known fields. Unknown keys are reported and skipped. A `null` list item
    /// where an object is expected is an error (`jwtRules: [~]`); a `null` field is unset.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Map(entries) => {
                let mut reader = MapReader::new(entries, self.trail, self.sink);
                reader.fields = Some(fields);
                visitor.visit_map(reader)
            }
            Value::Null if !self.trail.is_list_item() => {
                visitor.visit_map(MapReader::new(&[], self.trail, self.sink))
            }
            _ => {
                self.wrong_type("object");
                visitor.visit_map(MapReader::new(&[], self.trail, self.sink))
            }
        };
        result.map_err(|e| self.locate(e))
    }

    /// Istio's enums are strings naming a value (`mode: STRICT`); anything else is reported with
    /// the values that are allowed, as Kubernetes reports it.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let chosen = match &self.node.value {
            Value::String(s) if variants.contains(&s.as_str()) => s.as_str(),
            other => {
                let shown = match other {
                    Value::String(s) => format!("{s:?}"),
                    _ => Node {
                        value: other.clone(),
                        position: self.node.position,
                    }
                    .scalar_text()
                    .map_or_else(|| other.type_name().to_owned(), Cow::into_owned),
                };
                let allowed: Vec<String> = variants.iter().map(|v| format!("{v:?}")).collect();
                self.report(
                    "unsupported-value",
                    format!(
                        "Unsupported value: {shown}: supported values: {}",
                        allowed.join(", ")
                    ),
                );
                variants.first().copied().unwrap_or_default()
            }
        };
        visitor
            .visit_enum(chosen.into_deserializer())
            .map_err(|e: de::value::Error| self.locate(de::Error::custom(e)))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

/// Reads list items, each under its own index in the path.
struct SeqReader<'n, 't, 's> {
    items: std::slice::Iter<'n, Node>,
    index: usize,
    trail: Trail<'t>,
    sink: &'s RefCell<Vec<Finding>>,
}

impl<'n, 't, 's> SeqReader<'n, 't, 's> {
    fn new(items: &'n [Node], trail: Trail<'t>, sink: &'s RefCell<Vec<Finding>>) -> Self {
        SeqReader {
            items: items.iter(),
            index: 0,
            trail,
            sink,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqReader<'_, '_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let trail = Trail::Index(&self.trail, self.index);
        self.index += 1;
        seed.deserialize(NodeDeserializer {
            node,
            trail,
            sink: self.sink,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// Reads object fields or map entries. With `fields` set (an object), unknown keys are reported
/// and skipped; without (a map), every key is data.
struct MapReader<'n, 't, 's> {
    entries: std::slice::Iter<'n, (Node, Node)>,
    fields: Option<&'static [&'static str]>,
    current: Option<(Step<'n>, &'n Node)>,
    trail: Trail<'t>,
    sink: &'s RefCell<Vec<Finding>>,
}

/// The key of the entry being read: a declared field, or a key of a data map.
enum Step<'n> {
    Field(&'static str),
    Key(Cow<'n, str>),
}

impl<'n, 't, 's> MapReader<'n, 't, 's> {
    fn new(entries: &'n [(Node, Node)], trail: Trail<'t>, sink: &'s RefCell<Vec<Finding>>) -> Self {
        MapReader {
            entries: entries.iter(),
            fields: None,
            current: None,
            trail,
            sink,
        }
    }
}

fn unknown_field(
    sink: &RefCell<Vec<Finding>>,
    trail: &Trail<'_>,
    key: &Node,
    name: &str,
    fields: &[&str],
) {
    let mut message = format!("unknown field {name:?}");
    if let Some(suggestion) = closest(name, fields) {
        message.push_str(&format!(", did you mean {suggestion:?}?"));
    }
    sink.borrow_mut().push(
        Finding::new(Level::Error, "unknown-field", message)
            .at(trail.path().field(name.to_owned()), key.position),
    );
}

impl<'de> de::MapAccess<'de> for MapReader<'_, '_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        for (key, value) in self.entries.by_ref() {
            let name = match key.scalar_text() {
                Some(name) => name,
                None => {
                    self.sink.borrow_mut().push(
                        Finding::new(
                            Level::Error,
                            "wrong-type",
                            format!("a key must be a string, found {}", key.type_name()),
                        )
                        .at(self.trail.path(), key.position),
                    );
                    continue;
                }
            };
            let step = match self.fields {
                None => Step::Key(name),
                Some(fields) => match fields.iter().find(|f| **f == name) {
                    Some(field) => Step::Field(field),
                    None => {
                        unknown_field(self.sink, &self.trail, key, &name, fields);
                        continue;
                    }
                },
            };
            let text: &str = match &step {
                Step::Field(field) => field,
                Step::Key(key) => key,
            };
            let key_value = seed.deserialize(text.into_deserializer())?;
            self.current = Some((step, value));
            return Ok(Some(key_value));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((step, node)) = self.current.take() else {
            return Err(de::Error::custom("a map value was read before its key"));
        };
        let trail = match &step {
            Step::Field(field) => Trail::Field(&self.trail, field),
            Step::Key(key) => Trail::Key(&self.trail, key),
        };
        seed.deserialize(NodeDeserializer {
            node,
            trail,
            sink: self.sink,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The known field closest to a misspelt one, if it is close enough to be the likely intent
/// (`hots` -> `hosts`, `max_connections` -> `maxConnections`).
fn closest<'f>(name: &str, fields: &[&'f str]) -> Option<&'f str> {
    let folded = fold(name);
    fields
        .iter()
        .map(|field| (edit_distance(&folded, &fold(field)), *field))
        .filter(|(distance, field)| *distance <= (field.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, field)| field)
}

fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::yaml::parse_documents;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "camelCase")]
    struct Port {
        number: Option<u32>,
        name: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    enum Mode {
        #[default]
        Unset,
        Strict,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "camelCase")]
    struct Spec {
        hosts: Vec<String>,
        ports: Vec<Port>,
        labels: BTreeMap<String, String>,
        mode: Option<Mode>,
        weight: Option<f64>,
    }

    fn read(text: &str) -> (Spec, Vec<Finding>) {
        let docs = parse_documents(text).unwrap();
        let mut findings = Vec::new();
        let spec = from_node::<Spec>(&docs[0], FieldPath::ROOT, &mut findings);
        (spec, findings)
    }

    #[test]
    fn reads_a_well_formed_object() {
        let (spec, findings) = read(
            "hosts: [a.example]\nports:\n- number: 80\n  name: http\nlabels: {app: x}\nmode: STRICT\nweight: 2\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(spec.hosts, vec!["a.example"]);
        assert_eq!(spec.ports[0].number, Some(80));
        assert_eq!(spec.labels["app"], "x");
        assert_eq!(spec.mode, Some(Mode::Strict));
        assert_eq!(spec.weight, Some(2.0));
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_path_and_a_suggestion() {
        let (spec, findings) =
            read("hots: [a]\nports:\n- nubmer: 80\n  name: http\n- numbr: 81\nhosts: [b]\n");
        assert_eq!(spec.hosts, vec!["b"]);
        let fields: Vec<&str> = findings.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["hots", "ports[0].nubmer", "ports[1].numbr"]);
        assert!(
            findings[0].message.contains("did you mean \"hosts\""),
            "{findings:?}"
        );
        assert_eq!(findings[1].position, Position { line: 3, column: 3 });
        assert!(
            findings
                .iter()
                .all(|f| f.level == Level::Error && f.code == "unknown-field")
        );
    }

    #[test]
    fn wrong_types_are_reported_and_reading_goes_on() {
        let (spec, findings) = read(
            "hosts: a\nports:\n- number: http\n- number: 81\nlabels: {app: 1.10}\nmode: BLAH\n",
        );
        assert_eq!(spec.ports[1].number, Some(81));
        let fields: Vec<&str> = findings.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["hosts", "ports[0].number", "labels.app", "mode"]);
        assert!(findings[2].message.contains("quote"), "{findings:?}");
        assert!(
            findings[3].message.contains("Unsupported value: \"BLAH\""),
            "{findings:?}"
        );
    }

    #[test]
    fn integers_accept_their_string_form_and_check_range() {
        let (spec, findings) = read("ports:\n- number: \"8080\"\n- number: -1\n");
        assert_eq!(spec.ports[0].number, Some(8080));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].field, "ports[1].number");
        assert_eq!(findings[0].code, "out-of-range");
    }

    #[test]
    fn null_fields_are_unset_but_null_list_items_are_errors() {
        let (spec, findings) = read("hosts: ~\nmode:\nports:\n-\n");
        assert!(spec.hosts.is_empty());
        assert_eq!(spec.mode, None);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].field, "ports[0]");
        assert!(findings[0].message.contains("must be of type object"));
    }

    #[test]
    fn suggestions_only_when_close() {
        assert_eq!(
            closest("max_connections", &["maxConnections", "connectTimeout"]),
            Some("maxConnections")
        );
        assert_eq!(closest("subzet", &["subset", "host"]), Some("subset"));
        assert_eq!(closest("zzzzzz", &["subset", "host"]), None);
    }
}
