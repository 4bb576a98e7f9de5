//! Hiding passwords in connection strings before they are shown: in messages, the terminal and
//! every report (`summary.json` carries the target, and the HTML, JUnit and Markdown show it).
//!
//! Both forms PostgreSQL clients accept are handled:
//! - URL: `postgres://user:secret@host/db?sslpassword=secret` →
//!   `postgres://user:***@host/db?sslpassword=***`
//! - key=value conninfo: `host=h password='a b'` → `host=h password=***`
//!
//! Any parameter whose name ends in `password` (`password`, libpq's `sslpassword`) is hidden. A
//! string that cannot be read to its end errs towards hiding: everything from a password keyword
//! on is hidden when its value is unterminated.

/// What a hidden value is replaced with.
const HIDDEN: &str = "***";

/// The connection string with every password replaced by `***`; everything else is kept as it
/// was written.
pub fn redact(target: &str) -> String {
    match url_rest(target) {
        Some(at) => redact_url(target, at),
        None => redact_conninfo(target),
    }
}

/// Where the text after `scheme://` starts, when `s` is a URL.
fn url_rest(s: &str) -> Option<usize> {
    let (scheme, _) = s.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme.len() + 3)
}

fn is_password_key(key: &str) -> bool {
    key.trim().to_ascii_lowercase().ends_with("password")
}

/// `scheme://[user[:password]@]host[/db][?k=v&...]`. The credentials end at the last `@`: a
/// password with an unencoded `@` or `/` is still hidden whole (a stray `@` later in the query
/// hides more than needed, never less).
fn redact_url(url: &str, rest_at: usize) -> String {
    let (head, rest) = url.split_at(rest_at);
    let mut out = String::with_capacity(url.len());
    match rest.rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{HIDDEN}")),
                None => out.push_str(&rest[..at]),
            }
            out.push_str(&rest[at..]);
        }
        None => out.push_str(rest),
    }
    // The query starts at the first `?` left: a `?` inside the password is hidden by now.
    let out = match out.split_once('?') {
        Some((authority, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if is_password_key(&percent_decoded(k)) => {
                        format!("{k}={HIDDEN}")
                    }
                    _ => p.to_owned(),
                })
                .collect();
            format!("{authority}?{}", params.join("&"))
        }
        None => out,
    };
    format!("{head}{out}")
}

/// A query key with `%XX` escapes decoded, so `pass%77ord` is recognised too.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key = value key='quoted \' value' ...`, libpq's and tokio-postgres's grammar: whitespace
/// around `=` is allowed, a value is single-quoted (with `\'` and `\\`) or runs to the next
/// whitespace (where `\` escapes the next character).
fn redact_conninfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        // Whitespace between parameters is kept as written.
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        if rest.is_empty() {
            return out;
        }
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        let after_key = &rest[key_len..];
        let Some(after_eq) = after_key.trim_start().strip_prefix('=') else {
            // Not `key=value`: a stray word. After a password keyword, whatever follows may
            // be the password.
            if is_password_key(key) {
                out.push_str(key);
                out.push(' ');
                out.push_str(HIDDEN);
                return out;
            }
            out.push_str(key);
            rest = after_key;
            continue;
        };
        let value_at = after_eq.len() - after_eq.trim_start().len();
        // Key, the whitespace and `=` and the whitespace after it, as written.
        let prefix_len = rest.len() - after_eq.len() + value_at;
        out.push_str(&rest[..prefix_len]);
        let value = &after_eq[value_at..];
        let value_len = value_length(value);
        if is_password_key(key) {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&value[..value_len.unwrap_or(value.len())]);
        }
        match value_len {
            Some(n) => rest = &value[n..],
            // An unterminated quote: the rest of the string is that value.
            None => return out,
        }
    }
}

/// Bytes of the value at the start of `s` (with its quotes), `None` if a quote is not closed.
fn value_length(s: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    if s.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return Some(i + 1),
                _ => {}
            }
        }
        return None;
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            c if c.is_whitespace() => return Some(i),
            _ => {}
        }
    }
    Some(s.len())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_the_password_of_a_url() {
        assert_eq!(
            redact("postgres://app:s3cret@127.0.0.1:6432/arrakis"),
            "postgres://app:***@127.0.0.1:6432/arrakis"
        );
        assert_eq!(
            redact("postgresql://app:p%40ss@[::1]:5432/db?sslmode=disable"),
            "postgresql://app:***@[::1]:5432/db?sslmode=disable"
        );
        // No password, no credentials: nothing to hide, and no `***` invented.
        assert_eq!(redact("postgres://app@h/db"), "postgres://app@h/db");
        assert_eq!(redact("postgres://h:5432/db"), "postgres://h:5432/db");
        // An unencoded `@` or `/` in the password is hidden whole.
        assert_eq!(
            redact("postgres://app:a@b/c@h/db"),
            "postgres://app:***@h/db"
        );
    }

    #[test]
    fn hides_password_query_parameters_of_a_url() {
        assert_eq!(
            redact("postgres://h/db?user=app&password=s3cret&sslmode=disable"),
            "postgres://h/db?user=app&password=***&sslmode=disable"
        );
        assert_eq!(
            redact("postgres://app:x@h/db?sslpassword=k3y&PASSWORD=y&pass%77ord=z"),
            "postgres://app:***@h/db?sslpassword=***&PASSWORD=***&pass%77ord=***"
        );
        assert_eq!(
            redact("postgres://h/db?application_name=thumper"),
            "postgres://h/db?application_name=thumper"
        );
        // An `@` in the query does not carry the password past the masking.
        assert!(!redact("postgres://h/db?password=s3cret&application_name=a@b").contains("s3cret"));
        assert!(!redact("postgres://u:s3cret@h/db?application_name=a@b").contains("s3cret"));
    }

    #[test]
    fn hides_the_password_of_a_key_value_conninfo() {
        assert_eq!(
            redact("host=127.0.0.1 port=6432 user=app password=s3cret dbname=arrakis"),
            "host=127.0.0.1 port=6432 user=app password=*** dbname=arrakis"
        );
        assert_eq!(
            redact("host=h password='a b \\' c' dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(
            redact("host = h   password =  s3cret\tsslpassword=k dbname=d"),
            "host = h   password =  ***\tsslpassword=*** dbname=d"
        );
        assert_eq!(redact("password=s3cret"), "password=***");
        assert_eq!(
            redact("password=back\\ slash dbname=d"),
            "password=*** dbname=d"
        );
        // A URL-looking value does not make the conninfo a URL.
        assert_eq!(
            redact("application_name=x://y password=s3cret"),
            "application_name=x://y password=***"
        );
        // Nothing to hide.
        assert_eq!(
            redact("host=h user='app user' dbname=d"),
            "host=h user='app user' dbname=d"
        );
    }

    #[test]
    fn errs_towards_hiding_when_the_conninfo_is_malformed() {
        // An unterminated quote: the password runs to the end.
        assert_eq!(
            redact("host=h password='a b dbname=d"),
            "host=h password=***"
        );
        // A password keyword without `=`.
        assert_eq!(redact("host=h password s3cret"), "host=h password ***");
        assert!(!redact("user=app password= 'x y").contains("x y"));
    }
}
