//! pgbench scripts in a scenario (`[[scripts]]`, `[pgbench]`) and the distribution of the drawn
//! tenant (`[tenants]`), validated into the plan. Scripts are parsed here, when the scenario
//! is loaded, so a mistake in one is bad input before any load, naming its file, line and
//! column.

use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::file::{PgbenchTable, ScriptEntry, TenantsTable};
use super::ScenarioError;
use crate::workload::pgbench::{self, functions, Prng, Script, SessionConfig};

/// One pgbench script of the mix.
#[derive(Debug, Clone)]
pub struct ScriptDef {
    /// The script's name (its file's stem, or the builtin's name): its statements' metrics are
    /// tagged `query:NAME/LINE`.
    pub name: String,
    /// Relative share of iterations that run this script (pgbench's `@W`).
    pub weight: u32,
    /// The parsed script.
    pub script: Arc<Script>,
}

impl ScriptDef {
    /// The metric name of the statement on `line`: `NAME/LINE`.
    pub fn statement_name(&self, line: usize) -> String {
        format!("{}/{line}", self.name)
    }

    /// The script's SQL commands with their metric names, in script order.
    pub fn sql_commands(&self) -> impl Iterator<Item = (String, &pgbench::SqlCommand)> + '_ {
        self.script.commands.iter().filter_map(|c| match &c.kind {
            pgbench::CommandKind::Sql(sql) => Some((self.statement_name(c.line), sql)),
            _ => None,
        })
    }

    /// The metric names of the script's SQL commands, in script order.
    pub fn statement_names(&self) -> impl Iterator<Item = String> + '_ {
        self.script.commands.iter().filter_map(|c| match c.kind {
            pgbench::CommandKind::Sql(_) => Some(self.statement_name(c.line)),
            _ => None,
        })
    }
}

/// The script's name from its file: the stem, kept to the characters a metric tag takes.
pub fn script_name(path: &str) -> String {
    let stem = Path::new(path)
        .file_stem()
        .map_or_else(|| path.to_string(), |s| s.to_string_lossy().into_owned());
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Names unique within a run: a second script of the same name becomes `NAME-2`, and so on.
pub fn unique_names(scripts: &mut [ScriptDef]) {
    for i in 1..scripts.len() {
        let base = scripts[i].name.clone();
        let mut n = 1;
        while scripts[..i].iter().any(|s| s.name == scripts[i].name) {
            n += 1;
            scripts[i].name = format!("{base}-{n}");
        }
    }
}

/// How the community of each draw is chosen: pgbench's distributions over the communities
/// `0..n`, the first ones the busiest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every community alike.
    Uniform,
    /// `random_zipfian(1, n, s)`: community k with probability ∝ 1/k^s.
    Zipfian(f64),
    /// `random_exponential(1, n, parameter)`.
    Exponential(f64),
    /// `random_gaussian(1, n, parameter)`: centred on the middle community.
    Gaussian(f64),
}

/// The tenant choice of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantChoice {
    /// The distribution.
    pub distribution: Distribution,
    /// Seeds every VU's tenant draws (VU i's generator from `seed` and i).
    pub seed: u64,
}

impl Default for TenantChoice {
    fn default() -> Self {
        TenantChoice {
            distribution: Distribution::Uniform,
            seed: 1,
        }
    }
}

impl TenantChoice {
    /// The generator of VU `vu`'s draws.
    pub fn rng(&self, vu: usize) -> Prng {
        Prng::seed(self.seed ^ (vu as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// A community index in `0..n`.
    pub fn draw(&self, rng: &mut Prng, n: u32) -> u32 {
        let max = i64::from(n.max(1));
        let k = match self.distribution {
            Distribution::Uniform => functions::random(rng, 1, max),
            Distribution::Zipfian(s) => functions::random_zipfian(rng, 1, max, s),
            Distribution::Exponential(p) => functions::random_exponential(rng, 1, max, p),
            Distribution::Gaussian(p) => functions::random_gaussian(rng, 1, max, p),
        };
        (k - 1) as u32
    }

    /// How the distribution is written in a scenario (`zipfian(1.07)`).
    pub fn describe(&self) -> String {
        match self.distribution {
            Distribution::Uniform => "uniform".into(),
            Distribution::Zipfian(s) => format!("zipfian({s})"),
            Distribution::Exponential(p) => format!("exponential({p})"),
            Distribution::Gaussian(p) => format!("gaussian({p})"),
        }
    }
}

/// Builds the error on `span` of the scenario file.
pub(super) type Invalid<'a> =
    &'a dyn Fn(Option<std::ops::Range<usize>>, &str, String) -> ScenarioError;

/// `[tenants]`: a distribution with its parameter in pgbench's ranges.
pub(super) fn tenants(t: TenantsTable, invalid: Invalid) -> Result<TenantChoice, ScenarioError> {
    let parameter = t.parameter.as_ref().map(|p| (*p.get_ref(), p.span()));
    let need = |range: &str, ok: &dyn Fn(f64) -> bool| match parameter {
        Some((p, _)) if ok(p) => Ok(p),
        Some((p, span)) => Err(invalid(
            Some(span),
            "tenants.parameter",
            format!("{p} is out of range: expected {range}"),
        )),
        None => Err(invalid(
            t.distribution.as_ref().map(Spanned::span),
            "tenants.parameter",
            format!("this distribution needs a parameter {range}"),
        )),
    };
    let distribution = match t.distribution.as_ref().map(|d| d.get_ref().as_str()) {
        None | Some("uniform") => Distribution::Uniform,
        Some("zipfian") => Distribution::Zipfian(need(
            "between 1.001 and 1000 (pgbench's random_zipfian s)",
            &|p| (functions::MIN_ZIPFIAN_PARAM..=functions::MAX_ZIPFIAN_PARAM).contains(&p),
        )?),
        Some("exponential") => Distribution::Exponential(need(
            "above 0 (pgbench's random_exponential parameter)",
            &|p| p > 0.0,
        )?),
        Some("gaussian") => Distribution::Gaussian(need(
            "of at least 2 (pgbench's random_gaussian parameter)",
            &|p| p >= functions::MIN_GAUSSIAN_PARAM,
        )?),
        Some(other) => {
            return Err(invalid(
                t.distribution.as_ref().map(Spanned::span),
                "tenants.distribution",
                format!(
                    "unknown distribution \"{other}\": expected uniform, zipfian, exponential or gaussian"
                ),
            ))
        }
    };
    Ok(TenantChoice {
        distribution,
        seed: t.seed.unwrap_or(1),
    })
}

/// `[pgbench]`: the scale, seed and definitions every script's sessions start with.
pub(super) fn session_config(
    t: PgbenchTable,
    invalid: Invalid,
) -> Result<SessionConfig, ScenarioError> {
    let mut defines = Vec::new();
    for (name, value) in t.define {
        let def = format!("{name}={}", value.get_ref());
        let parsed = SessionConfig::parse_define(&def)
            .map_err(|m| invalid(Some(value.span()), "pgbench.define", m))?;
        defines.push(parsed);
    }
    if let Some(s) = t.scale.as_ref().filter(|s| *s.get_ref() < 1) {
        return Err(invalid(
            Some(s.span()),
            "pgbench.scale",
            "must be at least 1 (pgbench's -s)".into(),
        ));
    }
    Ok(SessionConfig {
        scale: t.scale.map_or(1, Spanned::into_inner),
        random_seed: t.random_seed.unwrap_or(0),
        defines,
    })
}

/// `[[scripts]]`: each a file (relative to the scenario's folder) or a builtin, parsed now.
pub(super) fn scripts(
    entries: Vec<ScriptEntry>,
    scenario: &Path,
    invalid: Invalid,
) -> Result<Vec<ScriptDef>, ScenarioError> {
    let mut defs = Vec::new();
    for e in entries {
        let weight = e.weight.as_ref().map_or(1, |w| *w.get_ref());
        let (name, script) = match (&e.file, &e.builtin) {
            (Some(file), None) => {
                let path = scenario
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(file.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    invalid(
                        Some(file.span()),
                        "scripts.file",
                        format!("cannot read {}: {err}", path.display()),
                    )
                })?;
                let script = pgbench::parse_script(&path.display().to_string(), &text)
                    .map_err(ScenarioError::Script)?;
                (script_name(file.get_ref()), script)
            }
            (None, Some(b)) => {
                let script = pgbench::builtin(b.get_ref())
                    .map_err(|err| invalid(Some(b.span()), "scripts.builtin", err.message))?;
                (builtin_name(b.get_ref()), script)
            }
            _ => {
                let at = e.file.as_ref().or(e.builtin.as_ref()).map(Spanned::span);
                return Err(invalid(
                    at,
                    "scripts",
                    "each [[scripts]] entry needs exactly one of file = \"PATH\" or builtin = \"tpcb-like\" (or simple-update, select-only)".into(),
                ));
            }
        };
        defs.push(ScriptDef {
            name,
            weight,
            script: Arc::new(script),
        });
    }
    unique_names(&mut defs);
    Ok(defs)
}

/// pgbench runs pipelines over the extended protocols only: a script with one is refused
/// under `protocol = "simple"`.
pub(super) fn check_pipelines(
    scripts: &[ScriptDef],
    simple: bool,
    invalid: Invalid,
) -> Result<(), ScenarioError> {
    let piped = scripts.iter().find_map(|s| {
        let c = s
            .script
            .commands
            .iter()
            .find(|c| matches!(c.kind, pgbench::CommandKind::StartPipeline))?;
        Some((s, c.line))
    });
    match piped {
        Some((s, line)) if simple => Err(invalid(
            None,
            "protocol",
            format!(
                "script {} starts a pipeline on line {line}: pipelines need protocol = \"extended\" or \"prepared\" (pgbench -M extended), not simple",
                s.name
            ),
        )),
        _ => Ok(()),
    }
}

/// The full name of a builtin given by a prefix (`tpcb` → `tpcb-like`).
pub fn builtin_name(prefix: &str) -> String {
    pgbench::BUILTINS
        .iter()
        .find(|b| b.0.starts_with(prefix))
        .map_or_else(|| prefix.to_string(), |b| b.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zipfian_choice_makes_the_first_communities_the_busiest() {
        let choice = TenantChoice {
            distribution: Distribution::Zipfian(1.5),
            seed: 7,
        };
        let mut rng = choice.rng(0);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[choice.draw(&mut rng, 100) as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
        // ζ(1.5) over 100 terms ≈ 2.41: the first community gets about 41 %.
        let share = f64::from(counts[0]) / 100_000.0;
        assert!((0.39..0.44).contains(&share), "{share}");
    }

    #[test]
    fn uniform_draws_cover_every_community() {
        let choice = TenantChoice::default();
        let mut rng = choice.rng(3);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[choice.draw(&mut rng, 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn script_names_are_file_stems_made_unique() {
        assert_eq!(script_name("dir/my bench.sql"), "my_bench");
        let s = Arc::new(pgbench::builtin("select-only").unwrap());
        let mut defs: Vec<ScriptDef> = (0..3)
            .map(|_| ScriptDef {
                name: "a".into(),
                weight: 1,
                script: s.clone(),
            })
            .collect();
        unique_names(&mut defs);
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "a-2", "a-3"]);
        assert_eq!(defs[0].statement_names().collect::<Vec<_>>(), ["a/2"]);
    }
}
