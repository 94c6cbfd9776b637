//! Reading YAML text into node trees.
//!
//! The YAML grammar is granit-parser's (a YAML 1.2 parser, the one serde-saphyr is built on); this
//! module turns its events straight into `Node`s with their lines and columns, typing plain
//! scalars the way Kubernetes' go-yaml does (`80` an integer, `"80"` a string, `yes` a boolean),
//! resolving anchors, aliases and merge keys, and refusing what no configuration needs: duplicate
//! keys, nesting deeper than `MAX_DEPTH`, and aliases that expand past `MAX_EXPANDED_NODES`
//! (alias bombs).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use granit_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};

use super::node::{Node, Position, SyntaxError, Value};

/// Deeper nesting than any configuration has; it guards the stack.
const MAX_DEPTH: usize = 128;
/// Nodes that aliases may copy in one stream, however they nest.
const MAX_EXPANDED_NODES: usize = 1_000_000;
/// A mapping checks duplicate keys by scanning until it is this large, then with a set.
const SMALL_MAP: usize = 16;

/// Parses every document of a YAML stream. Empty documents (a lone `---`, or only comments)
/// are skipped; positions stay absolute within the file.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    Ok(parse_documents_with_lines(text)?
        .into_iter()
        .map(|(_, node)| node)
        .collect())
}

/// Parses every document of a YAML stream, each with the line its document starts on (the
/// `---` line, or its first line when it has none): `parse_document_at` reads it again from
/// there.
pub fn parse_documents_with_lines(text: &str) -> Result<Vec<(u32, Node)>, SyntaxError> {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| scan_error(&e))?;
        builder.event(event, span)?;
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut documents = builder.documents;
    for (_, document) in &mut documents {
        read_adjacent_colons_as_text(document, &lines);
    }
    Ok(documents)
}

/// Parses again the one document of `text` that starts on `line` (as
/// `parse_documents_with_lines` gave it), with the same positions: only that document's text
/// is read. `None` when no document starts there.
pub fn parse_document_at(text: &str, line: u32) -> Option<Node> {
    let skip = usize::try_from(line.checked_sub(1)?).ok()?;
    let start = if skip == 0 {
        0
    } else {
        text.match_indices('\n').nth(skip - 1)?.0 + 1
    };
    let rest = text.get(start..)?;
    let mut builder = Builder::default();
    for event in Parser::new_from_str(rest) {
        let (event, span) = event.ok()?;
        let ended = matches!(event, Event::DocumentEnd);
        builder.event(event, span).ok()?;
        if ended && !builder.documents.is_empty() {
            break;
        }
    }
    let (_, mut node) = builder.documents.into_iter().next()?;
    let lines: Vec<&str> = rest.lines().collect();
    read_adjacent_colons_as_text(&mut node, &lines);
    shift_lines(&mut node, line - 1);
    Some(node)
}

/// Moves every position of a tree `by` lines down.
fn shift_lines(node: &mut Node, by: u32) {
    if node.position.is_known() {
        node.position.line += by;
    }
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|item| shift_lines(item, by)),
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                shift_lines(key, by);
                shift_lines(value, by);
            }
        }
        _ => {}
    }
}

fn scan_error(error: &ScanError) -> SyntaxError {
    let marker = error.marker();
    SyntaxError {
        message: error.info(),
        position: position(marker.line(), marker.col()),
    }
}

/// A 1-based line and a 0-based column into a `Position`.
fn position(line: usize, column: usize) -> Position {
    Position {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column + 1).unwrap_or(u32::MAX),
    }
}

/// A collection being built.
struct Frame {
    node: Node,
    anchor: usize,
    /// A mapping's key waiting for its value.
    key: Option<Node>,
    /// A mapping's `<<` values, merged in when the mapping ends.
    merges: Vec<Node>,
    /// A large mapping's keys, for finding duplicates.
    keys: Option<HashSet<String>>,
}

#[derive(Default)]
struct Builder {
    /// Finished documents, each with the line it starts on.
    documents: Vec<(u32, Node)>,
    /// The line the current document starts on.
    document_line: u32,
    stack: Vec<Frame>,
    /// Anchored nodes and how many nodes each holds.
    anchors: HashMap<usize, (Node, usize)>,
    expanded: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let at = position(span.start.line(), span.start.col());
        match event {
            Event::DocumentStart(..) => self.document_line = at.line,
            Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentEnd => self.anchors.clear(),
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(&text, style, tag.as_deref(), at)?;
                self.complete(
                    Node {
                        value,
                        position: at,
                    },
                    anchor,
                )?;
            }
            Event::SequenceStart(_, anchor, _) => self.open(Value::Seq(Vec::new()), anchor, at)?,
            Event::MappingStart(_, anchor, _) => self.open(Value::Map(Vec::new()), anchor, at)?,
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let node = finish(frame.node, frame.merges);
                    self.complete(node, frame.anchor)?;
                }
            }
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id) else {
                    return Err(error(at, "an alias names an unknown anchor"));
                };
                self.expanded += size;
                if self.expanded > MAX_EXPANDED_NODES {
                    return Err(error(
                        at,
                        "aliases expand to too many nodes (an alias bomb?)",
                    ));
                }
                let mut node = node.clone();
                node.position = at;
                self.complete(node, 0)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn open(&mut self, value: Value, anchor: usize, at: Position) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(error(at, "nesting is too deep"));
        }
        self.stack.push(Frame {
            node: Node {
                value,
                position: at,
            },
            anchor,
            key: None,
            merges: Vec::new(),
            keys: None,
        });
        Ok(())
    }

    /// A finished node goes into its parent, or becomes a document.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size(&node)));
        }
        let Some(frame) = self.stack.last_mut() else {
            if node.value != Value::Null {
                self.documents.push((self.document_line, node));
            }
            return Ok(());
        };
        match &mut frame.node.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match frame.key.take() {
                None => frame.key = Some(node),
                Some(key) if matches!(&key.value, Value::String(k) if k == "<<") => {
                    frame.merges.push(node);
                }
                Some(key) => {
                    if let Some(text) = key.scalar_text() {
                        let duplicate = match &mut frame.keys {
                            Some(keys) => !keys.insert(text.into_owned()),
                            None => {
                                let duplicate = entries
                                    .iter()
                                    .any(|(k, _)| k.scalar_text().is_some_and(|k| k == text));
                                if entries.len() >= SMALL_MAP {
                                    frame.keys = Some(
                                        entries
                                            .iter()
                                            .filter_map(|(k, _)| {
                                                k.scalar_text().map(Cow::into_owned)
                                            })
                                            .chain([text.into_owned()])
                                            .collect(),
                                    );
                                }
                                duplicate
                            }
                        };
                        if duplicate {
                            return Err(error(key.position, "duplicate mapping key"));
                        }
                    }
                    entries.push((key, node));
                }
            },
            _ => {}
        }
        Ok(())
    }
}

/// Applies `<<` merges: the merged mappings' entries that the mapping does not set itself.
fn finish(mut node: Node, merges: Vec<Node>) -> Node {
    let Value::Map(entries) = &mut node.value else {
        return node;
    };
    for merge in merges {
        let sources = match merge.value {
            Value::Seq(items) => items,
            Value::Map(_) => vec![merge],
            _ => continue,
        };
        for source in sources {
            let Value::Map(merged) = source.value else {
                continue;
            };
            for (key, value) in merged {
                let present = entries.iter().any(|(k, _)| k.value == key.value);
                if !present {
                    entries.push((key, value));
                }
            }
        }
    }
    node
}

/// How many nodes a tree holds.
fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(size).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

fn error(at: Position, message: &str) -> SyntaxError {
    SyntaxError {
        message: message.to_owned(),
        position: at,
    }
}

/// A scalar's value: quoted and block scalars are strings; a plain one is typed as go-yaml types
/// it; a core-schema tag (`!!str`, `!!int`, ...) decides where one is written.
fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    at: Position,
) -> Result<Value, SyntaxError> {
    match tag.and_then(Tag::core_suffix) {
        Some("str") => return Ok(Value::String(text.to_owned())),
        Some("null") => return Ok(Value::Null),
        Some(kind @ ("int" | "float" | "bool")) => {
            let value = plain(text);
            let matches = matches!(
                (kind, &value),
                ("int", Value::Int(_))
                    | ("float", Value::Float(_) | Value::Int(_))
                    | ("bool", Value::Bool(_))
            );
            if !matches {
                return Err(error(at, &format!("{text:?} is not a valid !!{kind}")));
            }
            return Ok(match value {
                Value::Int(i) if kind == "float" => Value::Float(i as f64),
                other => other,
            });
        }
        _ => {}
    }
    Ok(match style {
        ScalarStyle::Plain => plain(text),
        _ => Value::String(text.to_owned()),
    })
}

/// Types a plain scalar: YAML 1.1 booleans and null as go-yaml reads them, integers (decimal,
/// `0x`, `0o`, `0b`, and a leading `0` for octal), floats (with `.inf` and `.nan`), else a
/// string.
fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "y" | "Y" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "n" | "N" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = integer(text) {
        return Value::Int(i);
    }
    if is_float(text)
        && let Ok(f) = text.replace('_', "").parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::String(text.to_owned())
}

fn integer(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = digits.strip_prefix("0o") {
        (8, octal)
    } else if let Some(binary) = digits.strip_prefix("0b") {
        (2, binary)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty()
        || body.starts_with('_')
        || !body.chars().all(|c| c == '_' || c.is_digit(radix))
    {
        return None;
    }
    let value = i128::from_str_radix(&body.replace('_', ""), radix).ok()?;
    Some(if negative { -value } else { value })
}

/// `1.5`, `.5`, `1e3`, `-1.5E-3`: what YAML reads as a float.
fn is_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '_');
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            (whole.is_empty() || digits(whole))
                && (fraction.is_empty() || digits(fraction))
                && !(whole.is_empty() && fraction.is_empty())
        }
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok && (mantissa.contains('.') || exponent.is_some())
}

/// Kubernetes reads YAML with go-yaml, which keeps a `:` that touches a flow indicator inside a
/// plain scalar: `[1.2.3.4, 2001:db8::]` is two strings there. YAML 1.2 reads the second item as
/// the mapping `{"2001:db8:": null}`. Where the source shows exactly that spelling (a key, `:`,
/// then `,` `]` or `}`), the item is read as go-yaml reads it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::Value;

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
    fn a_document_read_again_from_its_line_is_the_one_read_in_the_stream() {
        let text = "# leading comment\n\na: 1\nlist: [x, {k: v}, 2001:db8::]\n---\n\
                    # inside\nb: &anchor\n  deep: {c: d}\nalias: *anchor\n...\n---\n---   \n\
                    items:\n- kind: X\n  spec: |\n    text\n    more\n- {kind: Y}\n";
        let documents = parse_documents_with_lines(text).unwrap();
        assert_eq!(documents.len(), 3, "{documents:?}");
        for (line, node) in &documents {
            assert_eq!(
                parse_document_at(text, *line).as_ref(),
                Some(node),
                "line {line}"
            );
        }
        assert_eq!(
            documents[2].1.get("items").unwrap().position.line,
            14,
            "positions stay absolute"
        );
        assert_eq!(parse_document_at(text, 99), None);
        assert_eq!(parse_document_at(text, 0), None);
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
    fn plain_scalars_follow_go_yaml() {
        for (text, value) in [
            ("0x1F", Value::Int(31)),
            ("0755", Value::Int(493)),
            ("0o17", Value::Int(15)),
            ("1_000", Value::Int(1000)),
            ("-42", Value::Int(-42)),
            ("1.5", Value::Float(1.5)),
            (".5", Value::Float(0.5)),
            ("1e3", Value::Float(1000.0)),
            ("off", Value::Bool(false)),
            ("Y", Value::Bool(true)),
            ("1.10", Value::Float(1.1)),
            ("1.2.3", Value::String("1.2.3".into())),
            ("08", Value::String("08".into())),
            ("1s", Value::String("1s".into())),
            ("-", Value::String("-".into())),
        ] {
            assert_eq!(plain(text), value, "{text}");
        }
    }

    #[test]
    fn tags_decide_the_type() {
        let docs = parse_documents("a: !!str 80\nb: !!float 1\n").unwrap();
        assert_eq!(docs[0].get("a").unwrap().value, Value::String("80".into()));
        assert_eq!(docs[0].get("b").unwrap().value, Value::Float(1.0));
        assert!(parse_documents("a: !!int abc\n").is_err());
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let docs =
            parse_documents("base: &base {a: 1, b: 2}\nuse: *base\nmerged:\n  <<: *base\n  b: 3\n")
                .unwrap();
        assert_eq!(
            docs[0].get("use").unwrap().get("a").unwrap().value,
            Value::Int(1)
        );
        let merged = docs[0].get("merged").unwrap();
        assert_eq!(merged.get("a").unwrap().value, Value::Int(1));
        assert_eq!(
            merged.get("b").unwrap().value,
            Value::Int(3),
            "explicit keys win"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(MAX_DEPTH + 1);
        assert!(parse_documents(&text).is_err());
    }

    #[test]
    fn large_maps_still_find_duplicates() {
        let mut text: String = (0..40).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k7: again\n");
        let error = parse_documents(&text).unwrap_err();
        assert_eq!(error.position.line, 41);
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
