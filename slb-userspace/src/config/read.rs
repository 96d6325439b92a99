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
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors};
use super::raw::RawConfig;
use super::values::suggest;

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
        let mut segments: Vec<&Segment> = path.iter().collect();
        let mut shown = path.to_string();
        // toml hands a date-time to serde as a table with one private
        // key: where a table is wanted, that key is "unknown". The
        // problem is the value of the key before it.
        let datetime_for_table = matches!(
            segments.last(),
            Some(Segment::Map { key }) if key == DATETIME_KEY
        );
        let message = if datetime_for_table {
            segments.pop();
            shown.truncate(shown.len() - DATETIME_KEY.len() - 1);
            "invalid type: date-time, expected a table".to_owned()
        } else {
            toml_words(inner.message(), value_at(&root, &segments))
        };
        let message = one_line(text, &message, inner.span());
        let at = inner.span().map_or(usize::MAX, |s| s.start);
        if shown == "." {
            errors.push((at, ConfigError::new("", format!("invalid TOML: {message}"))));
            return Err(ConfigErrors {
                errors: in_file_order(errors),
            });
        }
        errors.push((at, ConfigError::new(shown, message)));
        match take_out(root.get_mut(), &segments) {
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
fn take_out(root: &mut DeTable<'_>, segments: &[&Segment]) -> Option<String> {
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

/// The key toml gives a date-time when serde asks for it as a table
/// (`toml_datetime`'s private field name).
const DATETIME_KEY: &str = "$__toml_private_datetime";

/// The value at `segments` in the document, when it is there.
fn value_at<'a, 'i>(
    root: &'a Spanned<DeTable<'i>>,
    segments: &[&Segment],
) -> Option<&'a DeValue<'i>> {
    let mut table = root.get_ref();
    let mut value: Option<&'a DeValue<'i>> = None;
    for s in segments {
        value = Some(match (s, value) {
            (Segment::Map { key }, None) => table.get(key.as_str())?.get_ref(),
            (Segment::Map { key }, Some(DeValue::Table(t))) => {
                table = t;
                t.get(key.as_str())?.get_ref()
            }
            (Segment::Seq { index }, Some(DeValue::Array(a))) => a.get(*index)?.get_ref(),
            _ => return None,
        });
    }
    value
}

/// serde's message in TOML's words: it names the Rust types of the reader
/// (`struct RawHealthCheck`, `i64`, `sequence`, `map`) and takes a
/// date-time, which toml gives it as a table, for a table.
fn toml_words(message: &str, found: Option<&DeValue<'_>>) -> String {
    let mut m = message.to_owned();
    if matches!(found, Some(DeValue::Datetime(_))) {
        m = m.replace("invalid type: map", "invalid type: date-time");
    }
    m = m
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a sequence", "expected an array")
        .replace("expected i64", "expected an integer");
    if let Some(hint) = unknown_field_hint(&m) {
        m = hint;
    }
    if let Some(at) = m.find("expected struct ") {
        let name_start = at + "expected struct ".len();
        let name_end = m[name_start..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(m.len(), |n| name_start + n);
        m.replace_range(at..name_end, "expected a table");
    }
    m
}

/// serde's "unknown field `helth_check`, expected one of `name`, …" with
/// the field it most likely misspells: "unknown field `helth_check` (did
/// you mean `health_check`?), expected one of …".
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    // The names between backquotes after the field.
    let names = expected.split('`').skip(1).step_by(2);
    let best = suggest(field, names)?;
    Some(format!(
        "unknown field `{field}` (did you mean `{best}`?){expected}"
    ))
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
