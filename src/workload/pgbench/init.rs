//! `thumper pgbench -i`: the builtin scripts' tables, made and filled as pgbench 15's default
//! initialization does (steps `dtgvp`: drop, create, client-side COPY, vacuum, primary keys).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::Client;

/// Accounts per unit of scale (branches: 1, tellers: 10), as pgbench.
pub const ACCOUNTS: i64 = 100_000;
/// Tellers per unit of scale.
pub const TELLERS: i64 = 10;
const TABLES: &str = "pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers";

/// How long each step took, for pgbench's closing line.
#[derive(Debug, Default)]
pub struct InitTimes {
    drop: Duration,
    create: Duration,
    generate: Duration,
    vacuum: Duration,
    keys: Duration,
}

impl std::fmt::Display for InitTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.drop + self.create + self.generate + self.vacuum + self.keys;
        write!(
            f,
            "done in {:.2} s (drop tables {:.2} s, create tables {:.2} s, client-side generate {:.2} s, vacuum {:.2} s, primary keys {:.2} s).",
            total.as_secs_f64(),
            self.drop.as_secs_f64(),
            self.create.as_secs_f64(),
            self.generate.as_secs_f64(),
            self.vacuum.as_secs_f64(),
            self.keys.as_secs_f64()
        )
    }
}

/// Creates and fills the tables at `scale`, saying what it does on stderr as pgbench does.
/// `grant_to` is a role that must use them (the application role behind PgBouncer).
pub async fn initialize(
    client: &Client,
    scale: i64,
    grant_to: Option<&str>,
) -> Result<InitTimes, tokio_postgres::Error> {
    let mut times = InitTimes::default();
    let mut step = Instant::now();
    let mut lap = |slot: &mut Duration| {
        *slot = step.elapsed();
        step = Instant::now();
    };
    eprintln!("dropping old tables...");
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {TABLES}"))
        .await?;
    lap(&mut times.drop);
    eprintln!("creating tables...");
    let aid = if scale >= 20_000 { "bigint" } else { "int" };
    client
        .batch_execute(&format!(
            "CREATE TABLE pgbench_history(tid int, bid int, aid {aid}, delta int, mtime timestamp, filler char(22));
             CREATE TABLE pgbench_tellers(tid int not null, bid int, tbalance int, filler char(84)) WITH (fillfactor=100);
             CREATE TABLE pgbench_accounts(aid {aid} not null, bid int, abalance int, filler char(84)) WITH (fillfactor=100);
             CREATE TABLE pgbench_branches(bid int not null, bbalance int, filler char(88)) WITH (fillfactor=100);"
        ))
        .await?;
    if let Some(role) = grant_to {
        client
            .batch_execute(&format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {TABLES} TO \"{}\"",
                role.replace('"', "\"\"")
            ))
            .await?;
    }
    lap(&mut times.create);
    eprintln!("generating data (client-side)...");
    generate(client, scale).await?;
    lap(&mut times.generate);
    eprintln!("vacuuming...");
    for t in TABLES.split(", ") {
        client.batch_execute(&format!("VACUUM ANALYZE {t}")).await?;
    }
    lap(&mut times.vacuum);
    eprintln!("creating primary keys...");
    client
        .batch_execute(
            "ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid);
             ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid);
             ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);",
        )
        .await?;
    lap(&mut times.keys);
    eprintln!("{times}");
    Ok(times)
}

/// Fills the tables in one transaction with COPY, rows as pgbench writes them.
async fn generate(client: &Client, scale: i64) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("BEGIN; TRUNCATE TABLE {TABLES}"))
        .await?;
    copy(client, "pgbench_branches", scale, |i, out| {
        let _ = writeln!(out, "{i}\t0\t");
    })
    .await?;
    copy(client, "pgbench_tellers", scale * TELLERS, |i, out| {
        let _ = writeln!(out, "{i}\t{}\t0\t", (i - 1) / TELLERS + 1);
    })
    .await?;
    let total = scale * ACCOUNTS;
    let mut reported = 0;
    copy(client, "pgbench_accounts", total, |i, out| {
        let _ = writeln!(out, "{i}\t{}\t0\t", (i - 1) / ACCOUNTS + 1);
        // pgbench reports every 100,000 rows; a tenth of that is enough here.
        if i * 10 / total > reported || i == total {
            reported = i * 10 / total;
            eprintln!("{i} of {total} tuples ({}%) done", i * 100 / total.max(1));
        }
    })
    .await?;
    client.batch_execute("COMMIT").await
}

/// A `BytesMut` written with `write!`.
struct Rows(BytesMut);

impl std::fmt::Write for Rows {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

async fn copy(
    client: &Client,
    table: &str,
    rows: i64,
    mut row: impl FnMut(i64, &mut Rows),
) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("COPY {table} FROM STDIN"))
        .await?;
    futures_util::pin_mut!(sink);
    let mut buf = Rows(BytesMut::with_capacity(1 << 16));
    for i in 1..=rows {
        row(i, &mut buf);
        if buf.0.len() >= 1 << 16 {
            sink.send(buf.0.split().freeze()).await?;
        }
    }
    if !buf.0.is_empty() {
        sink.send(buf.0.split().freeze()).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// The scale of initialized tables (`count(*)` of `pgbench_branches`), or `None` when they
/// are missing.
pub async fn scale_of(client: &Client) -> Option<i64> {
    let row = client
        .query_one("SELECT count(*) FROM pgbench_branches", &[])
        .await
        .ok()?;
    row.try_get::<_, i64>(0).ok()
}

/// What pgbench does before a run unless `-n`: vacuum the small tables and empty the history.
pub async fn vacuum(client: &Client) -> Result<(), tokio_postgres::Error> {
    // One statement per message: VACUUM cannot run in the implicit transaction of several.
    for sql in [
        "VACUUM pgbench_branches",
        "VACUUM pgbench_tellers",
        "TRUNCATE pgbench_history",
    ] {
        client.batch_execute(sql).await?;
    }
    Ok(())
}
