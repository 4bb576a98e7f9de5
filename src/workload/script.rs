//! Running a pgbench script's SQL commands on a connection, over each wire protocol as pgbench
//! sends them: the simple protocol with the variables substituted as text; the extended
//! protocol with them as text parameters of unknown type (the server infers each, as for
//! pgbench's `PQsendQueryParams` without types); prepared, the same prepared once per
//! connection. A pipeline (`\startpipeline` .. `\endpipeline`) sends its commands without
//! waiting and collects the answers in order.

use std::collections::HashMap;
use std::error::Error;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::future::join_all;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use super::pgbench::{ResultSet, SqlCommand};
use super::{classify, QueryFailure};
use crate::scenario::Protocol;

/// One SQL command ready to send: its text (simple) or parameter values (extended).
pub struct Ready<'s> {
    /// The command.
    pub command: &'s SqlCommand,
    /// Identifies the command for the prepared-statement cache (script, command index).
    pub key: (usize, usize),
    /// Simple protocol: the text with variables substituted; else the parameter values.
    pub text: String,
    /// Extended protocols: the values of `$1`, `$2`, ...
    pub params: Vec<String>,
}

/// What one command gave back.
pub struct Answer {
    /// When its last message arrived.
    pub done: Instant,
    /// Its results, kept only when the command stores them (`\gset`, `\aset`).
    pub results: Result<Vec<ResultSet>, QueryFailure>,
}

/// A row of text values (`None` for NULL).
type Row = Vec<Option<String>>;

/// Prepared statements of a connection's script commands.
#[derive(Default)]
pub struct ScriptStatements(HashMap<(usize, usize), Statement>);

/// A parameter sent as text with the type the server inferred: what pgbench sends.
#[derive(Debug)]
struct TextParam<'a>(&'a str);

impl ToSql for TextParam<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    to_sql_checked!();
}

/// Runs one command and waits for its answer.
pub async fn execute(
    client: &Client,
    statements: &mut ScriptStatements,
    protocol: Protocol,
    ready: &Ready<'_>,
) -> Answer {
    let results = match protocol {
        Protocol::Simple => simple(client, ready).await,
        _ => match statement(client, statements, protocol, ready).await {
            Ok(s) => extended(client, s.as_ref(), ready).await,
            Err(e) => Err(e),
        },
    };
    Answer::now(results)
}

impl Answer {
    /// The answer that arrived just now.
    fn now(results: Result<Vec<ResultSet>, tokio_postgres::Error>) -> Answer {
        Answer {
            done: Instant::now(),
            results: results.map_err(|e| classify(&e)),
        }
    }
}

/// Sends a pipeline's commands at once and collects their answers in order (tokio-postgres
/// pipelines requests that are in flight together on one connection).
pub async fn pipeline(
    client: &Client,
    statements: &mut ScriptStatements,
    protocol: Protocol,
    batch: &[Ready<'_>],
) -> Vec<Answer> {
    // Prepared commands are prepared first, one by one; the pipeline itself is the executions.
    let mut prepared = Vec::with_capacity(batch.len());
    for ready in batch {
        prepared.push(statement(client, statements, protocol, ready).await);
    }
    let runs = batch.iter().zip(prepared).map(|(ready, s)| async move {
        Answer::now(match s {
            Ok(s) => extended(client, s.as_ref(), ready).await,
            Err(e) => Err(e),
        })
    });
    join_all(runs).await
}

async fn statement(
    client: &Client,
    statements: &mut ScriptStatements,
    protocol: Protocol,
    ready: &Ready<'_>,
) -> Result<Option<Statement>, tokio_postgres::Error> {
    if protocol != Protocol::Prepared {
        return Ok(None);
    }
    if let Some(s) = statements.0.get(&ready.key) {
        return Ok(Some(s.clone()));
    }
    let types = vec![Type::UNKNOWN; ready.params.len()];
    let s = client
        .prepare_typed(&ready.command.parameterized, &types)
        .await?;
    statements.0.insert(ready.key, s.clone());
    Ok(Some(s))
}

async fn simple(
    client: &Client,
    ready: &Ready<'_>,
) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    let keep = ready.command.capture.is_some();
    let stream = client.simple_query_raw(&ready.text).await?;
    pin_mut!(stream);
    let mut results = Vec::new();
    let mut current: Option<ResultSet> = None;
    while let Some(msg) = stream.try_next().await? {
        if !keep {
            continue;
        }
        match msg {
            SimpleQueryMessage::RowDescription(columns) => {
                current = Some(ResultSet::Rows {
                    columns: columns.iter().map(|c| c.name().to_string()).collect(),
                    rows: Vec::new(),
                });
            }
            SimpleQueryMessage::Row(row) => {
                if let Some(ResultSet::Rows { rows, .. }) = &mut current {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    );
                }
            }
            SimpleQueryMessage::CommandComplete(_) => {
                results.push(current.take().unwrap_or(ResultSet::Command));
            }
            _ => {}
        }
    }
    Ok(results)
}

async fn extended(
    client: &Client,
    statement: Option<&Statement>,
    ready: &Ready<'_>,
) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    let params = ready.params.iter().map(|p| TextParam(p));
    let rows = match statement {
        Some(s) => client.query_raw(s, params).await?,
        None => {
            let typed = params.map(|p| (p, Type::UNKNOWN));
            client
                .query_typed_raw(&ready.command.parameterized, typed)
                .await?
        }
    };
    pin_mut!(rows);
    let keep = ready.command.capture.is_some();
    let mut set: Option<(Vec<String>, Vec<Row>)> = None;
    while let Some(row) = rows.try_next().await? {
        if !keep {
            continue;
        }
        let (_, cells) = set.get_or_insert_with(|| {
            let names = row.columns().iter().map(|c| c.name().to_string());
            (names.collect(), Vec::new())
        });
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            values.push(row.try_get::<_, AnyText>(i)?.0);
        }
        cells.push(values);
    }
    Ok(match set {
        Some((columns, rows)) => vec![ResultSet::Rows { columns, rows }],
        // No row: a row-less result, which `\gset` refuses as pgbench does ("got 0").
        None if keep => vec![ResultSet::Rows {
            columns: Vec::new(),
            rows: Vec::new(),
        }],
        None => Vec::new(),
    })
}

/// A result column's value as the text PostgreSQL would print, from its binary form: what
/// `\gset` stores. The common scalar types are read; others are refused with a hint.
struct AnyText(Option<String>);

impl<'a> FromSql<'a> for AnyText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = match *ty {
            Type::BOOL => if bool::from_sql(ty, raw)? { "t" } else { "f" }.to_string(),
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            Type::OID => u32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT4 => f32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT8 => f64::from_sql(ty, raw)?.to_string(),
            Type::UUID => uuid::Uuid::from_sql(ty, raw)?.to_string(),
            Type::NUMERIC => numeric_text(raw)?,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                String::from_utf8(raw.to_vec())?
            }
            Type::JSON => String::from_utf8(raw.to_vec())?,
            Type::JSONB => String::from_utf8(raw.get(1..).unwrap_or_default().to_vec())?,
            _ => {
                return Err(format!(
                    "\\gset of a {} column under the extended protocol is not supported: cast it to text in the query (col::text) or use -M simple",
                    ty.name()
                )
                .into())
            }
        };
        Ok(AnyText(Some(text)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(AnyText(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// NUMERIC's binary form (base-10000 digits, weight, sign, display scale) as its text.
fn numeric_text(raw: &[u8]) -> Result<String, Box<dyn Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn Error + Sync + Send>> {
        let b = raw.get(i * 2..i * 2 + 2).ok_or("short numeric")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(1)?, word(2)? as u16, word(3)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    // Integer part: groups 0..=weight.
    if weight < 0 {
        out.push('0');
    } else {
        for g in 0..=weight as usize {
            let d = digits.get(g).copied().unwrap_or(0);
            if g == 0 {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let first = weight + 1;
        let mut g = first;
        while (frac.len() as i16) < dscale {
            let d = if g < 0 {
                0
            } else {
                digits.get(g as usize).copied().unwrap_or(0)
            };
            frac.push_str(&format!("{d:04}"));
            g += 1;
        }
        frac.truncate(dscale as usize);
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::numeric_text;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_read_as_postgres_prints_them() {
        // 12345.678 = [1, 2345, 6780], weight 1, scale 3
        let raw = numeric(3, 1, 0, 3, &[1, 2345, 6780]);
        assert_eq!(numeric_text(&raw).unwrap(), "12345.678");
        // -0.05 = [500], weight -1, scale 2
        let raw = numeric(1, -1, 0x4000, 2, &[500]);
        assert_eq!(numeric_text(&raw).unwrap(), "-0.05");
        // 1000000 = [100], weight 1, scale 0
        let raw = numeric(1, 1, 0, 0, &[100]);
        assert_eq!(numeric_text(&raw).unwrap(), "1000000");
        // 0.00001 = [1000] weight -2 scale 5
        let raw = numeric(1, -2, 0, 5, &[1000]);
        assert_eq!(numeric_text(&raw).unwrap(), "0.00001");
    }
}
