//! Live outputs (`--out`), k6's way of watching a run while it goes: `json=FILE` (k6's JSON
//! lines, one line per interval aggregate) and `prometheus-rw=URL` (Prometheus remote write with
//! k6's metric names).
//!
//! Each output is a [`Watcher`] of the aggregator that, when intervals close, hands copies of
//! them to the output's own task through a bounded queue. The aggregator never waits on an
//! output: a full queue drops the batch and counts it, and a slow or dead receiver costs the
//! run nothing but that count and a warning (a failed run only with `--out-required`).

pub mod json;
pub mod prometheus;
pub mod prompb;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::aggregator::{RunView, Watcher};
use crate::metrics::summary::{Interval, Metric};

/// k6's environment variable for the remote-write URL, read when `--out prometheus-rw` has none.
pub const K6_RW_URL_ENV: &str = "K6_PROMETHEUS_RW_SERVER_URL";
/// thumper's own name for it (takes precedence over k6's).
pub const RW_URL_ENV: &str = "THUMPER_PROMETHEUS_RW_URL";

/// Batches an output's task may have waiting before the next is dropped.
const QUEUE: usize = 32;
/// How long the end of a run waits for an output to deliver what it has.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// One `--out` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutSpec {
    /// `json=FILE`: k6's JSON-lines stream.
    Json(PathBuf),
    /// `prometheus-rw=URL`: Prometheus remote write.
    PrometheusRw(String),
}

impl OutSpec {
    /// Parses `json=FILE`, `prometheus-rw=URL` or `prometheus-rw` (the URL from
    /// `THUMPER_PROMETHEUS_RW_URL`, else k6's `K6_PROMETHEUS_RW_SERVER_URL`).
    pub fn parse(text: &str) -> Result<OutSpec, String> {
        Self::parse_with_env(text, |k| std::env::var(k).ok())
    }

    fn parse_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<OutSpec, String> {
        let (kind, arg) = match text.split_once('=') {
            Some((k, a)) => (k, Some(a)),
            None => (text, None),
        };
        match kind {
            "json" => match arg.filter(|a| !a.is_empty()) {
                Some(path) => Ok(OutSpec::Json(PathBuf::from(path))),
                None => Err("`json` needs a file: --out json=FILE".to_owned()),
            },
            "prometheus-rw" | "experimental-prometheus-rw" => {
                let url = match arg.filter(|a| !a.is_empty()) {
                    Some(url) => url.to_owned(),
                    None => env(RW_URL_ENV)
                        .or_else(|| env(K6_RW_URL_ENV))
                        .filter(|u| !u.is_empty())
                        .ok_or_else(|| {
                            format!("`prometheus-rw` needs a URL: --out prometheus-rw=http://HOST:9090/api/v1/write, or {RW_URL_ENV} / {K6_RW_URL_ENV}")
                        })?,
                };
                let expected = "expected an http:// or https:// URL such as http://127.0.0.1:9090/api/v1/write";
                let parsed = reqwest::Url::parse(&url)
                    .map_err(|e| format!("prometheus-rw={url}: not a URL ({e}); {expected}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(format!("prometheus-rw={url}: {expected}"));
                }
                Ok(OutSpec::PrometheusRw(url))
            }
            other => Err(format!(
                "unknown output `{other}`; expected json=FILE or prometheus-rw=URL"
            )),
        }
    }

    /// How the output is named in messages (its URL without credentials).
    pub fn describe(&self) -> String {
        match self {
            OutSpec::Json(p) => format!("json={}", p.display()),
            OutSpec::PrometheusRw(url) => {
                let shown = reqwest::Url::parse(url)
                    .map(|mut u| {
                        if u.password().is_some() {
                            let _ = u.set_password(Some("xxxxx"));
                        }
                        u.to_string()
                    })
                    .unwrap_or_else(|_| url.clone());
                format!("prometheus-rw={shown}")
            }
        }
    }
}

/// A `--tag NAME=VALUE`: a label on every series and point an output writes.
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=VALUE, e.g. testid=nightly-42"))?;
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid || name.starts_with("__") {
        return Err(format!(
            "`{name}`: a tag name is letters, digits and _ (not first a digit, not starting with __)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The outputs of a run, from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputOptions {
    /// Each `--out KIND=TARGET`, in the order given.
    pub specs: Vec<OutSpec>,
    /// How often `prometheus-rw` pushes (k6's `K6_PROMETHEUS_RW_PUSH_INTERVAL`, default 5 s).
    pub interval: Duration,
    /// An output that cannot deliver fails the run instead of warning.
    pub required: bool,
    /// `--tag` labels; `testid` defaults to the report folder's name.
    pub tags: BTreeMap<String, String>,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions {
            specs: Vec::new(),
            interval: Duration::from_secs(5),
            required: false,
            tags: BTreeMap::new(),
        }
    }
}

/// Checks what can be checked before any stack starts: the interval, and that every JSON file
/// can be created (it is, empty). The message names the flag.
pub fn check(opts: &OutputOptions) -> Result<(), String> {
    if opts.specs.is_empty() {
        return Ok(());
    }
    if opts.interval < Duration::from_secs(1) {
        return Err(format!(
            "--out-interval {:?}: must be at least 1s (intervals close once a second)",
            opts.interval
        ));
    }
    if opts
        .specs
        .iter()
        .any(|s| matches!(s, OutSpec::PrometheusRw(_)))
    {
        let stats = std::env::var(prometheus::TREND_STATS_ENV).ok();
        prometheus::TrendStats::parse(stats.as_deref())?;
    }
    for spec in &opts.specs {
        if let OutSpec::Json(path) = spec {
            std::fs::File::create(path).map_err(|e| {
                format!(
                    "--out json={}: cannot create the file ({e})",
                    path.display()
                )
            })?;
        }
    }
    Ok(())
}

/// What every output labels its data with.
#[derive(Debug, Clone)]
pub struct RunLabels {
    /// When the load started.
    pub started_at: time::OffsetDateTime,
    /// `testid` first, then `scenario` and the `--tag`s, by name.
    pub tags: BTreeMap<String, String>,
}

impl RunLabels {
    /// The labels of a run of `scenario` whose report folder is `report_name`.
    pub fn new(
        opts: &OutputOptions,
        scenario: &str,
        report_name: &str,
        started_at: time::OffsetDateTime,
    ) -> RunLabels {
        let mut tags = opts.tags.clone();
        tags.entry("testid".into())
            .or_insert_with(|| report_name.to_owned());
        tags.entry("scenario".into())
            .or_insert_with(|| scenario.to_owned());
        RunLabels { started_at, tags }
    }

    /// Milliseconds since the Unix epoch of `us` microseconds into the run.
    pub fn epoch_ms(&self, us: u64) -> i64 {
        (self.started_at.unix_timestamp_nanos() / 1_000_000) as i64 + (us / 1000) as i64
    }
}

/// What a watcher hands an output's task.
pub struct Batch {
    /// Intervals closed since the previous batch, oldest first.
    pub intervals: Vec<Interval>,
    /// Run totals at the time of the batch, for outputs that want them.
    pub totals: Option<BTreeMap<String, Metric>>,
    /// Microseconds since the run started.
    pub at_us: u64,
}

/// How an output did, told at the end of the run.
#[derive(Debug, Default)]
pub struct Delivery {
    /// One line for the run's notes: what was written or pushed, and what was not.
    pub line: String,
    /// Why the output failed to deliver, if it did (fails the run with `--out-required`).
    pub failure: Option<String>,
}

/// Where an output's task reports a failure while the run goes, for `--out-required`.
#[derive(Clone, Default)]
pub struct FailureSlot(Arc<Mutex<Option<String>>>);

impl FailureSlot {
    /// Records the first failure; later ones are the same story.
    pub fn set(&self, why: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(why);
        }
    }

    /// The failure recorded, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// The watcher side of one output: collects newly closed intervals and queues them, a batch
/// every `every` intervals, without ever waiting.
struct Feed {
    name: String,
    tx: mpsc::Sender<Batch>,
    every: usize,
    with_totals: bool,
    seen: usize,
    pending: Vec<Interval>,
    dropped: Arc<AtomicU64>,
    failure: FailureSlot,
    required: bool,
    /// Time spent handing batches over (on the aggregator's task), for the log.
    busy: Duration,
    batches: u64,
}

impl Feed {
    fn take_new(&mut self, run: &RunView<'_>) {
        let all = run.intervals();
        if all.len() > self.seen {
            self.pending.extend_from_slice(&all[self.seen..]);
            self.seen = all.len();
        }
    }

    fn send(&mut self, run: &RunView<'_>) {
        let started = std::time::Instant::now();
        let intervals = std::mem::take(&mut self.pending);
        let n = intervals.len() as u64;
        let batch = Batch {
            intervals,
            totals: self.with_totals.then(|| run.metrics(|_| false)),
            at_us: run.now_us,
        };
        if self.tx.try_send(batch).is_err() {
            self.dropped.fetch_add(n.max(1), Ordering::Relaxed);
        }
        self.busy += started.elapsed();
        self.batches += 1;
    }
}

impl Watcher for Feed {
    fn tick(&mut self, run: &RunView<'_>) -> Option<String> {
        self.take_new(run);
        if self.pending.len() >= self.every {
            self.send(run);
        }
        if self.required {
            if let Some(why) = self.failure.get() {
                return Some(format!("--out-required: {}: {why}", self.name));
            }
        }
        None
    }

    fn finish(&mut self, run: &RunView<'_>) {
        self.take_new(run);
        self.send(run);
        tracing::info!(
            output = %self.name,
            batches = self.batches,
            us_per_batch = self.busy.as_secs_f64() * 1e6 / self.batches as f64,
            "aggregator time handing batches to the output"
        );
    }
}

struct Running {
    name: String,
    task: JoinHandle<Delivery>,
    dropped: Arc<AtomicU64>,
}

/// The outputs of one run while it goes: their tasks, and the watchers that feed them.
pub struct Outputs {
    running: Vec<Running>,
    required: bool,
}

/// The end of a run's outputs: a note per output, and whether a required one failed.
pub struct OutputsReport {
    /// One line per output: what it delivered and what it dropped.
    pub notes: Vec<String>,
    /// With `--out-required`: why an output failed to deliver.
    pub failure: Option<String>,
}

impl Outputs {
    /// Starts every output's task (on the current tokio runtime) and returns the watchers to
    /// hand the aggregator.
    pub fn start(opts: &OutputOptions, labels: &RunLabels) -> (Outputs, Vec<Box<dyn Watcher>>) {
        let mut running = Vec::new();
        let mut watchers: Vec<Box<dyn Watcher>> = Vec::new();
        let interval_s = opts.interval.as_secs().max(1) as usize;
        for spec in &opts.specs {
            let (tx, rx) = mpsc::channel(QUEUE);
            let failure = FailureSlot::default();
            let (task, every, with_totals) = match spec {
                OutSpec::Json(path) => (json::spawn(path.clone(), labels.clone(), rx), 1, false),
                OutSpec::PrometheusRw(url) => (
                    prometheus::spawn(
                        url.clone(),
                        labels.clone(),
                        prometheus::TrendStats::from_env(),
                        rx,
                        failure.clone(),
                    ),
                    interval_s,
                    true,
                ),
            };
            let dropped = Arc::new(AtomicU64::new(0));
            let name = spec.describe();
            watchers.push(Box::new(Feed {
                name: name.clone(),
                tx,
                every,
                with_totals,
                seen: 0,
                pending: Vec::new(),
                dropped: dropped.clone(),
                failure,
                required: opts.required,
                busy: Duration::ZERO,
                batches: 0,
            }));
            running.push(Running {
                name,
                task,
                dropped,
            });
        }
        (
            Outputs {
                running,
                required: opts.required,
            },
            watchers,
        )
    }

    /// Waits (a bounded time) for every output to deliver its last batch; call once the
    /// aggregator, and so the watchers, are gone.
    pub async fn finish(self) -> OutputsReport {
        let mut notes = Vec::new();
        let mut failure = None;
        for r in self.running {
            let abort = r.task.abort_handle();
            let delivery = match tokio::time::timeout(FLUSH_TIMEOUT, r.task).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => Delivery {
                    line: format!("{}: the output's task failed ({e})", r.name),
                    failure: Some(format!("the output's task failed ({e})")),
                },
                Err(_) => {
                    abort.abort();
                    Delivery {
                        line: format!(
                            "{}: still delivering {} s after the run; given up",
                            r.name,
                            FLUSH_TIMEOUT.as_secs()
                        ),
                        failure: Some("did not finish delivering".into()),
                    }
                }
            };
            let dropped = r.dropped.load(Ordering::Relaxed);
            let mut line = delivery.line;
            if dropped > 0 {
                line.push_str(&format!(
                    "; {dropped} interval(s) dropped because the output fell behind"
                ));
            }
            if let Some(why) = delivery.failure {
                eprintln!("thumper: warning: {}: {why}", r.name);
                if self.required {
                    failure.get_or_insert(format!("--out-required: {}: {why}", r.name));
                }
            }
            notes.push(line);
        }
        OutputsReport { notes, failure }
    }
}

/// A metric name from the summary (`query_duration{query:tenant}`) split into its base name and
/// tags.
pub fn split_name(name: &str) -> (&str, Vec<(&str, &str)>) {
    let Some((base, rest)) = name.split_once('{') else {
        return (name, Vec::new());
    };
    let tags = rest
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .collect();
    (base, tags)
}

/// Whether an output writes the trend `name`: the series of `query_duration` carry a `query`
/// and an `expected_response` tag (k6 tags every sample so), those of `service_time` a `query`
/// tag; their sums (untagged, or over both outcomes) are left out, so that a query over all
/// series sums each sample once.
pub fn exported_trend(name: &str) -> bool {
    let (base, tags) = split_name(name);
    let has = |tag: &str| tags.iter().any(|(k, _)| *k == tag);
    match base {
        "query_duration" => has("query") && has("expected_response"),
        "service_time" => has("query"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn out_specs_parse_as_k6_writes_them() {
        let none = env(&[]);
        assert_eq!(
            OutSpec::parse_with_env("json=out/run.json", &none),
            Ok(OutSpec::Json("out/run.json".into()))
        );
        assert_eq!(
            OutSpec::parse_with_env("prometheus-rw=http://127.0.0.1:9090/api/v1/write", &none),
            Ok(OutSpec::PrometheusRw(
                "http://127.0.0.1:9090/api/v1/write".into()
            ))
        );
        let k6 = env(&[(K6_RW_URL_ENV, "http://prom:9090/api/v1/write")]);
        assert_eq!(
            OutSpec::parse_with_env("prometheus-rw", &k6),
            Ok(OutSpec::PrometheusRw(
                "http://prom:9090/api/v1/write".into()
            ))
        );
        let both = env(&[
            (K6_RW_URL_ENV, "http://k6:9090/api/v1/write"),
            (RW_URL_ENV, "http://mine:9090/api/v1/write"),
        ]);
        assert_eq!(
            OutSpec::parse_with_env("prometheus-rw", &both),
            Ok(OutSpec::PrometheusRw(
                "http://mine:9090/api/v1/write".into()
            ))
        );
    }

    #[test]
    fn bad_out_specs_say_what_is_expected() {
        let none = env(&[]);
        for (spec, says) in [
            ("influxdb=http://x", "unknown output `influxdb`"),
            ("json", "needs a file"),
            ("json=", "needs a file"),
            ("prometheus-rw", K6_RW_URL_ENV),
            ("prometheus-rw=localhost:9090", "http://"),
            ("prometheus-rw=not a url", "not a URL"),
        ] {
            let e = OutSpec::parse_with_env(spec, &none).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn tags_are_label_names() {
        assert_eq!(
            parse_tag("testid=ci-42"),
            Ok(("testid".into(), "ci-42".into()))
        );
        assert_eq!(parse_tag("env="), Ok(("env".into(), String::new())));
        for bad in ["testid", "1x=a", "a-b=c", "__name__=x", "=v"] {
            assert!(parse_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_not_shown() {
        let spec = OutSpec::PrometheusRw("https://u:secret@prom.example/api/v1/write".into());
        assert!(!spec.describe().contains("secret"), "{}", spec.describe());
    }

    #[test]
    fn names_split_into_base_and_tags() {
        assert_eq!(
            split_name("query_duration{query:tenant}"),
            ("query_duration", vec![("query", "tenant")])
        );
        assert_eq!(split_name("vus"), ("vus", vec![]));
    }
}
