//! The server's data flows one way (ARCHITECTURE.md, "Layers"): no file of `src/` reaches,
//! directly or through others, a file that reaches it back. This test reads the imports of
//! every production file (`crate::`, `super::`, `self::` and child-module paths, `use`
//! trees included), resolves each to the file that defines the module it names, and fails
//! on any circle, listing the files in it and the names each takes from the next. A parent
//! `mod.rs` that re-exports its children counts as importing them, so a child may not take
//! anything from it: shared items live in a sibling file.
//!
//! What it reads is text: test modules (`#[cfg(test)]` to the end of a file, `tests.rs`,
//! `*_tests.rs`) and comments are left out; `mod x;` declares, it does not import. A path
//! through an item the crate root re-exports (`crate::store::…`) reaches `lib.rs`, the
//! composition root, which imports everything: import such a crate by its own name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root (`["jobs", "machine"]`), and the file defining it.
type Module = Vec<String>;

/// Which files each file imports, with the names it takes.
type Edges = BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>;

#[test]
fn no_file_of_src_imports_a_file_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = circles_of(workspace, &workspace.join("src"));
    assert!(report.is_empty(), "imports that run in a circle:\n{report}");
}

/// The circles among one library's files, described; empty when there are none.
fn circles_of(workspace: &Path, src: &Path) -> String {
    let files = modules(src);
    let mut edges = Edges::new();
    for (module, file) in &files {
        let text = production_text(&std::fs::read_to_string(file).expect("readable source"));
        let inline = inline_modules(&text);
        for (at, path) in referenced_paths(&text, &child_modules(&text)) {
            // A path inside `mod x { … }` is relative to that inner module.
            let mut here = module.clone();
            here.extend(
                inline
                    .iter()
                    .filter(|(start, end, _)| (*start..*end).contains(&at))
                    .map(|(_, _, name)| name.clone()),
            );
            let Some((target, rest)) = resolve(&here, &path, &files) else {
                continue;
            };
            let target_file = &files[&target];
            if target_file != file {
                edges
                    .entry(file.clone())
                    .or_default()
                    .entry(target_file.clone())
                    .or_default()
                    .insert(rest.first().cloned().unwrap_or_else(|| "*".to_owned()));
            }
        }
    }
    let mut report = String::new();
    for circle in circles(&files.values().cloned().collect::<Vec<_>>(), &edges) {
        report.push_str(&format!("circle of {} files:\n", circle.len()));
        for from in &circle {
            for (to, names) in &edges[from] {
                if circle.contains(to) {
                    let names: Vec<_> = names.iter().cloned().collect();
                    report.push_str(&format!(
                        "  {} -> {}: {}\n",
                        short(workspace, from),
                        short(workspace, to),
                        names.join(", ")
                    ));
                }
            }
        }
    }
    report
}

/// The checker itself: a circle through a parent `mod.rs` and its child is found, a use
/// tree is read whole, and `super` inside a file resolves to its parent module.
#[test]
fn the_checker_finds_what_it_should() {
    let paths = referenced_paths(
        "use crate::{a::{B, c::D}, e};\nuse super::f::G;\nlet x = crate::h::I::new();\nkid::J",
        &["kid".to_owned()],
    );
    let want: Vec<Vec<&str>> = vec![
        vec!["crate", "a", "B"],
        vec!["crate", "a", "c", "D"],
        vec!["crate", "e"],
        vec!["super", "f", "G"],
        vec!["crate", "h", "I", "new"],
        vec!["self", "kid", "J"],
    ];
    let paths: Vec<Vec<String>> = paths.into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths, want);
    let text = "fn a() { '{'; }\nmod inner {\n  use super::X;\n}\n";
    let inline = inline_modules(text);
    assert_eq!(inline.len(), 1);
    assert_eq!(inline[0].2, "inner");
    assert!(text[inline[0].0..].starts_with("{\n  use super"));
    assert_eq!(
        child_modules("mod a;\npub mod b;\npub(crate) mod c;\nmod tests {\n"),
        ["a", "b", "c"]
    );
    assert_eq!(
        production_text("fn a() {} // crate::x\n#[cfg(test)]\nmod tests { use crate::y; }"),
        "fn a() {} \n"
    );

    let mut files = BTreeMap::new();
    for (m, f) in [
        (vec![], "lib.rs"),
        (vec!["a"], "a/mod.rs"),
        (vec!["a", "b"], "a/b.rs"),
    ] {
        files.insert(
            m.into_iter().map(str::to_owned).collect::<Module>(),
            PathBuf::from(f),
        );
    }
    let b: Module = vec!["a".into(), "b".into()];
    let resolved = resolve(&b, &["super", "State"].map(String::from), &files);
    assert_eq!(
        resolved,
        Some((vec!["a".to_owned()], vec!["State".to_owned()]))
    );
    let mut edges = Edges::new();
    edges
        .entry("a/mod.rs".into())
        .or_default()
        .insert("a/b.rs".into(), BTreeSet::new());
    edges
        .entry("a/b.rs".into())
        .or_default()
        .insert("a/mod.rs".into(), BTreeSet::new());
    let all: Vec<PathBuf> = files.values().cloned().collect();
    assert_eq!(circles(&all, &edges).len(), 1);
}

fn short(workspace: &Path, file: &Path) -> String {
    file.strip_prefix(workspace)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Every production module file under a library's `src/` (`main.rs` and `bin/` are crates
/// of their own).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    stack.push(path);
                }
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".rs")
                || name == "main.rs"
                || name == "tests.rs"
                || name.ends_with("_tests.rs")
            {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            found.insert(module, path);
        }
    }
    found
}

/// The file's text without its test module and without comments.
fn production_text(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        out.push_str(without_comment(line));
        out.push('\n');
    }
    out
}

/// The line up to a `//` that is not inside a string literal.
fn without_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The modules a file declares (`mod name;`, `pub mod name;`, …), whose items it can name
/// by a bare path (`name::Item`).
fn child_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("mod ").or_else(|| {
                let (_, after) = line.split_once(" mod ")?;
                line.starts_with("pub").then_some(after)
            })?;
            let name = rest.strip_suffix(';')?.trim();
            name.chars().all(is_ident).then(|| name.to_owned())
        })
        .collect()
}

/// The inline modules of a file (`mod name { … }`): where each starts and ends, in
/// characters, outermost first. Braces in string and character literals are skipped.
fn inline_modules(text: &str) -> Vec<(usize, usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut open: Vec<Option<(usize, String)>> = Vec::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                while i + 1 < chars.len() && chars[i + 1] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                // `mod name {` just before?
                let before: String = chars[..i].iter().collect();
                let words: Vec<&str> = before.split_whitespace().rev().take(2).collect();
                let name = match words.as_slice() {
                    [name, "mod"] if name.chars().all(is_ident) => Some(((*name).to_owned(), i)),
                    _ => None,
                };
                open.push(name.map(|(n, at)| (at, n)));
            }
            '}' => {
                if let Some(Some((start, name))) = open.pop() {
                    found.push((start, i, name));
                }
            }
            _ => {}
        }
        i += 1;
    }
    found.sort();
    found
}

/// Every path starting at `crate`, `super`, `self` or one of `children` (then read as
/// `self::child::…`), with `use` trees expanded, each with where it starts.
fn referenced_paths(text: &str, children: &[String]) -> Vec<(usize, Vec<String>)> {
    let chars: Vec<char> = text.chars().collect();
    let roots: Vec<(Vec<char>, Vec<String>)> = ["crate", "super", "self"]
        .iter()
        .map(|r| (r.chars().collect(), vec![(*r).to_owned()]))
        .chain(
            children
                .iter()
                .map(|c| (c.chars().collect(), vec!["self".to_owned(), c.clone()])),
        )
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':';
        if at_word_start {
            for (word, prefix) in &roots {
                let end = i + word.len();
                if chars.get(i..end) == Some(&word[..])
                    && chars.get(end..end + 2) == Some(&[':', ':'][..])
                {
                    let (paths, next) = tree(&chars, end + 2, prefix.clone());
                    out.extend(paths.into_iter().map(|p| (i, p)));
                    i = next;
                    break;
                }
            }
        }
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Reads a path (or a `{…}` group of them) after `prefix::`, from `i`; returns the paths
/// and where reading stopped.
fn tree(chars: &[char], mut i: usize, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let skip_space = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    skip_space(&mut i);
    if chars.get(i) == Some(&'{') {
        let mut out = Vec::new();
        i += 1;
        loop {
            skip_space(&mut i);
            match chars.get(i) {
                None => return (out, i),
                Some('}') => return (out, i + 1),
                Some(',') => i += 1,
                Some(_) => {
                    let (paths, next) = tree(chars, i, prefix.clone());
                    out.extend(paths);
                    // Skip ` as Name` or anything else up to the next separator.
                    i = next;
                    while chars.get(i).is_some_and(|&c| c != ',' && c != '}') {
                        i += 1;
                    }
                }
            }
        }
    }
    let start = i;
    while chars.get(i).is_some_and(|&c| is_ident(c) || c == '*') {
        i += 1;
    }
    let mut path = prefix;
    if i > start {
        path.push(chars[start..i].iter().collect());
    }
    if chars.get(i..i + 2) == Some(&[':', ':'][..]) {
        return tree(chars, i + 2, path);
    }
    (vec![path], i)
}

/// The module a path names from `module` (the longest prefix that is a module of the
/// crate) and the rest of the path; `None` outside the crate.
fn resolve(
    module: &Module,
    path: &[String],
    files: &BTreeMap<Module, PathBuf>,
) -> Option<(Module, Vec<String>)> {
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") | Some("super") => {
            base = module.clone();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "self" => {}
                    "super" => {
                        base.pop()?;
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut best = None;
    let mut candidate = base.clone();
    if files.contains_key(&candidate) {
        best = Some((candidate.clone(), rest.to_vec()));
    }
    for (n, segment) in rest.iter().enumerate() {
        candidate.push(segment.clone());
        if files.contains_key(&candidate) {
            best = Some((candidate.clone(), rest[n + 1..].to_vec()));
        }
    }
    best
}

/// The strongly connected groups of more than one file (Tarjan's algorithm).
fn circles(files: &[PathBuf], edges: &Edges) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets.keys() {
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w.clone());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for f in files {
        if !s.index.contains_key(f) {
            visit(&mut s, f);
        }
    }
    s.out
}
