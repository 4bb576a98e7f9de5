//! Finds the server binaries the embedded stack runs.
//!
//! Debian installs PostgreSQL's server binaries outside PATH (`/usr/lib/postgresql/NN/bin`), so
//! we look on PATH, then in `pg_config --bindir`, then in every `/usr/lib/postgresql/*/bin`
//! (newest version first). A missing binary is an error naming it and the package providing it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::StackError;

/// The binaries the stack needs, resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `initdb`.
    pub initdb: PathBuf,
    /// `postgres` (the postmaster).
    pub postgres: PathBuf,
    /// `pgbouncer`.
    pub pgbouncer: PathBuf,
}

impl Binaries {
    /// Locates all three binaries.
    pub fn locate() -> Result<Binaries, StackError> {
        Ok(Binaries {
            initdb: find_postgres_tool("initdb")?,
            postgres: find_postgres_tool("postgres")?,
            pgbouncer: find("pgbouncer", &[], "pgbouncer")?,
        })
    }
}

/// Finds a PostgreSQL server tool (`initdb`, `postgres`, `pgbench`, ...).
pub fn find_postgres_tool(name: &str) -> Result<PathBuf, StackError> {
    find(name, &postgres_bindirs(), "postgresql-15")
}

fn find(name: &str, extra_dirs: &[PathBuf], package: &'static str) -> Result<PathBuf, StackError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| StackError::MissingBinary {
            binary: name.to_owned(),
            package,
        })
}

/// `pg_config --bindir` first, then `/usr/lib/postgresql/*/bin`, highest major version first.
fn postgres_bindirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !dir.is_empty() {
                dirs.push(PathBuf::from(dir));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versioned: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .collect();
        versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    }
    dirs
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_itself_and_its_package() {
        let err = find("thumper-no-such-binary", &[], "pgbouncer").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("thumper-no-such-binary"), "{msg}");
        assert!(msg.contains("pgbouncer"), "{msg}");
    }
}
