//! A validated scenario: the load shape as stages over time, the query mix, the thresholds.
//! Every load shape compiles to one list of [`Stage`]s that the executors follow.

use std::path::Path;
use std::time::Duration;

use super::duration;
use super::file::{ConnectionDef, Protocol, QueryDef, ScenarioFile, StageDef, ThresholdDef};
use super::{line_of, ScenarioError};
use crate::dataset::DatasetSpec;
use crate::gate::{self, Threshold};

/// One segment of the load shape: move linearly from the previous target to `target` over
/// `duration` (k6's stages). The target is VUs (closed model) or iterations per `time_unit`
/// (open model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: u32,
}

/// How load is offered.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadShape {
    /// Closed model: VUs that wait for each answer (`ramping-vus`, `constant-vus`).
    Closed {
        start_vus: u32,
        stages: Vec<Stage>,
        /// Time a VU being ramped down has to finish its iteration before it is stopped.
        graceful_ramp_down: Duration,
    },
    /// Open model: iterations start on a schedule whatever the responses
    /// (`constant-arrival-rate`, `ramping-arrival-rate`).
    Open {
        start_rate: u32,
        stages: Vec<Stage>,
        time_unit: Duration,
        pre_allocated_vus: u32,
        max_vus: u32,
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
    pub name: String,
    pub description: String,
    /// The scenario file, as given.
    pub file: String,
    /// Executor name in k6's spelling.
    pub executor: String,
    pub load: LoadShape,
    /// Pause after each iteration of a closed-model VU.
    pub think_time: Duration,
    /// Time in-flight iterations get to finish after the last stage.
    pub graceful_stop: Duration,
    pub protocol: Protocol,
    pub connection: ConnectionDef,
    pub connect_timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub dataset: DatasetSpec,
    pub queries: Vec<QueryDef>,
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

    /// The `--quick` profile: the same shape squeezed into at most 30 seconds.
    pub fn quick(&mut self) {
        let total = self.load.duration().as_secs_f64();
        if total > 30.0 {
            self.scale_time(30.0 / total);
        }
    }
}

fn invalid(path: &Path, line: usize, field: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        path: path.to_owned(),
        line,
        field: field.to_owned(),
        message: message.into(),
    }
}

fn parse_duration(
    text: &str,
    path: &Path,
    src: &str,
    table: &str,
    nth: usize,
    field: &str,
) -> Result<Duration, ScenarioError> {
    duration::parse(text).map_err(|m| invalid(path, line_of(src, table, nth, field), field, m))
}

fn stages(defs: &[StageDef], path: &Path, src: &str) -> Result<Vec<Stage>, ScenarioError> {
    defs.iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Stage {
                duration: parse_duration(&s.duration, path, src, "stages", i, "duration")?,
                target: s.target,
            })
        })
        .collect()
}

/// Turns a parsed file into a [`Plan`], checking everything a run would trip over later.
pub(crate) fn validate(raw: ScenarioFile, src: &str, path: &Path) -> Result<Plan, ScenarioError> {
    let top = |field: &str| line_of(src, "", 0, field);
    let dur = |text: &Option<String>, default: &str, field: &str| {
        parse_duration(text.as_deref().unwrap_or(default), path, src, "", 0, field)
    };
    if raw.name.trim().is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            path,
            top("name"),
            "name",
            "must be a non-empty name of letters, digits, '-' or '_' (it names the report folder)",
        ));
    }
    let open = matches!(
        raw.executor.as_str(),
        "constant-arrival-rate" | "ramping-arrival-rate"
    );
    let stage_list = stages(&raw.stages, path, src)?;
    let load = match raw.executor.as_str() {
        "ramping-vus" => {
            if stage_list.is_empty() {
                return Err(invalid(path, top("executor"), "stages", "ramping-vus needs at least one [[stages]] entry with duration and target"));
            }
            LoadShape::Closed {
                start_vus: raw.start_vus.unwrap_or(0),
                stages: stage_list,
                graceful_ramp_down: dur(&raw.graceful_ramp_down, "30s", "graceful_ramp_down")?,
            }
        }
        "constant-vus" => {
            let vus = raw.vus.ok_or_else(|| {
                invalid(path, top("executor"), "vus", "constant-vus needs `vus = N` and `duration = \"...\"`")
            })?;
            let duration = raw.duration.as_ref().ok_or_else(|| {
                invalid(path, top("executor"), "duration", "constant-vus needs `duration = \"...\"`, e.g. \"1m\"")
            })?;
            LoadShape::Closed {
                start_vus: vus,
                stages: vec![Stage {
                    duration: parse_duration(duration, path, src, "", 0, "duration")?,
                    target: vus,
                }],
                graceful_ramp_down: dur(&raw.graceful_ramp_down, "30s", "graceful_ramp_down")?,
            }
        }
        "constant-arrival-rate" | "ramping-arrival-rate" => {
            let stages = if raw.executor == "constant-arrival-rate" {
                let rate = raw.rate.ok_or_else(|| {
                    invalid(path, top("executor"), "rate", "constant-arrival-rate needs `rate = N` (iterations per time_unit) and `duration`")
                })?;
                let duration = raw.duration.as_ref().ok_or_else(|| {
                    invalid(path, top("executor"), "duration", "constant-arrival-rate needs `duration = \"...\"`")
                })?;
                vec![Stage {
                    duration: parse_duration(duration, path, src, "", 0, "duration")?,
                    target: rate,
                }]
            } else {
                if stage_list.is_empty() {
                    return Err(invalid(path, top("executor"), "stages", "ramping-arrival-rate needs [[stages]] whose targets are iterations per time_unit"));
                }
                stage_list
            };
            // A gateway scenario's rate is events per second, driven by the fake Discord
            // server, not by VUs.
            let gateway = raw.gateway.is_some();
            let pre = match raw.pre_allocated_vus {
                Some(p) => p,
                None if gateway => 1,
                None => return Err(invalid(path, top("executor"), "pre_allocated_vus", "arrival-rate executors need `pre_allocated_vus = N` (VUs connected before the start)")),
            };
            let max_vus = raw.max_vus.unwrap_or(pre);
            if max_vus < pre {
                return Err(invalid(path, top("max_vus"), "max_vus", format!("must be at least pre_allocated_vus ({pre})")));
            }
            if pre == 0 && max_vus == 0 {
                return Err(invalid(path, top("pre_allocated_vus"), "pre_allocated_vus", "must be at least 1"));
            }
            let start_rate = if raw.executor == "constant-arrival-rate" {
                stages[0].target
            } else {
                raw.start_rate.unwrap_or(0)
            };
            LoadShape::Open {
                start_rate,
                stages,
                time_unit: dur(&raw.time_unit, "1s", "time_unit")?,
                pre_allocated_vus: pre,
                max_vus,
                on_busy: raw.on_busy.unwrap_or_default(),
            }
        }
        other => {
            return Err(invalid(
                path,
                top("executor"),
                "executor",
                format!("unknown executor \"{other}\"; expected ramping-vus, constant-vus, constant-arrival-rate or ramping-arrival-rate"),
            ))
        }
    };
    if load.duration().is_zero() {
        return Err(invalid(
            path,
            line_of(src, "stages", 0, "duration"),
            "stages",
            "the stages add up to zero time",
        ));
    }
    if !open && (raw.rate.is_some() || raw.pre_allocated_vus.is_some() || raw.on_busy.is_some()) {
        return Err(invalid(
            path,
            top("rate").max(top("pre_allocated_vus")),
            "executor",
            "rate, pre_allocated_vus and on_busy apply only to the arrival-rate executors",
        ));
    }
    let think_default = if open { "0s" } else { "100ms" };
    let think_time = dur(&raw.think_time, think_default, "think_time")?;
    let graceful_stop = dur(&raw.graceful_stop, "30s", "graceful_stop")?;
    let conn = raw.connection;
    let connect_timeout = parse_duration(
        &conn.connect_timeout,
        path,
        src,
        "connection",
        0,
        "connect_timeout",
    )?;
    let min_backoff = parse_duration(&conn.min_backoff, path, src, "connection", 0, "min_backoff")?;
    let max_backoff = parse_duration(&conn.max_backoff, path, src, "connection", 0, "max_backoff")?;
    if conn.pools == 0 || conn.pool_size == 0 {
        return Err(invalid(
            path,
            line_of(src, "connection", 0, "pools"),
            "connection.pools",
            "pools and pool_size must be at least 1",
        ));
    }
    let queries = raw.queries;
    let needs_queries = raw.gateway.is_none();
    if needs_queries && queries.is_empty() {
        return Err(invalid(
            path,
            0,
            "queries",
            "a scenario needs at least one [[queries]] entry with name and sql",
        ));
    }
    for (i, q) in queries.iter().enumerate() {
        if q.name.is_empty() || q.name.contains(['{', '}', ':', ',']) {
            return Err(invalid(
                path,
                line_of(src, "queries", i, "name"),
                "queries.name",
                "must be non-empty and free of { } : , (it becomes a metric tag)",
            ));
        }
        if queries[..i].iter().any(|o| o.name == q.name) {
            return Err(invalid(
                path,
                line_of(src, "queries", i, "name"),
                "queries.name",
                format!("\"{}\" is used twice; query names must be unique", q.name),
            ));
        }
        if q.sql.trim().is_empty() {
            return Err(invalid(
                path,
                line_of(src, "queries", i, "sql"),
                "queries.sql",
                "is empty",
            ));
        }
        let placeholders = (1..=q.params.len() + 1)
            .take_while(|n| q.sql.contains(&format!("${n}")))
            .count();
        if placeholders != q.params.len() {
            return Err(invalid(
                path,
                line_of(src, "queries", i, "params"),
                "queries.params",
                format!(
                    "query \"{}\" uses {placeholders} placeholder(s) ($1..) but lists {} param(s)",
                    q.name,
                    q.params.len()
                ),
            ));
        }
    }
    if needs_queries && queries.iter().all(|q| q.weight == 0) {
        return Err(invalid(
            path,
            line_of(src, "queries", 0, "weight"),
            "queries.weight",
            "at least one query needs a weight above 0",
        ));
    }
    let d = raw.dataset;
    if d.communities == 0 || d.profiles_per_community == 0 {
        return Err(invalid(
            path,
            line_of(src, "dataset", 0, "communities"),
            "dataset",
            "communities and profiles_per_community must be at least 1",
        ));
    }
    let mut thresholds = Vec::new();
    for (key, defs) in &raw.thresholds {
        let line = line_of(src, "thresholds", 0, key);
        let (name, canonical) =
            gate::split_metric_key(key).map_err(|m| invalid(path, line, key, m))?;
        let kind = gate::metric_kind(&name).ok_or_else(|| {
            let known: Vec<&str> = gate::KNOWN_METRICS.iter().map(|(n, _)| *n).collect();
            invalid(
                path,
                line,
                key,
                format!(
                    "unknown metric \"{name}\"; known metrics: {}",
                    known.join(", ")
                ),
            )
        })?;
        if canonical != name {
            // Only per-query sub-metrics exist: a filter on any other tag would match nothing
            // and fail at the end of the run for lack of samples.
            let tag = canonical
                .strip_prefix(&format!("{name}{{query:"))
                .and_then(|r| r.strip_suffix('}'))
                .filter(|t| !t.contains(','));
            let Some(tag) = tag.filter(|_| gate::TAGGED_BY_QUERY.contains(&name.as_str())) else {
                return Err(invalid(
                    path,
                    line,
                    key,
                    format!(
                        "\"{canonical}\" filters on a tag thumper does not record; the one tag is `query`, on {} (e.g. {}{{query:tenant}})",
                        gate::TAGGED_BY_QUERY.join(", "),
                        gate::TAGGED_BY_QUERY[0],
                    ),
                ));
            };
            if !queries.iter().any(|q| q.name == tag) {
                return Err(invalid(
                    path,
                    line,
                    key,
                    format!("no query is named \"{tag}\""),
                ));
            }
        }
        for def in defs {
            let (expression, abort_on_fail, delay) = match def {
                ThresholdDef::Plain(e) => (e.clone(), false, None),
                ThresholdDef::Detailed {
                    threshold,
                    abort_on_fail,
                    delay_abort_eval,
                } => (threshold.clone(), *abort_on_fail, delay_abort_eval.clone()),
            };
            let (aggregation, op, value) = gate::parse_expression(&expression, kind)
                .map_err(|m| invalid(path, line, key, m))?;
            let delay_abort_eval = match delay {
                Some(text) => duration::parse(&text).map_err(|m| invalid(path, line, key, m))?,
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
    Ok(Plan {
        name: raw.name,
        description: raw.description,
        file: path.display().to_string(),
        executor: raw.executor,
        load,
        think_time,
        graceful_stop,
        protocol: raw.protocol,
        connection: conn,
        connect_timeout,
        min_backoff,
        max_backoff,
        dataset: d,
        queries,
        thresholds,
        stack: raw.stack,
        gateway: raw.gateway,
    })
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
            e.contains("query_duration{shard:0}") && e.contains("the one tag is `query`"),
            "{e}"
        );
        let e = err(&STEADY.replace("query_duration{query:lookup}", "vus{query:lookup}"));
        assert!(e.contains("the one tag is `query`"), "{e}");
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
