//! Splitting a script's SQL into commands the way pgbench's psql lexer does, and the `:name`
//! variable references inside one command.

use super::vars::Variables;

/// What ended a stretch of SQL.
pub enum Stop {
    /// A `;` outside quotes, comments and parentheses; scanning resumes at this offset.
    Semicolon(usize),
    /// A backslash command starts at this offset (the `\`).
    Backslash(usize),
    /// The end of the script.
    Eof,
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Scans SQL from `pos`: returns the text collected (with `\;` and `\:` replaced by `;` and
/// `:`, as psql does) and what stopped it.
pub fn scan(src: &str, mut pos: usize) -> (String, Stop) {
    let b = src.as_bytes();
    let n = b.len();
    let mut out: Vec<u8> = Vec::new();
    let mut depth = 0usize;
    while pos < n {
        let c = b[pos];
        let next = if pos + 1 < n { b[pos + 1] } else { 0 };
        let end = match (c, next) {
            (b'-', b'-') => memchr(b, pos, b'\n').unwrap_or(n),
            (b'/', b'*') => block_comment_end(b, pos),
            (b'\'', _) => {
                let escapes = pos > 0
                    && matches!(b[pos - 1], b'e' | b'E')
                    && (pos < 2 || !ident_byte(b[pos - 2]));
                quoted_end(b, pos, b'\'', escapes)
            }
            (b'"', _) => quoted_end(b, pos, b'"', false),
            (b'$', _) if pos == 0 || !(ident_byte(b[pos - 1]) || b[pos - 1] == b'$') => {
                dollar_quote_end(src, pos).unwrap_or(pos + 1)
            }
            (b'(', _) => {
                depth += 1;
                pos + 1
            }
            (b')', _) => {
                depth = depth.saturating_sub(1);
                pos + 1
            }
            (b';', _) if depth == 0 => {
                out.push(b';');
                return (into_string(out), Stop::Semicolon(pos + 1));
            }
            (b'\\', b';' | b':') => {
                out.push(next);
                pos += 2;
                continue;
            }
            (b'\\', _) => return (into_string(out), Stop::Backslash(pos)),
            _ => pos + 1,
        };
        out.extend_from_slice(&b[pos..end]);
        pos = end;
    }
    (into_string(out), Stop::Eof)
}

fn into_string(v: Vec<u8>) -> String {
    // Only ASCII bytes were dropped from valid UTF-8, so this cannot fail; be lenient anyway.
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn memchr(b: &[u8], from: usize, c: u8) -> Option<usize> {
    b[from..].iter().position(|&x| x == c).map(|p| from + p)
}

fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

fn quoted_end(b: &[u8], start: usize, quote: u8, escapes: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The end of a `$tag$...$tag$` string starting at `start`, if a dollar quote starts there.
fn dollar_quote_end(src: &str, start: usize) -> Option<usize> {
    let b = src.as_bytes();
    let mut i = start + 1;
    if i < b.len() && !(b[i].is_ascii_digit()) {
        while i < b.len() && ident_byte(b[i]) {
            i += 1;
        }
    }
    if i >= b.len() || b[i] != b'$' {
        return None;
    }
    let tag = &src[start..=i];
    let body = i + 1;
    Some(match src[body..].find(tag) {
        Some(p) => body + p + tag.len(),
        None => b.len(),
    })
}

/// pgbench's `skip_sql_comments`: the offset of the command after leading whitespace and `--`
/// comments, or `None` if there is nothing else.
pub fn skip_comments(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        if i >= b.len() {
            return None;
        }
        if b[i].is_ascii_whitespace() || b[i] == 0x0b {
            i += 1;
        } else if b[i..].starts_with(b"--") {
            i = memchr(b, i, b'\n')? + 1;
        } else {
            return Some(i);
        }
    }
}

/// A `:name` reference at `at` (a colon): the name's length in bytes, if one follows.
fn variable_at(b: &[u8], at: usize) -> Option<usize> {
    let first = *b.get(at + 1)?;
    if !(first.is_ascii_alphabetic() || first == b'_' || first >= 0x80) {
        return None;
    }
    Some(b[at + 1..].iter().take_while(|&&x| ident_byte(x)).count())
}

/// Calls `f(offset, name)` for each `:name` in `sql` as pgbench finds them (it does not look
/// at quotes: `':x'` is a reference too; `::` casts are skipped).
fn each_reference(sql: &str, mut f: impl FnMut(usize, &str)) {
    let b = sql.as_bytes();
    let mut i = 0;
    while let Some(at) = memchr(b, i, b':') {
        match variable_at(b, at) {
            Some(len) => {
                f(at, &sql[at + 1..at + 1 + len]);
                i = at + 1 + len;
            }
            None => {
                i = at;
                while i < b.len() && b[i] == b':' {
                    i += 1;
                }
            }
        }
    }
}

/// The SQL with each `:name` replaced by `$1`, `$2`, ... (one per occurrence, as pgbench's
/// extended and prepared modes do) and the variable names in parameter order.
pub fn parameterize(sql: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(sql.len());
    let mut names = Vec::new();
    let mut last = 0;
    each_reference(sql, |at, name| {
        out.push_str(&sql[last..at]);
        names.push(name.to_string());
        out.push_str(&format!("${}", names.len()));
        last = at + 1 + name.len();
    });
    out.push_str(&sql[last..]);
    (out, names)
}

/// The SQL with each defined `:name` replaced by its text, as pgbench's simple mode does;
/// undefined names stay as written.
pub fn substitute(sql: &str, vars: &mut Variables) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut last = 0;
    each_reference(sql, |at, name| {
        if let Some(text) = vars.text(name) {
            out.push_str(&sql[last..at]);
            out.push_str(text);
            last = at + 1 + name.len();
        }
    });
    out.push_str(&sql[last..]);
    out
}
