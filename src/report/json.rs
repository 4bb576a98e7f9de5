//! `summary.json`: the summary itself, pretty-printed. Every other format can be re-rendered from
//! it with `thumper report`.

use super::{ReportError, ReportFormat};
use crate::metrics::summary::Summary;

pub(crate) struct Json;

impl ReportFormat for Json {
    fn file_name(&self) -> &'static str {
        "summary.json"
    }

    fn render(&self, summary: &Summary) -> Result<Vec<u8>, ReportError> {
        let mut bytes = serde_json::to_vec_pretty(summary).map_err(|e| ReportError::Render {
            file: self.file_name(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}
