//! pgbench scripts as a workload (issue 20, part 1: the language).
//!
//! A script is parsed once with [`parse_script`] (or taken from [`builtin`]) and then run many
//! times, one run per transaction, by each client. The language is pgbench 15's:
//!
//! - SQL commands end at a `;` outside quotes, comments and parentheses (they may span lines;
//!   `\;` puts a `;` inside one command, making a compound statement); `:name` references are
//!   replaced by the variable's text under the simple protocol and sent as `$1`, `$2`, ...
//!   parameters (one per occurrence) under the extended and prepared protocols.
//! - `\set name expr`, `\sleep n [us|ms|s]` (n may be `:var`), `\gset [prefix]`,
//!   `\aset [prefix]`, `\if` / `\elif` / `\else` / `\endif`, `\startpipeline` /
//!   `\endpipeline`. `\shell` and `\setshell` are refused.
//! - The expression grammar, the functions and their integer/double/NULL rules, and the random
//!   generators, hashes and `permute` bit for bit: the same `--random-seed` and client count
//!   give the same `random*()` draws and `:default_seed` as pgbench 15 (`-j 1`).
//!
//! Running is split so that the language can be tested without a server: a [`Run`] walks one
//! script for one [`Session`] (a client's variables and random state), evaluating
//! meta-commands itself and handing back each [`Step`] that needs the server (an SQL command,
//! a sleep, a pipeline boundary). The caller executes it (SQL text from [`substitute`] under
//! the simple protocol, or [`SqlCommand::parameterized`] with the variables named in
//! [`SqlCommand::params`] as text parameters) and, for `\gset` / `\aset`, stores the rows with
//! [`Session::capture`]. One run of a script is one pgbench transaction.
//!
//! ```
//! use thumper::workload::pgbench::{builtin, SessionConfig, Step, Run};
//! let script = builtin("select-only").unwrap();
//! let config = SessionConfig { scale: 1, random_seed: 42, defines: vec![] };
//! let mut sessions = config.sessions(1).unwrap();
//! let session = &mut sessions[0];
//! let mut run = Run::new(&script);
//! while let Step::Sql { command, .. } = run.next(session).unwrap() {
//!     let text = thumper::workload::pgbench::substitute(&command.text, &mut session.vars);
//!     assert!(text.starts_with("SELECT abalance FROM pgbench_accounts WHERE aid = "));
//! }
//! ```

pub mod expr;
pub mod functions;
pub mod init;
mod lex;
mod parse;
pub mod prng;
mod sql;
mod value;
mod vars;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use parse::{
    parse_script, Capture, Command, CommandKind, Script, ScriptError, SleepAmount, SqlCommand,
};
pub use prng::Prng;
pub use sql::{parameterize, substitute};
pub use value::{format_g15, EvalError, Value};
pub use vars::{valid_name, Variables};

/// How SQL commands are sent (pgbench's `-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One Query message with the variables substituted as text.
    Simple,
    /// Parse/Bind/Execute with the variables as parameters, unnamed statement each time.
    Extended,
    /// As extended, but each command is prepared once per connection.
    Prepared,
}

/// The three scripts pgbench 15 has built in, as its source has them (name, description,
/// text). The `10`, `1` and `100000` are pgbench's tellers, branches and accounts per scale.
pub const BUILTINS: [(&str, &str, &str); 3] = [
    (
        "tpcb-like",
        "<builtin: TPC-B (sort of)>",
        "\\set aid random(1, 100000 * :scale)\n\
         \\set bid random(1, 1 * :scale)\n\
         \\set tid random(1, 10 * :scale)\n\
         \\set delta random(-5000, 5000)\n\
         BEGIN;\n\
         UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
         SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n\
         UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;\n\
         UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);\n\
         END;\n",
    ),
    (
        "simple-update",
        "<builtin: simple update>",
        "\\set aid random(1, 100000 * :scale)\n\
         \\set bid random(1, 1 * :scale)\n\
         \\set tid random(1, 10 * :scale)\n\
         \\set delta random(-5000, 5000)\n\
         BEGIN;\n\
         UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
         SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);\n\
         END;\n",
    ),
    (
        "select-only",
        "<builtin: select only>",
        "\\set aid random(1, 100000 * :scale)\n\
         SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n",
    ),
];

/// A builtin script by name or unambiguous prefix (as pgbench's `-b`).
pub fn builtin(name: &str) -> Result<Script, ScriptError> {
    let found: Vec<_> = BUILTINS.iter().filter(|b| b.0.starts_with(name)).collect();
    let names = || BUILTINS.map(|b| b.0).join(", ");
    let err = |message: String| ScriptError {
        script: name.to_string(),
        line: 1,
        column: None,
        message,
        source_line: None,
    };
    match found.as_slice() {
        [one] => parse_script(one.1, one.2),
        [] => Err(err(format!(
            "no builtin script named \"{name}\": expected one of {}",
            names()
        ))),
        _ => Err(err(format!(
            "ambiguous builtin name \"{name}\": {} scripts match; expected one of {}",
            found.len(),
            names()
        ))),
    }
}

/// What every client of a run shares: pgbench's `-s`, `--random-seed` and `-D`.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// `:scale` (unless `-D scale=...` sets it).
    pub scale: i64,
    /// `--random-seed`: seeds `:default_seed` and every client's random state.
    pub random_seed: u64,
    /// `-D NAME=VALUE` definitions, in order.
    pub defines: Vec<(String, String)>,
}

impl SessionConfig {
    /// The sessions of a run of `clients` clients, numbered from 0. As in pgbench 15, the
    /// `--random-seed` sequence seeds each client's random state in turn, then
    /// `:default_seed`: the same seed and client count give pgbench's values.
    pub fn sessions(&self, clients: usize) -> Result<Vec<Session>, EvalError> {
        let mut base = Prng::seed(self.random_seed);
        let rngs: Vec<Prng> = (0..clients).map(|_| Prng::seed(base.next_u64())).collect();
        let default_seed = base.next_u64() as i64;
        rngs.into_iter()
            .enumerate()
            .map(|(i, rng)| Session::new(i as i64, self, rng, default_seed))
            .collect()
    }

    /// Parses a `-D NAME=VALUE` definition, checking the name.
    pub fn parse_define(def: &str) -> Result<(String, String), String> {
        let Some((name, value)) = def.split_once('=') else {
            return Err(format!(
                "invalid variable definition \"{def}\": expected NAME=VALUE"
            ));
        };
        if !valid_name(name) {
            return Err(format!(
                "invalid variable name \"{name}\" in \"{def}\": expected a letter or _ then \
                 letters, digits or _"
            ));
        }
        Ok((name.to_string(), value.to_string()))
    }
}

/// One client's state: its variables and its random sequence.
#[derive(Debug, Clone)]
pub struct Session {
    /// The variables (`:name`).
    pub vars: Variables,
    /// The random state of `random*()`.
    pub rng: Prng,
    /// The client number (`:client_id`).
    pub client_id: i64,
    /// `debug()` output goes here when set, else to stderr.
    pub debug_log: Option<Vec<String>>,
    /// The command running, for `debug()` output (0-based).
    command: usize,
}

impl Session {
    /// Client `client_id`: `-D` definitions, then `:scale`, `:client_id`, `:default_seed` and
    /// `:random_seed` unless defined.
    fn new(
        client_id: i64,
        config: &SessionConfig,
        rng: Prng,
        default_seed: i64,
    ) -> Result<Session, EvalError> {
        let mut vars = Variables::new();
        for (name, value) in &config.defines {
            vars.set_text(name, value)?;
        }
        let builtins = [
            ("scale", config.scale),
            ("client_id", client_id),
            ("default_seed", default_seed),
            ("random_seed", config.random_seed as i64),
        ];
        for (name, value) in builtins {
            if !vars.contains(name) {
                vars.set_value(name, Value::Int(value))?;
            }
        }
        Ok(Session {
            vars,
            rng,
            client_id,
            debug_log: None,
            command: 0,
        })
    }

    /// A session with no variables and a random state from `seed`, for evaluating expressions.
    pub fn bare(seed: u64) -> Session {
        Session {
            vars: Variables::new(),
            rng: Prng::seed(seed),
            client_id: 0,
            debug_log: None,
            command: 0,
        }
    }

    /// Evaluates an expression in this session.
    pub fn eval(&mut self, e: &expr::Expr) -> Result<Value, EvalError> {
        expr::eval(e, self)
    }

    fn debug(&mut self, v: Value) {
        let shown = match v {
            Value::Null => "null".to_string(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Double(d) => format!("double {}", format_g15(d)),
        };
        let line = format!("debug(script=0,command={}): {shown}", self.command + 1);
        match &mut self.debug_log {
            Some(log) => log.push(line),
            None => eprintln!("{line}"),
        }
    }

    /// Stores an SQL command's results for `\gset` / `\aset`: `\gset` needs exactly one row
    /// in the last result; `\aset` takes the last row of each non-empty result. A NULL is
    /// stored as the empty string, as pgbench does.
    pub fn capture(&mut self, capture: &Capture, results: &[ResultSet]) -> Result<(), EvalError> {
        let chosen: &[ResultSet] = if capture.all {
            results
        } else {
            results.last().map_or(&[], std::slice::from_ref)
        };
        if !capture.all && chosen.is_empty() {
            return value::fail("\\gset: expected one row, got no result");
        }
        for r in chosen {
            let (columns, rows) = match r {
                ResultSet::Command if capture.all => continue,
                ResultSet::Command => return value::fail("\\gset: expected one row, got 0"),
                ResultSet::Rows { columns, rows } => (columns, rows),
            };
            if !capture.all && rows.len() != 1 {
                return value::fail(format!("\\gset: expected one row, got {}", rows.len()));
            }
            let Some(row) = rows.last() else { continue };
            for (col, cell) in columns.iter().zip(row) {
                let name = format!("{}{col}", capture.prefix);
                self.vars.set_text(&name, cell.as_deref().unwrap_or(""))?;
            }
        }
        Ok(())
    }
}

/// One result of an SQL command, for [`Session::capture`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultSet {
    /// A command without rows (INSERT, BEGIN, ...).
    Command,
    /// A row set: column names, and rows of text values (`None` for NULL).
    Rows {
        /// Column names.
        columns: Vec<String>,
        /// The rows.
        rows: Vec<Vec<Option<String>>>,
    },
}

/// What a [`Run`] needs the caller to do next.
#[derive(Debug, Clone, Copy)]
pub enum Step<'s> {
    /// Execute SQL command number `index` of the script.
    Sql {
        /// The command's index in the script.
        index: usize,
        /// The command.
        command: &'s SqlCommand,
    },
    /// Sleep (command `index`).
    Sleep {
        /// The command's index in the script.
        index: usize,
        /// How long; zero or negative amounts sleep zero.
        duration: Duration,
    },
    /// Enter pipeline mode.
    StartPipeline,
    /// Leave pipeline mode, after collecting every pending result.
    EndPipeline,
    /// The script is finished.
    Done,
}

/// A failure while running a script: which command and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    /// 1-based line of the command in the script.
    pub line: usize,
    /// The command's first line.
    pub command: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} ({}): {}", self.line, self.command, self.message)
    }
}

impl std::error::Error for RunError {}

/// The state of one open `\if`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Branch {
    /// This branch runs.
    Taken,
    /// No branch has run yet; a later `\elif` / `\else` may.
    Pending,
    /// A branch has run (or the whole `\if` is inside a skipped branch): skip to `\endif`.
    Done,
}

/// One run of a script for one session (one pgbench transaction).
#[derive(Debug)]
pub struct Run<'s> {
    script: &'s Script,
    pc: usize,
    branches: Vec<Branch>,
}

impl<'s> Run<'s> {
    /// A run from the first command.
    pub fn new(script: &'s Script) -> Run<'s> {
        Run {
            script,
            pc: 0,
            branches: Vec::new(),
        }
    }

    fn active(&self) -> bool {
        self.branches.last().is_none_or(|b| *b == Branch::Taken)
    }

    /// Runs meta-commands until the next step that needs the caller.
    pub fn next(&mut self, s: &mut Session) -> Result<Step<'s>, RunError> {
        while let Some(cmd) = self.script.commands.get(self.pc) {
            let index = self.pc;
            self.pc += 1;
            s.command = index;
            let fail = |message: String| RunError {
                line: cmd.line,
                command: cmd.first_line.clone(),
                message,
            };
            let eval = |s: &mut Session, e| s.eval(e).map_err(|e| fail(e.0));
            match &cmd.kind {
                CommandKind::If(e) => {
                    let b = if !self.active() {
                        Branch::Done
                    } else if eval(s, e)?.truth() {
                        Branch::Taken
                    } else {
                        Branch::Pending
                    };
                    self.branches.push(b);
                }
                CommandKind::Elif(e) => {
                    let top = self.branches.last_mut().expect("checked when parsed");
                    *top = match *top {
                        Branch::Pending if eval(s, e)?.truth() => Branch::Taken,
                        Branch::Pending => Branch::Pending,
                        _ => Branch::Done,
                    };
                }
                CommandKind::Else => {
                    let top = self.branches.last_mut().expect("checked when parsed");
                    *top = if *top == Branch::Pending {
                        Branch::Taken
                    } else {
                        Branch::Done
                    };
                }
                CommandKind::EndIf => {
                    self.branches.pop();
                }
                _ if !self.active() => {}
                CommandKind::Set { var, expr } => {
                    let v = eval(s, expr)?;
                    s.vars.set_value(var, v).map_err(|e| fail(e.0))?;
                }
                CommandKind::Sleep { amount, unit_us } => {
                    let n = sleep_amount(amount, s).map_err(|e| fail(e.0))?;
                    let us = n.saturating_mul(*unit_us).max(0) as u64;
                    return Ok(Step::Sleep {
                        index,
                        duration: Duration::from_micros(us),
                    });
                }
                CommandKind::Sql(command) => return Ok(Step::Sql { index, command }),
                CommandKind::StartPipeline => return Ok(Step::StartPipeline),
                CommandKind::EndPipeline => return Ok(Step::EndPipeline),
            }
        }
        Ok(Step::Done)
    }
}

/// `\sleep`'s count: the literal, or the variable's text read as C `atoi` does.
fn sleep_amount(amount: &SleepAmount, s: &mut Session) -> Result<i64, EvalError> {
    match amount {
        SleepAmount::Literal(n) => Ok(*n),
        SleepAmount::Variable(name) => {
            let Some(text) = s.vars.text(name) else {
                return value::fail(format!("\\sleep: undefined variable \"{name}\""));
            };
            let t = text.trim_start();
            let sign = usize::from(t.starts_with(['+', '-']));
            let digits = t[sign..].bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return value::fail(format!(
                    "\\sleep: invalid sleep time \"{text}\" for variable \"{name}\""
                ));
            }
            Ok(t[..sign + digits].parse().unwrap_or(i64::MAX))
        }
    }
}
