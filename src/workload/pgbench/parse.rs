//! Parsing a pgbench script into commands: SQL (split as psql splits it), the meta-commands,
//! and the static checks pgbench makes before a run (`\if` nesting, `\gset` placement).

use std::fmt;

use super::expr::{self, Expr};
use super::lex;
use super::sql::{self, Stop};
use super::vars::valid_name;

/// A parsed script.
#[derive(Debug, Clone)]
pub struct Script {
    /// Where it came from: a file name or `<builtin: ...>`.
    pub name: String,
    /// Its commands in order.
    pub commands: Vec<Command>,
}

/// One command of a script.
#[derive(Debug, Clone)]
pub struct Command {
    /// 1-based line of the script where the command starts.
    pub line: usize,
    /// The command's first line, for reports and errors.
    pub first_line: String,
    /// What it does.
    pub kind: CommandKind,
}

/// The kinds of command.
#[derive(Debug, Clone)]
pub enum CommandKind {
    /// An SQL command (possibly several joined with `\;`).
    Sql(SqlCommand),
    /// `\set name expression`.
    Set {
        /// The variable assigned.
        var: String,
        /// The expression.
        expr: Expr,
    },
    /// `\sleep amount [us|ms|s]`.
    Sleep {
        /// A literal count or a variable holding one.
        amount: SleepAmount,
        /// Microseconds per unit (1 for `us`, 1000 for `ms`, 1000000 for `s`, the default).
        unit_us: i64,
    },
    /// `\if expression`.
    If(Expr),
    /// `\elif expression`.
    Elif(Expr),
    /// `\else`.
    Else,
    /// `\endif`.
    EndIf,
    /// `\startpipeline`.
    StartPipeline,
    /// `\endpipeline`.
    EndPipeline,
}

/// How long a `\sleep` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SleepAmount {
    /// A number written in the script.
    Literal(i64),
    /// `:name`: read (as C `atoi`) when the command runs.
    Variable(String),
}

/// An SQL command.
#[derive(Debug, Clone)]
pub struct SqlCommand {
    /// The text as written (after leading whitespace and `--` comments); `:name` references
    /// are substituted as text under the simple protocol.
    pub text: String,
    /// The text with `$1`, `$2`, ... for the references, for the extended protocols.
    pub parameterized: String,
    /// The variables bound to `$1`, `$2`, ... in order.
    pub params: Vec<String>,
    /// `\gset` / `\aset` after the command.
    pub capture: Option<Capture>,
}

/// Storing a command's results into variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// `\aset`: every result of a `\;` compound, skipping empty ones; `\gset`: the last
    /// result, which must have exactly one row.
    pub all: bool,
    /// Prefix of the variable names (empty: the column names as they are).
    pub prefix: String,
}

/// A script that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// The script's name (file name).
    pub script: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, when one position is at fault.
    pub column: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
    /// The line's text, shown with a caret under the column.
    pub source_line: Option<String>,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.script, self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(text) = &self.source_line {
            write!(f, "\n  {text}")?;
            if let Some(c) = self.column {
                write!(f, "\n  {:>width$}", "^", width = c)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}

/// pgbench's limit on a statement's `:name` references.
const MAX_PARAMS: usize = 255;

/// Parses script text; `name` is used in errors.
pub fn parse_script(name: &str, src: &str) -> Result<Script, ScriptError> {
    let p = ScriptParser {
        name,
        src,
        line_starts: std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
    };
    let mut commands: Vec<Command> = Vec::new();
    let mut pos = 0;
    loop {
        let (text, stop) = sql::scan(src, pos);
        if let Some(cmd) = p.sql_command(&text, pos)? {
            commands.push(cmd);
        }
        match stop {
            Stop::Semicolon(next) => pos = next,
            Stop::Eof => break,
            Stop::Backslash(at) => {
                let (cmd, next) = p.backslash_command(at)?;
                pos = next;
                match cmd {
                    Some(Parsed::Capture(capture)) => p.attach(&mut commands, capture, at)?,
                    Some(Parsed::Command(c)) => commands.push(c),
                    None => {}
                }
            }
        }
    }
    if commands.is_empty() {
        return Err(p.error(src.len(), None, "the script has no commands".into()));
    }
    p.check_conditionals(&commands)?;
    Ok(Script {
        name: name.to_string(),
        commands,
    })
}

enum Parsed {
    Command(Command),
    Capture(Capture),
}

struct ScriptParser<'a> {
    name: &'a str,
    src: &'a str,
    line_starts: Vec<usize>,
}

impl ScriptParser<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn line_text(&self, line: usize) -> String {
        let start = self.line_starts[line - 1];
        let end = self.src[start..]
            .find('\n')
            .map_or(self.src.len(), |p| start + p);
        self.src[start..end].trim_end_matches('\r').to_string()
    }

    /// An error at `offset`; `column` says whether to point at it.
    fn error(&self, offset: usize, column: Option<()>, message: String) -> ScriptError {
        let line = self.line_of(offset.min(self.src.len()));
        let start = self.line_starts[line - 1];
        ScriptError {
            script: self.name.to_string(),
            line,
            column: column.map(|_| self.src[start..offset.min(self.src.len())].chars().count() + 1),
            message,
            source_line: Some(self.line_text(line)),
        }
    }

    fn sql_command(&self, text: &str, pos: usize) -> Result<Option<Command>, ScriptError> {
        let Some(skip) = sql::skip_comments(text) else {
            return Ok(None);
        };
        let text = &text[skip..];
        let start = pos + sql::skip_comments(&self.src[pos..]).unwrap_or(0);
        let (parameterized, params) = sql::parameterize(text);
        if params.len() > MAX_PARAMS {
            return Err(self.error(
                start,
                None,
                format!(
                    "statement has too many variable references ({}; at most {MAX_PARAMS})",
                    params.len()
                ),
            ));
        }
        let first_line: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(127)
            .collect();
        Ok(Some(Command {
            line: self.line_of(start),
            first_line,
            kind: CommandKind::Sql(SqlCommand {
                text: text.to_string(),
                parameterized,
                params,
                capture: None,
            }),
        }))
    }

    /// The end of the backslash command starting at `at`: its last byte + 1 (the newline that
    /// ends it, or the end of the script). `\` + newline continues it.
    fn command_end(&self, at: usize) -> usize {
        let b = self.src.as_bytes();
        let mut i = at + 1;
        while i < b.len() {
            if b[i] == b'\n' {
                let mut j = i;
                if j > 0 && b[j - 1] == b'\r' {
                    j -= 1;
                }
                if j > at + 1 && b[j - 1] == b'\\' {
                    i += 1;
                    continue;
                }
                return i;
            }
            i += 1;
        }
        b.len()
    }

    /// The words of a backslash command, with their offsets.
    fn words(&self, from: usize, end: usize) -> Vec<(usize, &str)> {
        let b = self.src.as_bytes();
        let mut out = Vec::new();
        let mut i = from;
        while i < end {
            let sep = |k: usize| {
                matches!(b[k], b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
                    || (b[k] == b'\\' && (k + 1 >= end || matches!(b[k + 1], b'\n' | b'\r')))
            };
            if sep(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < end && !sep(i) {
                i += 1;
            }
            out.push((start, &self.src[start..i]));
        }
        out
    }

    /// Parses the backslash command at `at`; returns it and where scanning resumes.
    fn backslash_command(&self, at: usize) -> Result<(Option<Parsed>, usize), ScriptError> {
        let end = self.command_end(at);
        let next = (end + 1).min(self.src.len());
        let words = self.words(at + 1, end);
        let Some(&(name_at, name)) = words.first() else {
            return Ok((None, next));
        };
        let lname = name.to_ascii_lowercase();
        let line = self.line_of(at);
        let first_line = self.line_text(line).trim().to_string();
        let cmd = |kind| {
            Ok((
                Some(Parsed::Command(Command {
                    line,
                    first_line: first_line.clone(),
                    kind,
                })),
                next,
            ))
        };
        let in_cmd = |m: &str| format!("{m} in \\{lname}");
        let name_end = name_at + name.len();
        match lname.as_str() {
            "set" => {
                let Some(&(var_at, var)) = words.get(1) else {
                    return Err(self.error(end, Some(()), in_cmd("missing variable name")));
                };
                if !valid_name(var) {
                    return Err(self.error(
                        var_at,
                        Some(()),
                        in_cmd(&format!(
                            "invalid variable name \"{var}\": expected a letter or _ then \
                             letters, digits or _"
                        )),
                    ));
                }
                let expr = self.expression(var_at + var.len(), end, &lname)?;
                cmd(CommandKind::Set {
                    var: var.to_string(),
                    expr,
                })
            }
            "if" => cmd(CommandKind::If(self.expression(name_end, end, &lname)?)),
            "elif" => cmd(CommandKind::Elif(self.expression(name_end, end, &lname)?)),
            "sleep" => cmd(self.sleep(&words, end)?),
            "else" | "endif" | "startpipeline" | "endpipeline" => {
                if let Some(&(extra_at, _)) = words.get(1) {
                    return Err(self.error(
                        extra_at,
                        Some(()),
                        in_cmd("unexpected argument: this command takes none"),
                    ));
                }
                cmd(match lname.as_str() {
                    "else" => CommandKind::Else,
                    "endif" => CommandKind::EndIf,
                    "startpipeline" => CommandKind::StartPipeline,
                    _ => CommandKind::EndPipeline,
                })
            }
            "gset" | "aset" => {
                if let Some(&(extra_at, _)) = words.get(2) {
                    return Err(self.error(
                        extra_at,
                        Some(()),
                        in_cmd("too many arguments: expected at most a variable prefix"),
                    ));
                }
                let capture = Capture {
                    all: lname == "aset",
                    prefix: words.get(1).map_or("", |w| w.1).to_string(),
                };
                Ok((Some(Parsed::Capture(capture)), next))
            }
            "shell" | "setshell" => Err(self.error(
                name_at,
                Some(()),
                format!(
                    "\\{lname} is not supported: thumper does not run shell commands during a \
                     load test; compute the value with \\set or in SQL instead"
                ),
            )),
            _ => Err(self.error(
                name_at,
                Some(()),
                format!(
                    "invalid command \\{name}: expected one of \\set, \\sleep, \\gset, \\aset, \
                     \\if, \\elif, \\else, \\endif, \\startpipeline, \\endpipeline"
                ),
            )),
        }
    }

    fn expression(&self, from: usize, end: usize, cmd: &str) -> Result<Expr, ScriptError> {
        let parsed = lex::tokenize(self.src, from, end).and_then(|t| expr::parse(&t));
        parsed.map_err(|(offset, msg)| self.error(offset, Some(()), format!("{msg} in \\{cmd}")))
    }

    fn sleep(&self, words: &[(usize, &str)], end: usize) -> Result<CommandKind, ScriptError> {
        let Some(&(arg_at, arg)) = words.get(1) else {
            return Err(self.error(end, Some(()), "missing argument in \\sleep".into()));
        };
        if let Some(&(extra_at, _)) = words.get(3) {
            return Err(self.error(
                extra_at,
                Some(()),
                "too many arguments in \\sleep: expected a duration and a unit".into(),
            ));
        }
        let (amount, mut unit) = if let Some(var) = arg.strip_prefix(':') {
            (SleepAmount::Variable(var.to_string()), None)
        } else {
            let sign = usize::from(arg.starts_with(['+', '-']));
            let digits = arg[sign..].bytes().take_while(u8::is_ascii_digit).count();
            let rest = &arg[sign + digits..];
            if digits == 0 || (!rest.is_empty() && words.len() > 2) {
                return Err(self.error(
                    arg_at,
                    Some(()),
                    format!("invalid sleep time \"{arg}\" in \\sleep: must be an integer"),
                ));
            }
            let n: i64 = arg[..sign + digits].parse().map_err(|_| {
                self.error(
                    arg_at,
                    Some(()),
                    format!("sleep time \"{arg}\" is out of range"),
                )
            })?;
            let unit = (!rest.is_empty()).then_some((arg_at + sign + digits, rest));
            (SleepAmount::Literal(n), unit)
        };
        if let Some(&(u_at, u)) = words.get(2) {
            unit = Some((u_at, u));
        }
        let unit_us = match unit.map(|(at, u)| (at, u.to_ascii_lowercase())) {
            None => 1_000_000,
            Some((_, u)) if u == "s" => 1_000_000,
            Some((_, u)) if u == "ms" => 1_000,
            Some((_, u)) if u == "us" => 1,
            Some((at, u)) => {
                return Err(self.error(
                    at,
                    Some(()),
                    format!("unrecognized time unit \"{u}\" in \\sleep: must be us, ms or s"),
                ))
            }
        };
        Ok(CommandKind::Sleep { amount, unit_us })
    }

    /// Attaches `\gset` / `\aset` to the SQL command just before it.
    fn attach(&self, cmds: &mut [Command], capture: Capture, at: usize) -> Result<(), ScriptError> {
        let what = if capture.all { "\\aset" } else { "\\gset" };
        match cmds.last_mut().map(|c| &mut c.kind) {
            Some(CommandKind::Sql(sql)) if sql.capture.is_none() => {
                sql.capture = Some(capture);
                Ok(())
            }
            _ => Err(self.error(
                at,
                Some(()),
                format!("{what} must follow an SQL command (one without \\gset or \\aset)"),
            )),
        }
    }

    /// pgbench's `CheckConditional`: `\if` ... `\endif` properly nested.
    fn check_conditionals(&self, cmds: &[Command]) -> Result<(), ScriptError> {
        // One entry per open \if: its line, and whether \else was seen.
        let mut stack: Vec<(usize, bool)> = Vec::new();
        let err = |line: usize, msg: &str| ScriptError {
            script: self.name.to_string(),
            line,
            column: None,
            message: msg.to_string(),
            source_line: Some(self.line_text(line)),
        };
        for c in cmds {
            match c.kind {
                CommandKind::If(_) => stack.push((c.line, false)),
                CommandKind::Elif(_) | CommandKind::Else => {
                    let is_else = matches!(c.kind, CommandKind::Else);
                    let word = if is_else { "\\else" } else { "\\elif" };
                    match stack.last_mut() {
                        None => return Err(err(c.line, &format!("{word} without matching \\if"))),
                        Some((_, true)) => {
                            return Err(err(c.line, &format!("{word} after \\else")))
                        }
                        Some((_, seen_else)) => *seen_else = is_else,
                    }
                }
                // Pops the \if; an \endif with none open is an error.
                CommandKind::EndIf if stack.pop().is_none() => {
                    return Err(err(c.line, "\\endif without matching \\if"));
                }
                _ => {}
            }
        }
        match stack.last() {
            Some(&(line, _)) => Err(err(line, "\\if without matching \\endif")),
            None => Ok(()),
        }
    }
}
