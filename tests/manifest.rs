//! `thumper fleet manifest`: the manifests the real binary prints, read back as YAML, checked
//! for the wiring a coordinated fleet needs, and validated offline against the Kubernetes API
//! schemas with `kubernetes-validate --strict` (`pip install kubernetes-validate`; `.ci/run`
//! installs it). No cluster is needed.

mod common;

use std::path::Path;
use std::process::Command;

use clap::Parser;
use common::cli::{output, scenario_file, text, thumper};
use serde_norway::Value;

const N: u32 = 3;
const IMAGE: &str = "registry.example/thumper:1";

/// Oldest Kubernetes with `backoffLimitPerIndex` on by default (beta in 1.29, GA in 1.33).
const OLDEST_KUBERNETES: &str = "1.29.0";

/// A valid scenario whose text has what a YAML emitter could change: a tab, trailing spaces,
/// quotes, non-ASCII, blank lines at the end.
const SCENARIO: &str = "# Steady\tload, \"quoted\" and naïve — for the manifest test.   \n\
name = \"Manifest_Test\"\n\
executor = \"constant-vus\"\n\
vus = 2\n\
duration = \"10s\"\n\
description = 'single \\ quoted: # not a comment'\n\
\n\
[[queries]]\n\
name = \"health\"\n\
sql = \"SELECT 1\"\n\
weight = 1\n\
\n\n";

fn manifest(dir: &Path, extra: &[&str]) -> (String, Vec<Value>) {
    let scenario = scenario_file(dir, "manifest-test", SCENARIO);
    let mut c = thumper();
    c.args(["fleet", "manifest"])
        .arg(&scenario)
        .args(["--parallelism", &N.to_string(), "--image", IMAGE])
        .args(extra);
    let o = output(c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let yaml = String::from_utf8(o.stdout).expect("UTF-8 manifests");
    let docs = serde_norway::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|d: &Value| !d.is_null())
        .collect();
    (yaml, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

fn args(job: &Value) -> Vec<String> {
    job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    &args[i + 1]
}

fn env_names(job: &Value) -> Vec<String> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("container env")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn workers_are_an_indexed_job_wired_to_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (_, docs) = manifest(dir.path(), &[]);
    // The name defaults to the scenario's, sanitised to a DNS label.
    let name = "manifest-test";

    let workers = find(&docs, "Job", &format!("{name}-workers"));
    let spec = &workers["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    assert_eq!(spec["completions"].as_u64(), Some(N.into()));
    assert_eq!(spec["parallelism"].as_u64(), Some(N.into()));
    assert_eq!(spec["backoffLimitPerIndex"].as_u64(), Some(0));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));

    // The segment is the completion index of N, through an env var the kubelet expands.
    let worker_args = args(workers);
    assert_eq!(worker_args[..2], ["run", "/scenario/manifest-test.toml"]);
    let segment = flag(&worker_args, "--segment");
    let var = segment
        .strip_prefix("$(")
        .and_then(|s| s.strip_suffix(&format!(")/{N}")))
        .unwrap_or_else(|| panic!("--segment {segment} is not $(VAR)/{N}"));
    let index_env = pod["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some(var))
        .unwrap_or_else(|| panic!("{var} is not defined in the worker's env"));
    assert_eq!(
        index_env["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
    );
    assert_eq!(flag(&worker_args, "--target"), "$(DATABASE_URL)");
    assert_eq!(flag(&worker_args, "--pool-mode"), "transaction");
    // Workers get the application role only: they never migrate or seed.
    assert!(!env_names(workers).contains(&"ADMIN_DATABASE_URL".to_owned()));

    // The scenario the pods mount is the file, byte for byte.
    let config = find(&docs, "ConfigMap", &format!("{name}-scenario"));
    assert_eq!(
        config["data"]["manifest-test.toml"].as_str(),
        Some(SCENARIO)
    );
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["configMap"]["name"].as_str() == Some(&format!("{name}-scenario"))));

    // One coordinator for the N workers, on the same fleet id and NATS.
    let coordinator = find(&docs, "Job", &format!("{name}-coordinator"));
    let cspec = &coordinator["spec"];
    assert_eq!(cspec["completions"].as_u64(), Some(1));
    assert_eq!(cspec["backoffLimit"].as_u64(), Some(0));
    assert_eq!(
        cspec["template"]["spec"]["restartPolicy"].as_str(),
        Some("Never")
    );
    let coordinator_args = args(coordinator);
    assert_eq!(
        coordinator_args[..3],
        ["fleet", "coordinate", "/scenario/manifest-test.toml"]
    );
    assert_eq!(flag(&coordinator_args, "--workers"), N.to_string());
    assert_eq!(
        flag(&coordinator_args, "--fleet-id"),
        flag(&worker_args, "--fleet-id")
    );
    assert_eq!(flag(&coordinator_args, "--fleet-id"), name);
    let nats = flag(&worker_args, "--fleet-nats");
    assert_eq!(flag(&coordinator_args, "--nats"), nats);
    assert_eq!(nats, format!("nats://{name}-nats:4222"));
    assert_eq!(
        flag(&coordinator_args, "--admin-url"),
        "$(ADMIN_DATABASE_URL)"
    );

    // Without --nats the manifests run NATS behind the Service the URL names.
    find(&docs, "Deployment", &format!("{name}-nats"));
    find(&docs, "Service", &format!("{name}-nats"));

    // The coordinator's reports outlive its pod.
    find(&docs, "PersistentVolumeClaim", &format!("{name}-reports"));
    assert!(cspec["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v["persistentVolumeClaim"]["claimName"].as_str()
            == Some(&format!("{name}-reports"))));
}

#[test]
fn an_existing_nats_is_used_and_none_is_run() {
    let dir = tempfile::tempdir().unwrap();
    let url = "nats://nats.infra.svc:4222";
    let (_, docs) = manifest(
        dir.path(),
        &["--nats", url, "--name", "load-1", "--namespace", "load"],
    );
    assert!(
        !docs
            .iter()
            .any(|d| matches!(d["kind"].as_str(), Some("Deployment" | "Service"))),
        "no NATS objects with --nats"
    );
    let workers = find(&docs, "Job", "load-1-workers");
    let coordinator = find(&docs, "Job", "load-1-coordinator");
    assert_eq!(flag(&args(workers), "--fleet-nats"), url);
    assert_eq!(flag(&args(coordinator), "--nats"), url);
    assert_eq!(flag(&args(coordinator), "--fleet-id"), "load-1");
    for d in &docs {
        assert_eq!(d["metadata"]["namespace"].as_str(), Some("load"));
    }
}

/// Runs `kubernetes-validate --strict` (unknown fields are errors) on `file`; `version` None is
/// the newest Kubernetes the tool bundles.
fn kubernetes_validate(file: &Path, version: Option<&str>) {
    let mut c = Command::new("kubernetes-validate");
    c.arg("--strict").arg("--quiet");
    if let Some(v) = version {
        c.args(["--kubernetes-version", v]);
    }
    let o = match c.arg(file).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubernetes-validate is not installed: pip install kubernetes-validate \
             (.ci/run installs it); the manifests are not checked without it"
        ),
        Err(e) => panic!("kubernetes-validate: {e}"),
    };
    assert!(
        o.status.success(),
        "kubernetes-validate --strict {}: {}{}",
        version.unwrap_or("(newest bundled)"),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn manifests_pass_strict_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    for (file, extra) in [
        ("own-nats.yaml", &[][..]),
        (
            "given-nats.yaml",
            &[
                "--nats",
                "nats://nats:4222",
                "--namespace",
                "load",
                "--pool-mode",
                "none",
            ][..],
        ),
    ] {
        let (yaml, _) = manifest(dir.path(), extra);
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        kubernetes_validate(&path, Some(OLDEST_KUBERNETES));
        kubernetes_validate(&path, None);
    }
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = scenario_file(dir.path(), "good", SCENARIO);
    let broken = scenario_file(dir.path(), "broken", "name = \"x\"\nbogus = 1\n");
    let cases: [(&Path, &[&str], &str); 6] = [
        (&good, &["--parallelism", "0"], "--parallelism 0"),
        (
            &good,
            &["--parallelism", "2", "--name", "Not_A_Label"],
            "--name",
        ),
        (&good, &["--parallelism", "2", "--name", "9lives"], "--name"),
        (
            &good,
            &["--parallelism", "2", "--worker-memory", "lots"],
            "--worker-memory",
        ),
        (&broken, &["--parallelism", "2"], "broken.toml:2"),
        (
            &dir.path().join("missing.toml"),
            &["--parallelism", "2"],
            "missing.toml",
        ),
    ];
    for (scenario, extra, message) in cases {
        let mut c = thumper();
        c.args(["fleet", "manifest"])
            .arg(scenario)
            .args(["--image", IMAGE])
            .args(extra);
        let o = output(c);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {t}");
        assert!(
            t.contains(message),
            "{extra:?}: expected {message:?} in {t}"
        );
        assert!(
            o.stdout.is_empty(),
            "{extra:?}: nothing on stdout on bad input"
        );
    }
}

#[test]
fn a_local_fleet_still_parses_beside_the_subcommands() {
    use thumper::cli::{Cli, Command, FleetAction};
    let cli = Cli::try_parse_from([
        "thumper",
        "fleet",
        "--local",
        "2",
        "scenarios/steady.toml",
        "--quick",
    ])
    .expect("fleet --local parses");
    match cli.command {
        Command::Fleet {
            action: None,
            scenario: Some(s),
            local: Some(2),
            args,
        } => {
            assert_eq!(s, Path::new("scenarios/steady.toml"));
            assert!(args.quick);
        }
        other => panic!("{other:?}"),
    }
    let cli = Cli::try_parse_from([
        "thumper",
        "fleet",
        "manifest",
        "s.toml",
        "--parallelism",
        "2",
        "--image",
        "i",
    ])
    .expect("fleet manifest parses");
    assert!(matches!(
        cli.command,
        Command::Fleet {
            action: Some(FleetAction::Manifest(_)),
            ..
        }
    ));
    // A local fleet still needs both its scenario and --local.
    assert!(Cli::try_parse_from(["thumper", "fleet", "scenarios/steady.toml"]).is_err());
    assert!(Cli::try_parse_from(["thumper", "fleet", "--local", "2"]).is_err());
}

/// No Docker engine here: the Dockerfile is checked as text for what the manifests and
/// docker-compose.yml rely on.
#[test]
fn the_dockerfile_builds_a_thumper_image_the_pods_can_run() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .collect();
    assert!(
        stages.contains(&"thumper"),
        "a `thumper` target: {stages:?}"
    );
    // `docker build .` and the compose service (no target) build the last stage.
    assert_eq!(stages.last(), Some(&"gateway"));
    let thumper_stage = dockerfile
        .split("AS thumper\n")
        .nth(1)
        .and_then(|s| s.split("\nFROM ").next())
        .unwrap();
    let uid = thumper::fleet::manifest::IMAGE_UID;
    assert!(
        thumper_stage.contains(&format!("USER {uid}:{uid}")),
        "the thumper image runs as the numeric user the pods' securityContext names"
    );
    assert!(thumper_stage.contains("ENTRYPOINT [\"/usr/local/bin/thumper\"]"));
    // `fleet coordinate` migrates: ./migrations from the image's working directory.
    assert!(thumper_stage.contains("COPY migrations /opt/thumper/migrations"));
    assert!(thumper_stage.contains("WORKDIR /opt/thumper"));
    // The HTML report's templates are found through askama.toml at compile time.
    assert!(dockerfile.contains("askama.toml"));
}
