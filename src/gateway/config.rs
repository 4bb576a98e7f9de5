//! The gateway's configuration: environment variables over an optional YAML file, validated up
//! front so a bad setting stops the process with a message that names it instead of surfacing
//! later as a panic inside a shard.
//!
//! | YAML key               | environment                    | default                      |
//! |------------------------|--------------------------------|------------------------------|
//! | `token`                | `DISCORD_TOKEN`                | required                     |
//! | `shard_id`             | `GATEWAY_SHARD_ID`             | 0                            |
//! | `shards` (`"0-3"`)     | `GATEWAY_SHARDS`               | the one `shard_id`           |
//! | `total_shards`         | `GATEWAY_TOTAL_SHARDS`         | 1                            |
//! | `gateway_url`          | `GATEWAY_URL`                  | `wss://gateway.discord.gg`   |
//! | `identify_concurrency` | `GATEWAY_IDENTIFY_CONCURRENCY` | 1 (`unlimited`: no wait)     |
//! | `cache`                | `GATEWAY_CACHE`                | `guilds` (`none`, `members`) |
//! | `nats_url`             | `NATS_URL`                     | none: count and drop         |
//! | `subject_prefix`       | `GATEWAY_SUBJECT_PREFIX`       | `arrakis.gateway`            |
//! | `log_format`           | `GATEWAY_LOG_FORMAT`           | `json` (`text`)              |
//! | `stats_interval_s`     | `GATEWAY_STATS_INTERVAL_S`     | 30                           |
//!
//! The file is named by `GATEWAY_CONFIG` or `--config PATH`. An empty variable counts as unset.
//! Either shard variable in the environment overrides both shard keys of the file. An error
//! names the variable and the file key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Discord's own gateway, used when no URL override is given.
pub const DISCORD_GATEWAY_URL: &str = "wss://gateway.discord.gg";

/// What the gateway keeps in memory about Discord's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Nothing: forward only.
    None,
    /// Guilds and their roles and channels (the token-gating bot's needs).
    #[default]
    Guilds,
    /// Guilds plus every member and user (about 1 KB per member).
    Members,
}

impl FromStr for CacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(CacheMode::None),
            "guilds" => Ok(CacheMode::Guilds),
            "members" => Ok(CacheMode::Members),
            _ => Err("expected none, guilds or members".into()),
        }
    }
}

/// How many shards may identify per 5 seconds. Written as a number or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IdentifyConcurrencyText")]
pub enum IdentifyConcurrency {
    /// Discord's `max_concurrency`: this many identifies per 5-second window.
    PerFiveSeconds(u16),
    /// No wait at all; only for servers that do not rate-limit identifies (the fake).
    Unlimited,
}

/// The two spellings a file may use: `4` or `"unlimited"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdentifyConcurrencyText {
    Number(u64),
    Text(String),
}

impl TryFrom<IdentifyConcurrencyText> for IdentifyConcurrency {
    type Error = String;
    fn try_from(v: IdentifyConcurrencyText) -> Result<Self, String> {
        match v {
            IdentifyConcurrencyText::Number(n) => n.to_string().parse(),
            IdentifyConcurrencyText::Text(s) => s.parse(),
        }
    }
}

impl FromStr for IdentifyConcurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "unlimited" {
            return Ok(IdentifyConcurrency::Unlimited);
        }
        match s.parse::<u16>() {
            Ok(n) if n > 0 => Ok(IdentifyConcurrency::PerFiveSeconds(n)),
            _ => Err("expected a positive number or `unlimited`".into()),
        }
    }
}

/// How the gateway writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err("expected json or text".into()),
        }
    }
}

/// The shards this process runs, `first..=last` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRange {
    /// The first shard id this process runs.
    pub first: u32,
    /// The last shard id this process runs (inclusive).
    pub last: u32,
    /// The bot's total shard count across all processes.
    pub total: u32,
}

impl ShardRange {
    /// The shard ids this process runs.
    pub fn ids(&self) -> std::ops::RangeInclusive<u32> {
        self.first..=self.last
    }
}

/// A validated gateway configuration.
#[derive(Clone, PartialEq)]
pub struct GatewayConfig {
    /// The bot token (kept out of `Debug` output).
    pub token: String,
    /// Which shards this process runs.
    pub shards: ShardRange,
    /// Gateway WebSocket URL: Discord's, or a fake's in tests.
    pub gateway_url: String,
    /// How fast shards may identify.
    pub identify_concurrency: IdentifyConcurrency,
    /// What is kept of Discord's state.
    pub cache: CacheMode,
    /// NATS server to publish to; `None` counts envelopes and drops them.
    pub nats_url: Option<String>,
    /// First part of every NATS subject: `<prefix>.<shard>.<EVENT_TYPE>`.
    pub subject_prefix: String,
    /// How logs are written.
    pub log_format: LogFormat,
    /// How often the stats reporter logs the shard counters.
    pub stats_interval: Duration,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("token", &"<redacted>")
            .field("shards", &self.shards)
            .field("gateway_url", &self.gateway_url)
            .field("identify_concurrency", &self.identify_concurrency)
            .field("cache", &self.cache)
            .field("nats_url", &self.nats_url)
            .field("subject_prefix", &self.subject_prefix)
            .field("log_format", &self.log_format)
            .field("stats_interval", &self.stats_interval)
            .finish()
    }
}

/// A configuration that cannot run, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No token was given.
    #[error("no bot token: set DISCORD_TOKEN (or `token` in the config file)")]
    MissingToken,
    /// A shard id is not below the total shard count.
    #[error(
        "shard id {id} is out of range: it must be below the total shard count {total} \
         (GATEWAY_SHARD_ID/GATEWAY_SHARDS and GATEWAY_TOTAL_SHARDS)"
    )]
    ShardOutOfRange {
        /// The shard id.
        id: u32,
        /// The total shard count.
        total: u32,
    },
    /// A setting's value does not parse or is out of range.
    #[error(
        "invalid {key} (`{}` in the config file) {value:?}: {reason}",
        file_key(key)
    )]
    Invalid {
        /// The setting, named by its environment variable (even when the file set it).
        key: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The gateway URL is not a usable WebSocket URL.
    #[error("invalid GATEWAY_URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid YAML or holds an unknown key.
    #[error("config file {path}: {source}")]
    ParseFile {
        /// The file's path.
        path: PathBuf,
        /// The YAML error.
        source: serde_norway::Error,
    },
}

/// The YAML file: every key optional, unknown keys rejected (a typo must not pass silently).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    token: Option<String>,
    shard_id: Option<u32>,
    shards: Option<String>,
    total_shards: Option<u32>,
    gateway_url: Option<String>,
    identify_concurrency: Option<serde_norway::Value>,
    cache: Option<String>,
    nats_url: Option<String>,
    subject_prefix: Option<String>,
    log_format: Option<String>,
    stats_interval_s: Option<u64>,
}

fn yaml_scalar(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn parse_value<T: FromStr>(key: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.parse::<T>().map_err(|e| ConfigError::Invalid {
        key,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// The config file's key of the setting named by environment variable `env`.
fn file_key(env: &str) -> String {
    match env {
        "DISCORD_TOKEN" => "token".to_owned(),
        other => other
            .strip_prefix("GATEWAY_")
            .unwrap_or(other)
            .to_ascii_lowercase(),
    }
}

/// Parses `"3"` or `"0-3"` (inclusive).
fn parse_shard_span(value: &str) -> Result<(u32, u32), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        key: "GATEWAY_SHARDS",
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let (first, last) = match value.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (value.trim(), value.trim()),
    };
    let first: u32 = first
        .parse()
        .map_err(|_| invalid("expected FIRST-LAST, e.g. 0-3"))?;
    let last: u32 = last
        .parse()
        .map_err(|_| invalid("expected FIRST-LAST, e.g. 0-3"))?;
    if last < first {
        return Err(invalid("the last shard comes before the first"));
    }
    Ok((first, last))
}

/// Checks a gateway URL the way the shard will use it (`{url}/?v=10&encoding=json`).
fn validate_url(url: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let full = format!("{}/?v=10&encoding=json", url.trim_end_matches('/'));
    let uri: tokio_tungstenite::tungstenite::http::Uri = full
        .parse()
        .map_err(|e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => {
            return Err(bad(
                "wss:// needs TLS, which this build of the gateway leaves out; use a ws:// URL",
            ))
        }
        _ => return Err(bad("expected a ws:// URL such as ws://127.0.0.1:8080")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(())
}

impl GatewayConfig {
    /// Loads the file (if `file` is given) and overlays the environment read through `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ConfigError> {
        let file_config = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.to_owned(),
                        source,
                    })?;
                parse_file(&text).map_err(|source| ConfigError::ParseFile {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file_config, env)
    }

    fn resolve(
        file: FileConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ConfigError> {
        let env = |key: &str| env(key).filter(|v| !v.trim().is_empty());

        let token = env("DISCORD_TOKEN")
            .or(file.token)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty() && t != "Bot")
            .ok_or(ConfigError::MissingToken)?;

        let total = match env("GATEWAY_TOTAL_SHARDS") {
            Some(v) => parse_value::<u32>("GATEWAY_TOTAL_SHARDS", &v)?,
            None => file.total_shards.unwrap_or(1),
        };
        if total == 0 {
            return Err(ConfigError::Invalid {
                key: "GATEWAY_TOTAL_SHARDS",
                value: "0".into(),
                reason: "there must be at least one shard".into(),
            });
        }
        // The environment over the file, the span over the single id within each.
        let single = |v: &str| parse_value::<u32>("GATEWAY_SHARD_ID", v).map(|id| (id, id));
        let (first, last) = match (env("GATEWAY_SHARDS"), env("GATEWAY_SHARD_ID")) {
            (Some(span), _) => parse_shard_span(&span)?,
            (None, Some(id)) => single(&id)?,
            (None, None) => match (file.shards, file.shard_id) {
                (Some(span), _) => parse_shard_span(&span)?,
                (None, id) => (id.unwrap_or(0), id.unwrap_or(0)),
            },
        };
        if last >= total {
            return Err(ConfigError::ShardOutOfRange { id: last, total });
        }

        let gateway_url = env("GATEWAY_URL")
            .or(file.gateway_url)
            .unwrap_or_else(|| DISCORD_GATEWAY_URL.to_owned());
        validate_url(&gateway_url)?;

        let identify_concurrency = match env("GATEWAY_IDENTIFY_CONCURRENCY")
            .or(file.identify_concurrency.as_ref().map(yaml_scalar))
        {
            Some(v) => parse_value("GATEWAY_IDENTIFY_CONCURRENCY", &v)?,
            None => IdentifyConcurrency::PerFiveSeconds(1),
        };
        let cache = match env("GATEWAY_CACHE").or(file.cache) {
            Some(v) => parse_value("GATEWAY_CACHE", &v)?,
            None => CacheMode::default(),
        };
        let log_format = match env("GATEWAY_LOG_FORMAT").or(file.log_format) {
            Some(v) => parse_value("GATEWAY_LOG_FORMAT", &v)?,
            None => LogFormat::default(),
        };
        let stats_interval_s = match env("GATEWAY_STATS_INTERVAL_S") {
            Some(v) => parse_value::<u64>("GATEWAY_STATS_INTERVAL_S", &v)?,
            None => file.stats_interval_s.unwrap_or(30),
        };
        if stats_interval_s == 0 {
            return Err(ConfigError::Invalid {
                key: "GATEWAY_STATS_INTERVAL_S",
                value: "0".into(),
                reason: "the stats interval must be at least 1 second".into(),
            });
        }
        let subject_prefix = env("GATEWAY_SUBJECT_PREFIX")
            .or(file.subject_prefix)
            .unwrap_or_else(|| "arrakis.gateway".to_owned());
        if subject_prefix.contains([' ', '*', '>']) || subject_prefix.ends_with('.') {
            return Err(ConfigError::Invalid {
                key: "GATEWAY_SUBJECT_PREFIX",
                value: subject_prefix,
                reason: "a NATS subject prefix has no spaces or wildcards and no trailing dot"
                    .into(),
            });
        }

        Ok(GatewayConfig {
            token,
            shards: ShardRange { first, last, total },
            gateway_url,
            identify_concurrency,
            cache,
            nats_url: env("NATS_URL").or(file.nats_url),
            subject_prefix,
            log_format,
            stats_interval: Duration::from_secs(stats_interval_s),
        })
    }
}

fn parse_file(text: &str) -> Result<FileConfig, serde_norway::Error> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_norway::from_str(text)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)], file: &str) -> Result<GatewayConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GatewayConfig::resolve(parse_file(file).unwrap(), |k| vars.get(k).cloned())
    }

    const LOCAL: (&str, &str) = ("GATEWAY_URL", "ws://127.0.0.1:9000");

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            &[("DISCORD_TOKEN", "t"), ("GATEWAY_SHARDS", "2-3"), LOCAL],
            "total_shards: 4\ncache: members\nidentify_concurrency: unlimited\ntoken: file\n",
        )
        .unwrap();
        assert_eq!(c.token, "t");
        assert_eq!(
            c.shards,
            ShardRange {
                first: 2,
                last: 3,
                total: 4
            }
        );
        assert_eq!(c.cache, CacheMode::Members);
        assert_eq!(c.identify_concurrency, IdentifyConcurrency::Unlimited);
        assert_eq!(c.subject_prefix, "arrakis.gateway");
        assert!(!format!("{c:?}").contains("\"t\""), "token leaks in Debug");
    }

    #[test]
    fn defaults() {
        let c = load(&[("DISCORD_TOKEN", "t"), LOCAL], "").unwrap();
        assert_eq!(c.shards.ids(), 0..=0);
        assert_eq!(c.cache, CacheMode::Guilds);
        assert_eq!(
            c.identify_concurrency,
            IdentifyConcurrency::PerFiveSeconds(1)
        );
        assert_eq!(c.nats_url, None);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |vars: &[(&str, &str)]| load(vars, "").unwrap_err().to_string();
        assert!(err(&[LOCAL]).contains("DISCORD_TOKEN"));
        assert!(err(&[("DISCORD_TOKEN", " "), LOCAL]).contains("DISCORD_TOKEN"));
        let e = err(&[
            ("DISCORD_TOKEN", "t"),
            ("GATEWAY_SHARD_ID", "4"),
            ("GATEWAY_TOTAL_SHARDS", "4"),
            LOCAL,
        ]);
        assert!(
            e.contains("shard id 4") && e.contains("total shard count 4"),
            "{e}"
        );
        assert!(err(&[("DISCORD_TOKEN", "t"), ("GATEWAY_URL", "http://x")]).contains("ws://"));
        assert!(err(&[("DISCORD_TOKEN", "t"), ("GATEWAY_URL", "ws://")]).contains("GATEWAY_URL"));
        assert!(
            err(&[("DISCORD_TOKEN", "t"), ("GATEWAY_URL", "not a url")]).contains("GATEWAY_URL")
        );
        assert!(err(&[("DISCORD_TOKEN", "t")]).contains("TLS"));
        assert!(
            err(&[("DISCORD_TOKEN", "t"), ("GATEWAY_CACHE", "all"), LOCAL])
                .contains("GATEWAY_CACHE")
        );
        assert!(
            err(&[("DISCORD_TOKEN", "t"), ("GATEWAY_SHARDS", "3-1"), LOCAL])
                .contains("GATEWAY_SHARDS")
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(parse_file("shard: 1\n").is_err());
    }

    #[test]
    fn a_shard_id_in_the_environment_overrides_the_files_span() {
        let c = load(
            &[("DISCORD_TOKEN", "t"), ("GATEWAY_SHARD_ID", "2"), LOCAL],
            "shards: \"0-3\"\ntotal_shards: 4\n",
        )
        .unwrap();
        assert_eq!(c.shards.ids(), 2..=2);
    }

    #[test]
    fn a_zero_stats_interval_is_refused_not_rounded_up() {
        let e = load(
            &[
                ("DISCORD_TOKEN", "t"),
                ("GATEWAY_STATS_INTERVAL_S", "0"),
                LOCAL,
            ],
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("GATEWAY_STATS_INTERVAL_S"), "{e}");
        let e = load(&[("DISCORD_TOKEN", "t"), LOCAL], "stats_interval_s: 0\n").unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    #[test]
    fn an_invalid_setting_names_its_file_key_too() {
        let e = load(&[("DISCORD_TOKEN", "t"), LOCAL], "cache: everything\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("GATEWAY_CACHE") && text.contains("`cache`"),
            "{text}"
        );
    }
}
