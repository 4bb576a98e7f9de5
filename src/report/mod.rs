//! Placeholder (being built on its own branch).
use std::path::{Path, PathBuf};

use crate::metrics::summary::Summary;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);

pub fn write_all(summary: &Summary, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError(format!("{}: {e}", dir.display())))?;
    let p = dir.join("summary.json");
    let text = serde_json::to_string_pretty(summary).map_err(|e| ReportError(e.to_string()))?;
    std::fs::write(&p, text).map_err(|e| ReportError(format!("{}: {e}", p.display())))?;
    Ok(vec![p])
}

pub fn render_markdown(_summary: &Summary) -> String {
    String::new()
}
pub fn read_summary(path: &Path) -> Result<Summary, ReportError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReportError(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| ReportError(format!("{}: {e}", path.display())))
}
pub mod compare {
    pub fn run_cli(
        _b: &std::path::Path,
        _c: &std::path::Path,
        _m: f64,
        _md: Option<&std::path::Path>,
    ) -> u8 {
        1
    }
}
