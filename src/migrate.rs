//! Applies migrations/ in order (placeholder).
