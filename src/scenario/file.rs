//! The scenario file as written (serde), before validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole file. Every value a validation error can point at is [`Spanned`], so the error names
/// the line it is on however the file writes it: a `[table]`, an inline table, a dotted key or an
/// array of tables written inline. (Tables are never spanned themselves: toml 0.8 cannot span a
/// table made of dotted keys.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Required without `[scenarios.*]`, refused with them (each scenario has its own).
    pub executor: Option<Spanned<String>>,
    // Closed model.
    pub start_vus: Option<u32>,
    pub vus: Option<u32>,
    pub duration: Option<Spanned<String>>,
    pub graceful_ramp_down: Option<Spanned<String>>,
    // Open model.
    pub rate: Option<Spanned<u32>>,
    pub start_rate: Option<u32>,
    pub time_unit: Option<Spanned<String>>,
    pub pre_allocated_vus: Option<Spanned<u32>>,
    pub max_vus: Option<Spanned<u32>>,
    pub on_busy: Option<Spanned<super::plan::OnBusy>>,
    // Both.
    #[serde(default)]
    pub stages: Vec<StageDef>,
    pub think_time: Option<Spanned<String>>,
    pub graceful_stop: Option<Spanned<String>>,
    pub protocol: Option<Spanned<Protocol>>,
    #[serde(default)]
    pub connection: ConnectionTable,
    #[serde(default)]
    pub dataset: DatasetTable,
    #[serde(default)]
    pub queries: Vec<QueryEntry>,
    /// pgbench scripts in the mix (`[[scripts]]`), weighted as queries are.
    #[serde(default)]
    pub scripts: Vec<ScriptEntry>,
    /// The scripts' shared variables (`[pgbench]`: scale, random_seed, define).
    #[serde(default)]
    pub pgbench: PgbenchTable,
    /// How the community (tenant) of each draw is chosen (`[tenants]`).
    #[serde(default)]
    pub tenants: TenantsTable,
    #[serde(default)]
    pub thresholds: BTreeMap<Spanned<String>, Vec<Spanned<ThresholdDef>>>,
    /// Settings for the embedded stack (`[stack.pgbouncer]`), handed to the stack as they are.
    pub stack: Option<toml::Table>,
    /// The gateway workload (`[gateway]`), handed to the gateway harness as it is.
    pub gateway: Option<toml::Table>,
    /// Several scenarios in one run (`[scenarios.NAME]`); without it the file is one scenario.
    #[serde(default)]
    pub scenarios: BTreeMap<Spanned<String>, ScenarioTable>,
    /// Data feeders (`[[feeders]]`): rows whose columns are query parameters.
    #[serde(default)]
    pub feeders: Vec<FeederEntry>,
    /// SQL run once before the load (`[setup] sql = "..."`).
    pub setup: Option<SqlTable>,
    /// SQL run once after the load, however it ended (`[teardown] sql = "..."`).
    pub teardown: Option<SqlTable>,
}

/// One `[scenarios.NAME]` table: a load shape of its own, its queries and its start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioTable {
    pub executor: Option<Spanned<String>>,
    // Closed model.
    pub start_vus: Option<u32>,
    pub vus: Option<u32>,
    pub duration: Option<Spanned<String>>,
    pub graceful_ramp_down: Option<Spanned<String>>,
    // Open model.
    pub rate: Option<Spanned<u32>>,
    pub start_rate: Option<u32>,
    pub time_unit: Option<Spanned<String>>,
    pub pre_allocated_vus: Option<Spanned<u32>>,
    pub max_vus: Option<Spanned<u32>>,
    pub on_busy: Option<Spanned<super::plan::OnBusy>>,
    // Both.
    #[serde(default)]
    pub stages: Vec<StageDef>,
    pub think_time: Option<Spanned<String>>,
    pub graceful_stop: Option<Spanned<String>>,
    pub protocol: Option<Spanned<Protocol>>,
    #[serde(default)]
    pub connection: ConnectionTable,
    /// Queries of its own (`[[scenarios.NAME.queries]]`).
    #[serde(default)]
    pub queries: Vec<QueryEntry>,
    /// File-level `[[queries]]` it runs, by name.
    pub use_queries: Option<Spanned<Vec<Spanned<String>>>>,
    /// Offset from the run's start (default 0s).
    pub start_time: Option<Spanned<String>>,
    /// Start when that scenario ends instead.
    pub start_after: Option<Spanned<String>>,
}

/// `[setup]` / `[teardown]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlTable {
    pub sql: Spanned<String>,
}

/// One `[[feeders]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeederEntry {
    pub name: Spanned<String>,
    /// A CSV file with a header row, relative to the scenario file.
    pub file: Option<Spanned<String>>,
    /// Or the rows of a query, run once before the load (after `[setup]`).
    pub sql: Option<Spanned<String>>,
    #[serde(default)]
    pub strategy: FeedStrategy,
}

/// How a feeder hands out its rows (Gatling's strategies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedStrategy {
    /// Each row once, in order; the scenario ends when they run out. Split across a fleet.
    #[default]
    Queue,
    /// Each row once, in a random order; ends like `queue`.
    Shuffle,
    /// A random row each iteration, for ever.
    Random,
    /// The rows in order, starting over at the end.
    Circular,
}

impl FeedStrategy {
    /// Whether each row is used once (and the scenario ends when they run out).
    pub fn once(self) -> bool {
        matches!(self, FeedStrategy::Queue | FeedStrategy::Shuffle)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageDef {
    pub duration: Spanned<String>,
    pub target: u32,
}

/// One threshold expression. Spanned from outside: an untagged enum buffers its input, which
/// loses the spans of anything inside it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ThresholdDef {
    Plain(String),
    Detailed {
        threshold: String,
        #[serde(default)]
        abort_on_fail: bool,
        delay_abort_eval: Option<String>,
    },
}

/// `[connection]` as written; unset values take [`ConnectionDef::default`]'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectionTable {
    pub topology: Option<Topology>,
    pub pools: Option<Spanned<u32>>,
    pub pool_size: Option<Spanned<u32>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub min_backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
}

/// `[dataset]` as written; unset values take [`crate::dataset::DatasetSpec::default`]'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatasetTable {
    pub seed: Option<u64>,
    pub communities: Option<Spanned<u32>>,
    pub profiles_per_community: Option<Spanned<u32>>,
    pub rules_per_community: Option<u32>,
    pub badges_per_community: Option<u32>,
    pub audit_logs_per_community: Option<u32>,
}

/// One `[[scripts]]` entry as written: a pgbench script file (relative to the scenario file)
/// or one of pgbench's builtins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScriptEntry {
    pub file: Option<Spanned<String>>,
    pub builtin: Option<Spanned<String>>,
    pub weight: Option<Spanned<u32>>,
}

/// `[pgbench]` as written: what pgbench's `-s`, `--random-seed` and `-D` give its scripts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PgbenchTable {
    pub scale: Option<Spanned<i64>>,
    pub random_seed: Option<u64>,
    #[serde(default)]
    pub define: BTreeMap<String, Spanned<String>>,
}

/// `[tenants]` as written: the distribution of the community drawn for each query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantsTable {
    pub distribution: Option<Spanned<String>>,
    pub parameter: Option<Spanned<f64>>,
    pub seed: Option<u64>,
}

/// One `[[queries]]` entry as written; validated into a [`QueryDef`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryEntry {
    pub name: Spanned<String>,
    pub sql: Spanned<String>,
    pub weight: Option<Spanned<u32>>,
    pub params: Option<Spanned<Vec<ParamEntry>>>,
    #[serde(default)]
    pub tenant_scoped: bool,
}

/// A parameter as written: a dataset value (`wallet`) or a feeder column (`FEEDER.COLUMN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamEntry {
    Kind(ParamKind),
    Column { feeder: String, column: String },
}

impl<'de> Deserialize<'de> for ParamEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Some((feeder, column)) = text.split_once('.') {
            return Ok(ParamEntry::Column {
                feeder: feeder.trim().to_owned(),
                column: column.trim().to_owned(),
            });
        }
        let kind = match text.as_str() {
            "community_id" => ParamKind::CommunityId,
            "guild_id" => ParamKind::GuildId,
            "profile_id" => ParamKind::ProfileId,
            "discord_user_id" => ParamKind::DiscordUserId,
            "wallet" => ParamKind::Wallet,
            other => return Err(serde::de::Error::custom(format!(
                "unknown variant `{other}`, expected one of `community_id`, `guild_id`, `profile_id`, `discord_user_id`, `wallet`, or a feeder column `FEEDER.COLUMN`"
            ))),
        };
        Ok(ParamEntry::Kind(kind))
    }
}

/// The wire protocol, as pgbench's `-M` offers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// One text message per statement; parameters are quoted into the SQL.
    Simple,
    /// Parse/Bind/Execute with the unnamed statement: works through transaction pooling.
    #[default]
    Extended,
    /// Named statements prepared once per connection: breaks under transaction pooling.
    Prepared,
}

/// How virtual users reach the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Every VU has its own client connection, as k6 VUs do.
    #[default]
    PerVu,
    /// VUs share `pools` application-side pools of `pool_size` connections (deadpool-postgres),
    /// as the application's containers do.
    Pooled,
}

/// The `[connection]` table: how VUs get their database clients.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionDef {
    /// Whether each VU connects on its own or draws from shared pools.
    pub topology: Topology,
    /// Number of application-side pools (pooled topology).
    pub pools: u32,
    /// Connections per pool (pooled topology).
    pub pool_size: u32,
    /// Time allowed for a connection (or a pooled checkout) before it counts as an error.
    pub connect_timeout: String,
    /// First reconnect delay after a broken connection; doubles up to `max_backoff`.
    pub min_backoff: String,
    /// Longest reconnect delay (text duration).
    pub max_backoff: String,
}

impl Default for ConnectionDef {
    fn default() -> Self {
        ConnectionDef {
            topology: Topology::PerVu,
            pools: 4,
            pool_size: 10,
            connect_timeout: "5s".into(),
            min_backoff: "50ms".into(),
            max_backoff: "2s".into(),
        }
    }
}

/// One entry of the query mix.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryDef {
    /// Name used as the `query` tag (`query_duration{query:NAME}`).
    pub name: String,
    /// The SQL text; parameters are `$1`, `$2`, ...
    pub sql: String,
    /// Relative share of iterations that run this query.
    #[serde(default = "one")]
    pub weight: u32,
    /// Parameters `$1, $2, ...`, drawn per execution from one random profile of the dataset.
    #[serde(default)]
    pub params: Vec<ParamKind>,
    /// Run inside a transaction that sets `app.current_tenant` (transaction-local) to a random
    /// community, and check that every returned row's first column is that community's id.
    #[serde(default)]
    pub tenant_scoped: bool,
}

fn one() -> u32 {
    1
}

/// A parameter drawn from the dataset. All parameters of one execution describe the same random
/// profile, so `community_id` and `wallet` together find an existing row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// The profile's community id (uuid).
    CommunityId,
    /// The community's Discord guild id (bigint).
    GuildId,
    /// The profile's id (uuid).
    ProfileId,
    /// The profile's Discord user id (bigint).
    DiscordUserId,
    /// The profile's wallet address (text).
    Wallet,
    /// Column `n` of the scenario's feeder row, sent as text for the server to parse as the
    /// parameter's type.
    #[serde(skip_deserializing)]
    Column(u16),
}
