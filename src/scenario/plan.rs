//! A validated scenario: the load shape as stages over time, the query mix, the thresholds.
//! Every load shape compiles to one list of [`Stage`]s that the executors follow.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::duration;
use super::file::{
    ConnectionDef, ConnectionTable, DatasetTable, Protocol, QueryDef, QueryEntry, ScenarioFile,
    StageDef, ThresholdDef,
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
    /// pgbench scripts in the mix, after the queries.
    pub scripts: Vec<ScriptDef>,
    /// What the scripts' sessions start with (`[pgbench]`: scale, seed, definitions).
    pub script_vars: SessionConfig,
    /// How the community of each query's draw is chosen (`[tenants]`).
    pub tenants: TenantChoice,
    /// Closed model: each VU stops after this many iterations, and the run when every VU has
    /// (pgbench's `-t`, k6's `per-vu-iterations`); the stages bound how long it may take.
    pub iterations_per_vu: Option<u64>,
    /// Thresholds, in scenario order.
    pub thresholds: Vec<Threshold>,
    /// `[stack]` table, for the embedded stack's settings.
    pub stack: Option<toml::Table>,
    /// `[gateway]` table, for the gateway harness.
    pub gateway: Option<toml::Table>,
}

impl Plan {
    /// Scales the timeline (stages, graceful periods, threshold abort delays) by `factor`.
    /// Think time is user behaviour, not timeline, and stays as written.
    pub fn scale_time(&mut self, factor: f64) {
        let scale = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * factor);
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
pub(crate) fn validate(raw: ScenarioFile, text: &str, path: &Path) -> Result<Plan, ScenarioError> {
    let src = Source { text, path };
    let name = name(&src, &raw.name)?;
    let schedule = schedule(&src, &raw, raw.gateway.is_some())?;
    let passthrough = passthrough(raw.stack, raw.gateway);
    let connection = connection(&src, raw.connection)?;
    let invalid = |span, field: &str, message: String| src.invalid(span, field, message);
    let scripts = scripts::scripts(raw.scripts, path, &invalid)?;
    let script_vars = scripts::session_config(raw.pgbench, &invalid)?;
    scripts::check_pipelines(&scripts, raw.protocol == Protocol::Simple, &invalid)?;
    let tenants = scripts::tenants(raw.tenants, &invalid)?;
    let needs_queries = !passthrough.is_gateway() && scripts.is_empty();
    let queries = queries(&src, raw.queries, needs_queries)?;
    if !scripts.is_empty() && weights(&queries, &scripts) == 0 {
        return Err(src.invalid(
            None,
            "scripts.weight",
            "at least one query or script needs a weight above 0",
        ));
    }
    let dataset = dataset(&src, raw.dataset)?;
    let names = metric_query_names(&queries, &scripts);
    let script_names: Vec<String> = scripts.iter().map(|s| s.name.clone()).collect();
    let thresholds = thresholds(&src, &raw.thresholds, &names, &script_names)?;
    Ok(Plan {
        name,
        description: raw.description,
        file: path.display().to_string(),
        executor: raw.executor.into_inner(),
        load: schedule.load,
        think_time: schedule.think_time,
        graceful_stop: schedule.graceful_stop,
        protocol: raw.protocol,
        connection: connection.def,
        connect_timeout: connection.connect_timeout,
        min_backoff: connection.min_backoff,
        max_backoff: connection.max_backoff,
        dataset,
        queries,
        scripts,
        script_vars,
        tenants,
        iterations_per_vu: None,
        thresholds,
        stack: passthrough.stack,
        gateway: passthrough.gateway,
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
fn schedule(src: &Source, raw: &ScenarioFile, gateway: bool) -> Result<Schedule, ScenarioError> {
    let executor = &raw.executor;
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
    raw: &ScenarioFile,
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
    raw: &ScenarioFile,
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
) -> Result<Vec<QueryDef>, ScenarioError> {
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
        .map(|q| QueryDef {
            weight: weight(&q),
            name: q.name.into_inner(),
            sql: q.sql.into_inner(),
            params: q.params.map(Spanned::into_inner).unwrap_or_default(),
            tenant_scoped: q.tenant_scoped,
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
    queries: &[String],
    scripts: &[String],
) -> Result<Vec<Threshold>, ScenarioError> {
    let mut thresholds = Vec::new();
    for (key, defs) in table {
        let (canonical, kind) = threshold_metric(src, key, queries, scripts)?;
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
