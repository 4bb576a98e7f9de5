//! The lexer of `\set` / `\if` expressions, as pgbench's `exprscan.l` (EXPR state) tokenises.

use super::value::parse_double;

/// One token and the byte offset in the script where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub kind: Tok,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A single-character operator or punctuation: `+ - * / % ( ) , ~ # & | < > =`.
    Char(char),
    Ne,
    Le,
    Ge,
    Shl,
    Shr,
    And,
    Or,
    Not,
    Is,
    IsNull,
    NotNull,
    Case,
    When,
    Then,
    Else,
    End,
    Null,
    Bool(bool),
    Int(i64),
    /// `9223372036854775808`, valid only right after a unary minus.
    MaxIntPlusOne,
    Double(f64),
    Variable(String),
    Ident(String),
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Char(c) => format!("'{c}'"),
            Tok::Ne => "'<>'".into(),
            Tok::Le => "'<='".into(),
            Tok::Ge => "'>='".into(),
            Tok::Shl => "'<<'".into(),
            Tok::Shr => "'>>'".into(),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Not => "NOT".into(),
            Tok::Is => "IS".into(),
            Tok::IsNull => "ISNULL".into(),
            Tok::NotNull => "NOTNULL".into(),
            Tok::Case => "CASE".into(),
            Tok::When => "WHEN".into(),
            Tok::Then => "THEN".into(),
            Tok::Else => "ELSE".into(),
            Tok::End => "END".into(),
            Tok::Null => "NULL".into(),
            Tok::Bool(b) => (if *b { "TRUE" } else { "FALSE" }).into(),
            Tok::Int(i) => format!("integer {i}"),
            Tok::MaxIntPlusOne => "integer 9223372036854775808 (out of range)".into(),
            Tok::Double(d) => format!("number {d}"),
            Tok::Variable(v) => format!("variable :{v}"),
            Tok::Ident(s) => format!("name {s}"),
            Tok::Eof => "the end of the line".into(),
        }
    }
}

/// A lexing error: byte offset and message.
pub type LexError = (usize, String);

fn is_alpha(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_alnum(b: u8) -> bool {
    is_alpha(b) || b.is_ascii_digit()
}

/// Tokenises `src[start..end]` (offsets stay absolute in `src`); `\` + newline is a
/// continuation and counts as a space.
pub fn tokenize(src: &str, start: usize, end: usize) -> Result<Vec<Token>, LexError> {
    let b = src.as_bytes();
    let mut i = start;
    let mut out = Vec::new();
    while i < end {
        let c = b[i];
        if matches!(c, b' ' | b'\t' | b'\r' | 0x0b | 0x0c) {
            i += 1;
            continue;
        }
        if c == b'\\' {
            let mut j = i + 1;
            if j < end && b[j] == b'\r' {
                j += 1;
            }
            if j < end && b[j] == b'\n' {
                i = j + 1;
                continue;
            }
            return Err((i, "unexpected character (\\)".into()));
        }
        let (kind, len) = lex_one(src, i, end)?;
        out.push(Token { kind, offset: i });
        i += len;
    }
    out.push(Token {
        kind: Tok::Eof,
        offset: end,
    });
    Ok(out)
}

fn lex_one(src: &str, i: usize, end: usize) -> Result<(Tok, usize), LexError> {
    let b = src.as_bytes();
    let next = if i + 1 < end { b[i + 1] } else { 0 };
    let two = |t: Tok| Ok((t, 2));
    match (b[i], next) {
        (b'<', b'>') | (b'!', b'=') => return two(Tok::Ne),
        (b'<', b'=') => return two(Tok::Le),
        (b'>', b'=') => return two(Tok::Ge),
        (b'<', b'<') => return two(Tok::Shl),
        (b'>', b'>') => return two(Tok::Shr),
        _ => {}
    }
    let c = b[i];
    if b"+-*/%(),~#&|<>=".contains(&c) {
        return Ok((Tok::Char(c as char), 1));
    }
    if c == b':' {
        let len = b[i + 1..end].iter().take_while(|&&x| is_alnum(x)).count();
        if len > 0 {
            return Ok((Tok::Variable(src[i + 1..i + 1 + len].to_string()), len + 1));
        }
    }
    if c.is_ascii_digit() || (c == b'.' && next.is_ascii_digit()) {
        return lex_number(src, i, end);
    }
    if is_alpha(c) {
        let len = b[i..end].iter().take_while(|&&x| is_alnum(x)).count();
        let word = &src[i..i + len];
        return Ok((
            keyword(word).unwrap_or_else(|| Tok::Ident(word.into())),
            len,
        ));
    }
    let ch = src[i..].chars().next().unwrap_or('?');
    Err((i, format!("unexpected character ({ch})")))
}

fn keyword(word: &str) -> Option<Tok> {
    Some(match word.to_ascii_lowercase().as_str() {
        "and" => Tok::And,
        "or" => Tok::Or,
        "not" => Tok::Not,
        "is" => Tok::Is,
        "isnull" => Tok::IsNull,
        "notnull" => Tok::NotNull,
        "case" => Tok::Case,
        "when" => Tok::When,
        "then" => Tok::Then,
        "else" => Tok::Else,
        "end" => Tok::End,
        "null" => Tok::Null,
        "true" => Tok::Bool(true),
        "false" => Tok::Bool(false),
        _ => return None,
    })
}

/// `{digit}+`, `{digit}+(\.{digit}*)?([eE][-+]?{digit}+)?` or `\.{digit}+([eE][-+]?{digit}+)?`,
/// longest match first as flex does.
fn lex_number(src: &str, i: usize, end: usize) -> Result<(Tok, usize), LexError> {
    let b = src.as_bytes();
    let digits = |from: usize| {
        b[from..end]
            .iter()
            .take_while(|x| x.is_ascii_digit())
            .count()
    };
    let int_len = digits(i);
    let mut j = i + int_len;
    let mut is_double = false;
    if j < end && b[j] == b'.' {
        j += 1 + digits(j + 1);
        is_double = true;
    }
    if j < end && (b[j] == b'e' || b[j] == b'E') {
        let mut k = j + 1;
        if k < end && (b[k] == b'+' || b[k] == b'-') {
            k += 1;
        }
        let exp_digits = digits(k);
        if exp_digits > 0 {
            j = k + exp_digits;
            is_double = true;
        }
    }
    let text = &src[i..j];
    if !is_double {
        if text == "9223372036854775808" {
            return Ok((Tok::MaxIntPlusOne, j - i));
        }
        return match text.parse::<i64>() {
            Ok(v) => Ok((Tok::Int(v), j - i)),
            Err(_) => Err((i, format!("bigint constant overflow ({text})"))),
        };
    }
    match parse_double(text) {
        Some(d) => Ok((Tok::Double(d), j - i)),
        None => Err((i, format!("double constant overflow ({text})"))),
    }
}
