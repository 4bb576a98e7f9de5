//! `thumper pgbench`: pgbench's options turned into a scenario (scripts, clients, duration or
//! transactions, rate, protocol, variables, thresholds), validated as any scenario file is, and
//! run on the spine (target, preflight, measure, finish); then pgbench's summary lines. `-i`
//! creates and fills the builtins' tables instead.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::cli::PgbenchArgs;
use crate::report::pgbench::{self as summary_text, RunFacts};
use crate::run::database::{measure, Measure};
use crate::run::target::{connect_owner, make_pgbench_tables, preflight, with_target, Target};
use crate::run::{self, RunError, RunOptions, RunResult};
use crate::scenario::{self, Plan};
use crate::workload::pgbench::init;

/// Where an error in the options is said to be.
const COMMAND_LINE: &str = "thumper pgbench";

/// The options, checked: what the run is made of.
pub struct PgbenchOptions {
    initialize: bool,
    /// `-P`: seconds between progress lines.
    progress: Option<u64>,
    no_vacuum: bool,
    scale: Option<i64>,
    facts: RunFacts,
    plan: Plan,
    run: RunOptions,
}

/// Runs `thumper pgbench` and returns the exit code.
pub async fn command(args: PgbenchArgs, interrupt: CancellationToken) -> u8 {
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => return super::finish_run(Err(e)),
    };
    if options.initialize {
        return super::finish_init(initialize(&options).await);
    }
    match run(&options, interrupt).await {
        Ok((r, scale)) => {
            let facts = RunFacts {
                scale,
                ..options.facts
            };
            print!("{}", summary_text::render(&r.summary, &facts));
            println!("reports: {}", r.report_dir.display());
            crate::exit::of_verdict(r.summary.verdict)
        }
        Err(e) => super::finish_run(Err(e)),
    }
}

/// Checks every option before anything starts; the message names the option.
pub fn options(args: PgbenchArgs) -> Result<PgbenchOptions, RunError> {
    let bad = |m: String| RunError::BadInput(m);
    if args.args.fleet_nats.is_some() {
        return Err(bad(
            "thumper pgbench does not run as a fleet worker; put the scripts in a scenario's [[scripts]] and use `thumper fleet`".into(),
        ));
    }
    if args.clients == 0 {
        return Err(bad("-c/--client: must be at least 1".into()));
    }
    if args.time.is_some() && args.transactions.is_some() {
        return Err(bad(
            "specify either a number of transactions (-t) or a duration (-T), not both".into(),
        ));
    }
    if args.rate.is_some() && args.transactions.is_some() {
        return Err(bad(
            "-R with -t is not supported: give the duration with -T".into(),
        ));
    }
    if matches!(args.rate, Some(r) if !(r > 0.0 && r.is_finite())) {
        return Err(bad(
            "-R/--rate: must be a positive number of transactions per second".into(),
        ));
    }
    if matches!(args.scale, Some(s) if s < 1) {
        return Err(bad("-s/--scale: must be at least 1".into()));
    }
    let target = target_url(&args)?;
    let scripts = scripts(&args)?;
    let seed = random_seed(&args.random_seed)?;
    let protocol = match args.protocol.as_str() {
        p @ ("simple" | "extended" | "prepared") => p.to_string(),
        other => {
            return Err(bad(format!(
                "-M/--protocol \"{other}\": expected simple, extended or prepared"
            )))
        }
    };
    let document = scenario_document(&args, &scripts, &protocol, seed)?;
    let mut plan = scenario::parse(&document, Path::new(COMMAND_LINE)).map_err(|e| match e {
        scenario::ScenarioError::Invalid { field, message, .. } => {
            bad(format!("{COMMAND_LINE}: {field}: {message}"))
        }
        other => bad(other.to_string()),
    })?;
    let transactions = args.transactions.or(args.time.is_none().then_some(10));
    plan.iterations_per_vu = transactions;
    // pgbench -R schedules a Poisson process (exponential gaps), not evenly spaced starts.
    plan.poisson_arrivals = args.rate.map(|_| seed);
    let mut run = args.args.into_options(PathBuf::from(COMMAND_LINE));
    if target.is_some() {
        run.target = target;
    }
    // pgbench's own progress lines (-P) stand in for thumper's progress line.
    run.quiet = true;
    run::check_protocol(&plan, &run)?;
    run::check_judgeable(&plan, &run)?;
    let facts = RunFacts {
        scripts: scripts.iter().map(|s| s.title.clone()).collect(),
        weights: scripts.iter().map(|s| s.weight).collect(),
        names: plan.scripts.iter().map(|s| s.name.clone()).collect(),
        statements: plan
            .scripts
            .iter()
            .map(|s| {
                let sql =
                    s.script.commands.iter().filter(|c| {
                        matches!(c.kind, crate::workload::pgbench::CommandKind::Sql(_))
                    });
                sql.map(|c| (c.line, c.first_line.clone())).collect()
            })
            .collect(),
        scale: args.scale.unwrap_or(1),
        protocol,
        clients: args.clients,
        threads: args.jobs,
        duration_s: args.time,
        transactions,
        rate: args.rate,
        latency_limit_ms: args.latency_limit,
        per_command: args.per_command,
    };
    Ok(PgbenchOptions {
        initialize: args.initialize,
        progress: args.progress,
        no_vacuum: args.no_vacuum,
        scale: args.scale,
        facts,
        plan,
        run,
    })
}

/// One `-f` / `-b` (or `-N`, `-S`) script of the command line.
struct ScriptArg {
    /// `file = "..."` or `builtin = "..."`.
    key: &'static str,
    value: String,
    weight: u32,
    /// pgbench's "transaction type" line: `<builtin: ...>` or the file name.
    title: String,
}

fn scripts(args: &PgbenchArgs) -> Result<Vec<ScriptArg>, RunError> {
    let mut out = Vec::new();
    let mut add = |key: &'static str, spec: &str| -> Result<(), RunError> {
        let (value, weight) = match spec.rsplit_once('@') {
            Some((v, w)) => {
                let weight = w.parse::<u32>().map_err(|_| {
                    RunError::BadInput(format!(
                        "\"{spec}\": the weight after @ must be a whole number, e.g. {v}@2"
                    ))
                })?;
                (v.to_string(), weight)
            }
            None => (spec.to_string(), 1),
        };
        let title = if key == "builtin" {
            let name = scenario::scripts::builtin_name(&value);
            crate::workload::pgbench::BUILTINS
                .iter()
                .find(|b| b.0 == name)
                .map_or(value.clone(), |b| b.1.to_string())
        } else {
            value.clone()
        };
        out.push(ScriptArg {
            key,
            value,
            weight,
            title,
        });
        Ok(())
    };
    for f in &args.files {
        add("file", f)?;
    }
    for b in &args.builtins {
        add("builtin", b)?;
    }
    if args.skip_some_updates {
        add("builtin", "simple-update")?;
    }
    if args.select_only {
        add("builtin", "select-only")?;
    }
    let none = args.files.is_empty()
        && args.builtins.is_empty()
        && !args.skip_some_updates
        && !args.select_only;
    if none {
        add("builtin", "tpcb-like")?;
    }
    Ok(out)
}

/// `--random-seed`: a number, `time` or `rand`, as pgbench takes it.
fn random_seed(text: &str) -> Result<u64, RunError> {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    match text {
        "time" => Ok(now() / 1000),
        "rand" => Ok(now().rotate_left(17) ^ u64::from(std::process::id())),
        n => n.parse::<u64>().map_err(|_| {
            RunError::BadInput(format!(
                "--random-seed \"{n}\": expected a number, time or rand"
            ))
        }),
    }
}

/// The target from DBNAME, -h, -p and -U over `--target` (or DATABASE_URL), as pgbench builds
/// its connection from them; `None` when none is given.
fn target_url(args: &PgbenchArgs) -> Result<Option<String>, RunError> {
    if args.dbname.is_none()
        && args.host.is_none()
        && args.port.is_none()
        && args.username.is_none()
    {
        return Ok(None);
    }
    let mut config = match &args.args.target {
        Some(url) => url.parse::<tokio_postgres::Config>().map_err(|e| {
            RunError::BadInput(format!("--target: not a valid PostgreSQL URL ({e})"))
        })?,
        None => tokio_postgres::Config::new(),
    };
    let mut url = String::from("postgresql://");
    let user = args
        .username
        .clone()
        .or_else(|| config.get_user().map(str::to_owned))
        .or_else(|| std::env::var("PGUSER").ok());
    if let Some(u) = &user {
        url.push_str(u);
        if let Some(p) = config.get_password() {
            url.push(':');
            url.push_str(&String::from_utf8_lossy(p));
        }
        url.push('@');
    }
    let host = args
        .host
        .clone()
        .or_else(|| match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => Some(h.clone()),
            _ => None,
        });
    url.push_str(host.as_deref().unwrap_or("127.0.0.1"));
    let port = args.port.or_else(|| config.get_ports().first().copied());
    url.push_str(&format!(":{}", port.unwrap_or(5432)));
    let db = args
        .dbname
        .clone()
        .or_else(|| config.get_dbname().map(str::to_owned))
        .or(user);
    if let Some(db) = db {
        url.push('/');
        url.push_str(&db);
    }
    config = url.parse().map_err(|e| {
        RunError::BadInput(format!(
            "-h/-p/-U/DBNAME make \"{url}\": not a valid target ({e})"
        ))
    })?;
    drop(config);
    Ok(Some(url))
}

/// The scenario the options describe, as a document a scenario file could hold: so it is
/// checked, and later reported, exactly as one.
fn scenario_document(
    args: &PgbenchArgs,
    scripts: &[ScriptArg],
    protocol: &str,
    seed: u64,
) -> Result<String, RunError> {
    use toml::{Table, Value};
    let mut doc = Table::new();
    doc.insert("name".into(), "pgbench".into());
    doc.insert(
        "description".into(),
        format!(
            "thumper pgbench -c {} ({} script(s))",
            args.clients,
            scripts.len()
        )
        .into(),
    );
    let clients = i64::from(args.clients);
    // -t: the stages only bound the run; each VU stops after its transactions.
    let seconds = args.time.unwrap_or(86_400);
    match args.rate {
        Some(rate) => {
            // pgbench -R: the schedule goes on whatever the responses; a transaction waits for
            // a free client rather than being dropped (on_busy = queue).
            doc.insert("executor".into(), "constant-arrival-rate".into());
            doc.insert(
                "rate".into(),
                Value::Integer((rate * 1000.0).round() as i64),
            );
            doc.insert("time_unit".into(), "1000s".into());
            doc.insert("duration".into(), format!("{seconds}s").into());
            doc.insert("pre_allocated_vus".into(), Value::Integer(clients));
            doc.insert("max_vus".into(), Value::Integer(clients));
            doc.insert("on_busy".into(), "queue".into());
        }
        None => {
            doc.insert("executor".into(), "constant-vus".into());
            doc.insert("vus".into(), Value::Integer(clients));
            doc.insert("duration".into(), format!("{seconds}s").into());
        }
    }
    // pgbench lets a transaction in progress at the end finish (and counts it).
    doc.insert("graceful_stop".into(), "30s".into());
    // A pgbench client starts its next transaction at once.
    doc.insert("think_time".into(), "0s".into());
    doc.insert("protocol".into(), protocol.into());
    let entries: Vec<Value> = scripts
        .iter()
        .map(|s| {
            let mut t = Table::new();
            let value = if s.key == "file" {
                std::path::absolute(&s.value).map_or(s.value.clone(), |p| p.display().to_string())
            } else {
                s.value.clone()
            };
            t.insert(s.key.into(), value.into());
            t.insert("weight".into(), Value::Integer(i64::from(s.weight)));
            Value::Table(t)
        })
        .collect();
    doc.insert("scripts".into(), Value::Array(entries));
    let mut pgbench = Table::new();
    if let Some(s) = args.scale {
        pgbench.insert("scale".into(), Value::Integer(s));
    }
    pgbench.insert("random_seed".into(), Value::Integer(seed as i64));
    let mut define = Table::new();
    for d in &args.defines {
        let (name, value) = crate::workload::pgbench::SessionConfig::parse_define(d)
            .map_err(|m| RunError::BadInput(format!("-D: {m}")))?;
        define.insert(name, value.into());
    }
    pgbench.insert("define".into(), Value::Table(define));
    doc.insert("pgbench".into(), Value::Table(pgbench));
    let mut thresholds = Table::new();
    for t in &args.thresholds {
        let (metric, expression) = t
            .split_once(": ")
            .or_else(|| t.rsplit_once(':'))
            .filter(|(m, _)| !m.trim().is_empty())
            .ok_or_else(|| {
                RunError::BadInput(format!(
                    "--threshold \"{t}\": expected METRIC: EXPRESSION, e.g. \"iteration_duration: p(99) < 10\""
                ))
            })?;
        let list = thresholds
            .entry(metric.trim().to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = list {
            a.push(expression.trim().into());
        }
    }
    doc.insert("thresholds".into(), Value::Table(thresholds));
    toml::to_string(&doc).map_err(|e| RunError::Failed(format!("building the scenario: {e}")))
}

/// `-i`: the tables, made by the owner role where thumper knows it (the embedded stack, a
/// stack that is up, `--admin-url`), else by the target's role; the application role may use
/// them.
async fn initialize(o: &PgbenchOptions) -> Result<(), RunError> {
    let scale = o.scale.unwrap_or(1);
    with_target(&o.plan, &o.run, async |target| {
        if target.is_owned() {
            eprintln!(
                "thumper: the embedded stack stops when this command ends, and its tables with it; `thumper stack up` keeps one running for later commands"
            );
        }
        init_tables(target, scale).await
    })
    .await
}

async fn init_tables(target: &Target, scale: i64) -> Result<(), RunError> {
    let url = target.admin_url.as_deref().unwrap_or(&target.url);
    let client = connect_owner(url).await?;
    // The application role may use what the owner makes.
    let app = target.admin_url.as_ref().map(|_| target.url.as_str());
    make_pgbench_tables(&client, app, scale).await
}

/// The run: the builtins' tables checked (and made, at -s, on a stack thumper started), the
/// scale read from them as pgbench does, the vacuum, then the spine's measure and finish.
async fn run(
    o: &PgbenchOptions,
    interrupt: CancellationToken,
) -> Result<(RunResult, i64), RunError> {
    let mut plan = o.plan.clone();
    with_target(&o.plan, &o.run, async |target| {
        if let Some(admin) = &target.admin_url {
            let scale = o.scale.unwrap_or(1);
            crate::run::target::pgbench_tables(admin, &target.url, scale).await?;
        }
        let admin = connect_owner(target.admin_url.as_deref().unwrap_or(&target.url)).await?;
        let scale = init::scale_of(&admin).await;
        let builtins = o.facts.scripts.iter().any(|s| s.starts_with("<builtin"));
        match scale {
            None if builtins => {
                return Err(RunError::BadInput(format!(
                    "{}: the builtin scripts need pgbench's tables, and pgbench_branches is missing: run `thumper pgbench -i -s N` against this target first",
                    crate::redact::redact(&target.url)
                )))
            }
            // pgbench: the builtins' :scale is the tables' (and -s is ignored with a warning).
            Some(n) if builtins || o.scale.is_none() => {
                if o.scale.is_some_and(|s| s != n) {
                    eprintln!("scale option ignored, using count from pgbench_branches table ({n})");
                }
                plan.script_vars.scale = n;
            }
            _ => {}
        }
        if !o.no_vacuum && scale.is_some() {
            eprint!("starting vacuum...");
            match init::vacuum(&admin).await {
                Ok(()) => eprintln!("end."),
                Err(e) => eprintln!("{} (ignoring this error and continuing anyway)", crate::db::describe(&e)),
            }
        }
        let notes = preflight(&target.url, &plan).await?;
        let mut m = Measure::of(&o.run, notes);
        if let Some(every) = o.progress {
            m.watchers
                .push(Box::new(summary_text::Progress::new(every, o.facts.rate.is_some())));
        }
        let (summary, started_at) = measure(&plan, target, m, interrupt).await?;
        let result = run::finish(summary, o.run.report_to(&plan.name), started_at)?;
        Ok((result, plan.script_vars.scale))
    })
    .await
}
