//! One virtual user's run of a pgbench script: one iteration (one pgbench transaction), every
//! SQL command timed and recorded as a query of its own (`query_duration{query:SCRIPT/LINE}`),
//! the whole run as `iteration_duration` (from the intended start in the open model, as
//! pgbench's latency under `-R` counts from the scheduled start).
//!
//! A failing command ends the run as pgbench 15 ends the transaction: the rest is skipped, an
//! open transaction is rolled back, and the run counts in `failed_iterations`. Unlike pgbench,
//! whose client then aborts for good, the VU goes on with its next iteration.

use std::time::Instant;

use super::vu::{IterationEnd, VirtualUser};
use super::RunContext;
use crate::metrics::aggregator::ExtraMetrics;
use crate::metrics::recorder::{Recorder, SampleKind};
use crate::scenario::Protocol;
use crate::workload::pgbench::{substitute, Run, Session, SqlCommand, Step};
use crate::workload::script::{self, Answer, Ready};
use crate::workload::{ErrorKind, QueryFailure};

/// `iteration_duration`'s id among the run's extra trends; script `s`'s own is `1 + s`.
const ITERATION_DURATION: u16 = 0;
/// `failed_iterations`' id among the run's extra counters; script `s`'s own is `1 + s`.
const FAILED_ITERATIONS: u16 = 0;

/// The metrics a run with scripts measures beyond the queries': the transaction's latency and
/// the failed transactions, in all and per script (`{script:NAME}`).
pub fn script_metrics(scripts: &[String]) -> ExtraMetrics {
    let tagged = |metric: &str| {
        std::iter::once(metric.to_string())
            .chain(scripts.iter().map(|s| format!("{metric}{{script:{s}}}")))
            .collect()
    };
    ExtraMetrics {
        trends: tagged("iteration_duration"),
        counters: tagged("failed_iterations"),
        without_database: false,
    }
}

/// How a script run ended.
enum Outcome {
    Finished,
    /// A command failed; `broken` when the connection is unusable.
    Failed {
        broken: bool,
    },
}

impl VirtualUser {
    /// Runs script `index` of the mix once.
    pub(super) async fn run_script(
        &mut self,
        ctx: &RunContext,
        intended: Option<Instant>,
        index: usize,
    ) -> IterationEnd {
        let work = &ctx.workload.scripts()[index];
        let first_id = work.statement_ids.iter().flatten().next().copied();
        let began = Instant::now();
        let origin = intended.unwrap_or(began);
        if let (Some(due), Some(id)) = (intended, first_id) {
            self.recorder.begin(id, due);
        }
        let pooled = match self.acquire(ctx, intended, first_id.unwrap_or(0)).await {
            Ok(pooled) => pooled,
            Err(end) => return end,
        };
        let mut session = self
            .session
            .take()
            .unwrap_or_else(|| ctx.workload.session(self.id));
        let protocol = ctx.workload.protocol();
        let outcome = {
            let (client, state) = super::vu::held(&mut self.conn, &mut self.pooled_state, &pooled);
            let mut run = ScriptRun {
                recorder: &mut self.recorder,
                client,
                statements: &mut state.scripts,
                protocol,
                script: index,
                ids: &work.statement_ids,
                lag: intended.map(|i| began.saturating_duration_since(i).as_micros() as u64),
            };
            let outcome = run.run(Run::new(&work.def.script), &mut session).await;
            if matches!(outcome, Outcome::Failed { broken: false }) {
                // pgbench ends a failed transaction; an open one is rolled back (a warning
                // when there is none).
                let _ = client.batch_execute("ROLLBACK").await;
            }
            outcome
        };
        self.session = Some(session);
        let broken = matches!(outcome, Outcome::Failed { broken: true });
        self.release(pooled, broken);
        let done = Instant::now();
        let own = 1 + index as u16;
        for id in [ITERATION_DURATION, own] {
            let value = (done - origin).as_micros() as u64;
            self.recorder.push(done, SampleKind::Trend { id, value });
        }
        if matches!(outcome, Outcome::Failed { .. }) {
            for id in [FAILED_ITERATIONS, own] {
                self.recorder.push(done, SampleKind::Count { id, by: 1 });
            }
        }
        IterationEnd::Done
    }
}

/// One script run on one client.
struct ScriptRun<'a> {
    recorder: &'a mut Recorder,
    client: &'a tokio_postgres::Client,
    statements: &'a mut script::ScriptStatements,
    protocol: Protocol,
    script: usize,
    ids: &'a [Option<u16>],
    /// The open model's wait from the intended start to the first send, given to the first
    /// statement as its scheduling lag.
    lag: Option<u64>,
}

impl ScriptRun<'_> {
    async fn run(&mut self, mut run: Run<'_>, session: &mut Session) -> Outcome {
        let mut batch: Option<Vec<Ready<'_>>> = None;
        loop {
            let step = match run.next(session) {
                Ok(step) => step,
                Err(e) => {
                    self.script_error(format!("line {}: {}", e.line, e.message));
                    return Outcome::Failed { broken: false };
                }
            };
            match step {
                Step::Sql { index, command } => {
                    let ready = match self.ready(index, command, session) {
                        Ok(r) => r,
                        Err(message) => {
                            self.script_error(message);
                            return Outcome::Failed { broken: false };
                        }
                    };
                    if let Some(b) = &mut batch {
                        b.push(ready);
                        continue;
                    }
                    let sent = Instant::now();
                    let id = self.ids[index].expect("an SQL command has an id");
                    self.recorder.begin(id, sent);
                    let answer =
                        script::execute(self.client, self.statements, self.protocol, &ready).await;
                    if let Err(outcome) = self.record(id, sent, answer, command, session) {
                        return outcome;
                    }
                }
                Step::Sleep { duration, .. } => tokio::time::sleep(duration).await,
                Step::StartPipeline => batch = Some(Vec::new()),
                Step::EndPipeline => {
                    let b = batch.take().unwrap_or_default();
                    if let Err(outcome) = self.pipeline(&b, session).await {
                        return outcome;
                    }
                }
                Step::Done => return Outcome::Finished,
            }
        }
    }

    /// The command with the session's variables in it (text) or beside it (parameters).
    fn ready<'c>(
        &self,
        index: usize,
        command: &'c SqlCommand,
        session: &mut Session,
    ) -> Result<Ready<'c>, String> {
        let key = (self.script, index);
        if self.protocol == Protocol::Simple {
            let text = substitute(&command.text, &mut session.vars);
            return Ok(Ready {
                command,
                key,
                text,
                params: Vec::new(),
            });
        }
        let mut params = Vec::with_capacity(command.params.len());
        for name in &command.params {
            match session.vars.text(name) {
                Some(v) => params.push(v.to_string()),
                None => return Err(format!("undefined variable \"{name}\"")),
            }
        }
        Ok(Ready {
            command,
            key,
            text: String::new(),
            params,
        })
    }

    /// Sends a pipeline's commands together and records each from the pipeline's send.
    async fn pipeline(
        &mut self,
        batch: &[Ready<'_>],
        session: &mut Session,
    ) -> Result<(), Outcome> {
        let sent = Instant::now();
        let answers = script::pipeline(self.client, self.statements, self.protocol, batch).await;
        let mut failed = None;
        for (ready, answer) in batch.iter().zip(answers) {
            let id = self.ids[ready.key.1].expect("an SQL command has an id");
            if let Err(outcome) = self.record(id, sent, answer, ready.command, session) {
                failed.get_or_insert(outcome);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Records a statement's answer and stores its rows (`\gset`, `\aset`).
    fn record(
        &mut self,
        id: u16,
        sent: Instant,
        answer: Answer,
        command: &SqlCommand,
        session: &mut Session,
    ) -> Result<(), Outcome> {
        let us = (answer.done - sent).as_micros() as u64;
        let stored = answer.results.and_then(|results| match &command.capture {
            Some(capture) => session
                .capture(capture, &results)
                .map_err(|e| QueryFailure {
                    kind: ErrorKind::Query,
                    class: format!("gset: {}", e.0),
                    broken: false,
                }),
            None => Ok(()),
        });
        match stored {
            Ok(()) => {
                self.recorder.push(
                    answer.done,
                    SampleKind::Query {
                        query: id,
                        response_us: us,
                        service_us: us,
                        lag_us: self.lag.take(),
                        tenant_violations: 0,
                    },
                );
                Ok(())
            }
            Err(f) => {
                let broken = f.broken;
                self.recorder.push(
                    answer.done,
                    SampleKind::Error {
                        query: Some(id),
                        kind: f.kind,
                        class: f.class.into_boxed_str(),
                        response_us: Some(us),
                        service_us: Some(us),
                    },
                );
                Err(Outcome::Failed { broken })
            }
        }
    }

    /// A meta-command that failed (an undefined variable, a division by zero): counted as a
    /// query error of no query, by its message.
    fn script_error(&mut self, message: String) {
        self.recorder.push(
            Instant::now(),
            SampleKind::Error {
                query: None,
                kind: ErrorKind::Query,
                class: format!("script: {message}").into_boxed_str(),
                response_us: None,
                service_us: None,
            },
        );
    }
}
