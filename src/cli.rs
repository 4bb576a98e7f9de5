//! Command-line interface (clap derive). Turns arguments into options for the library; no
//! behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::run::RunOptions;
use crate::stack::PoolMode;

/// The `thumper` command line.
#[derive(Debug, Parser)]
#[command(
    name = "thumper",
    version,
    about = "Load-testing and benchmarking harness for the Arrakis stack (PostgreSQL + PgBouncer + Twilight gateway)",
    after_help = "Exit codes: 0 all thresholds passed; 99 a threshold failed (or compare found a regression); 2 bad input; 1 the run could not be carried out; 130 interrupted by Ctrl-C; 143 terminated by SIGTERM."
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// thumper's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios/steady.toml: ramp to 100 VUs over 3 minutes, hold, ramp down.
    Steady(RunArgs),
    /// Run scenarios/spike.toml: 50 VUs, burst to 200, back to 50.
    Spike(RunArgs),
    /// Run scenarios/gateway.toml (or --scenario FILE): the Twilight gateway driven by the fake Discord server, measured through NATS.
    Gateway {
        /// A gateway scenario file.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// An existing NATS server; without it thumper starts nats-server on a free port.
        #[arg(long, env = "NATS_URL")]
        nats: Option<String>,
        /// Options shared by every load run.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Find the highest arrival rate the target sustains with p99 under the SLO.
    Capacity {
        /// Scenario whose query mix is used (default scenarios/steady-rate.toml).
        scenario: Option<PathBuf>,
        /// p99 limit, in milliseconds.
        #[arg(long, default_value_t = 10.0)]
        slo_p99: f64,
        /// First arrival rate tried (iterations per second); doubled while steps pass.
        #[arg(long, default_value_t = 250)]
        start_rate: u32,
        /// Highest arrival rate tried.
        #[arg(long, default_value_t = 64_000)]
        max_rate: u32,
        /// Length of each step.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        step: std::time::Duration,
        /// Most errors a passing step may have.
        #[arg(long, default_value_t = 10)]
        max_errors: u64,
        /// Bisection steps between the last passing and the first failing rate.
        #[arg(long, default_value_t = 3)]
        refine: u32,
        /// Options shared by every load run.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Run any scenario file.
    Run {
        /// Scenario file (TOML), e.g. scenarios/steady.toml.
        scenario: PathBuf,
        /// Options shared by every load run.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Run a scenario as a fleet of worker processes (each its --segment I/N), set up once and
    /// judged as one run; or, `fleet manifest`, print the Kubernetes objects of one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Fleet {
        /// A fleet subcommand instead of a local fleet.
        #[command(subcommand)]
        action: Option<FleetAction>,
        /// Scenario file (TOML).
        #[arg(required = true)]
        scenario: Option<PathBuf>,
        /// Number of local worker processes.
        #[arg(long, value_name = "N", required = true)]
        local: Option<u32>,
        /// The options every worker runs with.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Start, inspect or stop a local PostgreSQL + PgBouncer that stays up between runs.
    Stack {
        /// What to do with the stack.
        #[command(subcommand)]
        action: StackAction,
    },
    /// Apply migrations/ to a database (as its owner role).
    Migrate {
        /// Owner-role URL of the database; defaults to ADMIN_DATABASE_URL, else the stack that is up.
        #[arg(long, env = "ADMIN_DATABASE_URL")]
        target: Option<String>,
        /// Migrations folder.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Deep health check: a real login through PgBouncer, a query, a tenant query under RLS, pool waits.
    Health {
        /// Application-role URL through PgBouncer; defaults to DATABASE_URL, else the stack that is up.
        #[arg(long, env = "DATABASE_URL")]
        target: Option<String>,
        /// PgBouncer admin console URL; defaults to PGBOUNCER_ADMIN_URL, else the stack that is up.
        #[arg(long, env = "PGBOUNCER_ADMIN_URL")]
        admin: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Time allowed for each check, in seconds.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Most clients allowed to wait for a server connection.
        #[arg(long, default_value_t = 50.0)]
        max_waiting: f64,
        /// Longest wait for a server connection allowed, in seconds.
        #[arg(long, default_value_t = 1.0)]
        max_wait: f64,
        /// Also run the RLS plan check on scenarios/steady.toml's tenant-scoped queries.
        #[arg(long)]
        rls: bool,
    },
    /// EXPLAIN the scenario's tenant-scoped queries as the application role and flag plans where row-level security defeats the index (exit 99 on a finding).
    RlsCheck(RlsCheckArgs),
    /// Measure what row-level security costs per tenant-scoped statement as the table grows, against a BYPASSRLS baseline (embedded stack).
    RlsBench(RlsBenchArgs),
    /// Run pgbench scripts with pgbench's options (-c -j -T -t -R -f -b -M -D -i -s ...): pgbench's summary lines, then percentiles per statement, thresholds and every report.
    #[command(disable_help_flag = true)]
    Pgbench(Box<PgbenchArgs>),
    /// Re-render every report format from a summary.json.
    Report {
        /// The summary.json to render.
        summary: PathBuf,
        /// Folder to write into (default: the summary's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also append the Markdown summary to this file (e.g. "$GITHUB_STEP_SUMMARY").
        #[arg(long)]
        summary_md: Option<PathBuf>,
    },
    /// Merge the reports of a fleet's instances (`--segment I/N` runs) into one summary and
    /// verdict: counters summed, histograms merged, every threshold judged on the fleet's data.
    Merge {
        /// Instance report folders (or their summary.json files).
        #[arg(required = true)]
        instances: Vec<PathBuf>,
        /// Folder to write the merged reports into.
        #[arg(long, default_value = "reports/merged")]
        out: PathBuf,
        /// Also append the Markdown summary to this file (e.g. "$GITHUB_STEP_SUMMARY").
        #[arg(long)]
        summary_md: Option<PathBuf>,
    },
    /// Compare two runs' summaries; exit 99 on a regression beyond the limit.
    Compare {
        /// The earlier run's summary.json, judged against.
        baseline: PathBuf,
        /// The run being judged, its summary.json.
        current: PathBuf,
        /// Largest tolerated slowdown, in percent.
        #[arg(long, default_value_t = 10.0)]
        max_regression: f64,
        /// Also write the Markdown comparison to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
}

/// What `thumper stack` does.
#[derive(Debug, Subcommand)]
pub enum StackAction {
    /// Start a stack that stays up and print DATABASE_URL, ADMIN_DATABASE_URL, PGBOUNCER_ADMIN_URL.
    Up {
        /// Take PgBouncer's settings from this scenario's [stack.pgbouncer] table.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Print the URLs of the stack that is up (exit 1 if none).
    Status,
    /// Stop the stack that is up.
    Down,
}

/// `thumper fleet` subcommands (without one, `--local N FILE` runs a local fleet).
#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Print the Kubernetes manifests of a coordinated fleet (ConfigMap, Indexed Job of workers,
    /// coordinator Job, reports volume, NATS unless --nats) for `kubectl apply -f -`.
    Manifest(Box<ManifestArgs>),
    /// Coordinate a fleet whose workers run elsewhere (`thumper run --segment I/N --fleet-nats
    /// URL`, e.g. the Indexed Job's pods): set the target up once, start every worker at one
    /// instant, judge the fleet on its merged data; the exit code is the fleet's verdict.
    Coordinate(Box<CoordinateArgs>),
}

/// Arguments of `thumper fleet coordinate`.
#[derive(Debug, Clone, Args)]
pub struct CoordinateArgs {
    /// Scenario file (TOML), the same the workers run.
    pub scenario: PathBuf,
    /// How many workers the fleet has (each started with --segment I/N).
    #[arg(long, value_name = "N")]
    pub workers: u32,
    /// The NATS server the workers reach (their --fleet-nats).
    #[arg(long, value_name = "URL", env = "THUMPER_FLEET_NATS")]
    pub nats: String,
    /// The options of the run: --target and --admin-url to set it up, --fleet-id,
    /// --ready-timeout, where the reports go.
    #[command(flatten)]
    pub args: RunArgs,
}

/// Arguments of `thumper fleet manifest`.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// Scenario file (TOML), checked and put into the ConfigMap as it is.
    pub scenario: PathBuf,
    /// Number of worker pods, each `--segment I/N`.
    #[arg(long, value_name = "N")]
    pub parallelism: u32,
    /// The thumper image (`docker build --target thumper`).
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// An existing NATS server; without it the manifests run one (a Deployment and a Service).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Object name prefix and fleet id, a DNS label (default: the scenario's name, sanitised).
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace of every object (default: kubectl's current one).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The Secret holding DATABASE_URL, ADMIN_DATABASE_URL and (optional) PGBOUNCER_ADMIN_URL.
    #[arg(long, default_value = "thumper-target")]
    pub secret: String,
    /// What DATABASE_URL is: PgBouncer's pool_mode, or none for PostgreSQL itself.
    #[arg(long, default_value = "transaction", value_parser = parse_pool_mode, value_name = "MODE")]
    pub pool_mode: TargetPooling,
    /// CPU of each worker pod, request and limit (a Kubernetes quantity).
    #[arg(long, default_value = "1", value_name = "QUANTITY")]
    pub worker_cpu: String,
    /// Memory of each worker pod, request and limit (a Kubernetes quantity).
    #[arg(long, default_value = "1Gi", value_name = "QUANTITY")]
    pub worker_memory: String,
    /// Size of the coordinator's reports volume (a Kubernetes quantity).
    #[arg(long, default_value = "1Gi", value_name = "QUANTITY")]
    pub reports_storage: String,
}

impl ManifestArgs {
    /// The manifest options: reads and checks the scenario (the error names file, line and
    /// field); every other value is checked by [`crate::fleet::manifest::render`].
    pub fn into_options(
        self,
    ) -> Result<crate::fleet::manifest::ManifestOptions, crate::fleet::manifest::ManifestError>
    {
        let mut opts = crate::fleet::manifest::ManifestOptions::for_scenario(
            &self.scenario,
            self.parallelism,
            self.image,
            self.name,
        )?;
        opts.nats_url = self.nats;
        opts.namespace = self.namespace;
        opts.secret = self.secret;
        opts.pool_mode = self.pool_mode.0;
        opts.worker_cpu = self.worker_cpu;
        opts.worker_memory = self.worker_memory;
        opts.reports_storage = self.reports_storage;
        Ok(opts)
    }
}

/// Options of every command that applies database load (steady, spike, run, capacity, gateway).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Application-role URL of an existing PgBouncer (or PostgreSQL); without it thumper starts its own stack.
    #[arg(long, env = "DATABASE_URL")]
    pub target: Option<String>,
    /// Owner-role URL used with --target to apply migrations and seed the dataset first.
    #[arg(long, env = "ADMIN_DATABASE_URL", requires = "target")]
    pub admin_url: Option<String>,
    /// PgBouncer admin console URL (db "pgbouncer"), polled once a second for pool statistics.
    #[arg(long, env = "PGBOUNCER_ADMIN_URL")]
    pub pgbouncer_admin: Option<String>,
    /// What --target is: PgBouncer's pool_mode (transaction, session, statement) or none for
    /// PostgreSQL itself, for refusing protocol = "prepared" where it cannot work. The embedded
    /// stack's mode comes from the scenario's [stack.pgbouncer] instead.
    #[arg(long, default_value = "transaction", value_parser = parse_pool_mode, value_name = "MODE")]
    pub pool_mode: TargetPooling,
    /// Multiply every stage duration by F (e.g. 0.1); think time is kept.
    #[arg(long, value_name = "F")]
    pub time_scale: Option<f64>,
    /// Short CI profile of the same shape (the timeline squeezed into 30 seconds).
    #[arg(long)]
    pub quick: bool,
    /// Where the reports go.
    #[command(flatten)]
    pub reports: ReportArgs,
    /// Run instance I's share of the scenario, of N instances (I from 0): VUs split so the parts
    /// sum to the whole at every stage, iteration k of the arrival timetable on instance k mod N.
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    pub segment: crate::scenario::Segment,
    /// Fleet worker: take part in the fleet run coordinated over this NATS server (the
    /// coordinator sets up, starts every worker at once and judges the fleet).
    #[arg(long, value_name = "URL", env = "THUMPER_FLEET_NATS")]
    pub fleet_nats: Option<String>,
    /// The fleet run's id, the same for the coordinator and its workers.
    #[arg(
        long,
        value_name = "ID",
        default_value = "fleet",
        env = "THUMPER_FLEET_ID"
    )]
    pub fleet_id: String,
    /// Fleet: how long the coordinator waits for every worker's ready, and a worker for the
    /// coordinator's start.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "D")]
    pub ready_timeout: std::time::Duration,
    /// Live output, k6's syntax: json=FILE, prometheus-rw=URL (or prometheus-rw with K6_PROMETHEUS_RW_SERVER_URL set); repeatable.
    #[arg(long = "out", value_name = "KIND=TARGET", value_parser = crate::output::OutSpec::parse)]
    pub outputs: Vec<crate::output::OutSpec>,
    /// How often prometheus-rw pushes.
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "K6_PROMETHEUS_RW_PUSH_INTERVAL")]
    pub out_interval: std::time::Duration,
    /// Fail the run when an output cannot deliver (default: a warning and counted drops).
    #[arg(long)]
    pub out_required: bool,
    /// A label on every output series and point, NAME=VALUE (repeatable); testid defaults to the report folder's name.
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = crate::output::parse_tag)]
    pub tags: Vec<(String, String)>,
}

/// Where a run's reports go and how much it says while it runs: the same for every command
/// that writes reports.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Where report folders go.
    #[arg(long, default_value = "reports")]
    pub report_dir: PathBuf,
    /// Also append the Markdown summary to this file (e.g. "$GITHUB_STEP_SUMMARY").
    #[arg(long)]
    pub summary_md: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `thumper pgbench`: pgbench 15's options, as DBAs type them, and thumper's.
#[derive(Debug, Clone, Args)]
pub struct PgbenchArgs {
    /// Database name (with -h, -p, -U: the parts of the target URL; pgbench's DBNAME).
    pub dbname: Option<String>,
    /// Create and fill the builtin scripts' tables (at -s), then exit.
    #[arg(short = 'i', long)]
    pub initialize: bool,
    /// Scale factor: with -i, the tables' size (100,000 accounts per unit); else `:scale`.
    #[arg(short = 's', long, value_name = "NUM")]
    pub scale: Option<i64>,
    /// Number of clients (VUs, each with its own connection).
    #[arg(short = 'c', long = "client", default_value_t = 1, value_name = "NUM")]
    pub clients: u32,
    /// Number of threads: accepted for compatibility; thumper's runtime uses every core.
    #[arg(short = 'j', long = "jobs", default_value_t = 1, value_name = "NUM")]
    pub jobs: u32,
    /// Duration of the run, in seconds.
    #[arg(short = 'T', long = "time", value_name = "NUM")]
    pub time: Option<u64>,
    /// Transactions each client runs (default 10 when -T is not given).
    #[arg(short = 't', long = "transactions", value_name = "NUM")]
    pub transactions: Option<u64>,
    /// Target rate in transactions per second: pgbench's schedule, latency from it.
    #[arg(short = 'R', long = "rate", value_name = "NUM")]
    pub rate: Option<f64>,
    /// Count transactions lasting more than this many milliseconds.
    #[arg(short = 'L', long = "latency-limit", value_name = "NUM")]
    pub latency_limit: Option<f64>,
    /// A script file, optionally weighted: FILE[@W] (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE[@W]")]
    pub files: Vec<String>,
    /// A builtin script, optionally weighted: tpcb-like, simple-update, select-only [@W] (repeatable).
    #[arg(short = 'b', long = "builtin", value_name = "NAME[@W]")]
    pub builtins: Vec<String>,
    /// Skip updates of pgbench_tellers and pgbench_branches (same as -b simple-update).
    #[arg(short = 'N', long = "skip-some-updates")]
    pub skip_some_updates: bool,
    /// Perform SELECT-only transactions (same as -b select-only).
    #[arg(short = 'S', long = "select-only")]
    pub select_only: bool,
    /// Define a variable for the scripts: NAME=VALUE (repeatable).
    #[arg(short = 'D', long = "define", value_name = "NAME=VALUE")]
    pub defines: Vec<String>,
    /// Protocol for submitting queries: simple, extended or prepared.
    #[arg(
        short = 'M',
        long = "protocol",
        default_value = "simple",
        value_name = "MODE"
    )]
    pub protocol: String,
    /// Show a progress report every NUM seconds.
    #[arg(short = 'P', long = "progress", value_name = "NUM")]
    pub progress: Option<u64>,
    /// Report each statement's latency (average, failures and percentiles) at the end.
    #[arg(short = 'r', long = "report-per-command")]
    pub per_command: bool,
    /// Do not vacuum the tables (nor empty pgbench_history) before the run.
    #[arg(short = 'n', long = "no-vacuum")]
    pub no_vacuum: bool,
    /// Seed of the scripts' random functions: a number, `time` (the default) or `rand`.
    #[arg(long, default_value = "time", value_name = "SEED")]
    pub random_seed: String,
    /// Database server host (with -p, -U and DBNAME instead of --target).
    #[arg(short = 'h', long = "host", value_name = "HOSTNAME")]
    pub host: Option<String>,
    /// Database server port.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,
    /// Database user name.
    #[arg(short = 'U', long = "username", value_name = "USERNAME")]
    pub username: Option<String>,
    /// A threshold, k6's syntax: 'iteration_duration: p(99) < 10' (repeatable).
    #[arg(long = "threshold", value_name = "METRIC: EXPR")]
    pub thresholds: Vec<String>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Options shared by every load run.
    #[command(flatten)]
    pub args: RunArgs,
}

/// Arguments of `thumper rls-check`.
#[derive(Debug, Clone, Args)]
pub struct RlsCheckArgs {
    /// Scenario whose tenant-scoped queries are explained (default scenarios/steady.toml).
    pub scenario: Option<PathBuf>,
    /// Application-role URL; defaults to DATABASE_URL, else the stack that is up, else thumper starts its own (migrated, empty).
    #[arg(long, env = "DATABASE_URL")]
    pub target: Option<String>,
    /// The column the policies compare with the tenant.
    #[arg(long, default_value = crate::rls::check::DEFAULT_TENANT_COLUMN)]
    pub tenant_column: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `thumper rls-bench`.
#[derive(Debug, Clone, Args)]
pub struct RlsBenchArgs {
    /// Profiles table sizes, comma-separated: 10k, 100k, 1m, 10m or plain numbers.
    #[arg(long, default_value = "10k,100k")]
    pub sizes: String,
    /// Arrival rate of each latency phase, iterations per second over the queries.
    #[arg(long, default_value_t = 150)]
    pub rate: u32,
    /// Length of each latency phase (one per size and way).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// EXPLAIN ANALYZE samples per query, size and way.
    #[arg(long, default_value_t = 200)]
    pub samples: u32,
    /// Also measure the reads on a copy of profiles under the seed's `tenant OR admin` policy.
    #[arg(long)]
    pub seed_or: bool,
    /// A threshold, k6's expression syntax: 'rls_overhead_pct{query:lookup}: max < 20' (repeatable).
    #[arg(long = "threshold", value_name = "METRIC: EXPR")]
    pub thresholds: Vec<String>,
    /// Where the reports go.
    #[command(flatten)]
    pub reports: ReportArgs,
}

impl RlsBenchArgs {
    /// Checks every value before anything starts; the message names the flag.
    pub fn into_options(self) -> Result<crate::rls::bench::BenchOptions, String> {
        use crate::rls::bench;
        let sizes = bench::parse_sizes(&self.sizes).map_err(|e| format!("--sizes: {e}"))?;
        if self.rate == 0 || self.samples == 0 || self.duration.is_zero() {
            return Err("--rate, --samples and --duration must be positive".to_owned());
        }
        let mut thresholds = bench::default_thresholds();
        for t in &self.thresholds {
            thresholds.push(bench::parse_threshold(t, &sizes, self.seed_or)?);
        }
        Ok(bench::BenchOptions {
            sizes,
            rate: self.rate,
            duration: self.duration,
            samples: self.samples,
            seed_or: self.seed_or,
            thresholds,
            report_dir: self.reports.report_dir,
            summary_md: self.reports.summary_md,
            quiet: self.reports.quiet,
        })
    }
}

impl RunArgs {
    /// The run options for `scenario`; clap's types stop here.
    pub fn into_options(self, scenario: PathBuf) -> RunOptions {
        RunOptions {
            scenario,
            time_scale: self.time_scale,
            quick: self.quick,
            target: self.target,
            admin_url: self.admin_url,
            pgbouncer_admin_url: self.pgbouncer_admin,
            pool_mode: self.pool_mode.0,
            report_dir: self.reports.report_dir,
            summary_md: self.reports.summary_md,
            quiet: self.reports.quiet,
            segment: self.segment,
            fleet_nats: self.fleet_nats,
            fleet_id: self.fleet_id,
            ready_timeout: self.ready_timeout,
            outputs: crate::output::OutputOptions {
                specs: self.outputs,
                interval: self.out_interval,
                required: self.out_required,
                tags: self.tags.into_iter().collect(),
            },
        }
    }
}

/// The bundled scenario `name`: `scenarios/NAME.toml` in the working directory, else in the
/// source tree.
pub fn bundled_scenario(name: &str) -> PathBuf {
    let here = PathBuf::from("scenarios").join(format!("{name}.toml"));
    if here.is_file() {
        here
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(format!("{name}.toml"))
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::scenario::duration::parse(text)
}

/// What `--target` pools by: PgBouncer's mode, or `None` for PostgreSQL itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPooling(pub Option<PoolMode>);

fn parse_pool_mode(text: &str) -> Result<TargetPooling, String> {
    match text {
        "none" => Ok(TargetPooling(None)),
        "transaction" => Ok(TargetPooling(Some(PoolMode::Transaction))),
        "session" => Ok(TargetPooling(Some(PoolMode::Session))),
        "statement" => Ok(TargetPooling(Some(PoolMode::Statement))),
        other => Err(format!(
            "\"{other}\": expected transaction, session, statement or none (PostgreSQL itself)"
        )),
    }
}
