//! pgbench's values: NULL, boolean, 64-bit integer and double, with its coercions, its text
//! form (what `:name` becomes in SQL) and its reading of a variable's text.

use std::fmt;

/// A value of pgbench's expression language.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
}

/// A failed evaluation, with pgbench's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub String);

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EvalError {}

/// Shorthand for an [`EvalError`] result.
pub(crate) fn fail<T>(msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(msg.into()))
}

impl Value {
    /// The type's name as pgbench's messages spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "int",
            Value::Double(_) => "double",
        }
    }

    /// `coerceToInt`: a double is rounded half to even (C `rint`) and must fit.
    pub fn to_int(&self) -> Result<i64, EvalError> {
        match *self {
            Value::Int(i) => Ok(i),
            Value::Double(d) => {
                let r = d.round_ties_even();
                // FLOAT8_FITS_IN_INT64: [-2^63, 2^63).
                if r.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r)
                {
                    return fail(format!("double to int overflow for {r:.6}"));
                }
                Ok(r as i64)
            }
            _ => fail(format!("cannot coerce {} to int", self.type_name())),
        }
    }

    /// `coerceToDouble`.
    pub fn to_double(&self) -> Result<f64, EvalError> {
        match *self {
            Value::Double(d) => Ok(d),
            Value::Int(i) => Ok(i as f64),
            _ => fail(format!("cannot coerce {} to double", self.type_name())),
        }
    }

    /// `coerceToBool`: only a boolean is one.
    pub fn to_bool(&self) -> Result<bool, EvalError> {
        match *self {
            Value::Bool(b) => Ok(b),
            _ => fail(format!("cannot coerce {} to boolean", self.type_name())),
        }
    }

    /// `valueTruth`, for `\if` and `CASE WHEN`: non-zero numbers are true, NULL is false.
    pub fn truth(&self) -> bool {
        match *self {
            Value::Null => false,
            Value::Bool(b) => b,
            Value::Int(i) => i != 0,
            Value::Double(d) => d != 0.0,
        }
    }

    /// Reads a variable's text as pgbench's `makeVariableValue` does: `null`, boolean words
    /// (and their prefixes), an integer, else a double.
    pub fn from_text(name: &str, text: &str) -> Result<Value, EvalError> {
        let len = text.len();
        if len == 0 {
            return fail(format!("variable \"{name}\" is empty, not a value"));
        }
        let lower = text.to_ascii_lowercase();
        let prefix_of = |word: &str| word.starts_with(lower.as_str());
        if lower == "null" {
            Ok(Value::Null)
        } else if prefix_of("true") || prefix_of("yes") || lower == "on" {
            Ok(Value::Bool(true))
        } else if prefix_of("false") || prefix_of("no") || lower == "off" || lower == "of" {
            Ok(Value::Bool(false))
        } else if is_an_int(text) {
            match text.trim().parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => fail(format!(
                    "value \"{text}\" of variable \"{name}\" is out of range for type bigint"
                )),
            }
        } else {
            match parse_double(text.trim_start()) {
                Some(d) => Ok(Value::Double(d)),
                None => fail(format!("malformed variable \"{name}\" value: \"{text}\"")),
            }
        }
    }
}

/// `^\s*[-+]?[0-9]+$`, as pgbench's `is_an_int`.
fn is_an_int(s: &str) -> bool {
    let t = s.trim_start();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
}

/// `strtod` without its range errors: `None` on bad syntax, overflow or underflow to zero.
pub(crate) fn parse_double(s: &str) -> Option<f64> {
    let d: f64 = s.parse().ok()?;
    let lower = s.to_ascii_lowercase();
    let spelled_special = lower.contains("inf") || lower.contains("nan");
    if d.is_infinite() && !spelled_special {
        return None;
    }
    let has_nonzero_digit = s
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|b| (b'1'..=b'9').contains(&b)));
    if d == 0.0 && has_nonzero_digit {
        return None;
    }
    Some(d)
}

/// The text pgbench substitutes for a value: `NULL`, `true`/`false`, the integer, or the double
/// as C's `%.15g` (with PostgreSQL's `Infinity`/`NaN` spellings).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => f.write_str(if b { "true" } else { "false" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => f.write_str(&format_g15(d)),
        }
    }
}

/// C's `%.15g` (DBL_DIG significant digits, trailing zeros removed).
pub fn format_g15(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{d:.14e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..15).contains(&exp) {
        let m = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (14 - exp) as usize;
        strip_fraction_zeros(&format!("{d:.decimals$}")).to_string()
    }
}

fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}
