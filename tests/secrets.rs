//! Passwords never leave thumper: a target given as a key=value conninfo (not only as a URL)
//! keeps its password out of the terminal and out of every report file.

mod common;

use std::path::Path;

use common::cli::{output, scenario_file, summary, text, thumper};

/// `host=… port=… user=… password='…' dbname=…` for a `postgres://user:pw@host:port/db` URL,
/// and the password.
fn conninfo(url: &str) -> (String, String) {
    let config: tokio_postgres::Config = url.parse().expect("the stack's URL parses");
    let password = String::from_utf8(config.get_password().unwrap().to_vec()).unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("unexpected host {other:?}"),
    };
    let info = format!(
        "host={host} port={} user={} password='{password}' dbname={}",
        config.get_ports()[0],
        config.get_user().unwrap(),
        config.get_dbname().unwrap(),
    );
    (info, password)
}

/// Every file under `dir`, with its text.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.push((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    out
}

const SHORT: &str = r#"
name = "secret"
executor = "constant-vus"
vus = 2
duration = "1s"
think_time = "10ms"
[dataset]
communities = 5
profiles_per_community = 5
[[queries]]
name = "tenant"
sql = "SELECT community_id FROM profiles LIMIT 5"
tenant_scoped = true
[thresholds]
query_duration = ["p(99) < 0.001"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_conninfo_target_keeps_its_password_out_of_every_report() {
    let stack = common::start_default().await;
    let urls = stack.urls();
    let (target, password) = conninfo(&urls.database_url);
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "secret", SHORT);
    let reports = tmp.path().join("r");
    let md = tmp.path().join("step-summary.md");
    let mut c = thumper();
    c.arg("run")
        .arg(&file)
        .args(["--target", &target])
        .args(["--admin-url", &urls.admin_database_url])
        .args(["--pgbouncer-admin", &urls.pgbouncer_admin_url])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--summary-md")
        .arg(&md)
        .arg("--quiet");
    let o = output(c);
    // The impossible threshold fails the run, so the failure paths render the target too.
    assert_eq!(o.status.code(), Some(99), "{}", text(&o));
    let (dir, s) = summary(&reports);
    assert!(
        s.target.contains("password=***") && s.target.contains("user=arrakis_app"),
        "target in summary.json: {}",
        s.target
    );
    let mut written = files(&dir);
    assert!(written.len() >= 5, "{written:?}");
    written.push((
        md.display().to_string(),
        std::fs::read_to_string(&md).unwrap(),
    ));
    written.push(("stdout and stderr".to_owned(), text(&o)));
    for (name, body) in &written {
        assert!(!body.contains(&password), "the password is in {name}");
    }
    stack.stop().await.unwrap();
}

#[test]
fn a_conninfo_password_stays_out_of_the_login_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario_file(tmp.path(), "secret", SHORT);
    let mut c = thumper();
    c.arg("run").arg(&file).args([
        "--target",
        "host=127.0.0.1 port=1 user=u password='hunter2 x' dbname=db",
    ]);
    let o = output(c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("password=***"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}
