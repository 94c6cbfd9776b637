//! String matching compiled once: exact, prefix, whole-value regexes, presence.

use std::fmt;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A regex that must match the whole value (Envoy's semantics): compiled as `^(?:re)$` once,
/// when the snapshot is built.
///
/// Clones share the compiled regex (it takes kilobytes, and a large configuration repeats the
/// same regex in many routes).
#[derive(Clone)]
pub struct Pattern {
    source: Arc<str>,
    regex: Arc<Regex>,
}

impl Pattern {
    /// Compiles `source` to match whole values only.
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            source: Arc::from(source),
            regex: Arc::new(Regex::new(&format!("^(?:{source})$"))?),
        })
    }

    /// Compiles `source` to find matches anywhere (for rewrites, which replace what matched).
    pub fn unanchored(source: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            source: Arc::from(source),
            regex: Arc::new(Regex::new(source)?),
        })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

/// A config dump shows the configured source; a state file also keeps the expression compiled
/// (anchored or not), so that reading it back compiles the same regex.
impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if super::state_file::active() {
            StoredPattern::Compiled {
                source: self.source.to_string(),
                regex: self.regex.as_str().to_owned(),
            }
            .serialize(serializer)
        } else {
            serializer.serialize_str(&self.source)
        }
    }
}

/// A pattern as written: a source alone is anchored, as [`Pattern::new`] does.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredPattern {
    Source(String),
    Compiled { source: String, regex: String },
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match StoredPattern::deserialize(deserializer)? {
            StoredPattern::Source(source) => {
                Pattern::new(&source).map_err(serde::de::Error::custom)
            }
            StoredPattern::Compiled { source, regex } => Ok(Pattern {
                source: Arc::from(source),
                regex: Arc::new(Regex::new(&regex).map_err(serde::de::Error::custom)?),
            }),
        }
    }
}

/// How a string is matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// Matches the whole value.
    Regex(Pattern),
    /// The value is present (any value, even empty).
    Present,
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(exact) => value == exact,
            StringMatcher::Prefix(prefix) => value.starts_with(prefix.as_str()),
            StringMatcher::Regex(pattern) => pattern.is_match(value),
            StringMatcher::Present => true,
        }
    }

    /// Case-insensitive for exact and prefix (`ignoreUriCase`); regexes are unaffected.
    pub fn matches_ignoring_case(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(exact) => value.eq_ignore_ascii_case(exact),
            StringMatcher::Prefix(prefix) => value
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
            other => other.matches(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_match_the_whole_value() {
        let pattern = Pattern::new("/api/v[0-9]").unwrap();
        assert!(pattern.is_match("/api/v1"));
        assert!(!pattern.is_match("/api/v1/users"));
        assert!(!pattern.is_match("x/api/v1"));
        let alternation = Pattern::new("a|b").unwrap();
        assert!(
            !alternation.is_match("ab"),
            "alternation is grouped before anchoring"
        );
    }

    #[test]
    fn ignore_case_affects_exact_and_prefix_only() {
        let exact = StringMatcher::Exact("/Login".into());
        assert!(exact.matches_ignoring_case("/login"));
        assert!(!exact.matches("/login"));
        let prefix = StringMatcher::Prefix("/API".into());
        assert!(prefix.matches_ignoring_case("/api/x"));
        assert!(!prefix.matches_ignoring_case("/a"));
        let regex = StringMatcher::Regex(Pattern::new("/api").unwrap());
        assert!(!regex.matches_ignoring_case("/API"));
    }
}
