//! The README's configuration tables against the code: the same keys and
//! variables, and every default the README gives is the one the code applies.

use super::{ClientConfig, ServerConfig, Settings, Source};
use std::collections::{BTreeMap, BTreeSet};

/// One row of a table: `| key | env | default | meaning |`.
#[derive(Debug)]
struct Row {
    key: String,
    var: String,
    default: Option<String>,
}

/// The rows of the table under `### {heading}` inside `## Configuration`.
fn table(heading: &str) -> Vec<Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n## Configuration").nth(1).expect("README has a `## Configuration` section");
    let section = section.split("\n## ").next().unwrap();
    let sub = section
        .split("\n### ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("README's Configuration has no `### {heading}`"));
    let cell = |c: &str| c.trim().trim_matches('`').to_string();
    let rows: Vec<Row> = sub
        .lines()
        .filter(|l| l.starts_with("| `") || l.starts_with("| -"))
        .map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split(" | ").collect();
            assert!(cells.len() >= 4, "README row {l:?} does not have 4 cells");
            let default = match cells[2].trim() {
                "(none)" => None,
                d => Some(cell(d)),
            };
            Row { key: cell(cells[0]), var: cell(cells[1]), default }
        })
        .collect();
    assert!(!rows.is_empty(), "README's `### {heading}` has no table rows");
    rows
}

fn env_of(vars: BTreeMap<String, String>) -> super::EnvLookup {
    Box::new(move |k: &str| vars.get(k).cloned())
}

/// `a.b.c: "v"` as nested YAML.
fn yaml_for(key: &str, value: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut out = String::new();
    for (depth, part) in parts.iter().enumerate() {
        out.push_str(&"  ".repeat(depth));
        out.push_str(part);
        out.push(':');
        if depth + 1 == parts.len() {
            out.push_str(&format!(" {value:?}"));
        }
        out.push('\n');
    }
    out
}

/// Checks one program's table: `base` is the environment it needs to load at all.
fn check<S: Settings + std::fmt::Debug>(heading: &str, base: &[(&str, &str)]) {
    let base: BTreeMap<String, String> = base.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut src = Source::from_parts("", env_of(base.clone())).unwrap();
    let baseline = format!("{:?}", S::read(&mut src).unwrap());
    let asked: BTreeSet<(String, String)> = src.asked().clone();
    let rows = table(heading);
    let documented: BTreeSet<(String, String)> = rows.iter().map(|r| (r.key.clone(), r.var.clone())).collect();
    assert_eq!(documented, asked, "README's `### {heading}` (left) and the code (right) name different settings");
    let helped: BTreeSet<(String, String)> = S::SETTINGS_HELP
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        // Deeper indents continue the line above.
        .filter(|l| !l.starts_with(' '))
        .map(|l| {
            let l = l.replace("(no key)", "-");
            let mut words = l.split_whitespace();
            (words.next().unwrap_or_default().to_string(), words.next().unwrap_or_default().to_string())
        })
        .collect();
    assert_eq!(helped, asked, "`{} --help` (left) and the code (right) name different settings", S::PROGRAM);

    for row in rows.iter().filter(|r| r.default.is_some()) {
        let default = row.default.as_deref().unwrap();
        // A variable the base environment sets cannot be set to its default here.
        if row.var != "-" && !base.contains_key(&row.var) {
            let mut env = base.clone();
            env.insert(row.var.clone(), default.to_string());
            let mut src = Source::from_parts("", env_of(env)).unwrap();
            let with = S::read(&mut src).unwrap_or_else(|e| panic!("{}={default:?} (README's default): {e}", row.var));
            assert_eq!(format!("{with:?}"), baseline, "{}={default:?} is not the code's default", row.var);
        }
        if row.key != "-" {
            let mut src = Source::from_parts(&yaml_for(&row.key, default), env_of(base.clone())).unwrap();
            let with = S::read(&mut src).unwrap_or_else(|e| panic!("{}: {default:?} (README's default): {e}", row.key));
            assert_eq!(format!("{with:?}"), baseline, "{}: {default:?} is not the code's default", row.key);
        }
    }
}

#[test]
fn the_readme_lists_every_server_setting_with_the_code_s_default() {
    check::<ServerConfig>("Server", &[("SERVER_AUTH", "off")]);
}

#[test]
fn the_readme_lists_every_agency_setting_with_the_code_s_default() {
    check::<ClientConfig>("Agency", &[("CLI_ID", "1")]);
}
