//! The tenant check's precondition, decided at load: a tenant-scoped query's first column must
//! be the tenant column's type (uuid). Each protocol reads that column its own way (text on
//! the simple protocol, a binary uuid on the extended ones); only a uuid column compares alike
//! on all of them, so anything else would make the violation count depend on the protocol.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::params;
use crate::scenario::QueryDef;

/// Checks every tenant-scoped query by preparing it on `client` and reading its first column's
/// type from the statement's description. `Err` is bad input naming the query and the fix;
/// `Ok` carries notes for queries that could not be described (they fail at load anyway).
pub async fn check_tenant_columns(
    client: &Client,
    queries: &[QueryDef],
) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for q in queries.iter().filter(|q| q.tenant_scoped) {
        match first_column(client, q).await {
            Ok(Some((_, ty))) if ty == Type::UUID => {}
            Ok(found) => {
                let what = match found {
                    Some((name, ty)) => format!("`{name}` of type {ty}"),
                    None => "no column".to_owned(),
                };
                return Err(format!(
                    "query `{}` has tenant_scoped = true, but its first column is {what}: the tenant check compares the first column of every row with the tenant's uuid, so it would count violations differently on each protocol. select community_id as the first column (`SELECT community_id, ...`), or set tenant_scoped = false",
                    q.name
                ));
            }
            Err(e) => notes.push(format!(
                "could not check the first column of tenant-scoped query `{}`: {}",
                q.name,
                super::describe(&e)
            )),
        }
    }
    Ok(notes)
}

/// The name and type of a query's first column, from the server's description of the
/// statement. Prepared inside a transaction, so a transaction pooler keeps the prepare and
/// its close on one server connection.
async fn first_column(
    client: &Client,
    q: &QueryDef,
) -> Result<Option<(String, Type)>, tokio_postgres::Error> {
    let types: Vec<Type> = q.params.iter().map(|p| params::sql_type(*p)).collect();
    client.batch_execute("BEGIN").await?;
    let described = client.prepare_typed(&q.sql, &types).await.map(|s| {
        s.columns()
            .first()
            .map(|c| (c.name().to_owned(), c.type_().clone()))
    });
    let _ = client.batch_execute("ROLLBACK").await;
    described
}
