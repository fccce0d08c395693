//! Layout rules for `src/`: the files form no import cycle.
//!
//! Every `.rs` file reachable from `src/lib.rs` (and `src/main.rs`) through `mod` declarations
//! is a node. A file depends on another when it names it: a `use crate::…`, `use super::…`,
//! `use self::…` or `use child::…` declaration, or a `crate::…` / `super::…` path in code. A
//! path is resolved to the file of the module it names; when the named item is itself imported
//! there (`pub use`, or a `use` a child reaches through `super::`), the import is followed to
//! the file that defines it. Not dependencies: a parent declaring its children (`mod x;`),
//! a parent re-exporting a descendant's item (`pub use x::Item;`) that the parent's own code
//! does not use, `#[cfg(test)]` items and `mod tests` blocks (tests may reach anywhere), and
//! comments and string literals.
//!
//! The test fails listing every cycle: each group of files that reach each other (a strongly
//! connected component), one cycle through it, and the lines that make its edges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Lexing: comments, strings and characters blanked (newlines kept, so lines still count)

fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, 0usize);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string_len(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' || (rest.starts_with(b"b\"") && !ident_before(b, i)) {
            let start = usize::from(rest[0] == b'b');
            let mut j = start + 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' {
            // A char literal ('a', '\n', '\u{..}', 'é'), or a lifetime / label ('a, 'static).
            let len = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch_len) == Some(&b'\'')).then_some(ch_len + 2)
            };
            match len {
                Some(len) => {
                    blank(&mut out, &rest[..len]);
                    i += len;
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Length of a raw string literal (`r"…"`, `r#"…"#`, `br#"…"#`) at the start of `s`.
fn raw_string_len(s: &[u8]) -> Option<usize> {
    let start = if s.starts_with(b"br") {
        2
    } else if s.starts_with(b"r") {
        1
    } else {
        return None;
    };
    let hashes = s[start..].iter().take_while(|&&c| c == b'#').count();
    if s.get(start + hashes) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    let body = start + hashes + 1;
    s[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| body + p + close.len())
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = code.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\n' {
            line += 1;
        } else if c.is_whitespace() {
        } else if c.is_alphanumeric() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &code[i..end];
            // `r#ident` raw identifiers.
            let word = word.strip_prefix("r#").unwrap_or(word);
            out.push((Tok::Ident(word.to_string()), line));
        } else if c == ':' && chars.peek().map(|&(_, d)| d) == Some(':') {
            chars.next();
            out.push((Tok::PathSep, line));
        } else {
            out.push((Tok::Punct(c), line));
        }
    }
    out
}

/// Blanks `#[cfg(test)]` items and `mod tests { … }` blocks from stripped code.
fn drop_tests(code: &str) -> String {
    let toks = tokens(code);
    let mut cut: Vec<(usize, usize)> = Vec::new(); // token index ranges
    let mut i = 0;
    while i < toks.len() {
        let is_test_attr = toks[i].0 == Tok::Punct('#')
            && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Punct('['))
            && {
                let end = matching(&toks, i + 1, '[', ']');
                let words: Vec<&str> = toks[i + 2..end]
                    .iter()
                    .filter_map(|(t, _)| match t {
                        Tok::Ident(w) => Some(w.as_str()),
                        _ => None,
                    })
                    .collect();
                words.first() == Some(&"cfg") && words.contains(&"test") && !words.contains(&"not")
            };
        let is_mod_tests = toks[i].0 == Tok::Ident("mod".into())
            && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Ident("tests".into()))
            && toks.get(i + 2).map(|t| &t.0) == Some(&Tok::Punct('{'));
        if is_test_attr || is_mod_tests {
            let end = item_end(&toks, i);
            cut.push((i, end));
            i = end + 1;
        } else {
            i += 1;
        }
    }
    // Blank by line/column is awkward with tokens; rebuild from the token stream instead.
    let mut keep = vec![true; toks.len()];
    for (a, b) in cut {
        for k in keep.iter_mut().take(b.min(toks.len() - 1) + 1).skip(a) {
            *k = false;
        }
    }
    let mut out = String::new();
    let mut line = 1;
    for ((t, l), k) in toks.iter().zip(keep) {
        while line < *l {
            out.push('\n');
            line += 1;
        }
        if !k {
            continue;
        }
        match t {
            Tok::Ident(w) => {
                out.push(' ');
                out.push_str(w);
            }
            Tok::PathSep => out.push_str("::"),
            Tok::Punct(c) => {
                out.push(' ');
                out.push(*c);
            }
        }
    }
    out
}

/// Index of the token closing the bracket opened at `open`.
fn matching(toks: &[(Tok, usize)], open: usize, o: char, c: char) -> usize {
    let mut depth = 0;
    for (k, (t, _)) in toks.iter().enumerate().skip(open) {
        if *t == Tok::Punct(o) {
            depth += 1;
        } else if *t == Tok::Punct(c) {
            depth -= 1;
            if depth == 0 {
                return k;
            }
        }
    }
    toks.len() - 1
}

/// Last token of the item starting at `i` (attributes included): its `;` or closing `}`.
fn item_end(toks: &[(Tok, usize)], mut i: usize) -> usize {
    while toks.get(i).map(|t| &t.0) == Some(&Tok::Punct('#')) {
        i = matching(toks, i + 1, '[', ']') + 1;
    }
    let mut depth = 0i32;
    for (k, (t, _)) in toks.iter().enumerate().skip(i) {
        match t {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct(';') if depth == 0 => return k,
            Tok::Punct('{') if depth == 0 => return matching(toks, k, '{', '}'),
            _ => {}
        }
    }
    toks.len() - 1
}

// ---------------------------------------------------------------------------------------------
// Modules, imports and paths

#[derive(Debug)]
struct Import {
    /// The name it binds (`*` for a glob).
    name: String,
    path: Vec<String>,
    public: bool,
    line: usize,
}

#[derive(Debug)]
struct Module {
    file: String,
    path: Vec<String>,
    /// The binary: its `sitewatch::` paths name the library.
    binary: bool,
    children: BTreeSet<String>,
    imports: Vec<Import>,
    /// Paths in code outside `use` declarations, with their line.
    paths: Vec<(Vec<String>, usize)>,
    /// Identifiers in code outside `use` declarations.
    idents: BTreeSet<String>,
}

fn parse_use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<(String, Vec<String>)>,
) {
    let mut segs = prefix.to_vec();
    loop {
        match toks.get(*i).map(|t| t.0.clone()) {
            Some(Tok::PathSep) => *i += 1,
            Some(Tok::Ident(w)) => {
                *i += 1;
                segs.push(w);
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::PathSep) {
                    *i += 1;
                    continue;
                }
                let mut name = segs.last().cloned().unwrap_or_default();
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Ident("as".into())) {
                    if let Some(Tok::Ident(alias)) = toks.get(*i + 1).map(|t| t.0.clone()) {
                        name = alias;
                    }
                    *i += 2;
                }
                if segs.last().map(String::as_str) == Some("self") {
                    segs.pop();
                    if name == "self" {
                        name = segs.last().cloned().unwrap_or_default();
                    }
                }
                out.push((name, segs));
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                segs.push("*".into());
                out.push(("*".into(), segs));
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        None => return,
                        _ => parse_use_tree(toks, i, &segs, out),
                    }
                }
            }
            _ => return,
        }
    }
}

fn parse_module(file: &str, path: Vec<String>, text: &str, binary: bool) -> Module {
    let code = drop_tests(&strip(text));
    let toks = tokens(&code);
    let mut m = Module {
        file: file.to_string(),
        path,
        binary,
        children: BTreeSet::new(),
        imports: Vec::new(),
        paths: Vec::new(),
        idents: BTreeSet::new(),
    };
    let word = |k: usize| match toks.get(k).map(|t| &t.0) {
        Some(Tok::Ident(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Ident(w) if w == "use" => {
                // `pub`, `pub(crate)`, `pub(super)`, `pub(in …)` before it.
                let public = (i >= 1 && word(i - 1) == Some("pub"))
                    || (i >= 2
                        && toks[i - 1].0 == Tok::Punct(')')
                        && (0..i.saturating_sub(1))
                            .rev()
                            .take(6)
                            .any(|k| word(k) == Some("pub")));
                let line = toks[i].1;
                let mut j = i + 1;
                let mut found = Vec::new();
                parse_use_tree(&toks, &mut j, &[], &mut found);
                for (name, path) in found {
                    m.imports.push(Import {
                        name,
                        path,
                        public,
                        line,
                    });
                }
                while j < toks.len() && toks[j].0 != Tok::Punct(';') {
                    j += 1;
                }
                i = j + 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(name), Some(Tok::Punct(';'))) =
                    (word(i + 1), toks.get(i + 2).map(|t| &t.0))
                {
                    m.children.insert(name.to_string());
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(w) => {
                m.idents.insert(w.clone());
                let after_sep = i > 0 && toks[i - 1].0 == Tok::PathSep;
                if !after_sep && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) {
                    let line = toks[i].1;
                    let mut segs = vec![w.clone()];
                    let mut j = i + 1;
                    while toks.get(j).map(|t| &t.0) == Some(&Tok::PathSep) {
                        match word(j + 1) {
                            Some(s) => {
                                segs.push(s.to_string());
                                m.idents.insert(s.to_string());
                                j += 2;
                            }
                            None => break,
                        }
                    }
                    m.paths.push((segs, line));
                    i = j;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    m
}

struct Tree {
    modules: Vec<Module>,
    by_path: HashMap<Vec<String>, usize>,
}

impl Tree {
    /// Reads the modules reachable from `lib.rs` (and `main.rs`) through `mod x;`.
    fn load(files: &BTreeMap<String, String>) -> Tree {
        let mut modules = Vec::new();
        let mut todo: Vec<(String, Vec<String>, bool)> = Vec::new();
        if files.contains_key("lib.rs") {
            todo.push(("lib.rs".into(), Vec::new(), false));
        }
        if files.contains_key("main.rs") {
            todo.push(("main.rs".into(), vec!["<main>".into()], true));
        }
        while let Some((file, path, binary)) = todo.pop() {
            let m = parse_module(&file, path.clone(), &files[&file], binary);
            let dir = match file.rsplit_once('/') {
                _ if file == "lib.rs" || file == "main.rs" => String::new(),
                Some((d, "mod.rs")) => format!("{d}/"),
                Some((d, f)) => format!("{d}/{}/", f.trim_end_matches(".rs")),
                None => format!("{}/", file.trim_end_matches(".rs")),
            };
            for child in &m.children {
                let (a, b) = (format!("{dir}{child}.rs"), format!("{dir}{child}/mod.rs"));
                let found = [a, b].into_iter().find(|f| files.contains_key(f));
                let mut p = path.clone();
                p.push(child.clone());
                todo.push((
                    found.unwrap_or_else(|| panic!("{file}: mod {child}: no file")),
                    p,
                    binary,
                ));
            }
            modules.push(m);
        }
        modules.sort_by(|a, b| a.file.cmp(&b.file));
        let by_path = modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.path.clone(), i))
            .collect();
        Tree { modules, by_path }
    }

    /// The absolute module path (from the library root) that `segs`, written in module `from`,
    /// names; `None` for other crates and local names.
    fn absolute(&self, from: usize, segs: &[String], depth: usize) -> Option<Vec<String>> {
        let m = &self.modules[from];
        let first = segs.first()?.as_str();
        let base: Vec<String> = match first {
            "crate" if !m.binary => segs[1..].to_vec(),
            "sitewatch" if m.binary => segs[1..].to_vec(),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let mut p = m.path.clone();
                p.truncate(p.len().checked_sub(ups)?);
                p.extend_from_slice(&segs[ups..]);
                p
            }
            "self" => {
                let mut p = m.path.clone();
                p.extend_from_slice(&segs[1..]);
                p
            }
            child if m.children.contains(child) => {
                let mut p = m.path.clone();
                p.extend_from_slice(segs);
                p
            }
            name => {
                if depth > 8 {
                    return None;
                }
                let imp = m
                    .imports
                    .iter()
                    .find(|i| i.name == name && i.path.len() > 1)?;
                let mut p = self.absolute(from, &imp.path, depth + 1)?;
                p.extend_from_slice(&segs[1..]);
                p
            }
        };
        (!base.is_empty() || first == "crate").then_some(base)
    }

    /// The module (file) that defines what the absolute path `abs` names.
    fn target(&self, abs: &[String], depth: usize) -> Option<usize> {
        let (n, &module) = (0..=abs.len())
            .rev()
            .find_map(|n| self.by_path.get(&abs[..n]).map(|i| (n, i)))?;
        let rest = &abs[n..];
        if depth < 8 {
            if let Some(name) = rest.first() {
                let m = &self.modules[module];
                if let Some(imp) = m.imports.iter().find(|i| &i.name == name) {
                    if let Some(mut p) = self.absolute(module, &imp.path, 0) {
                        p.extend_from_slice(&rest[1..]);
                        return self.target(&p, depth + 1).or(Some(module));
                    }
                }
            }
        }
        Some(module)
    }

    fn is_descendant(&self, of: usize, m: usize) -> bool {
        let (a, b) = (&self.modules[of].path, &self.modules[m].path);
        b.len() > a.len() && b.starts_with(a)
    }

    /// File dependency edges: (from, to) → the lines that make them.
    fn edges(&self) -> BTreeMap<(usize, usize), Vec<String>> {
        let mut edges: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
        for (from, m) in self.modules.iter().enumerate() {
            let mut add = |segs: &[String], line: usize, what: &str| {
                let Some(abs) = self.absolute(from, segs, 0) else {
                    return;
                };
                let Some(to) = self.target(&abs, 0) else {
                    return;
                };
                if to != from {
                    edges.entry((from, to)).or_default().push(format!(
                        "{}:{line}: {what}{}",
                        m.file,
                        segs.join("::")
                    ));
                }
            };
            for imp in &m.imports {
                if imp.public {
                    // A re-export of a descendant's item is the parent's table of contents,
                    // unless the parent's own code uses it too.
                    let reexport = self
                        .absolute(from, &imp.path, 0)
                        .and_then(|abs| self.target(&abs, 0))
                        .is_some_and(|to| self.is_descendant(from, to));
                    if reexport && (imp.name == "*" || !m.idents.contains(&imp.name)) {
                        continue;
                    }
                }
                add(&imp.path, imp.line, "use ");
            }
            for (segs, line) in &m.paths {
                let first = segs[0].as_str();
                let named = matches!(first, "crate" | "super" | "self")
                    || (first == "sitewatch" && m.binary)
                    || m.children.contains(first);
                if named {
                    add(segs, *line, "");
                }
            }
        }
        edges
    }
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(n: usize, edges: &BTreeMap<(usize, usize), Vec<String>>) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges.keys() {
        adj[a].push(b);
    }
    struct St {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[Vec<usize>], s: &mut St) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in &adj[v] {
            match s.index[w] {
                None => {
                    visit(w, adj, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort_unstable();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(v, &adj, &mut s);
        }
    }
    s.out.sort();
    s.out
}

/// One cycle through `comp`, from its first file back to it (breadth-first, so shortest).
fn one_cycle(comp: &[usize], edges: &BTreeMap<(usize, usize), Vec<String>>) -> Vec<usize> {
    let start = comp[0];
    let inside: BTreeSet<usize> = comp.iter().copied().collect();
    let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &(a, b) in edges.keys() {
            if a != v || !inside.contains(&b) {
                continue;
            }
            if b == start {
                let mut path = vec![v];
                let mut x = v;
                while x != start {
                    x = prev[&x];
                    path.push(x);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(b) {
                e.insert(v);
                queue.push_back(b);
            }
        }
    }
    vec![start]
}

/// Every cycle, described for a failure message (empty when there is none).
fn report(files: &BTreeMap<String, String>) -> Vec<String> {
    let tree = Tree::load(files);
    let edges = tree.edges();
    let name = |i: usize| tree.modules[i].file.as_str();
    cycles(tree.modules.len(), &edges)
        .iter()
        .map(|comp| {
            let path = one_cycle(comp, &edges);
            let mut s = format!(
                "files {{{}}}\n  cycle: {}",
                comp.iter().map(|&i| name(i)).collect::<Vec<_>>().join(", "),
                path.iter()
                    .map(|&i| name(i))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
            for w in path.windows(2) {
                for why in edges[&(w[0], w[1])].iter().take(3) {
                    s.push_str(&format!("\n    {} -> {}: {why}", name(w[0]), name(w[1])));
                }
            }
            s
        })
        .collect()
}

fn read_src() -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

#[test]
fn src_files_import_each_other_in_no_cycle() {
    let files = read_src();
    let tree = Tree::load(&files);
    assert!(
        tree.modules.len() > 50,
        "only {} modules found from src/lib.rs",
        tree.modules.len()
    );
    assert!(
        !tree.edges().is_empty(),
        "no dependency found at all: the scanner is broken"
    );
    let found = report(&files);
    assert!(
        found.is_empty(),
        "{} import cycle(s) between files in src/:\n{}",
        found.len(),
        found.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The checker itself, on small made-up trees

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[test]
fn finds_cycles_through_use_paths_and_reexports() {
    let found = report(&tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        // Through the re-export in c/mod.rs, to the file that defines C.
        ("b.rs", "pub struct B;\nfn f() -> crate::c::C { todo!() }\n"),
        ("c/mod.rs", "mod inner;\npub use inner::C;\n"),
        ("c/inner.rs", "pub struct C(super::super::a::A);\n"),
    ]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("cycle: a.rs -> b.rs -> c/inner.rs -> a.rs"),
        "{found:?}"
    );
    assert!(found[0].contains("b.rs:2: crate::c::C"), "{found:?}");
}

#[test]
fn ignores_tests_comments_strings_and_a_parents_table_of_contents() {
    let found = report(&tree(&[
        ("lib.rs", "pub mod p;\npub mod q;\n#[cfg(test)]\nmod t;\n"),
        // The parent re-exports its child; the child uses the parent's type: no cycle.
        ("p/mod.rs", "mod child;\npub use child::Child;\npub struct Parent;\n"),
        ("p/child.rs", "use super::Parent;\npub struct Child(Parent);\n"),
        (
            "q.rs",
            "// crate::p::Child\nconst S: &str = \"crate::p::Child\";\nconst R: &str = r#\"super::p\"#;\n\
             fn f<'a>(c: char) -> bool { c == '\"' }\n\
             #[cfg(test)]\nmod tests { use crate::p::Child; }\n\
             #[cfg(test)]\nfn helper() { let _ = crate::p::Parent; }\n",
        ),
        ("t.rs", "use crate::q;\n"),
    ]));
    assert!(found.is_empty(), "{found:?}");
    // But a parent whose own code uses what it re-exports depends on it.
    let found = report(&tree(&[
        ("lib.rs", "pub mod p;\n"),
        (
            "p/mod.rs",
            "mod child;\npub use child::Child;\npub struct Parent;\nfn f(_: Child) {}\n",
        ),
        (
            "p/child.rs",
            "use super::Parent;\npub struct Child(Parent);\n",
        ),
    ]));
    assert_eq!(found.len(), 1, "{found:?}");
}
