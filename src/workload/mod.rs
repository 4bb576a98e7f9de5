//! The query catalogue: the scenario's weighted query mix, parameters drawn from the dataset,
//! execution in each wire protocol, error classification and the tenant check.

pub mod feed;
mod params;
pub mod pgbench;
pub mod script;
mod tenant;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures_util::{pin_mut, TryStreamExt};
use rand::Rng;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage, Statement};
use uuid::Uuid;

pub use crate::db::{classify, describe, ErrorKind, QueryFailure};
pub use params::{Draw, FeedRow, FeedValue};
pub use tenant::check_tenant_columns;

use crate::dataset::DatasetSpec;
use crate::scenario::{Distribution, ParamKind, Plan, Protocol, QueryDef, ScriptDef, TenantChoice};

/// Statement that sets the tenant for the current transaction only (never the session), so the
/// setting cannot leak to another client through transaction pooling.
pub const SET_TENANT_SQL: &str = "SELECT set_tenant_context($1::uuid, false)";

/// What one successful execution returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Rows returned.
    pub rows: u64,
    /// Rows of a tenant-scoped query that belong to another tenant.
    pub tenant_violations: u64,
}

/// One query of the mix, ready to execute.
#[derive(Debug)]
pub struct CatalogQuery {
    /// The query's name: its `query` tag.
    pub name: String,
    sql: String,
    params: Vec<ParamKind>,
    types: Vec<Type>,
    tenant_scoped: bool,
    /// The SQL split around `$n` placeholders, for the simple protocol: parts[i] precedes $(idx[i]).
    simple_parts: Vec<(String, usize)>,
    simple_tail: String,
}

/// The query mix with its weights, shared read-only by every virtual user.
#[derive(Debug)]
pub struct Workload {
    queries: Vec<CatalogQuery>,
    scripts: Vec<ScriptWork>,
    /// Cumulative weights over the queries then the scripts, for picking with one random number.
    cumulative: Vec<u32>,
    dataset: DatasetSpec,
    protocol: Protocol,
    tenants: TenantChoice,
    /// Draws per community, for the skew the report shows. Relaxed increments of counters
    /// spread over the communities: no lock, and VUs rarely touch the same one at once.
    drawn: Vec<AtomicU32>,
    /// The scripts' sessions (variables, random state) by client number, as pgbench seeds them.
    sessions: Vec<pgbench::Session>,
}

/// How skewed the drawn tenants were over the workloads of a run: the percentage of draws
/// that went to the busiest 1 % and the busiest 10 % of the communities (at least one each);
/// `None` before any draw.
pub fn tenant_skew(workloads: &[Arc<Workload>]) -> Option<(f64, f64)> {
    let mut counts: Vec<u64> = Vec::new();
    for w in workloads {
        for (i, c) in w.tenant_counts().enumerate() {
            match counts.get_mut(i) {
                Some(n) => *n += c,
                None => counts.push(c),
            }
        }
    }
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let share = |fraction: f64| {
        let n = ((counts.len() as f64 * fraction).ceil() as usize).max(1);
        100.0 * counts[..n.min(counts.len())].iter().sum::<u64>() as f64 / total as f64
    };
    Some((share(0.01), share(0.10)))
}

/// A pgbench script of the mix, with the query ids its SQL commands are recorded under.
#[derive(Debug)]
pub struct ScriptWork {
    /// The script as the scenario names it.
    pub def: ScriptDef,
    /// Per command of the script: the query id of its statement metrics (SQL commands only).
    pub statement_ids: Vec<Option<u16>>,
}

/// What one iteration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// Query number `n` of the mix (also its query id).
    Query(usize),
    /// Script number `n`.
    Script(usize),
}

/// Per-connection state a virtual user keeps: named statements for `protocol = "prepared"` and
/// a reusable text buffer for the simple protocol.
#[derive(Default)]
pub struct ConnectionState {
    prepared: Vec<Option<Statement>>,
    set_tenant: Option<Statement>,
    text: String,
    wallet: String,
    /// Prepared script commands (`protocol = "prepared"`).
    pub scripts: script::ScriptStatements,
}

impl Workload {
    /// The catalogue for `defs`, with parameters drawn from `dataset` and sent by `protocol`.
    pub fn new(defs: &[QueryDef], dataset: DatasetSpec, protocol: Protocol) -> Arc<Workload> {
        Arc::new(Workload::build(defs, &[], dataset, protocol))
    }

    /// The plan's workload: its queries and scripts, and sessions for up to `clients` script
    /// clients. Fails only on a `[pgbench]` definition pgbench would refuse.
    pub fn of_plan(plan: &Plan, clients: usize) -> Result<Arc<Workload>, String> {
        let mut w = Workload::build(&plan.queries, &plan.scripts, plan.dataset, plan.protocol);
        w.tenants = plan.tenants;
        if !plan.scripts.is_empty() {
            w.sessions = plan
                .script_vars
                .sessions(clients.max(1))
                .map_err(|e| format!("[pgbench] definitions: {}", e.0))?;
        }
        Ok(Arc::new(w))
    }

    fn build(
        defs: &[QueryDef],
        scripts: &[ScriptDef],
        dataset: DatasetSpec,
        protocol: Protocol,
    ) -> Workload {
        let queries: Vec<CatalogQuery> = defs.iter().map(CatalogQuery::new).collect();
        let mut next_id = queries.len();
        let scripts: Vec<ScriptWork> = scripts
            .iter()
            .map(|def| {
                let statement_ids = def
                    .script
                    .commands
                    .iter()
                    .map(|c| {
                        matches!(c.kind, pgbench::CommandKind::Sql(_)).then(|| {
                            next_id += 1;
                            (next_id - 1) as u16
                        })
                    })
                    .collect();
                ScriptWork {
                    def: def.clone(),
                    statement_ids,
                }
            })
            .collect();
        let mut total = 0;
        let weights = defs.iter().map(|d| d.weight);
        let cumulative = weights
            .chain(scripts.iter().map(|s| s.def.weight))
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Workload {
            queries,
            scripts,
            cumulative,
            dataset,
            protocol,
            tenants: TenantChoice::default(),
            drawn: (0..dataset.communities)
                .map(|_| AtomicU32::new(0))
                .collect(),
            sessions: Vec::new(),
        }
    }

    /// The scripts of the mix.
    pub fn scripts(&self) -> &[ScriptWork] {
        &self.scripts
    }

    /// Script client `client`'s session as the run starts (client numbers past the sessions
    /// made wrap around, keeping their own client id).
    pub fn session(&self, client: usize) -> pgbench::Session {
        let mut s = self.sessions[client % self.sessions.len().max(1)].clone();
        if client >= self.sessions.len() {
            s.client_id = client as i64;
            let _ = s
                .vars
                .set_value("client_id", pgbench::Value::Int(client as i64));
        }
        s
    }

    /// Picks what the next iteration runs, by weight.
    pub fn pick_item(&self, rng: &mut impl Rng) -> Item {
        let i = self.pick(rng);
        if i < self.queries.len() {
            Item::Query(i)
        } else {
            Item::Script(i - self.queries.len())
        }
    }

    /// How many draws each community got.
    fn tenant_counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.drawn
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
    }

    /// The tenant choice, for the report.
    pub fn tenant_choice(&self) -> TenantChoice {
        self.tenants
    }

    /// The queries in scenario order; a query id indexes this list.
    pub fn queries(&self) -> &[CatalogQuery] {
        &self.queries
    }

    /// How queries are sent.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Picks a query index by weight.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&0);
        if total == 0 {
            return 0;
        }
        let x = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= x)
    }

    /// Draws one random existing profile for a query's parameters: the community by the
    /// scenario's distribution (`tenant_rng`, pgbench's generator, for the skewed ones), the
    /// profile within it uniformly.
    pub fn draw(&self, rng: &mut impl Rng, tenant_rng: &mut pgbench::Prng) -> Draw {
        let community = match self.tenants.distribution {
            Distribution::Uniform => rng.random_range(0..self.dataset.communities),
            _ => self.tenants.draw(tenant_rng, self.dataset.communities),
        };
        if let Some(c) = self.drawn.get(community as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Draw {
            community,
            profile: rng.random_range(0..self.dataset.profiles_per_community),
            row: None,
        }
    }

    /// Runs query `index` with parameters from `draw` on `client`.
    pub async fn execute(
        &self,
        client: &Client,
        state: &mut ConnectionState,
        index: usize,
        draw: Draw,
    ) -> Result<Outcome, QueryFailure> {
        let q = &self.queries[index];
        // The wallet buffer is reused across executions; take it out of the state for the call.
        let mut wallet = std::mem::take(&mut state.wallet);
        let values = params::Values::new(&self.dataset, draw, &mut wallet);
        let result = match (self.protocol, q.tenant_scoped) {
            (Protocol::Simple, _) => self.execute_simple(client, state, q, &values).await,
            (_, false) => self.execute_extended(client, state, index, &values).await,
            (_, true) => {
                self.execute_tenant_extended(client, state, index, &values)
                    .await
            }
        };
        state.wallet = wallet;
        result.map_err(|e| classify(&e))
    }

    async fn execute_simple(
        &self,
        client: &Client,
        state: &mut ConnectionState,
        q: &CatalogQuery,
        values: &params::Values<'_>,
    ) -> Result<Outcome, tokio_postgres::Error> {
        use std::fmt::Write;
        let text = &mut state.text;
        text.clear();
        // One Query message with several statements is one implicit transaction: the tenant
        // set by set_tenant_context(.., local) holds for the query and ends with it. No explicit
        // BEGIN/COMMIT: after a failing statement an explicit block would stay open and aborted
        // (every later query `25P02`), and through transaction pooling it would pin a server
        // connection; an implicit one rolls back and the session is idle again at once.
        if q.tenant_scoped {
            let _ = write!(
                text,
                "SELECT set_tenant_context('{}'::uuid, false);",
                values.community
            );
        }
        for (part, idx) in &q.simple_parts {
            text.push_str(part);
            values.write_literal(q.params[*idx], text);
        }
        text.push_str(&q.simple_tail);
        let stream = client.simple_query_raw(text).await?;
        pin_mut!(stream);
        let mut outcome = Outcome::default();
        // Only a tenant-scoped query needs the tenant as text.
        let mut tenant_buf = [0u8; 36];
        let tenant: &str = if q.tenant_scoped {
            values.community_text(&mut tenant_buf)
        } else {
            ""
        };
        // A tenant-scoped batch returns set_tenant_context's row first: count rows from the
        // second row description on.
        let mut descriptions = 0;
        while let Some(msg) = stream.try_next().await? {
            match msg {
                SimpleQueryMessage::RowDescription(_) => descriptions += 1,
                SimpleQueryMessage::Row(row) => {
                    if q.tenant_scoped {
                        if descriptions < 2 {
                            continue;
                        }
                        if row.get(0) != Some(tenant) {
                            outcome.tenant_violations += 1;
                        }
                    }
                    outcome.rows += 1;
                }
                _ => {}
            }
        }
        Ok(outcome)
    }

    async fn statement(
        &self,
        client: &Client,
        state: &mut ConnectionState,
        index: usize,
    ) -> Result<Option<Statement>, tokio_postgres::Error> {
        if self.protocol != Protocol::Prepared {
            return Ok(None);
        }
        if state.prepared.len() < self.queries.len() {
            state.prepared.resize(self.queries.len(), None);
        }
        if let Some(s) = &state.prepared[index] {
            return Ok(Some(s.clone()));
        }
        let q = &self.queries[index];
        let s = client.prepare_typed(&q.sql, &q.types).await?;
        state.prepared[index] = Some(s.clone());
        Ok(Some(s))
    }

    async fn run_rows(
        &self,
        client: &Client,
        statement: Option<Statement>,
        q: &CatalogQuery,
        values: &params::Values<'_>,
        check_tenant: Option<Uuid>,
    ) -> Result<Outcome, tokio_postgres::Error> {
        let mut outcome = Outcome::default();
        let refs = values.refs(&q.params);
        let mut count = |row: tokio_postgres::Row| {
            if let Some(tenant) = check_tenant {
                if row.try_get::<_, Uuid>(0).ok() != Some(tenant) {
                    outcome.tenant_violations += 1;
                }
            }
            outcome.rows += 1;
        };
        match statement {
            Some(s) => {
                let stream = client.query_raw(&s, refs.iter().map(|(v, _)| *v)).await?;
                pin_mut!(stream);
                while let Some(row) = stream.try_next().await? {
                    count(row);
                }
            }
            None => {
                let typed = refs.iter().map(|(v, t)| (*v, t.clone()));
                let stream = client.query_typed_raw(&q.sql, typed).await?;
                pin_mut!(stream);
                while let Some(row) = stream.try_next().await? {
                    count(row);
                }
            }
        }
        Ok(outcome)
    }

    async fn execute_extended(
        &self,
        client: &Client,
        state: &mut ConnectionState,
        index: usize,
        values: &params::Values<'_>,
    ) -> Result<Outcome, tokio_postgres::Error> {
        let statement = self.statement(client, state, index).await?;
        self.run_rows(client, statement, &self.queries[index], values, None)
            .await
    }

    async fn execute_tenant_extended(
        &self,
        client: &Client,
        state: &mut ConnectionState,
        index: usize,
        values: &params::Values<'_>,
    ) -> Result<Outcome, tokio_postgres::Error> {
        let statement = self.statement(client, state, index).await?;
        let mut tenant_buf = [0u8; 36];
        let tenant_text: &str = values.community_text(&mut tenant_buf);
        client.batch_execute("BEGIN").await?;
        let body = async {
            let tenant_param: [(&(dyn ToSql + Sync), Type); 1] = [(&tenant_text, Type::TEXT)];
            if self.protocol == Protocol::Prepared {
                if state.set_tenant.is_none() {
                    state.set_tenant =
                        Some(client.prepare_typed(SET_TENANT_SQL, &[Type::TEXT]).await?);
                }
                let s = state.set_tenant.clone().expect("prepared above");
                client.execute(&s, &[&tenant_text]).await?;
            } else {
                let stream = client
                    .query_typed_raw(
                        SET_TENANT_SQL,
                        tenant_param.iter().map(|(v, t)| (*v, t.clone())),
                    )
                    .await?;
                pin_mut!(stream);
                while stream.try_next().await?.is_some() {}
            }
            self.run_rows(
                client,
                statement,
                &self.queries[index],
                values,
                Some(values.community),
            )
            .await
        }
        .await;
        match body {
            Ok(outcome) => {
                client.batch_execute("COMMIT").await?;
                Ok(outcome)
            }
            Err(e) => {
                if !client.is_closed() {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                Err(e)
            }
        }
    }
}

impl CatalogQuery {
    fn new(def: &QueryDef) -> CatalogQuery {
        let types = def.params.iter().map(|p| params::sql_type(*p)).collect();
        // Split the SQL around $1..$n (longest numbers first so $10 is not read as $1).
        let mut simple_parts = Vec::new();
        let mut rest = def.sql.as_str();
        loop {
            let next = (1..=def.params.len())
                .rev()
                .filter_map(|n| {
                    let pat = format!("${n}");
                    rest.find(&pat).map(|pos| (pos, n, pat.len()))
                })
                .min_by_key(|(pos, n, _)| (*pos, usize::MAX - n));
            match next {
                Some((pos, n, len)) => {
                    simple_parts.push((rest[..pos].to_owned(), n - 1));
                    rest = &rest[pos + len..];
                }
                None => break,
            }
        }
        CatalogQuery {
            name: def.name.clone(),
            sql: def.sql.clone(),
            params: def.params.clone(),
            types,
            tenant_scoped: def.tenant_scoped,
            simple_parts,
            simple_tail: rest.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn def(name: &str, weight: u32) -> QueryDef {
        QueryDef {
            name: name.into(),
            sql: "SELECT $1, $2, $10".into(),
            weight,
            params: vec![ParamKind::Wallet; 10],
            tenant_scoped: false,
        }
    }

    #[test]
    fn picks_by_weight() {
        let w = Workload::new(
            &[def("a", 1), def("b", 0), def("c", 3)],
            DatasetSpec::default(),
            Protocol::Extended,
        );
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[w.pick(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = f64::from(counts[2]) / 40_000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
    }

    #[test]
    fn splits_placeholders_for_the_simple_protocol() {
        let q = CatalogQuery::new(&def("a", 1));
        let idx: Vec<usize> = q.simple_parts.iter().map(|(_, i)| *i).collect();
        assert_eq!(idx, [0, 1, 9]);
        assert_eq!(q.simple_parts[0].0, "SELECT ");
        assert_eq!(q.simple_tail, "");
    }
}
