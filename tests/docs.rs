//! The README is the front door and docs/ holds the rest: these tests keep the two connected.
//! Every relative link in README.md and docs/*.md must reach an existing file (and heading, when
//! it names one), every docs page must be reachable from the README, the README's exit-code
//! table must match `thumper::exit`, and the set-up commands it gives must name scripts that
//! exist and parse. No server is needed: the files are read as they are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// README.md and every docs/*.md, as paths relative to the repository.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            p.strip_prefix(root())
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of a Markdown file outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// A line with its inline code spans blanked out, so `[x](y)` inside backticks is not a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// The targets of the inline links and images `[text](target)` and the reference definitions
/// `[label]: target` of one line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    if let Some(rest) = line.trim_start().strip_prefix('[') {
        if let Some((_, after)) = rest.split_once("]:") {
            if let Some(target) = after.split_whitespace().next() {
                targets.push(target.to_owned());
            }
        }
    }
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(|c| c == '<' || c == '>').to_owned());
        rest = &after[end..];
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (`-` and `_` kept), spaces to
/// `-`; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line
            .strip_prefix('#')
            .map(|h| h.trim_start_matches('#'))
            .filter(|h| h.starts_with(' '))
        else {
            continue;
        };
        let slug: String = heading
            .trim()
            .trim_end_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 1;
        while seen.contains(&unique) {
            unique = format!("{slug}-{n}");
            n += 1;
        }
        seen.insert(unique);
    }
    seen
}

/// Why a relative link from `page` does not resolve, if it does not.
fn broken(page: &Path, target: &str) -> Option<String> {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        root().join(page)
    } else {
        root()
            .join(page.parent().unwrap_or(Path::new("")))
            .join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor.filter(|a| !a.is_empty())?;
    if file.extension().is_none_or(|x| x != "md") {
        return None;
    }
    let known = anchors(&read(&file));
    (!known.contains(anchor)).then(|| {
        format!(
            "{} has no heading with the anchor #{anchor} (its anchors: {known:?})",
            file.display()
        )
    })
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&root().join(&page));
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.is_empty() || is_external(&target) {
                    continue;
                }
                checked += 1;
                if let Some(why) = broken(&page, &target) {
                    problems.push(format!("{}:{number}: ({target}): {why}", page.display()));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the link parser broken?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme = read(&root().join("README.md"));
    let linked: BTreeSet<PathBuf> = prose_lines(&readme)
        .into_iter()
        .flat_map(|(_, line)| link_targets(line))
        .filter(|t| !is_external(t))
        .map(|t| PathBuf::from(t.split('#').next().unwrap_or_default()))
        .collect();
    let orphans: Vec<String> = pages()
        .into_iter()
        .skip(1)
        .filter(|page| !linked.contains(page))
        .map(|page| page.display().to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "docs pages the README does not link to (add them to its Documentation table): {orphans:?}"
    );
}

/// The exit codes of the README's "Exit codes" table, in order.
fn readme_exit_codes() -> Vec<u8> {
    let readme = read(&root().join("README.md"));
    let section = readme
        .split("\n## Exit codes\n")
        .nth(1)
        .expect("the README has an \"Exit codes\" section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split([' ', '|']).next()?.parse().ok())
        .collect()
}

#[test]
fn the_readme_exit_code_table_is_the_one_thumper_uses() {
    use nix::sys::signal::Signal;
    use thumper::exit;

    let documented: BTreeSet<u8> = readme_exit_codes().into_iter().collect();
    let interrupted = [Signal::SIGINT, Signal::SIGTERM].map(|s| 128 + s as u8);
    let used: BTreeSet<u8> = [
        exit::PASS,
        exit::FAILED,
        exit::BAD_INPUT,
        exit::NOT_JUDGED,
        exit::THRESHOLD,
    ]
    .into_iter()
    .chain(interrupted)
    .collect();
    assert_eq!(
        documented, used,
        "README.md's exit-code table and src/exit.rs disagree"
    );
}

#[test]
fn the_readme_set_up_commands_name_scripts_that_exist_and_parse() {
    let readme = read(&root().join("README.md"));
    for script in [".ci/install", ".ci/run"] {
        assert!(
            readme.contains(&format!("bash {script}")),
            "the README's set-up lines should run `bash {script}`"
        );
        let status = Command::new("bash")
            .arg("-n")
            .arg(root().join(script))
            .status()
            .expect("bash runs");
        assert!(status.success(), "{script} does not parse (bash -n)");
    }
    assert!(
        read(&root().join(".ci/run")).contains("bash .ci/install"),
        ".ci/run must install through .ci/install, as the README's first line does"
    );
}
