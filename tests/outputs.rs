//! Live outputs against real parts: `--out json` read back line by line, and `--out
//! prometheus-rw` pushing into a real Prometheus (the Debian package) whose HTTP API is then
//! asked what it holds; a receiver that is down; and the shipped Grafana dashboard's queries.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{
    count, json_lines, output, run_against, scenario_file, sum_points, summary, text, thumper,
};
use serde_json::Value;
use thumper::metrics::summary::Summary;

/// Load tests share two cores: run them one at a time so each gets the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Four seconds of two queries, one failing with division by zero about one time in twenty.
const SCENARIO: &str = r#"name = "outputs"
executor = "constant-vus"
vus = 4
duration = "4s"
think_time = "5ms"
[dataset]
communities = 20
profiles_per_community = 10
[[queries]]
name = "health"
sql = "SELECT 1"
[[queries]]
name = "flaky"
sql = "SELECT community_id, 1 / (CASE WHEN random() < 0.05 THEN 0 ELSE 1 END) FROM profiles LIMIT 1"
tenant_scoped = true
"#;

#[test]
fn bad_out_specs_are_bad_input_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            vec!["--out", "influxdb=http://127.0.0.1:8086"],
            "unknown output",
        ),
        (vec!["--out", "prometheus-rw=127.0.0.1:9090"], "http://"),
        (vec!["--tag", "bad-name=x"], "tag name"),
        (
            vec!["--out", "json=/nonexistent/dir/out.json"],
            "cannot create",
        ),
    ] {
        let mut c = thumper();
        // No --target and no stack: reaching the stack would start one, which a bad flag must
        // not get to.
        c.args(["run", "scenarios/steady.toml", "--quiet", "--report-dir"])
            .arg(tmp.path().join("r"))
            .args(&args)
            .env_remove("K6_PROMETHEUS_RW_SERVER_URL");
        let o = output(c);
        assert_eq!(o.status.code(), Some(2), "{args:?}\n{}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("starting PostgreSQL"), "{}", text(&o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_parse_and_add_up_to_the_summary() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "outputs", SCENARIO);
    let reports = tmp.path().join("r");
    let out = tmp.path().join("points.json");
    let spec = format!("json={}", out.display());
    let o = output(run_against(&stack, &file, &reports, &["--out", &spec]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (dir, s) = summary(&reports);
    let body = std::fs::read_to_string(&out).unwrap();
    let lines = json_lines(&out);
    assert!(lines.len() > 20, "{body}");
    for name in ["iterations", "queries", "query_errors"] {
        assert_eq!(sum_points(&lines, name), count(&s, name), "{name}");
    }
    // Latency points: one per query per interval, and their counts add up too.
    let latency: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "Point" && l["metric"] == "query_duration")
        .collect();
    let counted: u64 = latency
        .iter()
        .map(|l| l["data"]["aggregate"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, s.trend("query_duration").unwrap().count);
    let tags = &latency[0]["data"]["tags"];
    assert_eq!(tags["testid"], dir.file_name().unwrap().to_str().unwrap());
    assert_eq!(tags["scenario"], "outputs");
    assert!(
        tags["query"] == "health" || tags["query"] == "flaky",
        "{tags}"
    );
    assert!(
        s.notes.iter().any(|n| n.contains("points.json")),
        "{:?}",
        s.notes
    );
    stack.stop().await.unwrap();
}

/// A real Prometheus on 127.0.0.1 with the remote-write receiver (and native histograms if
/// asked), its storage in a temporary folder. Stopped (by its own handle) when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(native_histograms: bool) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .args(native_histograms.then_some("--enable-feature=native-histograms"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): apt-get install -y prometheus")
            });
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", self.base())).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let r: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.base()))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        assert_eq!(r["status"], "success", "{expr}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value an instant query returns.
    async fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr).await;
        assert_eq!(result.len(), 1, "{expr}: {result:?}\n{}", self.log());
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `expr` in a Grafana dashboard, with its template variables filled in.
fn dashboard_queries(path: &Path, testid: &str) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$testid", testid)
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "5s")
                .replace("$__range", "5m")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_holds_what_the_summary_says() {
    let _serial = SERIAL.lock().await;
    let prometheus = Prometheus::start(true);
    let stack = common::start_default().await;
    prometheus.wait_ready().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "outputs", SCENARIO);
    let reports = tmp.path().join("r");
    let testid = format!("outputs-{}", std::process::id());
    let spec = format!("prometheus-rw={}", prometheus.write_url());
    let tag = format!("testid={testid}");
    let o = output(run_against(
        &stack,
        &file,
        &reports,
        &[
            "--out",
            &spec,
            "--out-interval",
            "1s",
            "--tag",
            &tag,
            "--tag",
            "env=test",
        ],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    let (_, s) = summary(&reports);
    let sel = format!("{{testid=\"{testid}\"}}");

    let iterations = prometheus
        .value(&format!("sum(k6_iterations_total{sel})"))
        .await;
    assert_eq!(iterations as u64, count(&s, "iterations"));
    let errors = prometheus
        .value(&format!("sum(k6_query_errors_total{sel})"))
        .await;
    assert_eq!(errors as u64, count(&s, "query_errors"));

    // p99 over the run, from the cumulative native histograms summed over queries.
    let p99 = prometheus
        .value(&format!(
            "histogram_quantile(0.99, sum(k6_query_duration_seconds{sel}))"
        ))
        .await;
    let want = s.trend("query_duration").unwrap().p99_us as f64 / 1e6;
    let off = (p99 - want).abs() / want;
    eprintln!(
        "p99: Prometheus {:.3} ms, summary {:.3} ms ({:+.2} %)",
        p99 * 1e3,
        want * 1e3,
        (p99 / want - 1.0) * 100.0
    );
    // One schema-5 bucket is 2^(1/32) − 1 = 2.19 % wide; HDR adds its 0.1 %.
    assert!(
        off < 0.0230,
        "p99 {p99} s against the summary's {want} s ({:.2} %)",
        off * 100.0
    );

    // The labels are there, the query's and the outcome's on each latency series (k6's
    // expected_response): the failures of `flaky` are a series of their own.
    let series = prometheus
        .query(&format!("k6_query_duration_seconds{sel}"))
        .await;
    let mut queries: Vec<(&str, &str)> = series
        .iter()
        .map(|r| {
            let m = &r["metric"];
            assert_eq!(m["scenario"], "outputs", "{m}");
            assert_eq!(m["env"], "test", "{m}");
            (
                m["query"].as_str().expect("a query label"),
                m["expected_response"].as_str().expect("an outcome label"),
            )
        })
        .collect();
    queries.sort_unstable();
    assert_eq!(
        queries,
        [("flaky", "false"), ("flaky", "true"), ("health", "true")]
    );
    let vus = prometheus
        .value(&format!("max_over_time(k6_vus{sel}[5m])"))
        .await;
    assert_eq!(vus, 4.0);

    // Every query of the shipped dashboard finds data.
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards/thumper.json");
    let exprs = dashboard_queries(&dashboard, &testid);
    assert!(exprs.len() >= 8, "{exprs:?}");
    for expr in &exprs {
        assert!(
            !prometheus.query(expr).await.is_empty(),
            "the dashboard's `{expr}` returns nothing"
        );
    }
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_is_down_costs_a_warning_and_counted_drops() {
    let _serial = SERIAL.lock().await;
    let stack = common::start_default().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "outputs", SCENARIO);
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("prometheus-rw=http://127.0.0.1:{port}/api/v1/write");
    let check = |s: &Summary, o: &std::process::Output| {
        // The run measured what it always does: the intervals add up to the totals.
        let per_interval: u64 = s
            .time_series
            .iter()
            .map(|i| i.counters.get("iterations").copied().unwrap_or(0))
            .sum();
        assert!(count(s, "iterations") > 100, "{}", text(o));
        assert_eq!(per_interval, count(s, "iterations"));
        assert_eq!(count(s, "connection_errors"), 0);
        assert!(text(o).contains("warning"), "{}", text(o));
        let note = s
            .notes
            .iter()
            .find(|n| n.contains("prometheus-rw"))
            .unwrap_or_else(|| panic!("no output note: {:?}", s.notes));
        assert!(note.contains("0 push(es) delivered"), "{note}");
        assert!(!note.contains(", 0 failed"), "{note}");
    };

    let reports = tmp.path().join("down");
    let o = output(run_against(
        &stack,
        &file,
        &reports,
        &["--out", &spec, "--out-interval", "1s"],
    ));
    assert_eq!(
        o.status.code(),
        Some(0),
        "a warning, not a failed run\n{}",
        text(&o)
    );
    check(&summary(&reports).1, &o);

    let reports = tmp.path().join("required");
    let o = output(run_against(
        &stack,
        &file,
        &reports,
        &["--out", &spec, "--out-interval", "1s", "--out-required"],
    ));
    assert_eq!(
        o.status.code(),
        Some(99),
        "--out-required fails the run\n{}",
        text(&o)
    );
    let (_, s) = summary(&reports);
    assert!(
        s.stop_reason
            .as_deref()
            .unwrap_or_default()
            .contains("--out-required"),
        "{:?}",
        s.stop_reason
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prometheus_without_native_histograms_gets_classic_buckets() {
    let _serial = SERIAL.lock().await;
    let prometheus = Prometheus::start(false);
    let stack = common::start_default().await;
    prometheus.wait_ready().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "outputs", SCENARIO);
    let reports = tmp.path().join("r");
    let testid = format!("classic-{}", std::process::id());
    let spec = format!("prometheus-rw={}", prometheus.write_url());
    let tag = format!("testid={testid}");
    let o = output(run_against(
        &stack,
        &file,
        &reports,
        &["--out", &spec, "--out-interval", "1s", "--tag", &tag],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("classic _bucket series"), "{}", text(&o));
    let (_, s) = summary(&reports);
    let sel = format!("{{testid=\"{testid}\"}}");
    let iterations = prometheus
        .value(&format!("sum(k6_iterations_total{sel})"))
        .await;
    assert_eq!(
        iterations as u64,
        count(&s, "iterations"),
        "no push was lost"
    );
    let p99 = prometheus
        .value(&format!(
            "histogram_quantile(0.99, sum by (le) (k6_query_duration_seconds_bucket{sel}))"
        ))
        .await;
    let want = s.trend("query_duration").unwrap().p99_us as f64 / 1e6;
    eprintln!(
        "classic p99: Prometheus {:.3} ms, summary {:.3} ms",
        p99 * 1e3,
        want * 1e3
    );
    // A classic bucket is 2^(1/4) − 1 = 19 % wide.
    assert!(
        (p99 - want).abs() / want < 0.19,
        "p99 {p99} s against {want} s"
    );
    let count_series = prometheus
        .value(&format!("sum(k6_query_duration_seconds_count{sel})"))
        .await;
    assert_eq!(
        count_series as u64,
        s.trend("query_duration").unwrap().count
    );
    stack.stop().await.unwrap();
}

#[test]
fn compose_gives_prometheus_with_the_receiver_and_grafana_with_the_dashboard() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap();
    let compose: serde_norway::Value = serde_norway::from_str(&read("docker-compose.yml")).unwrap();
    let strings = |v: &serde_norway::Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let prometheus = &compose["services"]["prometheus"];
    let flags = strings(&prometheus["command"]);
    for flag in [
        "--web.enable-remote-write-receiver",
        "--enable-feature=native-histograms",
    ] {
        assert!(flags.iter().any(|f| f == flag), "{flags:?}");
    }
    assert!(strings(&prometheus["ports"]).contains(&"127.0.0.1:9090:9090".to_owned()));
    // Grafana's dashboard provider reads the folder the dashboards are mounted on.
    let volumes = strings(&compose["services"]["grafana"]["volumes"]);
    let provider: serde_norway::Value =
        serde_norway::from_str(&read("grafana/provisioning/dashboards/thumper.yml")).unwrap();
    let folder = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        volumes.contains(&format!("./grafana/dashboards:{folder}:ro")),
        "{volumes:?} vs {folder}"
    );
    assert!(volumes.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro".to_owned()));
    let datasources: serde_norway::Value =
        serde_norway::from_str(&read("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert_eq!(
        datasources["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
}
