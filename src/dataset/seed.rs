//! Writes a [`DatasetSpec`](super::DatasetSpec) into a database (set-based, with COPY).
