//! A validated scenario: the load shape as stages over time, the query mix, the thresholds.
//! Every load shape compiles to one list of [`Stage`]s that the executors follow.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::duration;
use super::file::{
    ConnectionDef, ConnectionTable, DatasetTable, FeedStrategy, FeederEntry, ParamEntry, ParamKind,
    Protocol, QueryDef, QueryEntry, ScenarioFile, ScenarioTable, SqlTable, StageDef, ThresholdDef,
};
use super::scripts::{self, ScriptDef, TenantChoice};
use super::{line_at, ScenarioError};
use crate::dataset::DatasetSpec;
use crate::gate::{self, Threshold};
use crate::workload::pgbench::SessionConfig;

/// One segment of the load shape: move linearly from the previous target to `target` over
/// `duration` (k6's stages). The target is VUs (closed model) or iterations per `time_unit`
/// (open model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// VUs (closed model) or iterations per `time_unit` (open model) at the stage's end.
    pub target: u32,
}

/// How load is offered.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadShape {
    /// Closed model: VUs that wait for each answer (`ramping-vus`, `constant-vus`).
    Closed {
        /// VUs running before the first stage.
        start_vus: u32,
        /// The ramp, in order.
        stages: Vec<Stage>,
        /// Time a VU being ramped down has to finish its iteration before it is stopped.
        graceful_ramp_down: Duration,
    },
    /// Open model: iterations start on a schedule whatever the responses
    /// (`constant-arrival-rate`, `ramping-arrival-rate`).
    Open {
        /// Iterations per `time_unit` before the first stage.
        start_rate: u32,
        /// The ramp, in order.
        stages: Vec<Stage>,
        /// The period the rates are counted in (1 s unless the scenario says otherwise).
        time_unit: Duration,
        /// VUs started before the load begins.
        pre_allocated_vus: u32,
        /// The most VUs the executor may start when the pre-allocated ones are busy.
        max_vus: u32,
        /// What to do with a due iteration when all `max_vus` are busy.
        on_busy: OnBusy,
    },
}

/// What the open model does with an iteration that is due when every VU is busy and
/// `max_vus` are running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBusy {
    /// Drop it and count it in `dropped_iterations` (k6's arrival-rate executors).
    #[default]
    Drop,
    /// Queue it until a VU is free; its latency still counts from its scheduled start
    /// (pgbench `-R`). What is still queued when the run ends is reported as incomplete.
    Queue,
}

impl LoadShape {
    fn stages(&self) -> &[Stage] {
        match self {
            LoadShape::Closed { stages, .. } | LoadShape::Open { stages, .. } => stages,
        }
    }

    fn stages_mut(&mut self) -> &mut Vec<Stage> {
        match self {
            LoadShape::Closed { stages, .. } | LoadShape::Open { stages, .. } => stages,
        }
    }

    /// Total planned duration.
    pub fn duration(&self) -> Duration {
        self.stages().iter().map(|s| s.duration).sum()
    }

    /// The target (VUs, or iterations per time unit) at time `t` since the start, interpolated
    /// linearly within a stage; 0 after the last stage.
    pub fn target_at(&self, t: Duration) -> f64 {
        let start = match self {
            LoadShape::Closed { start_vus, .. } => *start_vus,
            LoadShape::Open { start_rate, .. } => *start_rate,
        };
        let mut from = f64::from(start);
        let mut elapsed = Duration::ZERO;
        for stage in self.stages() {
            let to = f64::from(stage.target);
            if t < elapsed + stage.duration {
                let frac = (t - elapsed).as_secs_f64() / stage.duration.as_secs_f64();
                return from + (to - from) * frac;
            }
            elapsed += stage.duration;
            from = to;
        }
        if t == elapsed {
            from
        } else {
            0.0
        }
    }

    /// The highest target any stage reaches.
    pub fn peak(&self) -> u32 {
        let start = match self {
            LoadShape::Closed { start_vus, .. } => *start_vus,
            LoadShape::Open { start_rate, .. } => *start_rate,
        };
        self.stages().iter().map(|s| s.target).fold(start, u32::max)
    }
}

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenario's name.
    pub name: String,
    /// The scenario's free-text description.
    pub description: String,
    /// The scenario file, as given.
    pub file: String,
    /// Executor name in k6's spelling.
    pub executor: String,
    /// How load is offered over time.
    pub load: LoadShape,
    /// Pause after each iteration of a closed-model VU.
    pub think_time: Duration,
    /// Time in-flight iterations get to finish after the last stage.
    pub graceful_stop: Duration,
    /// Simple or extended query protocol, prepared or not.
    pub protocol: Protocol,
    /// The `[connection]` table as written.
    pub connection: ConnectionDef,
    /// `connection.connect_timeout`, parsed.
    pub connect_timeout: Duration,
    /// `connection.min_backoff`, parsed.
    pub min_backoff: Duration,
    /// `connection.max_backoff`, parsed.
    pub max_backoff: Duration,
    /// The tenant data set the queries expect.
    pub dataset: DatasetSpec,
    /// The query mix.
    pub queries: Vec<QueryDef>,
    /// pgbench scripts in the mix, after the queries (single-scenario files).
    pub scripts: Vec<ScriptDef>,
    /// What the scripts' sessions start with (`[pgbench]`: scale, seed, definitions).
    pub script_vars: SessionConfig,
    /// How the community of each query's draw is chosen (`[tenants]`).
    pub tenants: TenantChoice,
    /// Open model: iterations evenly spaced (k6), or a Poisson process of this seed (pgbench
    /// `-R`: exponential gaps at the same mean rate).
    pub poisson_arrivals: Option<u64>,
    /// Closed model: each VU stops after this many iterations, and the run when every VU has
    /// (pgbench's `-t`, k6's `per-vu-iterations`); the stages bound how long it may take.
    pub iterations_per_vu: Option<u64>,
    /// Thresholds, in scenario order.
    pub thresholds: Vec<Threshold>,
    /// `[stack]` table, for the embedded stack's settings.
    pub stack: Option<toml::Table>,
    /// `[gateway]` table, for the gateway harness.
    pub gateway: Option<toml::Table>,
    /// When this scenario starts (a single-scenario file starts at once).
    pub start: Start,
    /// The feeder each iteration takes a row from (an index in the run's `feeders`).
    pub feeder: Option<usize>,
    /// The feeder's columns this scenario's queries use; `ParamKind::Column(i)` is the i-th.
    pub feed_columns: Vec<String>,
    /// Id of this scenario's first query in the run's catalogue (0 for a single scenario).
    pub query_offset: usize,
    /// The scenarios of a `[scenarios.*]` file, each a plan of its own (its `queries` its own,
    /// no thresholds); empty for a single-scenario file. The run's `queries` are theirs
    /// concatenated, so a query id implies its scenario.
    pub scenarios: Vec<Plan>,
    /// `[[feeders]]`.
    pub feeders: Vec<FeederDef>,
    /// `[setup] sql`: run once before the load.
    pub setup: Option<String>,
    /// `[teardown] sql`: run once after the load, however it ended.
    pub teardown: Option<String>,
}

/// When a scenario starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    /// This long after the run's start.
    At(Duration),
    /// When the scenario at this index of `Plan::scenarios` ends.
    After(usize),
}

/// A feeder: named rows whose columns are query parameters.
#[derive(Debug, Clone)]
pub struct FeederDef {
    /// Its name (`params = ["NAME.COLUMN"]`).
    pub name: String,
    /// How rows are handed out.
    pub strategy: FeedStrategy,
    /// Where the rows come from.
    pub source: FeedSource,
}

/// A feeder's rows.
#[derive(Debug, Clone)]
pub enum FeedSource {
    /// A CSV file, read and checked when the scenario is loaded.
    Csv {
        /// The file, as resolved against the scenario's folder.
        path: String,
        /// The header row.
        columns: Vec<String>,
        /// The data rows, each as long as the header.
        rows: std::sync::Arc<Vec<Vec<String>>>,
    },
    /// A query run once before the load (after `[setup]`); its columns are named by it.
    Sql(String),
}

impl FeederDef {
    /// The column names, when known before the run (a CSV's header).
    pub fn columns(&self) -> Option<&[String]> {
        match &self.source {
            FeedSource::Csv { columns, .. } => Some(columns),
            FeedSource::Sql(_) => None,
        }
    }
}

impl Plan {
    /// The scenarios this plan runs: its `scenarios`, or itself for a single-scenario file.
    pub fn parts(&self) -> Vec<&Plan> {
        if self.scenarios.is_empty() {
            vec![self]
        } else {
            self.scenarios.iter().collect()
        }
    }

    /// The scenarios, mutably (see [`Plan::parts`]).
    pub fn parts_mut(&mut self) -> Vec<&mut Plan> {
        if self.scenarios.is_empty() {
            vec![self]
        } else {
            self.scenarios.iter_mut().collect()
        }
    }

    /// Planned start of each part: a `start_after` one when the other's stages end.
    pub fn planned_starts(&self) -> Vec<Duration> {
        let parts = self.parts();
        let mut starts: Vec<Option<Duration>> = vec![None; parts.len()];
        // Validation refused cycles: every pass settles at least one.
        for _ in 0..parts.len() {
            for (i, p) in parts.iter().enumerate() {
                starts[i] = match p.start {
                    Start::At(t) => Some(t),
                    Start::After(j) => starts[j].map(|s| s + parts[j].load.duration()),
                };
            }
        }
        starts.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Whether any part runs the open model.
    pub fn any_open(&self) -> bool {
        self.parts()
            .iter()
            .any(|p| matches!(p.load, LoadShape::Open { .. }))
    }

    /// A multi-scenario plan's own load: one silent stage as long as the planned timeline, so
    /// that `load.duration()` (progress, reports, a fleet's deadline) is the whole run's.
    fn set_timeline(&mut self) {
        if self.scenarios.is_empty() {
            return;
        }
        let end = self
            .planned_starts()
            .into_iter()
            .zip(&self.scenarios)
            .map(|(s, p)| s + p.load.duration())
            .max()
            .unwrap_or_default();
        self.load = LoadShape::Closed {
            start_vus: 0,
            stages: vec![Stage {
                duration: end,
                target: 0,
            }],
            graceful_ramp_down: Duration::ZERO,
        };
        self.graceful_stop = self
            .scenarios
            .iter()
            .map(|p| p.graceful_stop)
            .max()
            .unwrap_or_default();
    }

    /// Scales the timeline (stages, graceful periods, threshold abort delays) by `factor`.
    /// Think time is user behaviour, not timeline, and stays as written.
    pub fn scale_time(&mut self, factor: f64) {
        for part in &mut self.scenarios {
            part.scale_time(factor);
        }
        let scale = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * factor);
        if let Start::At(t) = &mut self.start {
            *t = scale(*t);
        }
        for s in self.load.stages_mut() {
            s.duration = scale(s.duration);
        }
        if let LoadShape::Closed {
            graceful_ramp_down, ..
        } = &mut self.load
        {
            *graceful_ramp_down = scale(*graceful_ramp_down);
        }
        self.graceful_stop = scale(self.graceful_stop);
        for t in &mut self.thresholds {
            t.delay_abort_eval = scale(t.delay_abort_eval);
        }
        self.set_timeline();
    }

    /// The names the run's per-query metrics are tagged with (`query_duration{query:NAME}`): the
    /// queries, then each script's SQL commands as `SCRIPT/LINE`. A sample's query id indexes
    /// this list.
    pub fn query_names(&self) -> Vec<String> {
        metric_query_names(&self.queries, &self.scripts)
    }

    /// The `--quick` profile: the same shape squeezed into at most 30 seconds.
    pub fn quick(&mut self) {
        let total = self.load.duration().as_secs_f64();
        if total > 30.0 {
            self.scale_time(30.0 / total);
        }
    }
}

/// The text being validated: turns the span of a value into the line an error names.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    /// An error on the line `span` starts on; line 0 when the value is not in the file.
    fn invalid(
        &self,
        span: Option<Range<usize>>,
        field: &str,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            path: self.path.to_owned(),
            line: span.map_or(0, |s| line_at(self.text, s.start)),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn duration(&self, text: &Spanned<String>, field: &str) -> Result<Duration, ScenarioError> {
        duration::parse(text.get_ref()).map_err(|m| self.invalid(Some(text.span()), field, m))
    }

    /// A duration that may be left out; `default` is written as a file would write it.
    fn duration_or(
        &self,
        text: Option<&Spanned<String>>,
        default: &str,
        field: &str,
    ) -> Result<Duration, ScenarioError> {
        match text {
            Some(text) => self.duration(text, field),
            None => duration::parse(default).map_err(|m| self.invalid(None, field, m)),
        }
    }
}

fn span<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
    value.as_ref().map(Spanned::span)
}

/// Turns a parsed file into a [`Plan`], checking everything a run would trip over later, one
/// concern at a time: a file with several mistakes hears of the first in this order.
pub(crate) fn validate(
    mut raw: ScenarioFile,
    text: &str,
    path: &Path,
) -> Result<Plan, ScenarioError> {
    let src = Source { text, path };
    let name = name(&src, &raw.name)?;
    let invalid = |span, field: &str, message: String| src.invalid(span, field, message);
    let scripts = scripts::scripts(std::mem::take(&mut raw.scripts), path, &invalid)?;
    let script_vars = scripts::session_config(std::mem::take(&mut raw.pgbench), &invalid)?;
    let tenants = scripts::tenants(std::mem::take(&mut raw.tenants), &invalid)?;
    let top = top_table(&mut raw);
    let scenarios = std::mem::take(&mut raw.scenarios);
    let passthrough = passthrough(raw.stack.take(), raw.gateway.take());
    let dataset = dataset(&src, std::mem::take(&mut raw.dataset))?;
    let feeders = feeders(&src, std::mem::take(&mut raw.feeders))?;
    let (setup, teardown) = (
        sql_table(&src, raw.setup.take())?,
        sql_table(&src, raw.teardown.take())?,
    );
    let mut plan = if scenarios.is_empty() {
        let executor = top
            .executor
            .clone()
            .ok_or_else(|| src.invalid(None, "executor", "missing field `executor`"))?;
        let needs_queries = !passthrough.is_gateway() && scripts.is_empty();
        let queries = queries(&src, std::mem::take(&mut raw.queries), needs_queries)?;
        let mut plan = part(
            &src,
            &name,
            &executor,
            top,
            queries,
            &feeders,
            dataset,
            passthrough.is_gateway(),
        )?;
        plan.stack = passthrough.stack;
        plan.gateway = passthrough.gateway;
        scripts::check_pipelines(&scripts, plan.protocol == Protocol::Simple, &invalid)?;
        if !scripts.is_empty() && weights(&plan.queries, &scripts) == 0 {
            return Err(src.invalid(
                None,
                "scripts.weight",
                "at least one query or script needs a weight above 0",
            ));
        }
        plan.scripts = scripts;
        plan.script_vars = script_vars;
        plan
    } else {
        if !scripts.is_empty() {
            return Err(src.invalid(
                None,
                "scripts",
                "[[scripts]] in a file with [scenarios.NAME] tables is not supported yet: run the scripts from a single-scenario file",
            ));
        }
        if let Some(at) = top_shape_span(&top) {
            return Err(src.invalid(
                Some(at),
                "scenarios",
                "with [scenarios.NAME] tables, the executor, stages, think time, protocol and [connection] belong in each scenario, not at the top of the file",
            ));
        }
        let entries = std::mem::take(&mut raw.queries);
        let file_queries = queries(&src, entries, false)?;
        let mut plan = multi(&src, &name, scenarios, file_queries, &feeders, dataset)?;
        plan.stack = passthrough.stack;
        plan.gateway = passthrough.gateway;
        plan
    };
    plan.description = raw.description;
    plan.file = path.display().to_string();
    for part in plan.parts_mut() {
        part.tenants = tenants;
    }
    plan.tenants = tenants;
    plan.thresholds = thresholds(&src, &raw.thresholds, &plan)?;
    plan.feeders = feeders;
    plan.setup = setup;
    plan.teardown = teardown;
    plan.set_timeline();
    Ok(plan)
}

/// The top of a single-scenario file as a scenario table, so one validation serves both.
fn top_table(raw: &mut ScenarioFile) -> ScenarioTable {
    ScenarioTable {
        executor: raw.executor.take(),
        start_vus: raw.start_vus.take(),
        vus: raw.vus.take(),
        duration: raw.duration.take(),
        graceful_ramp_down: raw.graceful_ramp_down.take(),
        rate: raw.rate.take(),
        start_rate: raw.start_rate.take(),
        time_unit: raw.time_unit.take(),
        pre_allocated_vus: raw.pre_allocated_vus.take(),
        max_vus: raw.max_vus.take(),
        on_busy: raw.on_busy.take(),
        stages: std::mem::take(&mut raw.stages),
        think_time: raw.think_time.take(),
        graceful_stop: raw.graceful_stop.take(),
        protocol: raw.protocol.take(),
        connection: std::mem::take(&mut raw.connection),
        ..ScenarioTable::default()
    }
}

/// The first load-shape setting written at the top of a file that has `[scenarios.*]`.
fn top_shape_span(t: &ScenarioTable) -> Option<Range<usize>> {
    [
        span(&t.executor),
        span(&t.duration),
        span(&t.graceful_ramp_down),
        span(&t.rate),
        span(&t.time_unit),
        span(&t.pre_allocated_vus),
        span(&t.max_vus),
        span(&t.think_time),
        span(&t.graceful_stop),
        span(&t.protocol),
        t.stages.first().map(|s| s.duration.span()),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|s| s.start)
}

fn sql_table(src: &Source, table: Option<SqlTable>) -> Result<Option<String>, ScenarioError> {
    match table {
        Some(t) if t.sql.get_ref().trim().is_empty() => {
            Err(src.invalid(Some(t.sql.span()), "sql", "is empty"))
        }
        Some(t) => Ok(Some(t.sql.into_inner())),
        None => Ok(None),
    }
}

/// One scenario: its load shape, connection and queries (feeder columns resolved).
#[allow(clippy::too_many_arguments)]
fn part(
    src: &Source,
    name: &str,
    executor: &Spanned<String>,
    table: ScenarioTable,
    mut queries: Vec<(QueryDef, Vec<ColumnRef>)>,
    feeders: &[FeederDef],
    dataset: DatasetSpec,
    gateway: bool,
) -> Result<Plan, ScenarioError> {
    let schedule = schedule(src, executor, &table, gateway)?;
    let connection = connection(src, table.connection)?;
    let (feeder, feed_columns) = feed(src, &mut queries, feeders)?;
    Ok(Plan {
        name: name.to_owned(),
        description: String::new(),
        file: String::new(),
        executor: executor.get_ref().clone(),
        load: schedule.load,
        think_time: schedule.think_time,
        graceful_stop: schedule.graceful_stop,
        protocol: table.protocol.map(Spanned::into_inner).unwrap_or_default(),
        connection: connection.def,
        connect_timeout: connection.connect_timeout,
        min_backoff: connection.min_backoff,
        max_backoff: connection.max_backoff,
        dataset,
        queries: queries.into_iter().map(|(q, _)| q).collect(),
        scripts: Vec::new(),
        script_vars: SessionConfig::default(),
        tenants: TenantChoice::default(),
        iterations_per_vu: None,
        poisson_arrivals: None,
        thresholds: Vec::new(),
        stack: None,
        gateway: None,
        start: Start::At(Duration::ZERO),
        feeder,
        feed_columns,
        query_offset: 0,
        scenarios: Vec::new(),
        feeders: Vec::new(),
        setup: None,
        teardown: None,
    })
}

/// A `FEEDER.COLUMN` parameter, where it is written.
struct ColumnRef {
    /// Index in the query's params.
    param: usize,
    feeder: String,
    column: String,
    span: Range<usize>,
}

/// The scenario's feeder (one per scenario: each iteration takes one row of it) and the columns
/// its queries use, with each column parameter turned into `ParamKind::Column(i)`.
fn feed(
    src: &Source,
    queries: &mut [(QueryDef, Vec<ColumnRef>)],
    feeders: &[FeederDef],
) -> Result<(Option<usize>, Vec<String>), ScenarioError> {
    let mut feeder: Option<usize> = None;
    let mut columns: Vec<String> = Vec::new();
    for (q, refs) in queries.iter_mut() {
        for r in refs.iter() {
            let invalid = |m: String| src.invalid(Some(r.span.clone()), "queries.params", m);
            let Some(f) = feeders.iter().position(|f| f.name == r.feeder) else {
                let known: Vec<&str> = feeders.iter().map(|f| f.name.as_str()).collect();
                return Err(invalid(format!(
                    "no feeder is named \"{}\" (feeders: {})",
                    r.feeder,
                    if known.is_empty() {
                        "none; add a [[feeders]] entry".into()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            if feeder.is_some_and(|g| g != f) {
                return Err(invalid(format!(
                    "a scenario takes its rows from one feeder; \"{}\" is not the feeder its other queries use",
                    r.feeder
                )));
            }
            feeder = Some(f);
            if let Some(known) = feeders[f].columns() {
                if !known.contains(&r.column) {
                    return Err(invalid(format!(
                        "feeder \"{}\" has no column \"{}\" (its columns: {})",
                        r.feeder,
                        r.column,
                        known.join(", ")
                    )));
                }
            }
            let i = match columns.iter().position(|c| *c == r.column) {
                Some(i) => i,
                None => {
                    columns.push(r.column.clone());
                    columns.len() - 1
                }
            };
            q.params[r.param] = ParamKind::Column(i as u16);
        }
    }
    Ok((feeder, columns))
}

/// `[[feeders]]`: names unique, one source each, CSV files read and checked now.
fn feeders(src: &Source, entries: Vec<FeederEntry>) -> Result<Vec<FeederDef>, ScenarioError> {
    let mut out: Vec<FeederDef> = Vec::new();
    for e in entries {
        let name = e.name.get_ref();
        if name.is_empty() || name.contains(['.', '{', '}', ':', ',']) {
            return Err(src.invalid(
                Some(e.name.span()),
                "feeders.name",
                "must be non-empty and free of . { } : , (params name a column as FEEDER.COLUMN)",
            ));
        }
        if out.iter().any(|f| f.name == *name) {
            return Err(src.invalid(
                Some(e.name.span()),
                "feeders.name",
                format!("\"{name}\" is used twice; feeder names must be unique"),
            ));
        }
        let source = match (e.file, e.sql) {
            (Some(file), None) => {
                let resolved = src
                    .path
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(file.get_ref());
                let text = std::fs::read_to_string(&resolved).map_err(|err| {
                    src.invalid(
                        Some(file.span()),
                        "feeders.file",
                        format!("cannot read {}: {err} (the path is relative to the scenario file)", resolved.display()),
                    )
                })?;
                let (columns, rows) = super::csv::parse(&text).map_err(|(line, message)| {
                    ScenarioError::Invalid {
                        path: resolved.clone(),
                        line,
                        field: format!("feeder {name}"),
                        message,
                    }
                })?;
                FeedSource::Csv {
                    path: resolved.display().to_string(),
                    columns,
                    rows: std::sync::Arc::new(rows),
                }
            }
            (None, Some(sql)) if !sql.get_ref().trim().is_empty() => FeedSource::Sql(sql.into_inner()),
            _ => {
                return Err(src.invalid(
                    Some(e.name.span()),
                    "feeders",
                    format!("feeder \"{name}\" needs exactly one of `file = \"rows.csv\"` or `sql = \"SELECT ...\"`"),
                ))
            }
        };
        out.push(FeederDef {
            name: name.clone(),
            strategy: e.strategy,
            source,
        });
    }
    Ok(out)
}

/// The scenarios of a `[scenarios.NAME]` file, in file order, with their starts resolved and
/// their queries concatenated into the run's catalogue.
fn multi(
    src: &Source,
    name: &str,
    tables: BTreeMap<Spanned<String>, ScenarioTable>,
    mut file_queries: Vec<(QueryDef, Vec<ColumnRef>)>,
    feeders: &[FeederDef],
    dataset: DatasetSpec,
) -> Result<Plan, ScenarioError> {
    let mut tables: Vec<(Spanned<String>, ScenarioTable)> = tables.into_iter().collect();
    tables.sort_by_key(|(k, _)| k.span().start);
    let names: Vec<String> = tables.iter().map(|(k, _)| k.get_ref().clone()).collect();
    let mut parts: Vec<Plan> = Vec::new();
    let mut afters: Vec<(usize, Spanned<String>)> = Vec::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (key, mut table) in tables {
        let sname = key.get_ref();
        if sname.is_empty() || sname.contains(['{', '}', ':', ',']) {
            return Err(src.invalid(
                Some(key.span()),
                "scenarios",
                "a scenario name must be non-empty and free of { } : , (it becomes a metric tag)",
            ));
        }
        let field = format!("scenarios.{sname}");
        let executor = table
            .executor
            .clone()
            .ok_or_else(|| src.invalid(Some(key.span()), &field, "missing field `executor`"))?;
        let own = std::mem::take(&mut table.queries);
        let mut queries = queries(src, own, false)?;
        if let Some(list) = table.use_queries.take() {
            for wanted in list.into_inner() {
                let Some(i) = file_queries
                    .iter()
                    .position(|(q, _)| q.name == *wanted.get_ref())
                else {
                    let known: Vec<&str> =
                        file_queries.iter().map(|(q, _)| q.name.as_str()).collect();
                    return Err(src.invalid(
                        Some(wanted.span()),
                        &format!("{field}.use_queries"),
                        format!(
                            "no [[queries]] entry is named \"{}\" (file-level queries: {})",
                            wanted.get_ref(),
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                };
                let q = &file_queries[i];
                queries.push((
                    q.0.clone(),
                    q.1.iter()
                        .map(|r| ColumnRef {
                            param: r.param,
                            feeder: r.feeder.clone(),
                            column: r.column.clone(),
                            span: r.span.clone(),
                        })
                        .collect(),
                ));
            }
        }
        if queries.is_empty() || queries.iter().all(|(q, _)| q.weight == 0) {
            return Err(src.invalid(Some(key.span()), &field, "a scenario needs queries: [[scenarios.NAME.queries]] entries of its own, or `use_queries = [\"NAME\", ...]` naming file-level [[queries]], with a weight above 0"));
        }
        for (q, _) in &queries {
            if let Some(other) = owner.insert(q.name.clone(), sname.clone()) {
                return Err(src.invalid(Some(key.span()), &field, format!(
                    "query \"{}\" is in scenarios \"{other}\" and \"{sname}\"; a query belongs to one scenario (its `query` tag implies the scenario): give each scenario its own copy under another name",
                    q.name
                )));
            }
        }
        let start_time = table.start_time.take();
        let start_after = table.start_after.take();
        let mut plan = part(
            src, sname, &executor, table, queries, feeders, dataset, false,
        )?;
        plan.start = match (&start_time, start_after) {
            (Some(_), Some(a)) => {
                return Err(src.invalid(
                    Some(a.span()),
                    &field,
                    "give start_time or start_after, not both",
                ))
            }
            (Some(t), None) => Start::At(src.duration(t, "start_time")?),
            (None, Some(a)) => {
                afters.push((parts.len(), a));
                Start::At(Duration::ZERO)
            }
            (None, None) => Start::At(Duration::ZERO),
        };
        parts.push(plan);
    }
    for (i, after) in &afters {
        let Some(j) = names.iter().position(|n| n == after.get_ref()) else {
            return Err(src.invalid(
                Some(after.span()),
                "start_after",
                format!(
                    "no scenario is named \"{}\" (scenarios: {})",
                    after.get_ref(),
                    names.join(", ")
                ),
            ));
        };
        parts[*i].start = Start::After(j);
    }
    for (i, after) in &afters {
        let mut seen = vec![*i];
        let mut at = *i;
        while let Start::After(j) = parts[at].start {
            if seen.contains(&j) {
                let cycle: Vec<&str> = seen
                    .iter()
                    .chain([&j])
                    .map(|k| names[*k].as_str())
                    .collect();
                return Err(src.invalid(
                    Some(after.span()),
                    "start_after",
                    format!(
                        "start_after makes a cycle ({}): one of them must start at a time",
                        cycle.join(" → ")
                    ),
                ));
            }
            seen.push(j);
            at = j;
        }
    }
    let mut offset = 0;
    let mut all = Vec::new();
    for p in &mut parts {
        p.query_offset = offset;
        offset += p.queries.len();
        all.extend(p.queries.iter().cloned());
    }
    let _ = &mut file_queries;
    let executors: Vec<&str> = parts.iter().map(|p| p.executor.as_str()).collect();
    let first = parts[0].clone();
    Ok(Plan {
        name: name.to_owned(),
        executor: executors.join(", "),
        queries: all,
        scenarios: parts,
        feeder: None,
        feed_columns: Vec::new(),
        ..first
    })
}

/// See [`Plan::query_names`].
fn metric_query_names(queries: &[QueryDef], scripts: &[ScriptDef]) -> Vec<String> {
    queries
        .iter()
        .map(|q| q.name.clone())
        .chain(scripts.iter().flat_map(ScriptDef::statement_names))
        .collect()
}

fn weights(queries: &[QueryDef], scripts: &[ScriptDef]) -> u64 {
    let q: u64 = queries.iter().map(|q| u64::from(q.weight)).sum();
    q + scripts.iter().map(|s| u64::from(s.weight)).sum::<u64>()
}

/// The name becomes a folder under `reports/`, so it is kept to characters every file system and
/// shell takes as they are.
fn name(src: &Source, name: &Spanned<String>) -> Result<String, ScenarioError> {
    let valid = !name.get_ref().trim().is_empty()
        && name
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(src.invalid(
            Some(name.span()),
            "name",
            "must be a non-empty name of letters, digits, '-' or '_' (it names the report folder)",
        ));
    }
    Ok(name.get_ref().clone())
}

/// `[stack]` and `[gateway]` belong to the embedded stack and the gateway harness, which own
/// their schemas and check them when they start; the plan carries them as written.
struct Passthrough {
    stack: Option<toml::Table>,
    gateway: Option<toml::Table>,
}

impl Passthrough {
    /// A gateway scenario drives events through the fake Discord server, not queries through
    /// VUs: it needs no query mix and no pre-allocated VUs.
    fn is_gateway(&self) -> bool {
        self.gateway.is_some()
    }
}

fn passthrough(stack: Option<toml::Table>, gateway: Option<toml::Table>) -> Passthrough {
    Passthrough { stack, gateway }
}

/// When and how hard load is offered: the executor's load shape and the pauses around it.
struct Schedule {
    load: LoadShape,
    think_time: Duration,
    graceful_stop: Duration,
}

/// Each executor is k6's: it says which settings the load shape needs, and compiles them to
/// stages. Settings of the other model are refused rather than ignored, so a file that mixes the
/// two does not run a shape its author did not write.
fn schedule(
    src: &Source,
    executor: &Spanned<String>,
    raw: &ScenarioTable,
    gateway: bool,
) -> Result<Schedule, ScenarioError> {
    // Every stage is checked first, whatever the executor, so a bad one is named even when the
    // executor is wrong too.
    let stages = stages(src, &raw.stages)?;
    let (load, open) = match executor.get_ref().as_str() {
        "ramping-vus" | "constant-vus" => (closed_load(src, executor, raw, stages)?, false),
        "constant-arrival-rate" | "ramping-arrival-rate" => {
            (open_load(src, executor, raw, stages, gateway)?, true)
        }
        other => {
            return Err(src.invalid(
                Some(executor.span()),
                "executor",
                format!("unknown executor \"{other}\"; expected ramping-vus, constant-vus, constant-arrival-rate or ramping-arrival-rate"),
            ))
        }
    };
    if load.duration().is_zero() {
        let first = raw.stages.first().map(|s| s.duration.span());
        return Err(src.invalid(
            first.or(span(&raw.duration)),
            "stages",
            "the stages add up to zero time",
        ));
    }
    if !open {
        let open_only = [
            span(&raw.rate),
            span(&raw.pre_allocated_vus),
            span(&raw.on_busy),
        ];
        if let Some(first) = open_only.into_iter().flatten().min_by_key(|s| s.start) {
            return Err(src.invalid(
                Some(first),
                "executor",
                "rate, pre_allocated_vus and on_busy apply only to the arrival-rate executors",
            ));
        }
    }
    // An open-model VU waits for its next scheduled iteration, not for a think time.
    let think_default = if open { "0s" } else { "100ms" };
    Ok(Schedule {
        load,
        think_time: src.duration_or(raw.think_time.as_ref(), think_default, "think_time")?,
        graceful_stop: src.duration_or(raw.graceful_stop.as_ref(), "30s", "graceful_stop")?,
    })
}

/// `[[stages]]` with their durations parsed; each names its own line when it is wrong.
fn stages(src: &Source, defs: &[StageDef]) -> Result<Vec<Stage>, ScenarioError> {
    defs.iter()
        .map(|s| {
            Ok(Stage {
                duration: src.duration(&s.duration, "duration")?,
                target: s.target,
            })
        })
        .collect()
}

/// The closed model: `ramping-vus` follows `[[stages]]`, `constant-vus` is one stage held at
/// `vus` for `duration`.
fn closed_load(
    src: &Source,
    executor: &Spanned<String>,
    raw: &ScenarioTable,
    stages: Vec<Stage>,
) -> Result<LoadShape, ScenarioError> {
    // A missing setting is named on the executor's line: the executor is what needs it.
    let at = Some(executor.span());
    let (start_vus, stages) = if executor.get_ref() == "ramping-vus" {
        if stages.is_empty() {
            return Err(src.invalid(
                at,
                "stages",
                "ramping-vus needs at least one [[stages]] entry with duration and target",
            ));
        }
        (raw.start_vus.unwrap_or(0), stages)
    } else {
        let vus = raw.vus.ok_or_else(|| {
            src.invalid(
                at.clone(),
                "vus",
                "constant-vus needs `vus = N` and `duration = \"...\"`",
            )
        })?;
        let duration = raw.duration.as_ref().ok_or_else(|| {
            src.invalid(
                at,
                "duration",
                "constant-vus needs `duration = \"...\"`, e.g. \"1m\"",
            )
        })?;
        let stage = Stage {
            duration: src.duration(duration, "duration")?,
            target: vus,
        };
        (vus, vec![stage])
    };
    Ok(LoadShape::Closed {
        start_vus,
        stages,
        graceful_ramp_down: src.duration_or(
            raw.graceful_ramp_down.as_ref(),
            "30s",
            "graceful_ramp_down",
        )?,
    })
}

/// The open model: `constant-arrival-rate` is one stage held at `rate` for `duration`,
/// `ramping-arrival-rate` follows `[[stages]]` from `start_rate`; both need VUs to run the
/// iterations they start.
fn open_load(
    src: &Source,
    executor: &Spanned<String>,
    raw: &ScenarioTable,
    stages: Vec<Stage>,
    gateway: bool,
) -> Result<LoadShape, ScenarioError> {
    let at = Some(executor.span());
    let constant = executor.get_ref() == "constant-arrival-rate";
    let stages = if constant {
        let rate = raw.rate.as_ref().ok_or_else(|| {
            src.invalid(
                at.clone(),
                "rate",
                "constant-arrival-rate needs `rate = N` (iterations per time_unit) and `duration`",
            )
        })?;
        let duration = raw.duration.as_ref().ok_or_else(|| {
            src.invalid(
                at.clone(),
                "duration",
                "constant-arrival-rate needs `duration = \"...\"`",
            )
        })?;
        vec![Stage {
            duration: src.duration(duration, "duration")?,
            target: *rate.get_ref(),
        }]
    } else {
        if stages.is_empty() {
            return Err(src.invalid(
                at,
                "stages",
                "ramping-arrival-rate needs [[stages]] whose targets are iterations per time_unit",
            ));
        }
        stages
    };
    // A gateway scenario's rate is events per second, driven by the fake Discord server, not by
    // VUs.
    let pre = match &raw.pre_allocated_vus {
        Some(p) => *p.get_ref(),
        None if gateway => 1,
        None => return Err(src.invalid(
            at,
            "pre_allocated_vus",
            "arrival-rate executors need `pre_allocated_vus = N` (VUs connected before the start)",
        )),
    };
    let max_vus = raw.max_vus.as_ref().map_or(pre, |m| *m.get_ref());
    if max_vus < pre {
        return Err(src.invalid(
            span(&raw.max_vus),
            "max_vus",
            format!("must be at least pre_allocated_vus ({pre})"),
        ));
    }
    if pre == 0 && max_vus == 0 {
        return Err(src.invalid(
            span(&raw.pre_allocated_vus),
            "pre_allocated_vus",
            "must be at least 1",
        ));
    }
    let start_rate = if constant {
        stages[0].target
    } else {
        raw.start_rate.unwrap_or(0)
    };
    Ok(LoadShape::Open {
        start_rate,
        stages,
        time_unit: src.duration_or(raw.time_unit.as_ref(), "1s", "time_unit")?,
        pre_allocated_vus: pre,
        max_vus,
        on_busy: raw
            .on_busy
            .as_ref()
            .map_or_else(OnBusy::default, |o| *o.get_ref()),
    })
}

/// `[connection]` with its durations parsed.
struct Connection {
    def: ConnectionDef,
    connect_timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
}

/// How VUs reach the target. No pools, or pools of no connections, leave a `pooled` VU nothing to
/// check out: refused here as the typo it is, rather than met as checkout timeouts that read as
/// a failing target.
fn connection(src: &Source, table: ConnectionTable) -> Result<Connection, ScenarioError> {
    let defaults = ConnectionDef::default();
    let connect_timeout = src.duration_or(
        table.connect_timeout.as_ref(),
        &defaults.connect_timeout,
        "connect_timeout",
    )?;
    let min_backoff = src.duration_or(
        table.min_backoff.as_ref(),
        &defaults.min_backoff,
        "min_backoff",
    )?;
    let max_backoff = src.duration_or(
        table.max_backoff.as_ref(),
        &defaults.max_backoff,
        "max_backoff",
    )?;
    for (value, field) in [
        (&table.pools, "connection.pools"),
        (&table.pool_size, "connection.pool_size"),
    ] {
        if let Some(zero) = value.as_ref().filter(|v| *v.get_ref() == 0) {
            return Err(src.invalid(
                Some(zero.span()),
                field,
                "pools and pool_size must be at least 1",
            ));
        }
    }
    let text = |v: Option<Spanned<String>>, default: String| v.map_or(default, Spanned::into_inner);
    let number = |v: Option<Spanned<u32>>, default: u32| v.map_or(default, Spanned::into_inner);
    Ok(Connection {
        def: ConnectionDef {
            topology: table.topology.unwrap_or(defaults.topology),
            pools: number(table.pools, defaults.pools),
            pool_size: number(table.pool_size, defaults.pool_size),
            connect_timeout: text(table.connect_timeout, defaults.connect_timeout),
            min_backoff: text(table.min_backoff, defaults.min_backoff),
            max_backoff: text(table.max_backoff, defaults.max_backoff),
        },
        connect_timeout,
        min_backoff,
        max_backoff,
    })
}

/// The query mix. Names become metric tags, so they must be unique and free of the tag syntax;
/// placeholders and params are counted against each other so a mismatch is found now rather than
/// as a failing query in every iteration.
fn queries(
    src: &Source,
    entries: Vec<QueryEntry>,
    needs_queries: bool,
) -> Result<Vec<(QueryDef, Vec<ColumnRef>)>, ScenarioError> {
    if needs_queries && entries.is_empty() {
        return Err(src.invalid(
            None,
            "queries",
            "a scenario needs at least one [[queries]] entry with name and sql",
        ));
    }
    for (i, q) in entries.iter().enumerate() {
        let name = q.name.get_ref();
        if name.is_empty() || name.contains(['{', '}', ':', ',']) {
            return Err(src.invalid(
                Some(q.name.span()),
                "queries.name",
                "must be non-empty and free of { } : , (it becomes a metric tag)",
            ));
        }
        if entries[..i].iter().any(|o| o.name.get_ref() == name) {
            return Err(src.invalid(
                Some(q.name.span()),
                "queries.name",
                format!("\"{name}\" is used twice; query names must be unique"),
            ));
        }
        let sql = q.sql.get_ref();
        if sql.trim().is_empty() {
            return Err(src.invalid(Some(q.sql.span()), "queries.sql", "is empty"));
        }
        let params = q.params.as_ref().map_or(0, |p| p.get_ref().len());
        let placeholders = (1..=params + 1)
            .take_while(|n| sql.contains(&format!("${n}")))
            .count();
        if placeholders != params {
            // With no params written, the SQL is what disagrees.
            let at = span(&q.params).unwrap_or_else(|| q.sql.span());
            return Err(src.invalid(
                Some(at),
                "queries.params",
                format!(
                    "query \"{name}\" uses {placeholders} placeholder(s) ($1..) but lists {params} param(s)"
                ),
            ));
        }
    }
    let weight = |q: &QueryEntry| q.weight.as_ref().map_or(1, |w| *w.get_ref());
    if needs_queries && entries.iter().all(|q| weight(q) == 0) {
        let first = entries.iter().find_map(|q| span(&q.weight));
        return Err(src.invalid(
            first,
            "queries.weight",
            "at least one query needs a weight above 0",
        ));
    }
    Ok(entries
        .into_iter()
        .map(|mut q| {
            let (params, refs) = match q.params.take() {
                None => (Vec::new(), Vec::new()),
                Some(p) => {
                    let at = p.span();
                    let mut refs = Vec::new();
                    let params = p
                        .into_inner()
                        .into_iter()
                        .enumerate()
                        .map(|(i, e)| match e {
                            ParamEntry::Kind(k) => k,
                            ParamEntry::Column { feeder, column } => {
                                refs.push(ColumnRef {
                                    param: i,
                                    feeder,
                                    column,
                                    span: at.clone(),
                                });
                                // Resolved to the scenario's column by `feed`.
                                ParamKind::Column(0)
                            }
                        })
                        .collect();
                    (params, refs)
                }
            };
            let def = QueryDef {
                weight: q.weight.map_or(1, Spanned::into_inner),
                name: q.name.into_inner(),
                sql: q.sql.into_inner(),
                params,
                tenant_scoped: q.tenant_scoped,
            };
            (def, refs)
        })
        .collect())
}

/// The generated dataset. Without communities or profiles there is nothing for a parameter to be
/// drawn from.
fn dataset(src: &Source, table: DatasetTable) -> Result<DatasetSpec, ScenarioError> {
    for (value, field) in [
        (&table.communities, "dataset.communities"),
        (
            &table.profiles_per_community,
            "dataset.profiles_per_community",
        ),
    ] {
        if let Some(zero) = value.as_ref().filter(|v| *v.get_ref() == 0) {
            return Err(src.invalid(
                Some(zero.span()),
                field,
                "communities and profiles_per_community must be at least 1",
            ));
        }
    }
    let d = DatasetSpec::default();
    let number = |v: Option<Spanned<u32>>, default: u32| v.map_or(default, Spanned::into_inner);
    Ok(DatasetSpec {
        seed: table.seed.unwrap_or(d.seed),
        communities: number(table.communities, d.communities),
        profiles_per_community: number(table.profiles_per_community, d.profiles_per_community),
        rules_per_community: table.rules_per_community.unwrap_or(d.rules_per_community),
        badges_per_community: table.badges_per_community.unwrap_or(d.badges_per_community),
        audit_logs_per_community: table
            .audit_logs_per_community
            .unwrap_or(d.audit_logs_per_community),
    })
}

/// The thresholds, parsed now so that a typo is bad input before the run rather than a failed
/// verdict after it. `queries` are the validated mix that a `{query:NAME}` tag must name.
fn thresholds(
    src: &Source,
    table: &BTreeMap<Spanned<String>, Vec<Spanned<ThresholdDef>>>,
    plan: &Plan,
) -> Result<Vec<Threshold>, ScenarioError> {
    let mut thresholds = Vec::new();
    let scenarios: Vec<&str> = plan.scenarios.iter().map(|p| p.name.as_str()).collect();
    let queries = plan.query_names();
    let scripts: Vec<String> = plan.scripts.iter().map(|s| s.name.clone()).collect();
    for (key, defs) in table {
        let (canonical, kind) = threshold_metric(src, key, &queries, &scenarios, &scripts)?;
        for def in defs {
            let invalid = |m: String| src.invalid(Some(def.span()), key.get_ref(), m);
            let (expression, abort_on_fail, delay) = match def.get_ref() {
                ThresholdDef::Plain(e) => (e.clone(), false, None),
                ThresholdDef::Detailed {
                    threshold,
                    abort_on_fail,
                    delay_abort_eval,
                } => (threshold.clone(), *abort_on_fail, delay_abort_eval.as_ref()),
            };
            let (aggregation, op, value) =
                gate::parse_expression(&expression, kind).map_err(invalid)?;
            let delay_abort_eval = match delay {
                Some(text) => duration::parse(text).map_err(invalid)?,
                None => Duration::ZERO,
            };
            thresholds.push(Threshold {
                metric: canonical.clone(),
                expression,
                aggregation,
                op,
                value,
                abort_on_fail,
                delay_abort_eval,
            });
        }
    }
    Ok(thresholds)
}

/// A threshold's metric key, canonical (`query_duration{query:tenant}`), and its kind. Only the
/// sub-metrics thumper records exist: `{query:NAME}` on the per-query metrics, and
/// `{expected_response:true}` (the successful queries, alone or with a query) on
/// `query_duration`; a filter on anything else would match nothing and fail at the end of the
/// run for lack of samples.
fn threshold_metric(
    src: &Source,
    key: &Spanned<String>,
    queries: &[String],
    scenarios: &[&str],
    scripts: &[String],
) -> Result<(String, gate::MetricKind), ScenarioError> {
    let invalid = |m: String| src.invalid(Some(key.span()), key.get_ref(), m);
    let (name, canonical) = gate::split_metric_key(key.get_ref()).map_err(invalid)?;
    let kind = gate::metric_kind(&name).ok_or_else(|| {
        let known: Vec<&str> = gate::KNOWN_METRICS.iter().map(|(n, _)| *n).collect();
        invalid(format!(
            "unknown metric \"{name}\"; known metrics: {}",
            known.join(", ")
        ))
    })?;
    if canonical == name {
        return Ok((canonical, kind));
    }
    let unknown_tag = || {
        invalid(format!(
            "\"{canonical}\" filters on a tag thumper does not record; it records `query` on {} (e.g. {}{{query:tenant}}) and `expected_response:true` on query_duration (e.g. query_duration{{expected_response:true}} or query_duration{{query:tenant,expected_response:true}})",
            gate::TAGGED_BY_QUERY.join(", "),
            gate::TAGGED_BY_QUERY[0],
        ))
    };
    let tags = canonical[name.len() + 1..canonical.len() - 1].split(',');
    if let Some(scenario) = canonical[name.len() + 1..canonical.len() - 1].strip_prefix("scenario:")
    {
        if scenarios.is_empty() {
            return Err(invalid(format!(
                "\"{canonical}\": the scenario tag exists in files with [scenarios.NAME] tables; this file is one scenario, whose numbers are the run's"
            )));
        }
        if scenario.contains(',') || !gate::TAGGED_BY_SCENARIO.contains(&name.as_str()) {
            return Err(invalid(format!(
                "\"{canonical}\": the scenario tag stands alone, on {}",
                gate::TAGGED_BY_SCENARIO.join(", ")
            )));
        }
        if !scenarios.contains(&scenario) {
            return Err(invalid(format!(
                "no scenario is named \"{scenario}\" (scenarios: {})",
                scenarios.join(", ")
            )));
        }
        return Ok((canonical, kind));
    }
    let (mut query, mut expected) = (None, None);
    for tag in tags {
        match tag.split_once(':') {
            Some(("script", s))
                if matches!(name.as_str(), "iteration_duration" | "failed_iterations") =>
            {
                if !scripts.iter().any(|d| d == s) {
                    return Err(invalid(format!("no script is named \"{s}\"")));
                }
                return Ok((canonical, kind));
            }
            Some(("query", q)) if query.is_none() => query = Some(q),
            Some(("expected_response", e)) if expected.is_none() => expected = Some(e),
            _ => return Err(unknown_tag()),
        }
    }
    if let Some(q) = query {
        if !gate::TAGGED_BY_QUERY.contains(&name.as_str()) {
            return Err(unknown_tag());
        }
        if !queries.iter().any(|d| d == q) {
            return Err(invalid(format!("no query is named \"{q}\"")));
        }
    }
    if let Some(e) = expected {
        if name != "query_duration" {
            return Err(unknown_tag());
        }
        if e != "true" {
            return Err(invalid(format!(
                "\"{canonical}\": only expected_response:true is recorded (the successful queries); query_duration itself holds every query, failed or not"
            )));
        }
    }
    // One spelling per sub-metric, the one the summary uses: the query first.
    let tags: Vec<String> = query
        .map(|q| format!("query:{q}"))
        .into_iter()
        .chain(expected.map(|e| format!("expected_response:{e}")))
        .collect();
    Ok((format!("{name}{{{}}}", tags.join(",")), kind))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const STEADY: &str = r#"
name = "steady"
executor = "ramping-vus"
[[stages]]
duration = "3m"
target = 100
[[stages]]
duration = "1m"
target = 100
[[stages]]
duration = "30s"
target = 0
[[queries]]
name = "health"
sql = "SELECT 1"
[[queries]]
name = "lookup"
sql = "SELECT 1 FROM profiles WHERE community_id = $1 AND wallet_address = $2"
params = ["community_id", "wallet"]
[thresholds]
query_duration = ["p(99) < 10"]
"query_duration{query:lookup}" = [{ threshold = "p(95) < 5", abort_on_fail = true, delay_abort_eval = "10s" }]
"#;

    #[test]
    fn the_successes_of_a_query_have_one_spelling() {
        for written in [
            "{query:lookup,expected_response:true}",
            "{ expected_response : true , query : lookup }",
        ] {
            let text = STEADY.replace("{query:lookup}", written);
            let plan = parse(&text, Path::new("s.toml")).unwrap();
            assert!(
                plan.thresholds
                    .iter()
                    .any(|t| t.metric == "query_duration{query:lookup,expected_response:true}"),
                "{written}: {:?}",
                plan.thresholds
            );
        }
    }

    fn err(text: &str) -> String {
        parse(text, Path::new("s.toml")).unwrap_err().to_string()
    }

    #[test]
    fn the_closed_model_target_follows_each_stage_and_ends_at_zero() {
        let load = LoadShape::Closed {
            start_vus: 10,
            stages: vec![
                Stage {
                    duration: Duration::from_secs(10),
                    target: 30,
                },
                Stage {
                    duration: Duration::ZERO,
                    target: 5,
                },
                Stage {
                    duration: Duration::from_secs(4),
                    target: 5,
                },
            ],
            graceful_ramp_down: Duration::ZERO,
        };
        let at = |ms: u64| load.target_at(Duration::from_millis(ms));
        assert_eq!(at(0), 10.0, "starts at start_vus");
        assert_eq!(at(5_000), 20.0, "half way up the ramp");
        assert!((at(9_999) - 30.0).abs() < 0.01);
        // A zero-length stage jumps to its target.
        assert_eq!(at(10_000), 5.0);
        assert_eq!(at(14_000), 5.0, "the last instant holds the last target");
        assert_eq!(at(14_001), 0.0, "nothing after the stages");
        assert_eq!(load.peak(), 30);
        assert_eq!(load.duration(), Duration::from_secs(14));
    }

    #[test]
    fn parses_a_ramping_scenario() {
        let plan = parse(STEADY, Path::new("s.toml")).unwrap();
        assert_eq!(plan.load.duration(), Duration::from_secs(270));
        assert_eq!(plan.think_time, Duration::from_millis(100));
        assert_eq!(plan.protocol, Protocol::Extended);
        assert_eq!(plan.thresholds.len(), 2);
        assert!(plan
            .thresholds
            .iter()
            .any(|t| t.abort_on_fail && t.metric == "query_duration{query:lookup}"));
        assert_eq!(plan.load.target_at(Duration::from_secs(90)), 50.0);
        assert_eq!(plan.load.target_at(Duration::from_secs(200)), 100.0);
        assert_eq!(plan.load.target_at(Duration::from_secs(255)), 50.0);
        assert_eq!(plan.load.peak(), 100);
    }

    #[test]
    fn time_scaling_keeps_the_shape() {
        let mut plan = parse(STEADY, Path::new("s.toml")).unwrap();
        plan.quick();
        assert!((plan.load.duration().as_secs_f64() - 30.0).abs() < 0.01);
        assert!((plan.load.target_at(Duration::from_secs(10)) - 50.0).abs() < 0.5);
        assert_eq!(plan.think_time, Duration::from_millis(100));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err(&STEADY.replace("ramping-vus", "rampin-vus"));
        assert!(e.starts_with("s.toml:3: `executor`"), "{e}");
        assert!(e.contains("ramping-vus, constant-vus"), "{e}");
        let e = err(&STEADY.replace("duration = \"1m\"", "duration = \"1 minute\""));
        assert!(e.starts_with("s.toml:8: `duration`"), "{e}");
        let e = err(&STEADY.replace(
            "target = 100\n[[stages]]\nduration = \"1m\"",
            "targte = 100\n[[stages]]\nduration = \"1m\"",
        ));
        assert!(e.contains("unknown field `targte`"), "{e}");
        assert!(e.starts_with("s.toml:6:"), "{e}");
        let e = err(&STEADY.replace("p(95) < 5", "p95 < 5"));
        assert!(
            e.contains("query_duration{query:lookup}") && e.contains("unknown aggregation"),
            "{e}"
        );
        let e = err(&STEADY.replace("{query:lookup}", "{shard:0}"));
        assert!(
            e.contains("query_duration{shard:0}") && e.contains("it records `query` on"),
            "{e}"
        );
        let e = err(&STEADY.replace("query_duration{query:lookup}", "vus{query:lookup}"));
        assert!(e.contains("it records `query` on"), "{e}");
        let e = err(&STEADY.replace("{query:lookup}", "{expected_response:false}"));
        assert!(e.contains("only expected_response:true"), "{e}");
        let e = err(&STEADY.replace(
            "query_duration{query:lookup}",
            "service_time{expected_response:true}",
        ));
        assert!(
            e.contains("`expected_response:true` on query_duration"),
            "{e}"
        );
        let e = err(&STEADY.replace("query_duration = [", "query_durations = ["));
        assert!(e.contains("unknown metric \"query_durations\""), "{e}");
        let e = err(&STEADY.replace(
            "params = [\"community_id\", \"wallet\"]",
            "params = [\"community_id\"]",
        ));
        assert!(e.contains("placeholder"), "{e}");
        let e = err(&STEADY.replace("{query:lookup}", "{query:lokup}"));
        assert!(e.contains("no query is named \"lokup\""), "{e}");
    }

    /// Tables written inline, as dotted keys or as inline arrays: the same errors, on the line
    /// of the value that is wrong.
    const INLINE: &str = r#"
name = "inline"
executor = "ramping-vus"
stages = [{ duration = "1m", target = 5 }]
queries = [{ name = "health", sql = "SELECT 1" }]
"#;

    #[test]
    fn errors_in_inline_tables_name_the_line_of_the_value() {
        parse(INLINE, Path::new("s.toml")).unwrap();
        let e = err(&format!(
            "{INLINE}thresholds = {{ query_duration = [\"p99 < 10\"] }}\n"
        ));
        assert!(e.starts_with("s.toml:6: `query_duration`"), "{e}");
        assert!(e.contains("unknown aggregation"), "{e}");
        let e = err(&INLINE.replace("\"1m\"", "\"1 minute\""));
        assert!(e.starts_with("s.toml:4: `duration`"), "{e}");
        let e = err(&format!("{INLINE}connection.topology = \"bogus\"\n"));
        assert!(e.starts_with("s.toml:6: `connection.topology`"), "{e}");
        let e = err(&format!(
            "{INLINE}connection = {{ topology = \"bogus\" }}\n"
        ));
        assert!(e.starts_with("s.toml:6: `topology`"), "{e}");
        let e = err(&INLINE.replace("target = 5", "targte = 5"));
        assert!(e.starts_with("s.toml:4: `targte`"), "{e}");
        let e = err(&INLINE.replace("duration = \"1m\", ", ""));
        assert!(e.starts_with("s.toml:4: `duration`"), "{e}");
        let e = err(&INLINE.replace("\"SELECT 1\"", "\"SELECT '\\\"=' \", params = [\"walet\"]"));
        assert!(e.starts_with("s.toml:5: `params`"), "{e}");
        let e = err(&format!("{INLINE}connection.pools = 0\n"));
        assert!(e.starts_with("s.toml:6: `connection.pools`"), "{e}");
        let e = err(&format!(
            "{INLINE}dataset = {{ seed = 2, communities = 0 }}\n"
        ));
        assert!(e.starts_with("s.toml:6: `dataset.communities`"), "{e}");
        let e = err(&INLINE.replace("SELECT 1", "SELECT $1"));
        assert!(e.starts_with("s.toml:5: `queries.params`"), "{e}");
    }

    #[test]
    fn errors_in_a_multi_line_array_name_the_element() {
        let e = err(&format!(
            "{INLINE}[thresholds]\nquery_duration = [\n  \"p(99) < 10\",\n  {{ threshold = \"p(95) < 5\", delay_abort_eval = \"5 parsecs\" }},\n]\n"
        ));
        assert!(e.starts_with("s.toml:9: `query_duration`"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn the_shipped_mixed_scenario_squeezes_its_start_times_with_its_stages() {
        let mut plan = super::super::load(Path::new("scenarios/mixed.toml")).unwrap();
        let names: Vec<&str> = plan.scenarios.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["reads", "writes"]);
        assert_eq!(plan.scenarios[1].start, Start::At(Duration::from_secs(20)));
        assert_eq!(plan.scenarios[1].query_offset, 2);
        assert_eq!(plan.queries.len(), 4);
        assert_eq!(plan.load.duration(), Duration::from_secs(60));
        plan.scale_time(0.5);
        assert_eq!(plan.scenarios[1].start, Start::At(Duration::from_secs(10)));
        assert_eq!(plan.load.duration(), Duration::from_secs(30));
        assert_eq!(plan.scenarios[0].think_time, Duration::from_millis(100));
    }

    #[test]
    fn open_model_needs_its_settings() {
        let text = r#"
name = "rate"
executor = "constant-arrival-rate"
rate = 100
duration = "10s"
[[queries]]
name = "health"
sql = "SELECT 1"
"#;
        assert!(err(text).contains("pre_allocated_vus"));
        let plan = parse(
            &text.replace(
                "rate = 100",
                "rate = 100\npre_allocated_vus = 5\nmax_vus = 10",
            ),
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(plan.think_time, Duration::ZERO);
        match plan.load {
            LoadShape::Open {
                start_rate,
                max_vus,
                ..
            } => {
                assert_eq!(start_rate, 100);
                assert_eq!(max_vus, 10);
            }
            _ => panic!("expected open model"),
        }
    }
}
