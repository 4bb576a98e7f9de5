//! The scenario model: what a `scenarios/*.toml` file says, validated into a [`Plan`] with
//! errors that name the file, the line and the field.

pub mod duration;
mod file;
pub mod plan;
pub mod rate;

use std::path::{Path, PathBuf};

pub use file::{ConnectionDef, ParamKind, Protocol, QueryDef, Topology};
pub use plan::{LoadShape, OnBusy, Plan, Stage};

/// A scenario file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: `{field}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based line, 0 when the field is missing from the file.
        line: usize,
        field: String,
        message: String,
    },
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

/// The key a TOML error points at: the key on the line the error's span starts on.
fn field_of_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "(file)".into();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => key.trim().to_owned(),
        None => line.trim().to_owned(),
    }
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
