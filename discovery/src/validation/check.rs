//! The context a rule reports through: it knows the object being checked, turns a field path
//! into a line and column, and names the file and object on every finding.

use crate::findings::{Finding, Level, ObjectRef};
use crate::resources::Object;
use crate::yaml::FieldPath;

pub(crate) struct Check<'a> {
    object: &'a Object,
    /// The object's name in findings, made when the first one is reported (most checks find
    /// nothing).
    about: Option<ObjectRef>,
    out: &'a mut Vec<Finding>,
}

impl<'a> Check<'a> {
    pub(crate) fn new(object: &'a Object, out: &'a mut Vec<Finding>) -> Check<'a> {
        Check {
            object,
            about: None,
            out,
        }
    }

    pub(crate) fn object(&self) -> &'a Object {
        self.object
    }

    pub(crate) fn report(
        &mut self,
        level: Level,
        path: &FieldPath,
        code: &'static str,
        message: impl Into<String>,
    ) {
        let position = path.locate(&self.object.source.node()).position;
        let object = self.object;
        let about = self.about.get_or_insert_with(|| object.object_ref());
        self.out.push(
            Finding::new(level, code, message)
                .at(path, position)
                .in_file(&self.object.source.file)
                .about(about),
        );
    }

    pub(crate) fn error(
        &mut self,
        path: &FieldPath,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.report(Level::Error, path, code, message);
    }

    pub(crate) fn warning(
        &mut self,
        path: &FieldPath,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.report(Level::Warning, path, code, message);
    }

    pub(crate) fn info(
        &mut self,
        path: &FieldPath,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.report(Level::Info, path, code, message);
    }

    /// `Required value`, Kubernetes' words for a missing required field.
    pub(crate) fn required(&mut self, path: &FieldPath) {
        self.error(path, "required", "Required value");
    }

    /// At most one of several fields may be set.
    pub(crate) fn exclusive(&mut self, path: &FieldPath, set: &[(&str, bool)], message: &str) {
        if set.iter().filter(|(_, present)| *present).count() > 1 {
            self.error(path, "conflict", message);
        }
    }
}
