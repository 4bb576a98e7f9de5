//! The gateway binary refuses a configuration it cannot run: one clear line naming the setting
//! and a non-zero exit, before any connection is attempted. A token the server rejects ends the
//! process too (close code 4004 is fatal), rather than retrying forever.

use std::process::{Command, Output};
use std::time::Duration;

use thumper::gateway_load::fake_discord::{FakeConfig, FakeDiscord, World};

fn gateway(vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .output()
        .expect("running the gateway binary")
}

fn assert_config_error(vars: &[(&str, &str)], expected: &[&str]) {
    let out = gateway(vars);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.starts_with("gateway: configuration error:"),
        "{stderr}"
    );
    for needle in expected {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

const URL: (&str, &str) = ("GATEWAY_URL", "ws://127.0.0.1:1");

#[test]
fn missing_token() {
    assert_config_error(&[URL], &["DISCORD_TOKEN"]);
}

#[test]
fn shard_id_not_below_total() {
    assert_config_error(
        &[
            ("DISCORD_TOKEN", "t"),
            ("GATEWAY_SHARD_ID", "2"),
            ("GATEWAY_TOTAL_SHARDS", "2"),
            URL,
        ],
        &["shard id 2", "total shard count 2"],
    );
    assert_config_error(
        &[
            ("DISCORD_TOKEN", "t"),
            ("GATEWAY_SHARDS", "0-4"),
            ("GATEWAY_TOTAL_SHARDS", "4"),
            URL,
        ],
        &["shard id 4"],
    );
}

#[test]
fn bad_urls() {
    assert_config_error(
        &[
            ("DISCORD_TOKEN", "t"),
            ("GATEWAY_URL", "http://127.0.0.1:1"),
        ],
        &["GATEWAY_URL", "ws://"],
    );
    assert_config_error(
        &[("DISCORD_TOKEN", "t"), ("GATEWAY_URL", "ws://bad host")],
        &["GATEWAY_URL"],
    );
}

#[test]
fn bad_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, "shard: 1\n").unwrap();
    assert_config_error(
        &[
            ("DISCORD_TOKEN", "t"),
            URL,
            ("GATEWAY_CONFIG", path.to_str().unwrap()),
        ],
        &["gateway.yaml", "shard"],
    );
}

#[tokio::test]
async fn rejected_token_is_fatal() {
    let mut config = FakeConfig::new(World {
        guilds: 1,
        members_per_guild: 1,
        total_shards: 1,
    });
    config.token = Some("right".into());
    let fake = FakeDiscord::start(config).await.unwrap();
    let url = fake.url().to_owned();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            gateway(&[
                ("DISCORD_TOKEN", "wrong"),
                ("GATEWAY_URL", &url),
                ("GATEWAY_IDENTIFY_CONCURRENCY", "unlimited"),
                ("GATEWAY_LOG_FORMAT", "text"),
            ])
        }),
    )
    .await
    .expect("the gateway should give up on a rejected token")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("4004"), "{stderr}");
    fake.shutdown().await;
}

#[test]
fn shipped_config_file_and_scenario_parse() {
    use std::collections::HashMap;
    use thumper::gateway::GatewayConfig;

    let env: HashMap<&str, &str> = [("DISCORD_TOKEN", "t"), URL].into_iter().collect();
    let config = GatewayConfig::load(Some(std::path::Path::new("config/gateway.yaml")), |k| {
        env.get(k).map(|v| v.to_string())
    })
    .expect("config/gateway.yaml loads");
    assert_eq!(config.shards.total, 1);

    let scenario: toml::Value =
        toml::from_str(&std::fs::read_to_string("scenarios/gateway.toml").unwrap()).unwrap();
    let workload: thumper::gateway_load::GatewayWorkload = scenario["gateway"]
        .clone()
        .try_into()
        .expect("[gateway] is a GatewayWorkload");
    workload.validate().unwrap();
    assert_eq!((workload.guilds, workload.members_per_guild), (1000, 100));
}
