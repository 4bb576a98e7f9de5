//! The scenario model: what a `scenarios/*.toml` file says, validated into a [`Plan`] with
//! errors that name the file, the line and the field.

mod csv;
pub mod duration;
mod file;
pub mod plan;
pub mod rate;
pub mod scripts;
pub mod segment;

use std::path::{Path, PathBuf};

pub use file::{ConnectionDef, FeedStrategy, ParamKind, Protocol, QueryDef, Topology};
pub use plan::{FeedSource, FeederDef, LoadShape, OnBusy, Plan, Stage, Start};
pub use scripts::{Distribution, ScriptDef, TenantChoice};
pub use segment::Segment;

/// A scenario file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {}: {source}", path.display())]
    Read {
        /// The scenario file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not parse or a field is not valid.
    #[error("{}:{line}: `{field}`: {message}", path.display())]
    Invalid {
        /// The scenario file.
        path: PathBuf,
        /// 1-based line, 0 when the field is missing from the file.
        line: usize,
        /// The field at fault, as a dotted path (e.g. `connection.pools`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A pgbench script of the scenario does not parse.
    #[error("{0}")]
    Script(crate::workload::pgbench::ScriptError),
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Plan, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates scenario text; `path` is used in messages only.
pub fn parse(text: &str, path: &Path) -> Result<Plan, ScenarioError> {
    let raw: file::ScenarioFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_at(text, s.start));
        ScenarioError::Invalid {
            path: path.to_owned(),
            line,
            field: field_of_toml_error(text, &e),
            message: e.message().to_owned(),
        }
    })?;
    plan::validate(raw, text, path)
}

/// The key a TOML error is about: the missing or unknown field its message names, else the key
/// whose value the error's span starts in (the last `key =` before it on its line, so inline
/// tables and dotted keys name the right one), else the text of the line.
fn field_of_toml_error(text: &str, e: &toml::de::Error) -> String {
    for prefix in ["missing field `", "unknown field `"] {
        if let Some((field, _)) = e
            .message()
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
        {
            return field.to_owned();
        }
    }
    let Some(span) = e.span() else {
        return "(file)".into();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    if let Some(key) = key_before(&text[line_start..start]) {
        return key;
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => key.trim().to_owned(),
        None => line.trim().to_owned(),
    }
}

/// The key of the last `key =` in `line` outside quotes, as written (dotted, quotes and all).
fn key_before(line: &str) -> Option<String> {
    let (mut quote, mut escaped, mut key_start, mut key) = (None, false, 0, None);
    for (i, c) in line.char_indices() {
        match (quote, c) {
            _ if escaped => escaped = false,
            // Only basic ("...") strings have escapes; literal ('...') ones do not.
            (Some('"'), '\\') => escaped = true,
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | ',' | '[') => key_start = i + 1,
            (None, '=') => {
                key = Some(line[key_start..i].trim().to_owned());
                key_start = i + 1;
            }
            _ => {}
        }
    }
    key.filter(|k| !k.is_empty())
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
