//! Findings: what validation says about configuration, and where.
//!
//! A finding names the file, line and column, the object (`Kind namespace/name`), the field
//! path (`spec.http[2].route[0].weight`) and a plain-language reason, at one of three levels.

use std::fmt;
use std::sync::Arc;

use crate::yaml::Position;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Invalid for Istio: the object is rejected.
    Error,
    /// Valid Istio that Strait does not implement (the field is ignored), or a relation between
    /// objects that is probably a mistake (a directory may hold alternatives).
    Warning,
    /// Worth knowing; nothing is wrong.
    Info,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object a finding is about: `VirtualService default/reviews`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, namespace, name) =
            (Shown(&self.kind), Shown(&self.namespace), Shown(&self.name));
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (_, true) => write!(f, "{kind}"),
            (true, false) => write!(f, "{kind} {name}"),
            (false, false) => write!(f, "{kind} {namespace}/{name}"),
        }
    }
}

/// A name as written, or quoted when it holds spaces or control characters, so that a finding
/// stays one readable line whatever the input held.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.chars().any(|c| c.is_control() || c.is_whitespace()) {
            write!(f, "{:?}", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

/// One thing validation has to say.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub level: Level,
    /// A short, stable name for the kind of finding (`unknown-field`, `subset-not-found`), for
    /// machines and for tests.
    pub code: &'static str,
    /// The file, as given on the command line or found in a directory.
    pub file: Option<Arc<str>>,
    pub position: Position,
    pub object: Option<ObjectRef>,
    /// The field path, empty when the finding is about the whole object or file.
    pub field: String,
    pub message: String,
}

impl Finding {
    pub fn new(level: Level, code: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            level,
            code,
            file: None,
            position: Position::UNKNOWN,
            object: None,
            field: String::new(),
            message: message.into(),
        }
    }

    pub fn at(mut self, field: impl fmt::Display, position: Position) -> Finding {
        self.field = field.to_string();
        self.position = position;
        self
    }

    pub fn in_file(mut self, file: &Arc<str>) -> Finding {
        self.file = Some(file.clone());
        self
    }

    pub fn about(mut self, object: &ObjectRef) -> Finding {
        self.object = Some(object.clone());
        self
    }
}

impl fmt::Display for Finding {
    /// `file:line:col: level: Kind ns/name: field: message`, the form compilers use, so that
    /// editors and terminals can jump to the place.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            f.write_str(file)?;
            if self.position.is_known() {
                write!(f, ":{}:{}", self.position.line, self.position.column)?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}: ", self.level)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Counts of findings by level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
}

impl Tally {
    pub fn of(findings: &[Finding]) -> Tally {
        let mut tally = Tally::default();
        for finding in findings {
            match finding.level {
                Level::Error => tally.errors += 1,
                Level::Warning => tally.warnings += 1,
                Level::Info => tally.infos += 1,
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_line_breaks_are_quoted() {
        let object = ObjectRef {
            kind: "VirtualService".into(),
            namespace: "x\ty".into(),
            name: "a\nb".into(),
        };
        assert_eq!(object.to_string(), "VirtualService \"x\\ty\"/\"a\\nb\"");
    }

    #[test]
    fn displays_file_line_object_field_and_reason() {
        let object = ObjectRef {
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: "reviews".into(),
        };
        let file: Arc<str> = Arc::from("bookinfo.yaml");
        let finding = Finding::new(Level::Error, "weight-range", "weight must be at most 100")
            .at(
                "spec.http[2].route[0].weight",
                Position {
                    line: 12,
                    column: 9,
                },
            )
            .in_file(&file)
            .about(&object);
        assert_eq!(
            finding.to_string(),
            "bookinfo.yaml:12:9: error: VirtualService default/reviews: \
             spec.http[2].route[0].weight: weight must be at most 100"
        );
    }
}
