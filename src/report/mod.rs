//! Report formats: every file a run leaves in its report folder, rendered from one model, the
//! run [`Summary`].
//!
//! Each format is a sibling behind the small [`ReportFormat`] trait and lives in its own file;
//! [`formats`] is the one place that lists them, so adding a format touches that file and the
//! list. [`write_all`] writes every format and keeps going when one fails, so a broken chart never
//! costs the reader the JSON or the JUnit file. Baseline comparison (`thumper compare`) lives in
//! [`compare`]; it reads summaries, it does not write a report file.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::metrics::codec::CodecError;
use crate::metrics::summary::{Summary, SCHEMA_VERSION};

pub mod compare;
pub mod console;
mod hlog;
mod html;
mod json;
mod junit;
mod markdown;
mod model;
pub mod pgbench;
mod server;
mod svg;

pub use markdown::render_markdown;

/// One output file of a run's report folder.
pub trait ReportFormat {
    /// The file's name inside the report folder (`report.html`).
    fn file_name(&self) -> &'static str;
    /// The file's bytes.
    fn render(&self, summary: &Summary) -> Result<Vec<u8>, ReportError>;
}

/// Every format a run writes, in the order they are written.
pub fn formats() -> Vec<Box<dyn ReportFormat>> {
    vec![
        Box::new(json::Json),
        Box::new(html::Html),
        Box::new(junit::Junit),
        Box::new(markdown::Markdown),
        Box::new(hlog::Hlog),
    ]
}

/// Errors reading a summary or writing a report. Every file-system error names its path.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A summary file is not valid JSON or does not fit the model.
    #[error("{path}:{line}:{column}: not a valid summary: {message}")]
    Json {
        /// The summary file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's message.
        message: String,
    },
    /// A summary written with a schema version this thumper cannot read.
    #[error(
        "{path}: summary schema version {found} is not supported (this thumper reads version \
         {expected}); re-run with a matching thumper or re-render with the version that wrote it"
    )]
    SchemaVersion {
        /// The summary file.
        path: PathBuf,
        /// The file's `schema_version`.
        found: u64,
        /// The version this thumper reads (`SCHEMA_VERSION`).
        expected: u32,
    },
    /// A trend's embedded histogram could not be decoded.
    #[error("histogram of `{metric}`: {source}")]
    Histogram {
        /// The trend's name.
        metric: String,
        /// The decoding error.
        #[source]
        source: CodecError,
    },
    /// A report format failed to produce its file.
    #[error("{file}: {message}")]
    Render {
        /// The report file name (`report.html`, ...).
        file: &'static str,
        /// Why it failed.
        message: String,
    },
    /// Some report files were written and others failed.
    #[error("{}", incomplete_message(.written, .failed))]
    Incomplete {
        /// Files that were written.
        written: Vec<PathBuf>,
        /// File name and why it failed.
        failed: Vec<(&'static str, ReportError)>,
    },
}

fn incomplete_message(written: &[PathBuf], failed: &[(&'static str, ReportError)]) -> String {
    let failed: Vec<String> = failed.iter().map(|(f, e)| format!("{f} ({e})")).collect();
    format!(
        "{} report file(s) failed: {}; {} written",
        failed.len(),
        failed.join("; "),
        written.len()
    )
}

/// Writes every format into `dir` (created if missing) and returns the paths written. When a
/// format fails the others are still written, and the error lists both.
pub fn write_all(summary: &Summary, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let mut failed = Vec::new();
    for format in formats() {
        let path = dir.join(format.file_name());
        let result = format.render(summary).and_then(|bytes| {
            std::fs::write(&path, bytes).map_err(|source| ReportError::Io {
                path: path.clone(),
                source,
            })
        });
        match result {
            Ok(()) => written.push(path),
            Err(e) => failed.push((format.file_name(), e)),
        }
    }
    if failed.is_empty() {
        Ok(written)
    } else {
        Err(ReportError::Incomplete { written, failed })
    }
}

/// Reads a `summary.json`. Errors name the file, the line and column of bad JSON, and a schema
/// version this build cannot read.
pub fn read_summary(path: &Path) -> Result<Summary, ReportError> {
    let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })?;
    let json_error = |e: serde_json::Error| ReportError::Json {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    // The version is checked before the shape, so a summary from a newer thumper says so
    // instead of reporting whichever renamed key it trips over first.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(json_error)?;
    let found = value.get("schema_version").and_then(|v| v.as_u64());
    match found {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(ReportError::SchemaVersion {
                path: path.to_owned(),
                found: v,
                expected: SCHEMA_VERSION,
            })
        }
        None => {
            return Err(ReportError::Json {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: "missing `schema_version`: is this a thumper summary.json?".to_owned(),
            })
        }
    }
    // Parse the bytes again (not the Value) so shape errors keep their line and column.
    serde_json::from_slice(&bytes).map_err(json_error)
}

/// Text escaped for HTML and XML content and attribute values.
pub(crate) struct Escaped<'a>(pub &'a str);

/// The escaper askama applies to every value in the HTML templates (`askama.toml` names it), so
/// the page escapes exactly as the JUnit file does: named entities, and control characters that
/// XML forbids replaced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HtmlEscaper;

impl askama::filters::Escaper for HtmlEscaper {
    fn write_escaped_str<W: fmt::Write>(&self, mut dest: W, string: &str) -> fmt::Result {
        write!(dest, "{}", Escaped(string))
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                // XML 1.0 forbids most control characters even as references.
                c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                    f.write_str("\u{FFFD}")?
                }
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            Escaped("<script>alert('x&y')</script>\u{1}").to_string(),
            "&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt;\u{FFFD}"
        );
    }
}
