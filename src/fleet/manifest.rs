//! `thumper fleet manifest`: the Kubernetes objects that run a scenario as a coordinated fleet,
//! rendered as one multi-document YAML stream for `kubectl apply -f -`.
//!
//! The objects, all named `<name>-<part>` and labelled `app.kubernetes.io/instance: <name>`:
//! - `ConfigMap <name>-scenario`: the scenario file, byte for byte, mounted at `/scenario`;
//! - `Job <name>-workers`: an Indexed Job of N pods, pod I running `thumper run --segment I/N`
//!   (the index comes from the pod's `batch.kubernetes.io/job-completion-index` annotation
//!   through the downward API, expanded into the argument by the kubelet);
//! - `Job <name>-coordinator`: one pod running `thumper fleet coordinate`, which migrates and
//!   seeds, starts the workers together and judges the fleet; its exit code is the verdict, so
//!   the Job is `Complete` only when the fleet passed;
//! - `PersistentVolumeClaim <name>-reports`: the coordinator's report folder, which outlives its
//!   pod (the workers' own reports go to an `emptyDir`: their data reaches the fleet report over
//!   NATS, and a `ReadWriteMany` volume is not something every cluster has);
//! - without `--nats`, a `Deployment` + `Service` `<name>-nats` (core NATS, no persistence).
//!
//! The database URLs come from a Secret the user creates (keys [`SECRET_KEYS`]), never from the
//! manifest. Rendering is pure: [`render`] takes [`ManifestOptions`] and returns the text.

use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use crate::stack::PoolMode;

/// The Secret keys the pods read: the application-role URL (workers and coordinator), the owner
/// URL (coordinator only: it migrates and seeds), and, optional, PgBouncer's admin console.
pub const SECRET_KEYS: [&str; 3] = ["DATABASE_URL", "ADMIN_DATABASE_URL", "PGBOUNCER_ADMIN_URL"];

/// The NATS image used when the manifest runs its own server.
pub const NATS_IMAGE: &str = "nats:2.10-alpine";

/// The user id the thumper image runs as (`Dockerfile`, target `thumper`).
pub const IMAGE_UID: i64 = 10001;

/// The user id NATS runs as: the image's default user is root, which `runAsNonRoot` refuses,
/// and a core NATS server writes nothing.
const NATS_UID: i64 = 1000;

/// Longest fleet name: leaves room for the longest suffix (`-coordinator`) and an Indexed Job's
/// pod hostname (`<name>-workers-<index>`) inside a 63-character DNS label.
pub const MAX_NAME_LEN: usize = 40;

const SCENARIO_DIR: &str = "/scenario";
const REPORT_DIR: &str = "/reports";
const NATS_PORT: i64 = 4222;
const NATS_MONITOR_PORT: i64 = 8222;

/// Everything the manifests are rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestOptions {
    /// The scenario's file name: its key in the ConfigMap and its name under `/scenario`.
    pub scenario_file: String,
    /// The scenario file's text, put into the ConfigMap unchanged.
    pub scenario_text: String,
    /// Number of worker pods (each one `--segment I/N`).
    pub parallelism: u32,
    /// The thumper image (built from the `Dockerfile`'s `thumper` target).
    pub image: String,
    /// An existing NATS server; `None` runs one in the manifest.
    pub nats_url: Option<String>,
    /// The fleet's name: object name prefix and `--fleet-id`. A DNS-1035 label (see
    /// [`check_name`]).
    pub name: String,
    /// The namespace of every object; `None` leaves it to `kubectl` (its current namespace).
    pub namespace: Option<String>,
    /// The Secret holding [`SECRET_KEYS`].
    pub secret: String,
    /// What `DATABASE_URL` points at, as `--pool-mode` (`None`: PostgreSQL itself).
    pub pool_mode: Option<PoolMode>,
    /// CPU of each worker pod, request and limit alike (a Kubernetes quantity).
    pub worker_cpu: String,
    /// Memory of each worker pod, request and limit alike (a Kubernetes quantity).
    pub worker_memory: String,
    /// Size of the reports volume (a Kubernetes quantity).
    pub reports_storage: String,
}

/// Input the manifests cannot be rendered from; the message names the flag or file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// `--parallelism 0`.
    #[error("--parallelism 0: a fleet needs at least one worker")]
    NoWorkers,
    /// A value that must be a DNS name is not one.
    #[error("{flag} {value:?}: {reason}")]
    NotADnsName {
        /// The flag the value came from.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A resource quantity Kubernetes would refuse.
    #[error("{flag} {value:?}: not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")]
    BadQuantity {
        /// The flag the value came from.
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// An empty or blank `--image`, or one with whitespace.
    #[error("--image {0:?}: expected an image reference such as registry.example/thumper:1")]
    BadImage(String),
    /// A scenario file name that cannot be a ConfigMap key.
    #[error("{}: the file name must be letters, digits, '-', '_' or '.' to be a ConfigMap key", .0.display())]
    BadFileName(PathBuf),
    /// The scenario file could not be read or is not a valid scenario.
    #[error("{0}")]
    Scenario(#[from] crate::scenario::ScenarioError),
}

impl ManifestOptions {
    /// Options for the scenario at `path`: reads it, refuses it unless the scenario loader
    /// accepts it (the error names file, line and field), and takes the fleet name from the
    /// scenario's `name` unless `name` is given. The other fields get their defaults; the
    /// caller overrides them before [`render`] checks everything.
    pub fn for_scenario(
        path: &Path,
        parallelism: u32,
        image: String,
        name: Option<String>,
    ) -> Result<Self, ManifestError> {
        let plan = crate::scenario::load(path)?;
        // Read again for the ConfigMap: the loader keeps the plan, not the text.
        let text = std::fs::read_to_string(path).map_err(|source| {
            crate::scenario::ScenarioError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .filter(|f| is_config_map_key(f))
            .ok_or_else(|| ManifestError::BadFileName(path.to_owned()))?;
        Ok(ManifestOptions {
            scenario_file: file.to_owned(),
            scenario_text: text,
            parallelism,
            image,
            nats_url: None,
            name: name.unwrap_or_else(|| fleet_name(&plan.name)),
            namespace: None,
            secret: "thumper-target".to_owned(),
            pool_mode: Some(PoolMode::Transaction),
            worker_cpu: "1".to_owned(),
            worker_memory: "1Gi".to_owned(),
            reports_storage: "1Gi".to_owned(),
        })
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.parallelism == 0 {
            return Err(ManifestError::NoWorkers);
        }
        check_name(&self.name).map_err(|reason| ManifestError::NotADnsName {
            flag: "--name",
            value: self.name.clone(),
            reason,
        })?;
        if let Some(ns) = &self.namespace {
            check_label(ns, 63).map_err(|reason| ManifestError::NotADnsName {
                flag: "--namespace",
                value: ns.clone(),
                reason,
            })?;
        }
        check_subdomain(&self.secret).map_err(|reason| ManifestError::NotADnsName {
            flag: "--secret",
            value: self.secret.clone(),
            reason,
        })?;
        for (flag, value) in [
            ("--worker-cpu", &self.worker_cpu),
            ("--worker-memory", &self.worker_memory),
            ("reports storage", &self.reports_storage),
        ] {
            if !is_quantity(value) {
                return Err(ManifestError::BadQuantity {
                    flag,
                    value: value.clone(),
                });
            }
        }
        if self.image.is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(ManifestError::BadImage(self.image.clone()));
        }
        if !is_config_map_key(&self.scenario_file) {
            return Err(ManifestError::BadFileName(PathBuf::from(
                &self.scenario_file,
            )));
        }
        Ok(())
    }

    fn object(&self, part: &str) -> String {
        format!("{}-{part}", self.name)
    }

    /// The URL every pod connects to: the one given, else the manifest's own Service (same
    /// namespace, so its short name resolves).
    pub fn effective_nats_url(&self) -> String {
        self.nats_url
            .clone()
            .unwrap_or_else(|| format!("nats://{}:{NATS_PORT}", self.object("nats")))
    }
}

/// The fleet name derived from a scenario name (letters, digits, `-`, `_`): lowercased, every
/// other character a `-`, runs of `-` collapsed, `thumper-` in front when it would not start
/// with a letter, cut to [`MAX_NAME_LEN`]. Always passes [`check_name`].
pub fn fleet_name(scenario: &str) -> String {
    let mut name = String::with_capacity(scenario.len());
    for c in scenario.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
            name.push(c);
        }
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "thumper-");
    }
    name.truncate(MAX_NAME_LEN);
    while name.ends_with('-') {
        name.pop();
    }
    name
}

/// A fleet name must be a DNS-1035 label (lowercase letters, digits and `-`, starting with a
/// letter, ending with a letter or digit; a Service name needs the leading letter) of at most
/// [`MAX_NAME_LEN`] characters.
pub fn check_name(name: &str) -> Result<(), String> {
    check_label(name, MAX_NAME_LEN)?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter (it names a Service)".to_owned());
    }
    Ok(())
}

/// A DNS-1123 label of at most `max` characters.
fn check_label(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > max {
        return Err(format!("at most {max} characters, got {}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{c:?} is not allowed: a DNS label is lowercase letters, digits and '-'"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit".to_owned());
    }
    Ok(())
}

/// A DNS-1123 subdomain: dot-separated labels, 253 characters at most.
fn check_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("at most 253 characters, got {}", name.len()));
    }
    name.split('.').try_for_each(|label| check_label(label, 63))
}

fn is_config_map_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A Kubernetes quantity as people write them: a decimal number and an optional suffix.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s))
        .unwrap_or(text);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    !whole.is_empty()
        && digits(whole)
        && frac.is_none_or(|f| !f.is_empty() && digits(f))
        && number.chars().any(|c| c != '0' && c != '.')
}

/// The manifests, one YAML document per object, in the order `kubectl apply` should create
/// them (what the pods mount first, NATS before its clients).
pub fn render(opts: &ManifestOptions) -> Result<String, ManifestError> {
    opts.check()?;
    let mut objects = vec![scenario_config_map(opts), reports_claim(opts)];
    if opts.nats_url.is_none() {
        objects.push(nats_deployment(opts));
        objects.push(nats_service(opts));
    }
    objects.push(workers_job(opts));
    objects.push(coordinator_job(opts));
    let mut out = header(opts);
    for object in &objects {
        out.push_str("---\n");
        // A Value of strings, numbers, lists and maps always serialises.
        out.push_str(&serde_norway::to_string(object).expect("YAML of a Value"));
    }
    Ok(out)
}

/// Comment lines in front of the stream: what to create first and how to read the verdict.
fn header(opts: &ManifestOptions) -> String {
    let ns = opts
        .namespace
        .as_ref()
        .map(|n| format!(" -n {n}"))
        .unwrap_or_default();
    format!(
        "# thumper fleet {name}: {n} workers ({file}) and a coordinator.\n\
         # Create the Secret first:\n\
         #   kubectl{ns} create secret generic {secret} --from-literal=DATABASE_URL=... \\\n\
         #     --from-literal=ADMIN_DATABASE_URL=... [--from-literal=PGBOUNCER_ADMIN_URL=...]\n\
         # The verdict is job/{coordinator}: Complete = passed, Failed = not (its pod's exit code says why).\n\
         # The reports are in the PersistentVolumeClaim {reports}.\n",
        name = opts.name,
        n = opts.parallelism,
        file = opts.scenario_file,
        secret = opts.secret,
        coordinator = opts.object("coordinator"),
        reports = opts.object("reports"),
    )
}

fn scenario_config_map(opts: &ManifestOptions) -> Value {
    object(
        "v1",
        "ConfigMap",
        metadata(opts, &opts.object("scenario"), "scenario"),
        [(
            "data",
            map([(
                opts.scenario_file.as_str(),
                opts.scenario_text.clone().into(),
            )]),
        )],
    )
}

fn reports_claim(opts: &ManifestOptions) -> Value {
    object(
        "v1",
        "PersistentVolumeClaim",
        metadata(opts, &opts.object("reports"), "reports"),
        [(
            "spec",
            map([
                ("accessModes", list(["ReadWriteOnce"])),
                (
                    "resources",
                    map([(
                        "requests",
                        map([("storage", opts.reports_storage.clone().into())]),
                    )]),
                ),
            ]),
        )],
    )
}

fn nats_deployment(opts: &ManifestOptions) -> Value {
    let container = map([
        ("name", "nats".into()),
        ("image", NATS_IMAGE.into()),
        ("command", list(["nats-server"])),
        (
            "args",
            Value::Sequence(vec![
                "--port".into(),
                NATS_PORT.to_string().into(),
                "--http_port".into(),
                NATS_MONITOR_PORT.to_string().into(),
            ]),
        ),
        (
            "ports",
            Value::Sequence(vec![
                map([
                    ("name", "client".into()),
                    ("containerPort", NATS_PORT.into()),
                ]),
                map([
                    ("name", "monitor".into()),
                    ("containerPort", NATS_MONITOR_PORT.into()),
                ]),
            ]),
        ),
        (
            "readinessProbe",
            map([
                (
                    "httpGet",
                    map([("path", "/healthz".into()), ("port", "monitor".into())]),
                ),
                ("periodSeconds", 2.into()),
            ]),
        ),
        ("resources", resources("100m", "64Mi", "1", "256Mi")),
        ("securityContext", container_security()),
    ]);
    object(
        "apps/v1",
        "Deployment",
        metadata(opts, &opts.object("nats"), "nats"),
        [(
            "spec",
            map([
                ("replicas", 1.into()),
                (
                    "selector",
                    map([("matchLabels", selector_labels(opts, "nats"))]),
                ),
                (
                    "template",
                    map([
                        ("metadata", map([("labels", labels(opts, "nats"))])),
                        (
                            "spec",
                            map([
                                ("securityContext", pod_security(NATS_UID)),
                                ("containers", Value::Sequence(vec![container])),
                            ]),
                        ),
                    ]),
                ),
            ]),
        )],
    )
}

fn nats_service(opts: &ManifestOptions) -> Value {
    object(
        "v1",
        "Service",
        metadata(opts, &opts.object("nats"), "nats"),
        [(
            "spec",
            map([
                ("selector", selector_labels(opts, "nats")),
                (
                    "ports",
                    Value::Sequence(vec![map([
                        ("name", "client".into()),
                        ("port", NATS_PORT.into()),
                        ("targetPort", "client".into()),
                    ])]),
                ),
            ]),
        )],
    )
}

/// How long the coordinator waits for every worker pod's ready, and a worker for the coordinator.
const READY_TIMEOUT: &str = "5m";

/// What workers and coordinator are both given: the fleet, the barrier's patience (pods are
/// scheduled and pull the image at their own pace) and the application-role target.
fn shared_args(opts: &ManifestOptions) -> [String; 6] {
    [
        "--fleet-id".to_owned(),
        opts.name.clone(),
        "--ready-timeout".to_owned(),
        READY_TIMEOUT.to_owned(),
        "--target".to_owned(),
        "$(DATABASE_URL)".to_owned(),
    ]
}

/// The Indexed Job of workers. `backoffLimitPerIndex: 0`: a worker that fails is not retried (a
/// replacement would miss the start barrier and its share of the timeline). `maxFailedIndexes`
/// is left out, so one failed worker does not get the others terminated: they finish and write
/// their reports, and the coordinator, not the Job, gives the verdict. `backoffLimit` is left
/// to the API's default with a per-index limit (2147483647: only the per-index limit counts).
fn workers_job(opts: &ManifestOptions) -> Value {
    let n = opts.parallelism;
    let mut args = vec![
        "run".to_owned(),
        format!("{SCENARIO_DIR}/{}", opts.scenario_file),
        "--segment".to_owned(),
        format!("$(THUMPER_SEGMENT_INDEX)/{n}"),
        "--fleet-nats".to_owned(),
        opts.effective_nats_url(),
    ];
    args.extend(shared_args(opts));
    args.extend([
        "--pool-mode".to_owned(),
        opts.pool_mode.map_or("none", PoolMode::as_str).to_owned(),
        "--report-dir".to_owned(),
        REPORT_DIR.to_owned(),
        "--quiet".to_owned(),
    ]);
    let env = Value::Sequence(vec![
        // The Job controller sets JOB_COMPLETION_INDEX too; this one is declared here, from the
        // same annotation, so the `$(...)` in args never depends on an injected variable.
        map([
            ("name", "THUMPER_SEGMENT_INDEX".into()),
            (
                "valueFrom",
                map([(
                    "fieldRef",
                    map([(
                        "fieldPath",
                        "metadata.annotations['batch.kubernetes.io/job-completion-index']".into(),
                    )]),
                )]),
            ),
        ]),
        // Only the application role: a worker never migrates or seeds.
        secret_env(opts, "DATABASE_URL", false),
    ]);
    let container = thumper_container(
        "worker",
        opts,
        args,
        env,
        resources(
            &opts.worker_cpu,
            &opts.worker_memory,
            &opts.worker_cpu,
            &opts.worker_memory,
        ),
    );
    let reports = map([("name", "reports".into()), ("emptyDir", map([]))]);
    object(
        "batch/v1",
        "Job",
        metadata(opts, &opts.object("workers"), "worker"),
        [(
            "spec",
            map([
                ("completionMode", "Indexed".into()),
                ("completions", n.into()),
                ("parallelism", n.into()),
                ("backoffLimitPerIndex", 0.into()),
                ("template", pod_template(opts, "worker", container, reports)),
            ]),
        )],
    )
}

/// The coordinator: one pod, never retried (`backoffLimit: 0`): its exit code is the fleet's
/// verdict, and a second attempt would seed and wait for workers that have gone.
fn coordinator_job(opts: &ManifestOptions) -> Value {
    let mut args = vec![
        "fleet".to_owned(),
        "coordinate".to_owned(),
        format!("{SCENARIO_DIR}/{}", opts.scenario_file),
        "--workers".to_owned(),
        opts.parallelism.to_string(),
        "--nats".to_owned(),
        opts.effective_nats_url(),
    ];
    args.extend(shared_args(opts));
    args.extend([
        "--admin-url".to_owned(),
        "$(ADMIN_DATABASE_URL)".to_owned(),
        "--report-dir".to_owned(),
        REPORT_DIR.to_owned(),
    ]);
    // PGBOUNCER_ADMIN_URL is optional in the Secret, so it is passed as the environment
    // variable only: `$(PGBOUNCER_ADMIN_URL)` of a key that is absent would stay literal.
    let env = Value::Sequence(vec![
        secret_env(opts, "DATABASE_URL", false),
        secret_env(opts, "ADMIN_DATABASE_URL", false),
        secret_env(opts, "PGBOUNCER_ADMIN_URL", true),
    ]);
    let container = thumper_container(
        "coordinator",
        opts,
        args,
        env,
        resources("500m", "512Mi", "1", "1Gi"),
    );
    let reports = map([
        ("name", "reports".into()),
        (
            "persistentVolumeClaim",
            map([("claimName", opts.object("reports").into())]),
        ),
    ]);
    object(
        "batch/v1",
        "Job",
        metadata(opts, &opts.object("coordinator"), "coordinator"),
        [(
            "spec",
            map([
                ("completions", 1.into()),
                ("parallelism", 1.into()),
                ("backoffLimit", 0.into()),
                (
                    "template",
                    pod_template(opts, "coordinator", container, reports),
                ),
            ]),
        )],
    )
}

fn thumper_container(
    name: &str,
    opts: &ManifestOptions,
    args: Vec<String>,
    env: Value,
    resources: Value,
) -> Value {
    map([
        ("name", name.into()),
        ("image", opts.image.clone().into()),
        (
            "args",
            Value::Sequence(args.into_iter().map(Value::from).collect()),
        ),
        ("env", env),
        ("resources", resources),
        ("securityContext", container_security()),
        (
            "volumeMounts",
            Value::Sequence(vec![
                map([
                    ("name", "scenario".into()),
                    ("mountPath", SCENARIO_DIR.into()),
                    ("readOnly", true.into()),
                ]),
                map([("name", "reports".into()), ("mountPath", REPORT_DIR.into())]),
                map([("name", "tmp".into()), ("mountPath", "/tmp".into())]),
            ]),
        ),
    ])
}

fn pod_template(
    opts: &ManifestOptions,
    component: &str,
    container: Value,
    reports: Value,
) -> Value {
    map([
        ("metadata", map([("labels", labels(opts, component))])),
        (
            "spec",
            map([
                ("restartPolicy", "Never".into()),
                // thumper writes its reports on SIGTERM before it exits 143.
                ("terminationGracePeriodSeconds", 60.into()),
                ("securityContext", pod_security(IMAGE_UID)),
                ("containers", Value::Sequence(vec![container])),
                (
                    "volumes",
                    Value::Sequence(vec![
                        map([
                            ("name", "scenario".into()),
                            ("configMap", map([("name", opts.object("scenario").into())])),
                        ]),
                        reports,
                        map([("name", "tmp".into()), ("emptyDir", map([]))]),
                    ]),
                ),
            ]),
        ),
    ])
}

fn secret_env(opts: &ManifestOptions, key: &str, optional: bool) -> Value {
    let mut selector = map([("name", opts.secret.clone().into()), ("key", key.into())]);
    if optional {
        insert(&mut selector, "optional", true.into());
    }
    map([
        ("name", key.into()),
        ("valueFrom", map([("secretKeyRef", selector)])),
    ])
}

/// Non-root as `uid`; `fsGroup` so a freshly provisioned volume is writable by it.
fn pod_security(uid: i64) -> Value {
    map([
        ("runAsNonRoot", true.into()),
        ("runAsUser", uid.into()),
        ("runAsGroup", uid.into()),
        ("fsGroup", uid.into()),
        ("seccompProfile", map([("type", "RuntimeDefault".into())])),
    ])
}

fn container_security() -> Value {
    map([
        ("allowPrivilegeEscalation", false.into()),
        ("readOnlyRootFilesystem", true.into()),
        ("capabilities", map([("drop", list(["ALL"]))])),
    ])
}

fn resources(cpu: &str, memory: &str, cpu_limit: &str, memory_limit: &str) -> Value {
    map([
        (
            "requests",
            map([("cpu", cpu.into()), ("memory", memory.into())]),
        ),
        (
            "limits",
            map([("cpu", cpu_limit.into()), ("memory", memory_limit.into())]),
        ),
    ])
}

fn object<const N: usize>(
    api_version: &str,
    kind: &str,
    metadata: Value,
    body: [(&str, Value); N],
) -> Value {
    let mut object = map([
        ("apiVersion", api_version.into()),
        ("kind", kind.into()),
        ("metadata", metadata),
    ]);
    for (key, value) in body {
        insert(&mut object, key, value);
    }
    object
}

fn metadata(opts: &ManifestOptions, name: &str, component: &str) -> Value {
    let mut metadata = map([("name", name.into())]);
    if let Some(ns) = &opts.namespace {
        insert(&mut metadata, "namespace", ns.clone().into());
    }
    insert(&mut metadata, "labels", labels(opts, component));
    metadata
}

fn labels(opts: &ManifestOptions, component: &str) -> Value {
    let mut labels = selector_labels(opts, component);
    insert(
        &mut labels,
        "app.kubernetes.io/managed-by",
        "thumper".into(),
    );
    labels
}

fn selector_labels(opts: &ManifestOptions, component: &str) -> Value {
    map([
        ("app.kubernetes.io/name", "thumper".into()),
        ("app.kubernetes.io/instance", opts.name.clone().into()),
        ("app.kubernetes.io/component", component.into()),
    ])
}

/// A YAML mapping that keeps the order given (what a reader of the manifest expects: `kind`
/// before `spec`), which a `serde_json::Value` without `preserve_order` would not.
fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut mapping = Mapping::with_capacity(N);
    for (key, value) in entries {
        mapping.insert(key.into(), value);
    }
    Value::Mapping(mapping)
}

fn insert(mapping: &mut Value, key: &str, value: Value) {
    if let Value::Mapping(m) = mapping {
        m.insert(key.into(), value);
    }
}

fn list<const N: usize>(items: [&str; N]) -> Value {
    Value::Sequence(items.into_iter().map(Value::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(n: u32) -> ManifestOptions {
        ManifestOptions {
            scenario_file: "steady-rate.toml".into(),
            scenario_text: "name = \"steady-rate\"\n\n# a comment\n".into(),
            parallelism: n,
            image: "registry.example/thumper:1".into(),
            nats_url: None,
            name: "steady-rate".into(),
            namespace: None,
            secret: "thumper-target".into(),
            pool_mode: Some(PoolMode::Transaction),
            worker_cpu: "1".into(),
            worker_memory: "1Gi".into(),
            reports_storage: "1Gi".into(),
        }
    }

    fn documents(text: &str) -> Vec<Value> {
        text.split("\n---\n")
            .skip(1)
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn fleet_names_are_dns_labels() {
        assert_eq!(fleet_name("steady-rate"), "steady-rate");
        assert_eq!(fleet_name("Steady_Rate"), "steady-rate");
        assert_eq!(fleet_name("__a__b__"), "a-b");
        assert_eq!(fleet_name("1st"), "thumper-1st");
        assert_eq!(fleet_name(""), "thumper");
        let long = fleet_name(&"x_".repeat(60));
        assert!(long.len() <= MAX_NAME_LEN);
        for s in [
            "steady-rate",
            "Steady_Rate",
            "1st",
            "",
            "-",
            &"x_".repeat(60),
        ] {
            assert_eq!(check_name(&fleet_name(s)), Ok(()), "{s:?}");
        }
    }

    #[test]
    fn names_that_are_not_labels_are_refused() {
        for bad in [
            "",
            "Steady",
            "steady_rate",
            "-a",
            "a-",
            "1st",
            &"a".repeat(41),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantities() {
        for good in ["1", "500m", "1.5", "1Gi", "512Mi", "2k"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "0", "abc", "1.", ".5", "1GB", "-1", "1 Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn zero_workers_and_bad_names_are_refused() {
        assert!(matches!(render(&options(0)), Err(ManifestError::NoWorkers)));
        let mut o = options(2);
        o.name = "Bad_Name".into();
        assert!(matches!(
            render(&o),
            Err(ManifestError::NotADnsName { flag: "--name", .. })
        ));
        let mut o = options(2);
        o.namespace = Some("a.b".into());
        assert!(render(&o).is_err());
        let mut o = options(2);
        o.image = " ".into();
        assert!(render(&o).is_err());
    }

    #[test]
    fn objects_in_apply_order_and_nats_only_when_not_given() {
        let kinds = |o: &ManifestOptions| -> Vec<String> {
            documents(&render(o).unwrap())
                .iter()
                .map(|d| {
                    format!(
                        "{}/{}",
                        d["kind"].as_str().unwrap(),
                        d["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect()
        };
        assert_eq!(
            kinds(&options(3)),
            [
                "ConfigMap/steady-rate-scenario",
                "PersistentVolumeClaim/steady-rate-reports",
                "Deployment/steady-rate-nats",
                "Service/steady-rate-nats",
                "Job/steady-rate-workers",
                "Job/steady-rate-coordinator"
            ]
        );
        let mut o = options(3);
        o.nats_url = Some("nats://nats.infra:4222".into());
        assert_eq!(kinds(&o).len(), 4);
    }

    #[test]
    fn the_namespace_is_on_every_object() {
        let mut o = options(2);
        o.namespace = Some("load".into());
        for d in documents(&render(&o).unwrap()) {
            assert_eq!(d["metadata"]["namespace"].as_str(), Some("load"));
        }
    }
}
