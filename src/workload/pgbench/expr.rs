//! `\set` / `\if` expressions: the grammar of pgbench's `exprparse.y` (same operators,
//! precedence and associativity) parsed by precedence climbing, and their evaluation with
//! pgbench's integer/double/boolean/NULL rules.

use super::functions as f;
use super::lex::{Tok, Token};
use super::value::{fail, EvalError, Value};
use super::Session;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Const(Value),
    /// `:name`.
    Var(String),
    /// An operator or function applied to its arguments (operators are functions, as in
    /// pgbench: `a > b` is `<(b, a)`, `-x` is `0 - x`, `~x` is `-1 # x`).
    Call(Func, Vec<Expr>),
}

/// Every function and operator.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Abs,
    Least,
    Greatest,
    Debug,
    Pi,
    Sqrt,
    Ln,
    Exp,
    Int,
    Double,
    Random,
    RandomGaussian,
    RandomExponential,
    RandomZipfian,
    Pow,
    And,
    Or,
    Not,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
    Eq,
    Ne,
    Le,
    Lt,
    Is,
    /// `CASE WHEN c1 THEN v1 ... ELSE e END` as `[c1, v1, ..., e]`.
    Case,
    HashMurmur2,
    HashFnv1a,
    Permute,
}

enum Arity {
    Exact(usize),
    AtLeastOne,
    /// One or two arguments; the seed defaults to `:default_seed`.
    Hash,
    /// Two or three arguments; the seed defaults to `:default_seed`.
    Permute,
}

/// The callable functions, by their (case-insensitive) names.
const FUNCTIONS: &[(&str, Func, Arity)] = &[
    ("abs", Func::Abs, Arity::Exact(1)),
    ("least", Func::Least, Arity::AtLeastOne),
    ("greatest", Func::Greatest, Arity::AtLeastOne),
    ("debug", Func::Debug, Arity::Exact(1)),
    ("pi", Func::Pi, Arity::Exact(0)),
    ("sqrt", Func::Sqrt, Arity::Exact(1)),
    ("ln", Func::Ln, Arity::Exact(1)),
    ("exp", Func::Exp, Arity::Exact(1)),
    ("int", Func::Int, Arity::Exact(1)),
    ("double", Func::Double, Arity::Exact(1)),
    ("random", Func::Random, Arity::Exact(2)),
    ("random_gaussian", Func::RandomGaussian, Arity::Exact(3)),
    (
        "random_exponential",
        Func::RandomExponential,
        Arity::Exact(3),
    ),
    ("random_zipfian", Func::RandomZipfian, Arity::Exact(3)),
    ("pow", Func::Pow, Arity::Exact(2)),
    ("power", Func::Pow, Arity::Exact(2)),
    ("mod", Func::Mod, Arity::Exact(2)),
    ("hash", Func::HashMurmur2, Arity::Hash),
    ("hash_murmur2", Func::HashMurmur2, Arity::Hash),
    ("hash_fnv1a", Func::HashFnv1a, Arity::Hash),
    ("permute", Func::Permute, Arity::Permute),
];

/// pgbench evaluates at most this many arguments of one call.
const MAX_FARGS: usize = 16;

/// A parse error: byte offset in the script and what was wrong / expected.
pub type ExprError = (usize, String);

/// Operator precedence levels, lowest first, as `exprparse.y` declares them.
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const IS: u8 = 4;
const CMP: u8 = 5;
const BIT: u8 = 6;
const ADD: u8 = 7;
const MUL: u8 = 8;
const UNARY: u8 = 9;

/// Parses one whole expression from `tokens` (which end with [`Tok::Eof`]).
pub fn parse(tokens: &[Token]) -> Result<Expr, ExprError> {
    let mut p = Parser {
        toks: tokens,
        pos: 0,
    };
    let e = p.expr(0)?;
    let t = p.peek();
    if t.kind != Tok::Eof {
        return Err((
            t.offset,
            format!(
                "syntax error: expected an operator or the end of the expression, found {}",
                t.kind.describe()
            ),
        ));
    }
    Ok(e)
}

struct Parser<'t> {
    toks: &'t [Token],
    pos: usize,
}

fn binary(op: &Tok) -> Option<(u8, Func, bool)> {
    // (level, function, swap operands)
    Some(match op {
        Tok::Or => (OR, Func::Or, false),
        Tok::And => (AND, Func::And, false),
        Tok::Char('<') => (CMP, Func::Lt, false),
        Tok::Char('>') => (CMP, Func::Lt, true),
        Tok::Char('=') => (CMP, Func::Eq, false),
        Tok::Le => (CMP, Func::Le, false),
        Tok::Ge => (CMP, Func::Le, true),
        Tok::Ne => (CMP, Func::Ne, false),
        Tok::Char('|') => (BIT, Func::BitOr, false),
        Tok::Char('#') => (BIT, Func::BitXor, false),
        Tok::Char('&') => (BIT, Func::BitAnd, false),
        Tok::Shl => (BIT, Func::Shl, false),
        Tok::Shr => (BIT, Func::Shr, false),
        Tok::Char('+') => (ADD, Func::Add, false),
        Tok::Char('-') => (ADD, Func::Sub, false),
        Tok::Char('*') => (MUL, Func::Mul, false),
        Tok::Char('/') => (MUL, Func::Div, false),
        Tok::Char('%') => (MUL, Func::Mod, false),
        _ => return None,
    })
}

fn not(e: Expr) -> Expr {
    Expr::Call(Func::Not, vec![e])
}

fn is(e: Expr, v: Value) -> Expr {
    Expr::Call(Func::Is, vec![e, Expr::Const(v)])
}

impl<'t> Parser<'t> {
    fn peek(&self) -> &'t Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> &'t Token {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), ExprError> {
        let t = self.bump();
        if &t.kind == want {
            Ok(())
        } else {
            Err((
                t.offset,
                format!("syntax error: expected {what}, found {}", t.kind.describe()),
            ))
        }
    }

    /// Precedence climbing: parses operators of level `min` and above.
    fn expr(&mut self, min: u8) -> Result<Expr, ExprError> {
        let mut lhs = self.prefix()?;
        loop {
            let t = self.peek();
            if matches!(t.kind, Tok::Is | Tok::IsNull | Tok::NotNull) {
                if IS < min {
                    break;
                }
                lhs = self.is_suffix(lhs)?;
                continue;
            }
            let Some((level, func, swap)) = binary(&t.kind) else {
                break;
            };
            if level < min {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(level + 1)?;
            lhs = if swap {
                Expr::Call(func, vec![rhs, lhs])
            } else {
                Expr::Call(func, vec![lhs, rhs])
            };
            // Comparisons are non-associative: `a < b < c` is a syntax error.
            let next = self.peek();
            if level == CMP && binary(&next.kind).is_some_and(|(l, _, _)| l == CMP) {
                return Err((
                    next.offset,
                    "syntax error: comparison operators do not chain; use AND or parentheses"
                        .into(),
                ));
            }
        }
        Ok(lhs)
    }

    /// `IS [NOT] NULL|TRUE|FALSE`, `ISNULL`, `NOTNULL` after `lhs`.
    fn is_suffix(&mut self, lhs: Expr) -> Result<Expr, ExprError> {
        let t = self.bump();
        match t.kind {
            Tok::IsNull => return Ok(is(lhs, Value::Null)),
            Tok::NotNull => return Ok(not(is(lhs, Value::Null))),
            _ => {}
        }
        let negate = self.peek().kind == Tok::Not;
        if negate {
            self.pos += 1;
        }
        let t = self.bump();
        let v = match t.kind {
            Tok::Null => Value::Null,
            Tok::Bool(b) => Value::Bool(b),
            ref other => {
                return Err((
                    t.offset,
                    format!(
                        "syntax error: expected NULL, TRUE or FALSE after IS{}, found {}",
                        if negate { " NOT" } else { "" },
                        other.describe()
                    ),
                ))
            }
        };
        let e = is(lhs, v);
        Ok(if negate { not(e) } else { e })
    }

    fn prefix(&mut self) -> Result<Expr, ExprError> {
        let t = self.bump();
        Ok(match &t.kind {
            Tok::Char('(') => {
                let e = self.expr(0)?;
                self.expect(&Tok::Char(')'), "')'")?;
                e
            }
            Tok::Char('+') => self.expr(UNARY)?,
            Tok::Char('-') => {
                if self.peek().kind == Tok::MaxIntPlusOne {
                    self.pos += 1;
                    Expr::Const(Value::Int(i64::MIN))
                } else {
                    let e = self.expr(UNARY)?;
                    Expr::Call(Func::Sub, vec![Expr::Const(Value::Int(0)), e])
                }
            }
            Tok::Char('~') => {
                let e = self.expr(BIT + 1)?;
                Expr::Call(Func::BitXor, vec![Expr::Const(Value::Int(!0)), e])
            }
            Tok::Not => not(self.expr(NOT + 1)?),
            Tok::Null => Expr::Const(Value::Null),
            Tok::Bool(b) => Expr::Const(Value::Bool(*b)),
            Tok::Int(i) => Expr::Const(Value::Int(*i)),
            Tok::Double(d) => Expr::Const(Value::Double(*d)),
            Tok::Variable(v) => Expr::Var(v.clone()),
            Tok::Ident(name) => self.call(name, t.offset)?,
            Tok::Case => self.case()?,
            other => {
                return Err((
                    t.offset,
                    format!(
                        "syntax error: expected an operand (a number, :variable, function call, \
                         NULL, TRUE, FALSE, CASE or '('), found {}",
                        other.describe()
                    ),
                ))
            }
        })
    }

    fn call(&mut self, name: &str, offset: usize) -> Result<Expr, ExprError> {
        let Some((_, func, arity)) = FUNCTIONS
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        else {
            return Err((offset, format!("unexpected function name ({name})")));
        };
        self.expect(&Tok::Char('('), &format!("'(' after function name {name}"))?;
        let mut args = Vec::new();
        if self.peek().kind != Tok::Char(')') {
            loop {
                args.push(self.expr(0)?);
                if self.peek().kind == Tok::Char(',') {
                    self.pos += 1;
                    continue;
                }
                break;
            }
        }
        self.expect(&Tok::Char(')'), "',' or ')' in the argument list")?;
        let n = args.len();
        let ok = match arity {
            Arity::Exact(k) => n == *k,
            Arity::AtLeastOne => n >= 1,
            Arity::Hash => (1..=2).contains(&n),
            Arity::Permute => (2..=3).contains(&n),
        };
        if !ok {
            let want = match arity {
                Arity::Exact(k) => format!("{k}"),
                Arity::AtLeastOne => "at least 1".into(),
                Arity::Hash => "1 or 2".into(),
                Arity::Permute => "2 or 3".into(),
            };
            return Err((
                offset,
                format!("unexpected number of arguments ({name}): expected {want}, got {n}"),
            ));
        }
        if matches!(arity, Arity::Hash if n == 1) || matches!(arity, Arity::Permute if n == 2) {
            args.push(Expr::Var("default_seed".into()));
        }
        Ok(Expr::Call(*func, args))
    }

    fn case(&mut self) -> Result<Expr, ExprError> {
        let mut args = Vec::new();
        self.expect(&Tok::When, "WHEN after CASE")?;
        loop {
            args.push(self.expr(0)?);
            self.expect(&Tok::Then, "THEN")?;
            args.push(self.expr(0)?);
            match self.bump() {
                t if t.kind == Tok::When => continue,
                t if t.kind == Tok::Else => {
                    args.push(self.expr(0)?);
                    self.expect(&Tok::End, "END")?;
                    break;
                }
                t if t.kind == Tok::End => {
                    args.push(Expr::Const(Value::Null));
                    break;
                }
                t => {
                    return Err((
                        t.offset,
                        format!(
                            "syntax error: expected WHEN, ELSE or END, found {}",
                            t.kind.describe()
                        ),
                    ))
                }
            }
        }
        Ok(Expr::Call(Func::Case, args))
    }
}

/// Evaluates `e` for the client `s` (its variables and random state).
pub fn eval(e: &Expr, s: &mut Session) -> Result<Value, EvalError> {
    match e {
        Expr::Const(v) => Ok(*v),
        Expr::Var(name) => s.vars.value(name),
        Expr::Call(Func::And | Func::Or, args) => eval_logic(e, &args[0], &args[1], s),
        Expr::Call(Func::Case, args) => eval_case(args, s),
        Expr::Call(func, args) => {
            if args.len() > MAX_FARGS {
                return fail(format!(
                    "too many function arguments, maximum is {MAX_FARGS}"
                ));
            }
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval(a, s)?);
            }
            let has_null = vals.contains(&Value::Null);
            if has_null && !matches!(func, Func::Is | Func::Debug) {
                return Ok(Value::Null);
            }
            call(*func, &vals, s)
        }
    }
}

/// AND / OR, lazily: NULL on the left gives NULL, the right side only when needed.
fn eval_logic(e: &Expr, l: &Expr, r: &Expr, s: &mut Session) -> Result<Value, EvalError> {
    let is_and = matches!(e, Expr::Call(Func::And, _));
    let a = eval(l, s)?;
    if a == Value::Null {
        return Ok(Value::Null);
    }
    if a.to_bool()? != is_and {
        return Ok(Value::Bool(!is_and));
    }
    match eval(r, s)? {
        Value::Null => Ok(Value::Null),
        b => Ok(Value::Bool(b.to_bool()?)),
    }
}

fn eval_case(args: &[Expr], s: &mut Session) -> Result<Value, EvalError> {
    let (pairs, else_part) = args.split_at(args.len() - 1);
    for pair in pairs.chunks(2) {
        if eval(&pair[0], s)?.truth() {
            return eval(&pair[1], s);
        }
    }
    eval(&else_part[0], s)
}

/// The non-lazy functions, on evaluated non-NULL (except IS and debug) arguments.
fn call(func: Func, v: &[Value], s: &mut Session) -> Result<Value, EvalError> {
    use Func::*;
    Ok(match func {
        Add | Sub | Mul | Div | Mod | Eq | Ne | Le | Lt => arith(func, v[0], v[1])?,
        BitAnd | BitOr | BitXor | Shl | Shr => {
            let (l, r) = (v[0].to_int()?, v[1].to_int()?);
            Value::Int(match func {
                BitAnd => l & r,
                BitOr => l | r,
                BitXor => l ^ r,
                // Shifts by the count modulo 64, as the x86 C code pgbench is built from does.
                Shl => l.wrapping_shl(r as u32),
                _ => l.wrapping_shr(r as u32),
            })
        }
        Not => Value::Bool(!v[0].to_bool()?),
        Is => Value::Bool(match (v[0], v[1]) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            _ => false,
        }),
        Pi => Value::Double(std::f64::consts::PI),
        Abs => match v[0] {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            other => Value::Double(other.to_double()?.abs()),
        },
        Debug => {
            s.debug(v[0]);
            v[0]
        }
        Double => Value::Double(v[0].to_double()?),
        Sqrt => Value::Double(v[0].to_double()?.sqrt()),
        Ln => Value::Double(v[0].to_double()?.ln()),
        Exp => Value::Double(v[0].to_double()?.exp()),
        Int => Value::Int(v[0].to_int()?),
        Least | Greatest => extremum(func == Least, v)?,
        Random | RandomGaussian | RandomExponential | RandomZipfian => random(func, v, s)?,
        Pow => Value::Double(v[0].to_double()?.powf(v[1].to_double()?)),
        HashMurmur2 => Value::Int(f::hash_murmur2(v[0].to_int()?, v[1].to_int()?)),
        HashFnv1a => Value::Int(f::hash_fnv1a(v[0].to_int()?, v[1].to_int()?)),
        Permute => {
            let (val, size, seed) = (v[0].to_int()?, v[1].to_int()?, v[2].to_int()?);
            if size <= 0 {
                return fail("permute size parameter must be greater than zero");
            }
            Value::Int(f::permute(val, size, seed))
        }
        And | Or | Case => unreachable!("lazy functions are evaluated by eval"),
    })
}

/// `+ - * / % = <> <= <`: in doubles if either side is a double (except `%`), else in
/// integers with overflow and division-by-zero errors.
fn arith(func: Func, l: Value, r: Value) -> Result<Value, EvalError> {
    use Func::*;
    let any_double = matches!(l, Value::Double(_)) || matches!(r, Value::Double(_));
    if any_double && func != Mod {
        let (a, b) = (l.to_double()?, r.to_double()?);
        return Ok(match func {
            Add => Value::Double(a + b),
            Sub => Value::Double(a - b),
            Mul => Value::Double(a * b),
            Div => Value::Double(a / b),
            Eq => Value::Bool(a == b),
            Ne => Value::Bool(a != b),
            Le => Value::Bool(a <= b),
            _ => Value::Bool(a < b),
        });
    }
    let (a, b) = (l.to_int()?, r.to_int()?);
    let checked = |res: Option<i64>, op: &str| match res {
        Some(x) => Ok(Value::Int(x)),
        None => fail(format!("bigint {op} out of range")),
    };
    match func {
        Add => checked(a.checked_add(b), "add"),
        Sub => checked(a.checked_sub(b), "sub"),
        Mul => checked(a.checked_mul(b), "mul"),
        Eq => Ok(Value::Bool(a == b)),
        Ne => Ok(Value::Bool(a != b)),
        Le => Ok(Value::Bool(a <= b)),
        Lt => Ok(Value::Bool(a < b)),
        _ if b == 0 => fail("division by zero"),
        Div => checked(a.checked_div(b), "div"),
        // i64::MIN % -1 is 0, not an overflow.
        _ => Ok(Value::Int(a.checked_rem(b).unwrap_or(0))),
    }
}

fn extremum(least: bool, v: &[Value]) -> Result<Value, EvalError> {
    if v.iter().any(|x| matches!(x, Value::Double(_))) {
        let mut acc = v[0].to_double()?;
        for x in &v[1..] {
            let d = x.to_double()?;
            acc = if least { acc.min(d) } else { acc.max(d) };
        }
        Ok(Value::Double(acc))
    } else {
        let mut acc = v[0].to_int()?;
        for x in &v[1..] {
            let i = x.to_int()?;
            acc = if least { acc.min(i) } else { acc.max(i) };
        }
        Ok(Value::Int(acc))
    }
}

fn random(func: Func, v: &[Value], s: &mut Session) -> Result<Value, EvalError> {
    let (min, max) = (v[0].to_int()?, v[1].to_int()?);
    f::check_range(min, max)?;
    if func == Func::Random {
        return Ok(Value::Int(f::random(&mut s.rng, min, max)));
    }
    let param = v[2].to_double()?;
    Ok(Value::Int(match func {
        Func::RandomGaussian => {
            if param < f::MIN_GAUSSIAN_PARAM {
                return fail(format!(
                    "gaussian parameter must be at least {:.6} (not {param:.6})",
                    f::MIN_GAUSSIAN_PARAM
                ));
            }
            f::random_gaussian(&mut s.rng, min, max, param)
        }
        Func::RandomZipfian => {
            if !(f::MIN_ZIPFIAN_PARAM..=f::MAX_ZIPFIAN_PARAM).contains(&param) {
                return fail(format!(
                    "zipfian parameter must be in range [{:.3}, {:.0}] (not {param:.6})",
                    f::MIN_ZIPFIAN_PARAM,
                    f::MAX_ZIPFIAN_PARAM
                ));
            }
            f::random_zipfian(&mut s.rng, min, max, param)
        }
        _ => {
            if param <= 0.0 {
                return fail(format!(
                    "exponential parameter must be greater than zero (not {param:.6})"
                ));
            }
            f::random_exponential(&mut s.rng, min, max, param)
        }
    }))
}
