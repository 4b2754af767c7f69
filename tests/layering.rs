//! The layering stays true: no module of a crate in this workspace uses another that uses it
//! back, directly or through others. Nodes are source files (a module each); an edge is any
//! path the file names (`use` trees, `crate::a::b` and `super::x` in code), resolved to the
//! deepest module it reaches. A cycle fails the test with the files that form it.
//!
//! Hand-written rather than `cargo-modules` (which builds rust-analyzer, minutes on these
//! machines, and runs the build scripts of tch): module paths are all this check needs.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates checked: their source roots.
const ROOTS: [&str; 3] = ["src", "crates/formats/src", "crates/tokenizer/src"];

/// Module path of a file under its crate root: `ffi/tokens.rs` -> ["ffi", "tokens"].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, string literals and `#[cfg(test)]` modules (tests may use
/// anything).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap().trim().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in inner.char_indices().chain([(inner.len(), ',')]) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let item = inner[start..i].trim();
                if !item.is_empty() {
                    out.extend(expand(item).into_iter().map(|p| format!("{prefix}{p}")));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// Every path a file names that starts at `crate`, `super` or `self`.
fn paths_of(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let at_word = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let end = rest[i..].find(';').map_or(rest.len(), |e| i + e);
        if at_word {
            paths.extend(expand(&rest[i + 4..end]));
        }
        rest = &rest[(i + 4).min(end)..];
    }
    for head in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(head) {
            let start = from + i;
            let len = code[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - start);
            paths.push(code[start..start + len].to_string());
            from = start + len;
        }
    }
    paths
}

/// The module a path reaches, from the module that names it; None outside the crate.
fn resolve(path: &str, from: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut base, rest) = match *segs.first()? {
        "crate" => (Vec::new(), &segs[1..]),
        "super" => (from[..from.len().checked_sub(1)?].to_vec(), &segs[1..]),
        "self" => (from.to_vec(), &segs[1..]),
        // A 2018-edition relative path: a child module of this one.
        child if modules.contains(&[from, &[child.to_string()]].concat()) => {
            (from.to_vec(), &segs[..])
        }
        _ => return None,
    };
    for &seg in rest {
        if seg == "super" {
            base.pop()?;
            continue;
        }
        let next = [&base[..], &[seg.to_string()]].concat();
        if !modules.contains(&next) {
            break;
        }
        base = next;
    }
    Some(base)
}

/// The cycles among the modules of one crate (Tarjan's strongly connected components).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The use graph of one crate: module -> modules it names (itself and the crate root, whose
/// re-exports name everything, left out).
fn graph(root: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(root).unwrap()))
        .collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap();
        let from = module_of(rel);
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let targets: BTreeSet<Vec<String>> = paths_of(&code)
            .iter()
            .filter_map(|p| resolve(p, &from, &modules))
            .filter(|t| *t != from && !t.is_empty())
            .collect();
        edges.insert(from, targets);
    }
    edges
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let mut report = Vec::new();
    for root in ROOTS {
        let edges = graph(Path::new(root));
        assert!(
            edges.len() > 3,
            "{root}: found only {} modules",
            edges.len()
        );
        for cycle in cycles(&edges) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            report.push(format!("{root}: {}", names.join(" <-> ")));
        }
    }
    assert!(report.is_empty(), "module cycles:\n{}", report.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_and_use_trees() {
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        expand("crate::{a::{B, c::D}, e as f}"),
        ["crate::a::B", "crate::a::c::D", "crate::e"]
    );
    let modules: BTreeSet<_> = [m("a"), m("a::b"), m("c")].into_iter().collect();
    assert_eq!(resolve("super::c::X", &m("a::b"), &modules), Some(m("a")));
    assert_eq!(
        resolve("crate::a::b::Y", &m("c"), &modules),
        Some(m("a::b"))
    );
    assert_eq!(resolve("b::Z", &m("a"), &modules), Some(m("a::b")));
    assert_eq!(resolve("std::io", &m("a"), &modules), None);
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), [m("c")].into_iter().collect());
    edges.insert(m("c"), [m("a::b")].into_iter().collect());
    edges.insert(m("a::b"), [m("a")].into_iter().collect());
    assert_eq!(cycles(&edges).len(), 1);
    edges.insert(m("a::b"), BTreeSet::new());
    assert!(cycles(&edges).is_empty());
}
