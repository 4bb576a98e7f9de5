//! How a virtual user gets a database client: its own connection (k6's model, and what puts
//! many clients on PgBouncer), or a checkout from one of N shared application-side pools.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Config, NoTls};

use crate::scenario::{Plan, Topology};
use crate::workload::{classify, ErrorKind, QueryFailure};

/// A target URL or pool settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The target URL does not parse.
    #[error("target URL is not a valid PostgreSQL connection string: {0} (expected postgres://user:password@host:port/dbname)")]
    Url(tokio_postgres::Error),
    /// deadpool refused the pool settings.
    #[error("cannot build connection pool: {0}")]
    Pool(String),
}

/// How VUs get clients, built once per run from the plan's `[connection]` table.
pub enum Connector {
    /// Each VU opens and keeps its own connection.
    PerVu {
        /// The target, with thumper's connect timeout and application name.
        config: Box<Config>,
        /// Time allowed to connect before it counts as a connection error.
        timeout: Duration,
    },
    /// VUs check clients out of shared pools.
    Pooled {
        /// `connection.pools` pools of `connection.pool_size` connections each.
        pools: Vec<Pool>,
        /// Time allowed for a checkout (wait or connect) before it counts as a connection error.
        timeout: Duration,
    },
}

impl Connector {
    /// The connector for `plan`'s topology against `url`; pools connect lazily.
    pub fn new(url: &str, plan: &Plan) -> Result<Connector, ConnectorError> {
        let mut config: Config = url.parse().map_err(ConnectorError::Url)?;
        config.connect_timeout(plan.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("thumper");
        }
        let timeout = plan.connect_timeout;
        Ok(match plan.connection.topology {
            Topology::PerVu => Connector::PerVu {
                config: Box::new(config),
                timeout,
            },
            Topology::Pooled => {
                let pools = (0..plan.connection.pools)
                    .map(|_| {
                        let mgr = Manager::from_config(
                            config.clone(),
                            NoTls,
                            ManagerConfig {
                                recycling_method: RecyclingMethod::Fast,
                            },
                        );
                        Pool::builder(mgr)
                            .max_size(plan.connection.pool_size as usize)
                            .wait_timeout(Some(timeout))
                            .create_timeout(Some(timeout))
                            .runtime(deadpool_postgres::Runtime::Tokio1)
                            .build()
                            .map_err(|e| ConnectorError::Pool(e.to_string()))
                    })
                    .collect::<Result<_, _>>()?;
                Connector::Pooled { pools, timeout }
            }
        })
    }

    /// Opens a dedicated connection (per-VU topology).
    pub async fn connect(config: &Config, timeout: Duration) -> Result<Client, QueryFailure> {
        match tokio::time::timeout(timeout, config.connect(NoTls)).await {
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    // The connection ends when the client is dropped or the server goes away;
                    // the VU sees the error on its next query.
                    let _ = connection.await;
                });
                Ok(client)
            }
            Ok(Err(e)) => {
                let mut f = classify(&e);
                f.kind = ErrorKind::Connection;
                Err(f)
            }
            Err(_) => Err(QueryFailure {
                kind: ErrorKind::Connection,
                class: "connect_timeout".into(),
                broken: true,
            }),
        }
    }

    /// Checks a client out of pool `i % pools` (pooled topology).
    pub async fn checkout(
        pools: &[Pool],
        i: usize,
    ) -> Result<deadpool_postgres::Object, QueryFailure> {
        let pool = &pools[i % pools.len()];
        pool.get().await.map_err(|e| {
            use deadpool_postgres::PoolError;
            let class = match &e {
                PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                    "pool_wait_timeout".to_owned()
                }
                PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => {
                    "connect_timeout".to_owned()
                }
                PoolError::Timeout(_) => "pool_recycle_timeout".to_owned(),
                PoolError::Backend(e) => classify(e).class,
                other => format!("pool: {other}"),
            };
            QueryFailure {
                kind: ErrorKind::Connection,
                class,
                broken: true,
            }
        })
    }
}
