//! No module of the project's crates imports a module that (directly or through others)
//! imports it back. Edges are read from the sources: paths through `crate::`, `super::` and
//! `self::` (also inside `use` groups), and a parent's use of a child module by name; an item
//! taken from a parent is an edge to the parent. Test modules (`#[cfg(test)] mod tests`) and
//! comments are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates checked, by their source directory under the workspace root.
const CRATES: &[&str] = &[
    "l7-sidecar/src",
    "l4-ctl/src",
    "common/src",
    "xtask/src",
    "xtask/traffic/src",
    "xtask/testbed/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir)
        .expect("read a source directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A module's path (`a::b`; the crate root is empty) from its file.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(root)
        .expect("under the root")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// The source without comment lines and without a trailing test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths named in `text` after `crate::`, `super::` or `self::`, `use` groups expanded, each
/// as segments from the crate root.
fn paths(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(anchor) {
            let start = from + at;
            from = start + anchor.len();
            let before = start.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
                continue;
            }
            let base: Vec<String> = match anchor {
                "crate::" => Vec::new(),
                "super::" => me[..me.len().saturating_sub(1)].to_vec(),
                _ => me.to_vec(),
            };
            expand(&text[from..], base, &mut out);
        }
    }
    out
}

/// Reads one path (or a `{..}` group of them) at the start of `rest`, below `base`.
fn expand(rest: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut segments = base;
    let mut i = 0;
    let bytes = rest.as_bytes();
    loop {
        let word_end = rest[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(rest.len(), |e| i + e);
        if word_end > i {
            segments.push(rest[i..word_end].to_owned());
        }
        i = word_end;
        let group = if rest[i..].starts_with("::{") {
            Some(i + 3)
        } else if rest[i..].starts_with('{') {
            Some(i + 1)
        } else {
            None
        };
        if let Some(group_start) = group {
            // A group: split at top-level commas.
            let mut depth = 1;
            let mut item_start = group_start;
            let mut j = group_start;
            while j < bytes.len() && depth > 0 {
                match bytes[j] {
                    b'{' => depth += 1,
                    b'}' | b',' if depth == 1 => {
                        let item = rest[item_start..j].trim();
                        if !item.is_empty() && item != "self" {
                            let item = item.trim_start_matches("self::");
                            expand(item, segments.clone(), out);
                        }
                        item_start = j + 1;
                        if bytes[j] == b'}' {
                            depth -= 1;
                        }
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            return;
        }
        if rest[i..].starts_with("::") {
            i += 2;
            continue;
        }
        out.push(segments);
        return;
    }
}

/// The deepest module that `path` names.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    let mut best = Vec::new();
    for n in 1..=path.len() {
        if modules.contains(&path[..n].to_vec()) {
            best = path[..n].to_vec();
        } else {
            break;
        }
    }
    best
}

fn cycles(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let sources: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| {
            (
                module_of(root, f),
                code(&fs::read_to_string(f).expect("read a source")),
            )
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = sources.keys().cloned().collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (me, text) in &sources {
        let mut deps: BTreeSet<Vec<String>> = paths(text, me)
            .iter()
            .map(|p| resolve(p, &modules))
            .collect();
        for child in modules
            .iter()
            .filter(|m| m.len() == me.len() + 1 && m.starts_with(me))
        {
            let name = format!("{}::", child[me.len()]);
            let used = text.match_indices(&name).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            });
            if used {
                deps.insert(child.clone());
            }
        }
        deps.remove(me);
        graph.insert(me.clone(), deps);
    }
    // Depth-first search for back edges.
    let mut found = Vec::new();
    let mut state: BTreeMap<Vec<String>, u8> = BTreeMap::new();
    fn visit(
        n: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
        found: &mut Vec<String>,
    ) {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for d in graph.get(n).into_iter().flatten() {
            match state.get(d) {
                Some(1) => {
                    let from = stack.iter().position(|m| m == d).unwrap_or(0);
                    let names: Vec<String> = stack[from..]
                        .iter()
                        .chain([d])
                        .map(|m| {
                            if m.is_empty() {
                                "crate".into()
                            } else {
                                m.join("::")
                            }
                        })
                        .collect();
                    found.push(names.join(" -> "));
                }
                None => visit(d, graph, state, stack, found),
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
    }
    for n in graph.keys() {
        if !state.contains_key(n) {
            visit(n, &graph, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all = Vec::new();
    for krate in CRATES {
        for cycle in cycles(&workspace.join(krate)) {
            all.push(format!("{krate}: {cycle}"));
        }
    }
    assert!(all.is_empty(), "module cycles:\n{}", all.join("\n"));
}

#[test]
fn the_check_sees_a_cycle() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path();
    fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    fs::write(
        src.join("a.rs"),
        "use crate::b::Thing;\npub struct Other;\n",
    )
    .unwrap();
    fs::write(
        src.join("b.rs"),
        "use super::a::Other;\npub struct Thing;\n",
    )
    .unwrap();
    assert_eq!(cycles(src), ["a -> b -> a"]);
    // A child taking an item from its parent, which uses the child: a cycle too.
    fs::write(
        src.join("lib.rs"),
        "mod a;\nmod b;\npub struct Root;\nfn f() { a::go() }\n",
    )
    .unwrap();
    fs::write(src.join("a.rs"), "use crate::Root;\npub fn go() {}\n").unwrap();
    fs::write(src.join("b.rs"), "pub struct Thing;\n").unwrap();
    assert_eq!(cycles(src), ["crate -> a -> crate"]);
}
