//! The scenario file as written (serde), before validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataset::DatasetSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub executor: String,
    // Closed model.
    pub start_vus: Option<u32>,
    pub vus: Option<u32>,
    pub duration: Option<String>,
    pub graceful_ramp_down: Option<String>,
    // Open model.
    pub rate: Option<u32>,
    pub start_rate: Option<u32>,
    pub time_unit: Option<String>,
    pub pre_allocated_vus: Option<u32>,
    pub max_vus: Option<u32>,
    pub on_busy: Option<super::plan::OnBusy>,
    // Both.
    #[serde(default)]
    pub stages: Vec<StageDef>,
    pub think_time: Option<String>,
    pub graceful_stop: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub connection: ConnectionDef,
    #[serde(default)]
    pub dataset: DatasetSpec,
    #[serde(default)]
    pub queries: Vec<QueryDef>,
    #[serde(default)]
    pub thresholds: BTreeMap<String, Vec<ThresholdDef>>,
    /// Settings for the embedded stack (`[stack.pgbouncer]`), handed to the stack as they are.
    pub stack: Option<toml::Table>,
    /// The gateway workload (`[gateway]`), handed to the gateway harness as it is.
    pub gateway: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageDef {
    pub duration: String,
    pub target: u32,
}

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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionDef {
    pub topology: Topology,
    /// Number of application-side pools (pooled topology).
    pub pools: u32,
    /// Connections per pool (pooled topology).
    pub pool_size: u32,
    /// Time allowed for a connection (or a pooled checkout) before it counts as an error.
    pub connect_timeout: String,
    /// First reconnect delay after a broken connection; doubles up to `max_backoff`.
    pub min_backoff: String,
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
}
