//! A client's variables. As in pgbench a variable holds text (from `-D`, `\gset`) or a value
//! (from `\set`) and converts between the two on demand.

use std::collections::HashMap;

use super::value::{fail, EvalError, Value};

#[derive(Debug, Clone)]
struct Var {
    text: Option<String>,
    value: Option<Value>,
}

/// The variables of one client.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    map: HashMap<String, Var>,
}

/// pgbench's `valid_variable_name`: a letter, `_` or non-ASCII byte, then also digits.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
}

impl Variables {
    /// No variables.
    pub fn new() -> Variables {
        Variables::default()
    }

    fn slot(&mut self, name: &str) -> Result<&mut Var, EvalError> {
        if !self.map.contains_key(name) {
            if !valid_name(name) {
                return fail(format!("invalid variable name: \"{name}\""));
            }
            self.map.insert(
                name.to_string(),
                Var {
                    text: None,
                    value: None,
                },
            );
        }
        Ok(self.map.get_mut(name).expect("inserted above"))
    }

    /// Sets `name` to text (as `-D` and `\gset` do); the value is read from it when needed.
    pub fn set_text(&mut self, name: &str, text: &str) -> Result<(), EvalError> {
        let var = self.slot(name)?;
        var.text = Some(text.to_string());
        var.value = None;
        Ok(())
    }

    /// Sets `name` to a value (as `\set` does).
    pub fn set_value(&mut self, name: &str, value: Value) -> Result<(), EvalError> {
        let var = self.slot(name)?;
        var.text = None;
        var.value = Some(value);
        Ok(())
    }

    /// Whether `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The value of `name` for an expression: an error if undefined or unreadable.
    pub fn value(&mut self, name: &str) -> Result<Value, EvalError> {
        let Some(var) = self.map.get_mut(name) else {
            return fail(format!("undefined variable \"{name}\""));
        };
        if let Some(v) = var.value {
            return Ok(v);
        }
        let v = Value::from_text(name, var.text.as_deref().unwrap_or(""))?;
        var.value = Some(v);
        Ok(v)
    }

    /// The text of `name` as substituted into SQL, or `None` if undefined.
    pub fn text(&mut self, name: &str) -> Option<&str> {
        let var = self.map.get_mut(name)?;
        if var.text.is_none() {
            var.text = Some(var.value.unwrap_or(Value::Null).to_string());
        }
        var.text.as_deref()
    }
}
