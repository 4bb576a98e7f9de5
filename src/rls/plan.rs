//! Reading PostgreSQL's `EXPLAIN (FORMAT JSON)` output and judging it against the tables with
//! row-level security: pure functions, no database, so every rule is unit-tested on real plans
//! (`src/rls/fixtures/*.json`, captured from PostgreSQL 15).
//!
//! The rules, each quoting the plan line it is about:
//! - a sequential scan of a table with RLS: the tenant predicate drives no index. Plans are taken
//!   with `enable_seqscan = off`, so a small table's cheap seq scan neither hides nor fakes a
//!   finding: a seq scan that remains means no index can serve the query.
//! - an index scan of a table with RLS whose index condition does not name the tenant column:
//!   the whole index is read and the policy filters it row by row.
//! - a policy function in a scan's `Filter`: it is evaluated for every row. Wrapped in a scalar
//!   subquery, `(SELECT f())`, it runs once per statement as an InitPlan and the filter shows
//!   `$0` instead of the call.
//!
//! Table-level rules ([`check_tables`]): RLS without `FORCE ROW LEVEL SECURITY` (the owner is
//! then exempt), and no index whose leading column is the tenant column. Policy rules from the
//! catalog ([`check_policies`]), for every table with RLS whether a query reads it or not: a
//! function that is not IMMUTABLE called outside a scalar subquery, and several permissive
//! policies for one command (OR-ed).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A `Seq Scan` on a table with RLS.
    SeqScan,
    /// An index scan on a table with RLS whose condition does not use the tenant column.
    ScanWithoutTenantKey,
    /// A policy function evaluated per row (in a scan's `Filter`, not an InitPlan).
    PerRowPolicyFunction,
    /// A table with RLS and no index whose leading column is the tenant column.
    NoTenantIndex,
    /// A table with RLS enabled but not forced.
    RlsNotForced,
    /// Several permissive policies of a table apply to one command for the checking role.
    SeveralPermissivePolicies,
}

impl FindingKind {
    /// The finding's name in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::SeqScan => "seq_scan",
            FindingKind::ScanWithoutTenantKey => "scan_without_tenant_key",
            FindingKind::PerRowPolicyFunction => "per_row_policy_function",
            FindingKind::NoTenantIndex => "no_tenant_index",
            FindingKind::RlsNotForced => "rls_not_forced",
            FindingKind::SeveralPermissivePolicies => "several_permissive_policies",
        }
    }
}

/// One problem, with the plan line (or catalog fact) that shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// The table it concerns.
    pub table: String,
    /// The scenario query whose plan shows it; `None` for a table-level finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The plan line as `EXPLAIN` prints it (`Seq Scan on profiles  Filter: (...)`), or the
    /// catalog fact for a table-level finding.
    pub evidence: String,
    /// What it costs and how to fix it.
    pub advice: String,
}

/// A table with row-level security, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsTable {
    /// The table's name.
    pub name: String,
    /// Whether RLS is forced (applies to the table's owner as well).
    pub forced: bool,
    /// Whether the table has the tenant column at all.
    pub has_tenant_column: bool,
    /// Indexes whose first column is the tenant column (`name`, and ` (partial)` if it is).
    pub tenant_indexes: Vec<String>,
    /// Names of the functions the policies that apply to the checking role call, and of the
    /// functions those call when they are SQL functions (the planner inlines them).
    pub policy_functions: BTreeSet<String>,
    /// The policies that apply to the checking role.
    pub policies: Vec<Policy>,
}

/// One node of a plan tree, with the fields the rules read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanNode {
    /// `Node Type`, e.g. `Seq Scan`.
    pub node_type: String,
    /// `Relation Name`: the table a scan reads.
    pub relation: Option<String>,
    /// `Alias` of the scanned table.
    pub alias: Option<String>,
    /// `Index Name` of an index scan.
    pub index_name: Option<String>,
    /// `Index Cond`.
    pub index_cond: Option<String>,
    /// `Recheck Cond` of a bitmap heap scan.
    pub recheck_cond: Option<String>,
    /// `Filter`: the condition applied row by row.
    pub filter: Option<String>,
    /// `InitPlan 1 (returns $0)` for an InitPlan child.
    pub subplan_name: Option<String>,
    /// `Plans`: the child nodes.
    pub children: Vec<PlanNode>,
}

impl PlanNode {
    fn from_value(v: &Value) -> PlanNode {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        PlanNode {
            node_type: text("Node Type").unwrap_or_default(),
            relation: text("Relation Name"),
            alias: text("Alias"),
            index_name: text("Index Name"),
            index_cond: text("Index Cond"),
            recheck_cond: text("Recheck Cond"),
            filter: text("Filter"),
            subplan_name: text("Subplan Name"),
            children: v
                .get("Plans")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(PlanNode::from_value).collect())
                .unwrap_or_default(),
        }
    }

    /// This node and every node under it, depth first (the order `EXPLAIN` prints them).
    pub fn walk(&self) -> Vec<&PlanNode> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }

    /// The node's line as text `EXPLAIN` prints it, without costs, and its filter:
    /// `Index Scan using idx on profiles  Filter: (community_id = f())`.
    pub fn line(&self) -> String {
        let mut s = self.node_type.clone();
        if let Some(i) = &self.index_name {
            s.push_str(&format!(" using {i}"));
        }
        if let Some(r) = &self.relation {
            s.push_str(&format!(" on {r}"));
            if let Some(a) = self.alias.as_ref().filter(|a| *a != r) {
                s.push_str(&format!(" {a}"));
            }
        }
        for (label, v) in [
            ("Index Cond", &self.index_cond),
            ("Recheck Cond", &self.recheck_cond),
            ("Filter", &self.filter),
        ] {
            if let Some(v) = v {
                s.push_str(&format!("  {label}: {v}"));
            }
        }
        s
    }
}

/// Why a plan could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not an EXPLAIN (FORMAT JSON) plan: {0}")]
pub struct PlanError(String);

impl PlanError {
    /// `EXPLAIN` answered with no row.
    pub fn empty() -> PlanError {
        PlanError("EXPLAIN returned no row".into())
    }
}

/// The root node of `EXPLAIN (FORMAT JSON)` output: `[{"Plan": {...}, ...}]`.
pub fn parse(explain: &Value) -> Result<PlanNode, PlanError> {
    let top = match explain {
        Value::Array(a) => a
            .first()
            .ok_or_else(|| PlanError("an empty array".into()))?,
        other => other,
    };
    let plan = top
        .get("Plan")
        .ok_or_else(|| PlanError("no \"Plan\" key".into()))?;
    Ok(PlanNode::from_value(plan))
}

/// Words followed by `(` in an expression that are SQL syntax, not function calls.
const NOT_FUNCTIONS: &[&str] = &[
    "select", "nullif", "coalesce", "greatest", "least", "exists", "any", "all", "in", "and", "or",
    "not", "case", "when", "cast", "array", "row", "returns", "values",
];

/// Names of the functions an expression calls: `f(` tokens, lower-cased, SQL syntax left out.
pub fn called_functions(expression: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expression.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            // A word preceded by `::` is a type (`::uuid`); one preceded by `.` is qualified,
            // and its last part is what counts.
            let is_cast = start >= 2 && &expression[start - 2..start] == "::";
            let word = expression[start..i].to_ascii_lowercase();
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            if !is_cast && j < bytes.len() && bytes[j] == b'(' && !NOT_FUNCTIONS.contains(&&*word) {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn mentions_column(expression: &str, column: &str) -> bool {
    expression.match_indices(column).any(|(pos, _)| {
        let before = expression[..pos].chars().next_back();
        let after = expression[pos + column.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

/// Findings in one query's plan. `tables` are the tables with RLS; `tenant_column` the column
/// the policies compare with the tenant.
pub fn analyze(
    plan: &PlanNode,
    query: &str,
    tables: &[RlsTable],
    tenant_column: &str,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for node in plan.walk() {
        let Some(relation) = &node.relation else {
            continue;
        };
        let Some(table) = tables.iter().find(|t| &t.name == relation) else {
            continue;
        };
        let finding = |kind, advice: String| Finding {
            kind,
            table: table.name.clone(),
            query: Some(query.to_owned()),
            evidence: node.line(),
            advice,
        };
        match node.node_type.as_str() {
            "Seq Scan" => findings.push(finding(
                FindingKind::SeqScan,
                format!(
                    "every tenant read scans all of {}, and the cost grows with the table. Even with sequential scans disabled the planner found no index for the tenant predicate: give the policy the tenant predicate alone (`{tenant_column} = (SELECT tenant())`, an admin bypass as a policy of its own; permissive policies are OR-ed) and index `{tenant_column}` first",
                    table.name
                ),
            )),
            "Index Scan" | "Index Only Scan" | "Bitmap Heap Scan" => {
                let cond = node.index_cond.as_deref().or(node.recheck_cond.as_deref());
                if !cond.is_some_and(|c| mentions_column(c, tenant_column)) {
                    findings.push(finding(
                        FindingKind::ScanWithoutTenantKey,
                        format!(
                            "the index condition does not use `{tenant_column}`: the whole index is read and the policy filters it row by row"
                        ),
                    ));
                }
            }
            _ => {}
        }
        if let Some(filter) = &node.filter {
            let calls: Vec<String> = called_functions(filter)
                .intersection(&table.policy_functions)
                .cloned()
                .collect();
            if !calls.is_empty() {
                findings.push(finding(
                    FindingKind::PerRowPolicyFunction,
                    format!(
                        "{} evaluated for every row; wrap the call in a scalar subquery, `(SELECT {}())`, so it runs once per statement as an InitPlan",
                        calls.join(", "),
                        calls[0]
                    ),
                ));
            }
        }
    }
    findings
}

/// Table-level findings: RLS not forced, no index leading with the tenant column.
pub fn check_tables(tables: &[RlsTable], tenant_column: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for t in tables {
        if !t.forced {
            findings.push(Finding {
                kind: FindingKind::RlsNotForced,
                table: t.name.clone(),
                query: None,
                evidence: format!("pg_class.relforcerowsecurity = false for {}", t.name),
                advice: format!(
                    "the table owner is not subject to the policies; `ALTER TABLE {} FORCE ROW LEVEL SECURITY`",
                    t.name
                ),
            });
        }
        if t.has_tenant_column && t.tenant_indexes.is_empty() {
            findings.push(Finding {
                kind: FindingKind::NoTenantIndex,
                table: t.name.clone(),
                query: None,
                evidence: format!(
                    "no index of {} has `{tenant_column}` as its first column",
                    t.name
                ),
                advice: format!(
                    "every tenant read is a scan of the whole table; `CREATE INDEX ON {} ({tenant_column}, ...)`",
                    t.name
                ),
            });
        }
    }
    findings
}

/// One policy of a table that applies to the checking role, as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Policy {
    /// The policy's name.
    pub name: String,
    /// Permissive (OR-ed with the table's other permissive policies) or restrictive (AND-ed).
    pub permissive: bool,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// The `USING` expression as `pg_get_expr` prints it.
    pub using: Option<String>,
    /// The `WITH CHECK` expression.
    pub with_check: Option<String>,
}

impl Policy {
    /// `policy NAME: USING (...) WITH CHECK (...)`.
    fn text(&self) -> String {
        let mut s = format!("policy {} ({})", self.name, self.command);
        if let Some(u) = &self.using {
            s.push_str(&format!(" USING ({u})"));
        }
        if let Some(w) = &self.with_check {
            s.push_str(&format!(" WITH CHECK ({w})"));
        }
        s
    }
}

/// `expression` with its scalar subqueries `( SELECT ... )` cut out: what remains is evaluated
/// for every row; a subquery with no reference to the row runs once per statement.
pub fn outside_subqueries(expression: &str) -> String {
    let bytes = expression.as_bytes();
    let mut out = String::with_capacity(expression.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'(' && starts_with_select(&expression[i + 1..]) {
            out.push_str(&expression[copied..i]);
            let mut depth = 0usize;
            let mut quoted = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\'' => quoted = !quoted,
                    b'(' if !quoted => depth += 1,
                    b')' if !quoted => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            out.push_str("$sub");
            i += 1;
            copied = i.min(bytes.len());
            continue;
        }
        i += 1;
    }
    out.push_str(&expression[copied.min(expression.len())..]);
    out
}

fn starts_with_select(s: &str) -> bool {
    let t = s.trim_start();
    t.get(..6).is_some_and(|w| w.eq_ignore_ascii_case("select"))
        && !t[6..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
}

/// Policy-level findings from the catalog, for every table with RLS whether or not a query
/// reads it: a function that is not IMMUTABLE called outside a scalar subquery (evaluated per
/// row), and several permissive policies for one command (OR-ed, so no tenant index serves
/// them). `not_immutable`: the names of the called functions the catalog says are not IMMUTABLE.
pub fn check_policies(tables: &[RlsTable], not_immutable: &BTreeSet<String>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for t in tables {
        for p in &t.policies {
            let calls: BTreeSet<String> = [&p.using, &p.with_check]
                .into_iter()
                .flatten()
                .flat_map(|e| called_functions(&outside_subqueries(e)))
                .filter(|f| not_immutable.contains(f))
                .collect();
            if let Some(first) = calls.first() {
                findings.push(Finding {
                    kind: FindingKind::PerRowPolicyFunction,
                    table: t.name.clone(),
                    query: None,
                    evidence: p.text(),
                    advice: format!(
                        "{} evaluated for every row the policy sees, by every query of {}; wrap the call in a scalar subquery, `(SELECT {first}())`, so it runs once per statement as an InitPlan",
                        calls.iter().cloned().collect::<Vec<_>>().join(", "),
                        t.name
                    ),
                });
            }
        }
        if let Some(f) = several_permissive(t) {
            findings.push(f);
        }
    }
    findings
}

/// Several permissive policies of one table for the same command and the checking role.
fn several_permissive(t: &RlsTable) -> Option<Finding> {
    let mut names = BTreeSet::new();
    let mut commands = Vec::new();
    for command in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        let applying: Vec<&Policy> = t
            .policies
            .iter()
            .filter(|p| p.permissive && (p.command == "ALL" || p.command == command))
            .collect();
        if applying.len() > 1 {
            commands.push(command);
            names.extend(applying.iter().map(|p| p.name.clone()));
        }
    }
    if commands.is_empty() {
        return None;
    }
    let names: Vec<String> = names.into_iter().collect();
    Some(Finding {
        kind: FindingKind::SeveralPermissivePolicies,
        table: t.name.clone(),
        query: None,
        evidence: format!(
            "permissive policies {} of {} all apply to {} for this role",
            names.join(", "),
            t.name,
            commands.join(", ")
        ),
        advice: "permissive policies are OR-ed into one predicate, `(a) OR (b)`, which no tenant index can serve; keep one permissive policy per role and command: give the others to the roles that need them (`TO arrakis_admin`, as admin_bypass is) or make them AS RESTRICTIVE".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PlanNode {
        let text = match name {
            "shipped_tenant" => include_str!("fixtures/shipped_tenant.json"),
            "shipped_lookup" => include_str!("fixtures/shipped_lookup.json"),
            "seed_or_tenant" => include_str!("fixtures/seed_or_tenant.json"),
            "seed_or_lookup" => include_str!("fixtures/seed_or_lookup.json"),
            "volatile_fn_lookup" => include_str!("fixtures/volatile_fn_lookup.json"),
            _ => unreachable!(),
        };
        parse(&serde_json::from_str(text).unwrap()).unwrap()
    }

    /// The fixtures' tables: `profiles` as shipped, `p_or` with the seed's OR policy, `p_fn`
    /// with a policy calling a volatile PL/pgSQL function directly.
    fn tables() -> Vec<RlsTable> {
        let table = |name: &str, functions: &[&str]| RlsTable {
            name: name.into(),
            forced: true,
            has_tenant_column: true,
            tenant_indexes: vec![format!("{name}_community_idx")],
            policy_functions: functions.iter().map(|f| f.to_string()).collect(),
            policies: Vec::new(),
        };
        vec![
            table("profiles", &["app_current_tenant", "current_setting"]),
            table(
                "p_or",
                &["app_current_tenant", "app_is_admin", "current_setting"],
            ),
            table("p_fn", &["tenant_v"]),
        ]
    }

    fn kinds(f: &[Finding]) -> Vec<FindingKind> {
        f.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn the_shipped_policy_uses_the_index_with_an_initplan() {
        let plan = fixture("shipped_tenant");
        let lines: Vec<String> = plan.walk().iter().map(|n| n.line()).collect();
        assert!(
            lines.contains(
                &"Index Scan using idx_profiles_community_wallet on profiles  Index Cond: (community_id = $0)"
                    .to_owned()
            ),
            "{lines:?}"
        );
        assert!(plan
            .walk()
            .iter()
            .any(|n| n.subplan_name.as_deref() == Some("InitPlan 1 (returns $0)")));
        assert_eq!(analyze(&plan, "tenant", &tables(), "community_id"), []);
        let lookup = fixture("shipped_lookup");
        assert_eq!(analyze(&lookup, "lookup", &tables(), "community_id"), []);
    }

    #[test]
    fn the_seed_or_policy_is_a_seq_scan_quoted_with_its_filter() {
        let f = analyze(
            &fixture("seed_or_tenant"),
            "tenant",
            &tables(),
            "community_id",
        );
        assert_eq!(kinds(&f), [FindingKind::SeqScan]);
        assert_eq!(f[0].table, "p_or");
        assert_eq!(f[0].query.as_deref(), Some("tenant"));
        assert_eq!(
            f[0].evidence,
            "Seq Scan on p_or  Filter: ((community_id = $0) OR $1)"
        );
        // With the tenant in the query's own WHERE clause the index is still used: the OR shape
        // only hurts reads that rely on the policy for their tenant filter.
        assert_eq!(
            analyze(
                &fixture("seed_or_lookup"),
                "lookup",
                &tables(),
                "community_id"
            ),
            []
        );
    }

    #[test]
    fn a_policy_function_in_a_filter_runs_per_row() {
        let f = analyze(
            &fixture("volatile_fn_lookup"),
            "lookup",
            &tables(),
            "community_id",
        );
        assert_eq!(kinds(&f), [FindingKind::PerRowPolicyFunction]);
        assert!(f[0]
            .evidence
            .ends_with("Filter: (community_id = tenant_v())"));
        assert!(
            f[0].advice.contains("(SELECT tenant_v())"),
            "{}",
            f[0].advice
        );
    }

    #[test]
    fn tables_not_forced_or_without_a_tenant_index() {
        let mut t = tables();
        t[0].forced = false;
        t[1].tenant_indexes.clear();
        let f = check_tables(&t, "community_id");
        assert_eq!(
            kinds(&f),
            [FindingKind::RlsNotForced, FindingKind::NoTenantIndex]
        );
        assert_eq!(f[0].table, "profiles");
        assert_eq!(f[1].table, "p_or");
    }

    #[test]
    fn finds_function_calls_not_casts_or_syntax() {
        let calls = called_functions(
            "(community_id = (NULLIF(current_setting('app.current_tenant'::text, true), ''::text))::uuid) AND COALESCE(x, y) AND public.f (1) AND uuid(z)",
        );
        assert_eq!(
            calls.into_iter().collect::<Vec<_>>(),
            ["current_setting", "f", "uuid"]
        );
        assert!(
            called_functions("( SELECT app_current_tenant() AS app_current_tenant)")
                .contains("app_current_tenant")
        );
        assert!(mentions_column("(community_id = $0)", "community_id"));
        assert!(!mentions_column(
            "(other_community_id = $0)",
            "community_id"
        ));
    }

    #[test]
    fn refuses_what_is_not_a_plan() {
        assert!(parse(&serde_json::json!([])).is_err());
        assert!(parse(&serde_json::json!({"QUERY PLAN": 1})).is_err());
    }

    fn policy(name: &str, command: &str, using: &str) -> Policy {
        Policy {
            name: name.into(),
            permissive: true,
            command: command.into(),
            using: Some(using.into()),
            with_check: None,
        }
    }

    #[test]
    fn policies_are_linted_from_the_catalog_text() {
        assert_eq!(
            outside_subqueries(
                "(community_id = ( SELECT app_current_tenant() AS app_current_tenant)) OR f(')')"
            ),
            "(community_id = $sub) OR f(')')"
        );
        let mut t = tables();
        t[0].policies = vec![policy(
            "tenant_isolation",
            "ALL",
            "(community_id = ( SELECT app_current_tenant() AS app_current_tenant))",
        )];
        t[1].policies = vec![
            policy("per_row", "ALL", "(community_id = app_current_tenant())"),
            policy("reads", "SELECT", "(lower(wallet) = 'x'::text)"),
        ];
        let volatile: BTreeSet<String> = ["app_current_tenant".to_owned()].into();
        let f = check_policies(&t, &volatile);
        assert_eq!(
            kinds(&f),
            [
                FindingKind::PerRowPolicyFunction,
                FindingKind::SeveralPermissivePolicies
            ]
        );
        assert!(
            f[0].evidence.starts_with("policy per_row (ALL) USING"),
            "{}",
            f[0].evidence
        );
        assert!(f[0].query.is_none() && f[0].advice.contains("(SELECT app_current_tenant())"));
        assert!(
            f[1].evidence
                .contains("per_row, reads of p_or all apply to SELECT"),
            "{}",
            f[1].evidence
        );
        // A restrictive second policy is AND-ed: no finding.
        t[1].policies[1].permissive = false;
        assert_eq!(
            kinds(&check_policies(&t, &volatile)),
            [FindingKind::PerRowPolicyFunction]
        );
    }
}
