//! Stage one: the TOML text into the raw types, with every structural
//! problem (unknown key, wrong TOML type) reported, not just the first.
//!
//! serde stops at the first problem, so the document is parsed once into
//! toml's spanned tree and deserialized again after each problem with the
//! offending key taken out. The remaining keys still reach validation, so
//! an operator sees a typo in one listener together with a bad address in
//! another in a single run. Validation errors about a key taken out here
//! (a `port` of the wrong type would also be "missing") are not repeated.

use serde_path_to_error::Segment;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, ConfigErrors};
use super::raw::RawConfig;

/// More structural problems than this in one file is not a configuration
/// worth reading further (and bounds the re-reads).
const MAX_STRUCTURAL_ERRORS: usize = 50;

/// What stage one made of a file: the raw configuration without the keys
/// that were wrong, and what was wrong with them.
pub(crate) struct Read {
    pub raw: RawConfig,
    errors: Vec<ConfigError>,
    /// Key paths taken out (`listener[0].port`).
    removed: Vec<String>,
}

impl Read {
    /// Combines stage one's errors with validation's result: validation
    /// errors about taken-out keys are left out (stage one reported them).
    pub fn merge<T>(self, validated: Result<T, ConfigErrors>) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            return validated;
        }
        let mut errors = self.errors;
        if let Err(later) = validated {
            errors.extend(
                later
                    .errors
                    .into_iter()
                    .filter(|e| !self.removed.iter().any(|r| is_within(&e.path, r))),
            );
        }
        Err(ConfigErrors { errors })
    }
}

/// Whether `path` is `key` or a key or element inside it.
fn is_within(path: &str, key: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Reads `text`. `Err` only for a file that cannot be read further: TOML
/// syntax, or a problem that cannot be tied to a key.
pub(crate) fn read_toml(text: &str) -> Result<Read, ConfigErrors> {
    let mut root = DeTable::parse(text).map_err(|e| {
        ConfigErrors::one(
            "",
            format!("invalid TOML: {}", one_line(text, e.message(), e.span())),
        )
    })?;
    // With the byte offset each is about, to list them in file order (serde
    // meets them in its own order of keys).
    let mut errors: Vec<(usize, ConfigError)> = Vec::new();
    let mut removed = Vec::new();
    let in_file_order = |mut errors: Vec<(usize, ConfigError)>| {
        errors.sort_by_key(|(at, _)| *at);
        errors.into_iter().map(|(_, e)| e).collect::<Vec<_>>()
    };
    loop {
        let de = toml::Deserializer::from(root.clone());
        let e = match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Ok(raw) => {
                return Ok(Read {
                    raw,
                    errors: in_file_order(errors),
                    removed,
                })
            }
            Err(e) => e,
        };
        let path = e.path().clone();
        let inner = e.into_inner();
        // serde's Rust type names read better as TOML's.
        let message = one_line(text, inner.message(), inner.span())
            .replace("expected i64", "expected an integer");
        let at = inner.span().map_or(usize::MAX, |s| s.start);
        let shown = path.to_string();
        if shown == "." {
            errors.push((at, ConfigError::new("", format!("invalid TOML: {message}"))));
            return Err(ConfigErrors {
                errors: in_file_order(errors),
            });
        }
        errors.push((at, ConfigError::new(shown, message)));
        match take_out(root.get_mut(), &path) {
            Some(key) if errors.len() < MAX_STRUCTURAL_ERRORS => removed.push(key),
            _ => {
                return Err(ConfigErrors {
                    errors: in_file_order(errors),
                })
            }
        }
    }
}

/// Removes the key a problem at `path` is about: the innermost table key
/// on the path (a wrong element of an array takes its whole key out, so
/// that what is left is not read as a shorter list). Returns the key's path,
/// or `None` when the path leads nowhere in the document.
fn take_out(root: &mut DeTable<'_>, path: &serde_path_to_error::Path) -> Option<String> {
    let segments: Vec<&Segment> = path.iter().collect();
    let last_key = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))?;
    let mut table = root;
    let mut shown = String::new();
    let mut i = 0;
    loop {
        let Segment::Map { key } = segments[i] else {
            return None;
        };
        if !shown.is_empty() {
            shown.push('.');
        }
        shown.push_str(key);
        if i == last_key {
            table.remove(key.as_str())?;
            return Some(shown);
        }
        let mut value = table.get_mut(key.as_str())?.get_mut();
        i += 1;
        // Array elements on the way: `listener[0]`.
        while let Segment::Seq { index } = segments[i] {
            let DeValue::Array(items) = value else {
                return None;
            };
            value = items.get_mut(*index)?.get_mut();
            shown.push_str(&format!("[{index}]"));
            i += 1;
        }
        let DeValue::Table(inner) = value else {
            return None;
        };
        table = inner;
    }
}

/// A TOML or serde message on one line, with the line and column it is
/// about when known.
fn one_line(text: &str, message: &str, span: Option<std::ops::Range<usize>>) -> String {
    let message = message.trim_end().replace('\n', "; ");
    match span {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}
