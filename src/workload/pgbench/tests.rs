//! Unit tests of the pgbench language against pgbench 15's documented behaviour. Reference
//! values marked "pgbench 15" were printed by /usr/lib/postgresql/15/bin/pgbench with
//! `--random-seed=0 -c 1 -t 1` and `\set x debug(...)`.

use super::*;

fn parse_expr(src: &str) -> Result<expr::Expr, String> {
    let toks = lex::tokenize(src, 0, src.len()).map_err(|e| e.1)?;
    expr::parse(&toks).map_err(|e| e.1)
}

/// Evaluates `src` in a session with `:n` = 7 and `:d` = 2.5 defined.
fn ev(src: &str) -> Result<Value, String> {
    let e = parse_expr(src)?;
    let mut s = Session::bare(1);
    s.vars.set_value("n", Value::Int(7)).unwrap();
    s.vars.set_text("d", "2.5").unwrap();
    s.eval(&e).map_err(|e| e.0)
}

fn int(src: &str) -> i64 {
    match ev(src) {
        Ok(Value::Int(i)) => i,
        other => panic!("{src}: expected an int, got {other:?}"),
    }
}

fn err(src: &str) -> String {
    match ev(src) {
        Err(e) => e,
        Ok(v) => panic!("{src}: expected an error, got {v:?}"),
    }
}

fn session(seed: u64) -> Session {
    let config = SessionConfig {
        scale: 1,
        random_seed: seed,
        defines: vec![],
    };
    config.sessions(1).unwrap().remove(0)
}

// ---- hashes, permute, seeding: exact values from pgbench 15 ----

#[test]
fn hashes_match_pgbench_15() {
    assert_eq!(int("hash(5, 0)"), -208465272938114760);
    assert_eq!(int("hash_murmur2(5, 0)"), -208465272938114760);
    assert_eq!(int("hash_fnv1a(5, 0)"), 1000385178204227360);
    assert_eq!(int("hash_murmur2(-1, 12345)"), 6450241028426015414);
    assert_eq!(
        int("hash_fnv1a(123456789, 987654321)"),
        -6616195411920759204
    );
    assert_eq!(
        int("hash_murmur2(123456789, 987654321)"),
        -3046098614147007385
    );
}

#[test]
fn permute_matches_pgbench_15() {
    assert_eq!(int("permute(0, 10, 1)"), 5);
    assert_eq!(int("permute(7, 100, 42)"), 20);
    assert_eq!(int("permute(3, 1, 42)"), 0);
    assert!(err("permute(3, 0, 42)").contains("greater than zero"));
}

#[test]
fn permute_is_a_bijection() {
    for size in [2i64, 3, 4, 5, 7, 8, 10, 31, 64, 100, 1000, 4097] {
        for seed in [0i64, 1, -1, 42, i64::MAX] {
            let mut seen = vec![false; size as usize];
            for i in 0..size {
                let p = functions::permute(i, size, seed);
                assert!((0..size).contains(&p), "permute({i},{size},{seed}) = {p}");
                assert!(!seen[p as usize], "permute(_, {size}, {seed}) repeats {p}");
                seen[p as usize] = true;
            }
        }
    }
    // Values outside [0, size) are taken modulo size (as unsigned, as pgbench does).
    assert_eq!(functions::permute(13, 10, 5), functions::permute(3, 10, 5));
}

#[test]
fn seeding_and_draws_match_pgbench_15() {
    // pgbench 15, --random-seed=0, one client: default_seed, then the client's first draws.
    let script = parse_script(
        "t.sql",
        "\\set f random(1, 1000000)\n\\set h random_gaussian(1, 100, 2.5)\n\
         \\set i random_exponential(1, 100, 3)\n\\set j random_zipfian(1, 100, 1.5)\n",
    )
    .unwrap();
    let mut s = session(0);
    assert_eq!(
        s.vars.value("default_seed"),
        Ok(Value::Int(7868822567099391496))
    );
    assert_eq!(s.vars.value("random_seed"), Ok(Value::Int(0)));
    assert!(matches!(Run::new(&script).next(&mut s), Ok(Step::Done)));
    let got: Vec<_> = ["f", "h", "i", "j"]
        .map(|v| s.vars.value(v).unwrap())
        .into();
    let want = [238721, 62, 59, 3].map(Value::Int);
    assert_eq!(got, want);

    // pgbench 15, --random-seed=0 -c 3 -j 1: each client draws from its own sequence, and
    // :default_seed comes after the clients' seeds.
    let config = SessionConfig {
        scale: 1,
        random_seed: 0,
        defines: vec![],
    };
    let first = parse_script("f.sql", "\\set f random(1, 1000000)\n").unwrap();
    let mut firsts = Vec::new();
    for mut s in config.sessions(3).unwrap() {
        assert_eq!(
            s.vars.value("default_seed"),
            Ok(Value::Int(-8669469133403701314))
        );
        Run::new(&first).next(&mut s).unwrap();
        firsts.push(s.vars.value("f").unwrap());
    }
    assert_eq!(firsts, [238721, 484949, 168084].map(Value::Int));
}

// ---- random distributions over a million seeded draws ----

const DRAWS: usize = 1_000_000;

fn frequencies(n: usize, mut draw: impl FnMut() -> i64) -> Vec<f64> {
    let mut counts = vec![0u64; n];
    for _ in 0..DRAWS {
        counts[draw() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / DRAWS as f64).collect()
}

fn mean_var(freq: &[f64]) -> (f64, f64) {
    let mean: f64 = freq.iter().enumerate().map(|(k, p)| k as f64 * p).sum();
    let var = freq
        .iter()
        .enumerate()
        .map(|(k, p)| (k as f64 - mean).powi(2) * p)
        .sum();
    (mean, var)
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

#[test]
fn random_is_uniform() {
    let mut rng = Prng::seed(1);
    let freq = frequencies(10, || functions::random(&mut rng, 0, 9));
    for (k, p) in freq.iter().enumerate() {
        assert_close(&format!("P({k})"), *p, 0.1, 0.002);
    }
    let (mean, var) = mean_var(&freq);
    assert_close("mean", mean, 4.5, 0.01);
    assert_close("variance", var, 99.0 / 12.0, 0.03);
    // The whole i64 range minus one is allowed and stays in bounds.
    assert!(ev("random(0, 9223372036854775806)").is_ok());
    assert!(err("random(-1, 9223372036854775806)").contains("too large"));
    assert!(err("random(5, 1)").contains("empty range"));
}

#[test]
fn random_exponential_follows_its_definition() {
    // P(k) = (e^{-p k/N} - e^{-p (k+1)/N}) / (1 - e^{-p}) for k in [0, N).
    let (n, p) = (20usize, 5.0f64);
    let mut rng = Prng::seed(2);
    let freq = frequencies(n, || {
        functions::random_exponential(&mut rng, 0, n as i64 - 1, p)
    });
    let nf = n as f64;
    for (k, got) in freq.iter().enumerate() {
        let kf = k as f64;
        let want = ((-p * kf / nf).exp() - (-p * (kf + 1.0) / nf).exp()) / (1.0 - (-p).exp());
        assert_close(&format!("P({k})"), *got, want, 0.002);
    }
    // Documented ratio: the density falls by e^{-p} across the range.
    assert_close("P(0)/P(1)", freq[0] / freq[1], (p / nf).exp(), 0.02);
    assert!(err("random_exponential(1, 10, 0)").contains("greater than zero"));
}

/// The standard normal CDF (Abramowitz-Stegun 7.1.26 erf, error < 1.5e-7).
fn phi(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if x < 0.0 { -erf } else { erf })
}

#[test]
fn random_gaussian_follows_its_definition() {
    // k = floor(N (z + p) / 2p), z standard normal truncated to [-p, p).
    let (n, p) = (10usize, 2.5f64);
    let mut rng = Prng::seed(3);
    let freq = frequencies(n, || {
        functions::random_gaussian(&mut rng, 0, n as i64 - 1, p)
    });
    let total = phi(p) - phi(-p);
    for (k, got) in freq.iter().enumerate() {
        let lo = -p + 2.0 * p * k as f64 / n as f64;
        let hi = -p + 2.0 * p * (k + 1) as f64 / n as f64;
        let want = (phi(hi) - phi(lo)) / total;
        assert_close(&format!("P({k})"), *got, want, 0.002);
    }
    let (mean, _) = mean_var(&freq);
    assert_close("mean", mean, 4.5, 0.01);
    // Documented: with parameter 4.0, about 67% of draws fall in the middle quarter and 95%
    // in the middle half of the range.
    let mut rng = Prng::seed(6);
    let freq = frequencies(8, || functions::random_gaussian(&mut rng, 0, 7, 4.0));
    assert_close("middle quarter", freq[3..5].iter().sum(), 0.67, 0.02);
    assert_close("middle half", freq[2..6].iter().sum(), 0.95, 0.01);
    assert!(err("random_gaussian(1, 10, 1.5)").contains("at least 2.0"));
}

#[test]
fn random_zipfian_follows_its_definition() {
    // P(k) proportional to 1/k^s on [1, N].
    let (n, s) = (10usize, 1.5f64);
    let mut rng = Prng::seed(4);
    let freq = frequencies(n + 1, || {
        functions::random_zipfian(&mut rng, 1, n as i64, s)
    });
    let h: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
    assert_eq!(freq[0], 0.0);
    for (k, got) in freq.iter().enumerate().skip(1) {
        let want = (k as f64).powf(-s) / h;
        assert_close(&format!("P({k})"), *got, want, 0.003);
    }
    // Documented: with s = 2.5, 2 comes about (3/2)^2.5 = 2.76 times as often as 3.
    let mut rng = Prng::seed(5);
    let freq = frequencies(11, || functions::random_zipfian(&mut rng, 1, 10, 2.5));
    assert_close("P(2)/P(3)", freq[2] / freq[3], 1.5f64.powf(2.5), 0.05);
    assert!(err("random_zipfian(1, 10, 1.0)").contains("[1.001, 1000]"));
}

// ---- operators, precedence, integer/double rules ----

#[test]
fn precedence_follows_exprparse_y() {
    assert_eq!(int("1 + 2 * 3"), 7);
    assert_eq!(int("(1 + 2) * 3"), 9);
    assert_eq!(int("-2 * 3"), -6);
    assert_eq!(int("10 - 4 - 3"), 3);
    assert_eq!(int("~1 + 2"), -4, "~ binds looser than +: ~(1+2)");
    assert_eq!(int("~1 | 2"), -2, "~ and | are one level, left to right");
    assert_eq!(int("1 | 2 + 4"), 7);
    assert_eq!(int("1 << 2 + 1"), 8);
    assert_eq!(int("7 & 3 # 1"), 2);
    assert!(parse_expr("1 < 2 = true")
        .unwrap_err()
        .contains("do not chain"));
    assert!(parse_expr("1 < 2 < 3")
        .unwrap_err()
        .contains("do not chain"));
    assert_eq!(ev("NOT 1 > 2 AND 3 > 2"), Ok(Value::Bool(true)));
    assert_eq!(ev("true OR false AND false"), Ok(Value::Bool(true)));
    assert_eq!(ev("NULL IS NULL IS NULL"), Ok(Value::Bool(false)));
    assert_eq!(ev("1 = 2 IS FALSE"), Ok(Value::Bool(true)));
    assert_eq!(ev("1 isnull"), Ok(Value::Bool(false)));
    assert_eq!(ev("null notnull"), Ok(Value::Bool(false)));
    assert_eq!(ev("1 IS NOT NULL"), Ok(Value::Bool(true)));
    assert_eq!(
        ev("2 >= 2 and 3 <> 4 and not 3 != 3"),
        Ok(Value::Bool(true))
    );
    assert_eq!(int("-9223372036854775808"), i64::MIN);
    assert_eq!(int("mod(-7, 3)"), -1);
    assert_eq!(int("ABS(-3)"), 3, "function names are case-insensitive");
}

#[test]
fn integer_and_double_rules() {
    assert_eq!(ev("7 / 2"), Ok(Value::Int(3)));
    assert_eq!(ev("-7 / 2"), Ok(Value::Int(-3)));
    assert_eq!(ev("7.0 / 2"), Ok(Value::Double(3.5)));
    assert_eq!(ev(":n / :d"), Ok(Value::Double(2.8)));
    assert_eq!(
        ev("7.5 % 2"),
        Ok(Value::Int(0)),
        "% rounds doubles to int (8 % 2)"
    );
    assert_eq!(ev("5 % -1"), Ok(Value::Int(0)));
    assert_eq!(ev("-9223372036854775808 % -1"), Ok(Value::Int(0)));
    assert_eq!(ev("1.0 / 0"), Ok(Value::Double(f64::INFINITY)));
    assert_eq!(
        ev("int(2.5)"),
        Ok(Value::Int(2)),
        "rint rounds half to even"
    );
    assert_eq!(ev("int(3.5)"), Ok(Value::Int(4)));
    assert_eq!(ev("int(-2.7)"), Ok(Value::Int(-3)));
    assert_eq!(ev("double(3)"), Ok(Value::Double(3.0)));
    assert_eq!(ev("abs(-2.5)"), Ok(Value::Double(2.5)));
    assert_eq!(ev("abs(-9223372036854775808)"), Ok(Value::Int(i64::MIN)));
    assert_eq!(ev("least(3, 1, 2)"), Ok(Value::Int(1)));
    assert_eq!(ev("greatest(3, 1, 2.5)"), Ok(Value::Double(3.0)));
    assert_eq!(ev("least(1, 2.5, null)"), Ok(Value::Null));
    assert_eq!(ev("pow(2, 10)"), Ok(Value::Double(1024.0)));
    assert_eq!(ev("power(4, 0.5)"), Ok(Value::Double(2.0)));
    assert_eq!(ev("sqrt(16)"), Ok(Value::Double(4.0)));
    assert_eq!(ev("exp(0)"), Ok(Value::Double(1.0)));
    assert_eq!(ev("ln(1)"), Ok(Value::Double(0.0)));
    assert_eq!(ev("pi()"), Ok(Value::Double(std::f64::consts::PI)));
    assert!(matches!(ev("sqrt(-1)"), Ok(Value::Double(d)) if d.is_nan()));
    assert_eq!(
        ev("1 << 64"),
        Ok(Value::Int(1)),
        "shift count modulo 64, as pgbench on x86"
    );
    assert_eq!(ev("-8 >> 1"), Ok(Value::Int(-4)));
    assert_eq!(ev("null + 1"), Ok(Value::Null));
    assert_eq!(ev("1 = 1.0"), Ok(Value::Bool(true)));
}

#[test]
fn evaluation_errors_match_pgbench() {
    assert_eq!(err("1 / 0"), "division by zero");
    assert_eq!(err("1 % 0"), "division by zero");
    assert_eq!(err("9223372036854775807 + 1"), "bigint add out of range");
    assert_eq!(err("-9223372036854775807 - 2"), "bigint sub out of range");
    assert_eq!(err("4611686018427387904 * 2"), "bigint mul out of range");
    assert_eq!(err("-9223372036854775808 / -1"), "bigint div out of range");
    assert_eq!(
        err("int(1e19)"),
        "double to int overflow for 10000000000000000000.000000"
    );
    assert_eq!(err("1 = true"), "cannot coerce boolean to int");
    assert_eq!(err("true + 1"), "cannot coerce boolean to int");
    assert_eq!(err("1 and true"), "cannot coerce int to boolean");
    assert_eq!(err("sqrt(true)"), "cannot coerce boolean to double");
    assert_eq!(err(":nosuch + 1"), "undefined variable \"nosuch\"");
}

#[test]
fn logic_is_lazy_with_sql_like_nulls() {
    assert_eq!(ev("null and false"), Ok(Value::Null));
    assert_eq!(ev("false and null"), Ok(Value::Bool(false)));
    assert_eq!(
        ev("false and 1/0 = 1"),
        Ok(Value::Bool(false)),
        "right side not evaluated"
    );
    assert_eq!(ev("true or 1/0 = 1"), Ok(Value::Bool(true)));
    assert_eq!(ev("true and null"), Ok(Value::Null));
    assert_eq!(ev("not null"), Ok(Value::Null));
    assert_eq!(
        ev("case when 0 then 1 when 2.0 then 2 end"),
        Ok(Value::Int(2))
    );
    assert_eq!(ev("case when false then 1 end"), Ok(Value::Null));
    assert_eq!(
        ev("case when :n > 5 then 'x' end").ok(),
        None,
        "quotes are not tokens"
    );
    assert_eq!(
        ev("case when :n > 5 then 10 else 1/0 end"),
        Ok(Value::Int(10))
    );
    assert_eq!(ev("debug(null) is null"), Ok(Value::Bool(true)));
}

#[test]
fn constants_and_their_errors() {
    assert_eq!(ev("1.5e3"), Ok(Value::Double(1500.0)));
    assert_eq!(ev(".5"), Ok(Value::Double(0.5)));
    assert_eq!(ev("1."), Ok(Value::Double(1.0)));
    assert_eq!(ev("TRUE"), Ok(Value::Bool(true)));
    assert!(parse_expr("99999999999999999999")
        .unwrap_err()
        .contains("bigint constant overflow (99999999999999999999)"));
    assert!(parse_expr("1e999")
        .unwrap_err()
        .contains("double constant overflow (1e999)"));
    assert!(
        parse_expr("9223372036854775808").is_err(),
        "only valid after a minus"
    );
    assert!(parse_expr("nosuch(1)")
        .unwrap_err()
        .contains("unexpected function name (nosuch)"));
    assert!(parse_expr("random(1)")
        .unwrap_err()
        .contains("expected 2, got 1"));
    assert!(parse_expr("least()").unwrap_err().contains("at least 1"));
    assert!(parse_expr("1 + $")
        .unwrap_err()
        .contains("unexpected character ($)"));
}

#[test]
fn hash_and_permute_default_to_default_seed() {
    let mut s = session(0);
    let e = parse_expr(
        "hash(5) = hash(5, :default_seed) and permute(3, 10) = permute(3, 10, :default_seed)",
    )
    .unwrap();
    assert_eq!(s.eval(&e), Ok(Value::Bool(true)));
}

// ---- values as text ----

#[test]
fn values_print_as_pgbench_prints_them() {
    let show = |src: &str| ev(src).unwrap().to_string();
    assert_eq!(show("7.0 / 3"), "2.33333333333333");
    assert_eq!(show("double(1) / 3"), "0.333333333333333");
    assert_eq!(show("123456789012.5"), "123456789012.5");
    assert_eq!(show("0.000012345"), "1.2345e-05");
    assert_eq!(show("1e15"), "1e+15");
    assert_eq!(show("1e14"), "100000000000000");
    assert_eq!(show("1e300 * 1e10"), "Infinity");
    assert_eq!(show("-1e300 * 1e10"), "-Infinity");
    assert_eq!(show("sqrt(-1)"), "NaN");
    assert_eq!(show("-0.0"), "0");
    assert_eq!(show("null"), "NULL");
    assert_eq!(show("1 < 2"), "true");
    assert_eq!(show("-42"), "-42");
}

#[test]
fn variable_text_is_read_as_pgbench_reads_it() {
    let read = |t: &str| Value::from_text("v", t);
    assert_eq!(read("42"), Ok(Value::Int(42)));
    assert_eq!(read(" -7"), Ok(Value::Int(-7)));
    assert_eq!(read("2.5"), Ok(Value::Double(2.5)));
    assert_eq!(read("NULL"), Ok(Value::Null));
    assert_eq!(read("t"), Ok(Value::Bool(true)));
    assert_eq!(read("ye"), Ok(Value::Bool(true)));
    assert_eq!(read("on"), Ok(Value::Bool(true)));
    assert_eq!(read("n"), Ok(Value::Bool(false)));
    assert_eq!(read("off"), Ok(Value::Bool(false)));
    assert!(read("o")
        .unwrap_err()
        .0
        .contains("malformed variable \"v\" value: \"o\""));
    assert!(read("99999999999999999999")
        .unwrap_err()
        .0
        .contains("out of range"));
    assert!(read("").is_err());
}

// ---- scripts ----

fn kinds(script: &Script) -> Vec<String> {
    script
        .commands
        .iter()
        .map(|c| match &c.kind {
            CommandKind::Sql(s) => format!("sql@{}:{}", c.line, s.text),
            other => format!(
                "{}@{}",
                format!("{other:?}").split(['(', ' ']).next().unwrap(),
                c.line
            ),
        })
        .collect()
}

#[test]
fn builtins_parse_as_pgbench_15_scripts() {
    let tpcb = builtin("tpcb-like").unwrap();
    assert_eq!(tpcb.name, "<builtin: TPC-B (sort of)>");
    assert_eq!(tpcb.commands.len(), 11);
    let CommandKind::Sql(update) = &tpcb.commands[5].kind else {
        panic!("command 6 is the accounts UPDATE")
    };
    assert_eq!(
        update.parameterized,
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;"
    );
    assert_eq!(update.params, ["delta", "aid"]);
    assert_eq!(builtin("simple-update").unwrap().commands.len(), 9);
    assert_eq!(builtin("select-only").unwrap().commands.len(), 2);
    assert_eq!(builtin("se").unwrap().name, "<builtin: select only>");
    assert!(builtin("s").unwrap_err().message.contains("ambiguous"));
    assert!(builtin("nope")
        .unwrap_err()
        .message
        .contains("expected one of tpcb-like"));
    // Every builtin runs to the end with :scale defined, drawing in range.
    let mut s = session(7);
    let script = builtin("tpcb").unwrap();
    let mut run = Run::new(&script);
    let mut sql = 0;
    while let Step::Sql { .. } = run.next(&mut s).unwrap() {
        sql += 1;
    }
    assert_eq!(sql, 7);
    let aid = s.vars.value("aid").unwrap().to_int().unwrap();
    assert!((1..=100_000).contains(&aid));
}

#[test]
fn sql_commands_split_as_psql_splits_them() {
    let src = "-- leading comment\n\
               SELECT 1;\n\
               SELECT 'a;b', \"c;d\", $$e;f$$, $q$g;h$q$, E'i\\';j', (1;2)\n  , 3;\n\
               SELECT 1 \\; SELECT 2;\n\
               /* c; */ SELECT 4; SELECT 5 -- x; y\n;\n\
               INSERT INTO t VALUES (:a::int, ':b', :c)";
    let s = parse_script("s.sql", src).unwrap();
    let k = kinds(&s);
    assert_eq!(k[0], "sql@2:SELECT 1;");
    assert_eq!(
        k[1],
        "sql@3:SELECT 'a;b', \"c;d\", $$e;f$$, $q$g;h$q$, E'i\\';j', (1;2)\n  , 3;"
    );
    assert_eq!(k[2], "sql@5:SELECT 1 ; SELECT 2;");
    assert_eq!(k[3], "sql@6:/* c; */ SELECT 4;");
    assert_eq!(k[4], "sql@6:SELECT 5 -- x; y\n;");
    assert_eq!(k[5], "sql@8:INSERT INTO t VALUES (:a::int, ':b', :c)");
    let CommandKind::Sql(last) = &s.commands[5].kind else {
        panic!()
    };
    // pgbench replaces references everywhere, even in quotes; `::` casts are left alone.
    assert_eq!(
        last.parameterized,
        "INSERT INTO t VALUES ($1::int, '$2', $3)"
    );
    assert_eq!(last.params, ["a", "b", "c"]);
    let mut vars = Variables::new();
    vars.set_value("a", Value::Int(5)).unwrap();
    vars.set_text("b", "x").unwrap();
    // Simple protocol: defined variables as text, undefined ones left as written.
    assert_eq!(
        substitute(&last.text, &mut vars),
        "INSERT INTO t VALUES (5::int, 'x', :c)"
    );
}

#[test]
fn meta_commands_parse() {
    let src = "\\set x 1 + \\\n  2\n\\sleep 10 ms\n\\sleep 5ms\n\\sleep :t us\n\\sleep 2\n\
               \\startpipeline\nSELECT 1 AS one \\gset p_\n\\endpipeline\nSELECT 2;\n\\aset\n";
    let s = parse_script("m.sql", src).unwrap();
    let CommandKind::Set { var, expr } = &s.commands[0].kind else {
        panic!()
    };
    assert_eq!(var, "x");
    assert_eq!(Session::bare(0).eval(expr), Ok(Value::Int(3)));
    let sleeps: Vec<_> = s.commands[1..5]
        .iter()
        .map(|c| match &c.kind {
            CommandKind::Sleep { amount, unit_us } => (amount.clone(), *unit_us),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        sleeps,
        [
            (SleepAmount::Literal(10), 1000),
            (SleepAmount::Literal(5), 1000),
            (SleepAmount::Variable("t".into()), 1),
            (SleepAmount::Literal(2), 1_000_000),
        ]
    );
    assert!(matches!(s.commands[5].kind, CommandKind::StartPipeline));
    let CommandKind::Sql(q) = &s.commands[6].kind else {
        panic!()
    };
    assert_eq!(
        q.capture,
        Some(Capture {
            all: false,
            prefix: "p_".into()
        })
    );
    assert!(matches!(s.commands[7].kind, CommandKind::EndPipeline));
    let CommandKind::Sql(q) = &s.commands[8].kind else {
        panic!()
    };
    assert_eq!(
        q.capture,
        Some(Capture {
            all: true,
            prefix: String::new()
        })
    );
}

fn parse_err(src: &str) -> ScriptError {
    parse_script("bad.sql", src).unwrap_err()
}

#[test]
fn bad_scripts_name_file_line_column_and_expectation() {
    let e = parse_err("SELECT 1;\n\\set x 1 +* 2\n");
    assert_eq!((e.line, e.column), (2, Some(11)));
    assert!(e.message.contains("expected an operand"), "{}", e.message);
    assert!(e.message.contains("found '*'"));
    let shown = e.to_string();
    assert!(shown.starts_with("bad.sql:2:11: syntax error"), "{shown}");
    assert!(shown.contains("\\set x 1 +* 2\n            ^"), "{shown}");

    let e = parse_err("\\set x (1 + 2\n");
    assert_eq!((e.line, e.column), (1, Some(14)));
    assert!(e
        .message
        .contains("expected ')', found the end of the line"));

    let e = parse_err("\\set 1x 2\n");
    assert!(e.message.contains("invalid variable name \"1x\""));
    assert_eq!(e.column, Some(6));

    let e = parse_err("\\shell echo hi\n");
    assert!(e.message.contains("\\shell is not supported"));
    let e = parse_err("\\setshell v echo 1\n");
    assert!(e.message.contains("\\setshell is not supported"));

    let e = parse_err("\n\\frobnicate\n");
    assert_eq!((e.line, e.column), (2, Some(2)));
    assert!(e
        .message
        .contains("invalid command \\frobnicate: expected one of \\set"));

    assert!(parse_err("\\sleep\n").message.contains("missing argument"));
    assert!(parse_err("\\sleep x\n")
        .message
        .contains("must be an integer"));
    assert!(parse_err("\\sleep 1 h\n")
        .message
        .contains("must be us, ms or s"));
    assert!(parse_err("\\sleep 1 ms x\n")
        .message
        .contains("too many arguments"));
    assert!(parse_err("\\else x\n")
        .message
        .contains("unexpected argument"));
    assert!(parse_err("\\gset\n")
        .message
        .contains("must follow an SQL command"));
    assert!(parse_err("\\set x 1\n\\gset\n")
        .message
        .contains("must follow an SQL command"));
    assert!(parse_err("SELECT 1 \\gset\n\\gset\n")
        .message
        .contains("must follow"));
    assert!(parse_err("-- nothing\n").message.contains("no commands"));
}

#[test]
fn if_nesting_is_checked_before_running() {
    let e = parse_err("\\if 1\nSELECT 1;\n");
    assert_eq!(
        (e.line, e.message.as_str()),
        (1, "\\if without matching \\endif")
    );
    let e = parse_err("\\endif\n");
    assert_eq!(e.message, "\\endif without matching \\if");
    let e = parse_err("\\if 1\n\\else\n\\elif 2\n\\endif\n");
    assert_eq!((e.line, e.message.as_str()), (3, "\\elif after \\else"));
    let e = parse_err("\\if 1\n\\else\n\\else\n\\endif\n");
    assert_eq!(e.message, "\\else after \\else");
    assert_eq!(
        parse_err("\\elif 1\n").message,
        "\\elif without matching \\if"
    );
}

/// Runs `script` and returns the SQL commands it sends, in order.
fn sent(script: &Script, s: &mut Session) -> Vec<String> {
    let mut run = Run::new(script);
    let mut out = Vec::new();
    loop {
        match run.next(s).unwrap() {
            Step::Sql { command, .. } => out.push(command.text.clone()),
            Step::Done => return out,
            _ => {}
        }
    }
}

#[test]
fn if_chains_take_exactly_one_branch() {
    let src = "\\if :v = 1\nSELECT 'one';\n\\elif :v = 2\nSELECT 'two';\n\
               \\if :w\nSELECT 'two-w';\n\\else\nSELECT 'two-not-w';\n\\endif\n\
               \\elif :v = 2 or :v = 3\nSELECT 'three';\n\\else\nSELECT 'other';\n\\endif\n\
               SELECT 'after';\n";
    let script = parse_script("if.sql", src).unwrap();
    let case = |v: i64, w: bool| {
        let mut s = Session::bare(0);
        s.vars.set_value("v", Value::Int(v)).unwrap();
        s.vars.set_value("w", Value::Bool(w)).unwrap();
        sent(&script, &mut s)
    };
    assert_eq!(case(1, true), ["SELECT 'one';", "SELECT 'after';"]);
    assert_eq!(
        case(2, true),
        ["SELECT 'two';", "SELECT 'two-w';", "SELECT 'after';"]
    );
    assert_eq!(
        case(2, false),
        ["SELECT 'two';", "SELECT 'two-not-w';", "SELECT 'after';"]
    );
    assert_eq!(case(3, true), ["SELECT 'three';", "SELECT 'after';"]);
    assert_eq!(case(9, true), ["SELECT 'other';", "SELECT 'after';"]);
}

#[test]
fn skipped_branches_are_not_evaluated() {
    let src = "\\if false\n\\set x 1/0\n\\if 1/0\n\\endif\n\\elif true\n\\set y 2\n\\else\n\\set z 1/0\n\\endif\n";
    let script = parse_script("skip.sql", src).unwrap();
    let mut s = Session::bare(0);
    assert!(matches!(Run::new(&script).next(&mut s), Ok(Step::Done)));
    assert_eq!(s.vars.value("y"), Ok(Value::Int(2)));
    assert!(!s.vars.contains("x") && !s.vars.contains("z"));
}

#[test]
fn run_errors_name_the_command() {
    let script = parse_script("e.sql", "SELECT 1;\n\\set x :nosuch + 1\n").unwrap();
    let mut s = Session::bare(0);
    let mut run = Run::new(&script);
    assert!(matches!(run.next(&mut s), Ok(Step::Sql { index: 0, .. })));
    let e = run.next(&mut s).unwrap_err();
    assert_eq!(e.line, 2);
    assert_eq!(e.message, "undefined variable \"nosuch\"");
}

#[test]
fn sleep_durations() {
    let script = parse_script("s.sql", "\\sleep :t ms\n\\sleep 3 us\n\\sleep :bad\n").unwrap();
    let mut s = Session::bare(0);
    s.vars.set_text("t", "25").unwrap();
    s.vars.set_text("bad", "soon").unwrap();
    let mut run = Run::new(&script);
    let mut next = || run.next(&mut s);
    assert!(matches!(next(), Ok(Step::Sleep { duration, .. }) if duration.as_millis() == 25));
    assert!(matches!(next(), Ok(Step::Sleep { duration, .. }) if duration.as_micros() == 3));
    assert!(next()
        .unwrap_err()
        .message
        .contains("invalid sleep time \"soon\""));
}

fn rows(columns: &[&str], rows: &[&[Option<&str>]]) -> ResultSet {
    ResultSet::Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: rows
            .iter()
            .map(|r| r.iter().map(|c| c.map(str::to_string)).collect())
            .collect(),
    }
}

#[test]
fn gset_needs_exactly_one_row() {
    let gset = Capture {
        all: false,
        prefix: "p_".into(),
    };
    let mut s = Session::bare(0);
    let one = rows(&["a", "b"], &[&[Some("1"), None]]);
    s.capture(&gset, &[one]).unwrap();
    assert_eq!(s.vars.value("p_a"), Ok(Value::Int(1)));
    assert_eq!(
        s.vars.text("p_b"),
        Some(""),
        "NULL is stored as an empty string"
    );
    let none = rows(&["a"], &[]);
    assert_eq!(
        s.capture(&gset, &[none]).unwrap_err().0,
        "\\gset: expected one row, got 0"
    );
    let two = rows(&["a"], &[&[Some("1")], &[Some("2")]]);
    assert_eq!(
        s.capture(&gset, &[two]).unwrap_err().0,
        "\\gset: expected one row, got 2"
    );
    assert_eq!(
        s.capture(&gset, &[ResultSet::Command]).unwrap_err().0,
        "\\gset: expected one row, got 0"
    );
    // Of a compound (\;), only the last result counts.
    let first = rows(&["a"], &[&[Some("1")], &[Some("2")]]);
    let last = rows(&["c"], &[&[Some("3")]]);
    s.capture(&gset, &[first, last]).unwrap();
    assert_eq!(s.vars.value("p_c"), Ok(Value::Int(3)));
}

#[test]
fn aset_takes_every_non_empty_result() {
    let aset = Capture {
        all: true,
        prefix: String::new(),
    };
    let mut s = Session::bare(0);
    let a = rows(&["a"], &[&[Some("1")], &[Some("2")]]);
    let empty = rows(&["b"], &[]);
    let c = rows(&["c"], &[&[Some("x")]]);
    s.capture(&aset, &[a, ResultSet::Command, empty, c])
        .unwrap();
    assert_eq!(s.vars.value("a"), Ok(Value::Int(2)), "the last row");
    assert!(!s.vars.contains("b"));
    assert_eq!(s.vars.text("c"), Some("x"));
}

#[test]
fn defines_and_builtin_variables() {
    let config = SessionConfig {
        scale: 3,
        random_seed: 9,
        defines: vec![
            SessionConfig::parse_define("scale=10").unwrap(),
            ("v".into(), "x".into()),
        ],
    };
    let mut sessions = config.sessions(2).unwrap();
    let mut b = sessions.pop().unwrap();
    let mut a = sessions.pop().unwrap();
    assert_eq!(
        a.vars.value("scale"),
        Ok(Value::Int(10)),
        "-D overrides :scale"
    );
    assert_eq!(b.vars.value("client_id"), Ok(Value::Int(1)));
    assert_eq!(a.vars.value("default_seed"), b.vars.value("default_seed"));
    assert_ne!(a.rng, b.rng, "each client has its own random sequence");
    assert!(SessionConfig::parse_define("novalue")
        .unwrap_err()
        .contains("NAME=VALUE"));
    assert!(SessionConfig::parse_define("9x=1")
        .unwrap_err()
        .contains("invalid variable name"));
}

#[test]
fn debug_prints_as_pgbench() {
    let script = parse_script(
        "d.sql",
        "\\set a debug(7.0 / 3)\n\\set b debug(null)\n\\set c debug(1 < 2)\n",
    )
    .unwrap();
    let mut s = Session::bare(0);
    s.debug_log = Some(Vec::new());
    Run::new(&script).next(&mut s).unwrap();
    assert_eq!(
        s.debug_log.unwrap(),
        [
            "debug(script=0,command=1): double 2.33333333333333",
            "debug(script=0,command=2): null",
            "debug(script=0,command=3): boolean true",
        ]
    );
}
