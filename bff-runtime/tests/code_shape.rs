//! The runtime's code keeps a readable shape (docs/architecture.md): no function in
//! `src/` is longer than [`MAX_LINES`] lines unless its doc comment says why, with a
//! line that starts `Long on purpose:`.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 80;
const EXCUSE: &str = "Long on purpose:";

#[test]
fn no_function_is_longer_than_it_says_it_must_be() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut long = Vec::new();
    for file in rust_files(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, line, length) in long_functions(&text) {
            long.push(format!(
                "{}:{line} `{name}` is {length} lines",
                file.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines without `{EXCUSE}` in their doc comment (split them \
         into named steps, or say why not):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_check_finds_a_long_function_and_honours_an_excuse() {
    let body = "    x();\n".repeat(MAX_LINES);
    let plain = format!("fn long() {{\n{body}}}\n\nfn short() {{\n}}\n");
    assert_eq!(
        long_functions(&plain),
        vec![("long".into(), 1, MAX_LINES + 2)]
    );
    let nested =
        format!("impl A {{\n    pub async fn long(\n        a: u8,\n    ) {{\n{body}    }}\n}}\n");
    assert_eq!(long_functions(&nested).len(), 1);
    let excused = format!("/// A table.\n///\n/// {EXCUSE} one entry per bound.\n{plain}");
    assert!(long_functions(&excused).is_empty());
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// (name, first line, length) of each function over the limit without an excuse.
/// A function ends at the first line that closes a brace at its own indentation,
/// which is how rustfmt lays every function out.
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, name)) = function_start(line) else {
            continue;
        };
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue; // a declaration without a body
        }
        let close = format!("{indent}}}");
        let Some(end) = (open + 1..lines.len()).find(|&j| lines[j].trim_end() == close) else {
            continue;
        };
        let length = end - i + 1;
        if length > MAX_LINES && !excused(&lines[..i]) {
            found.push((name.to_string(), i + 1, length));
        }
    }
    found
}

/// The indentation and name of a line that starts a function.
fn function_start(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start();
    let indent = &line[..line.len() - rest.len()];
    let mut words = rest.split_whitespace().peekable();
    while let Some(word) = words.next() {
        match word {
            "fn" => {
                let name = words.next()?;
                let end = name
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(name.len());
                return Some((indent, &name[..end]));
            }
            "pub" | "async" | "const" | "unsafe" => {}
            w if w.starts_with("pub(") => {}
            _ => return None,
        }
    }
    None
}

/// Whether the doc comment and attributes right above a function give the excuse.
fn excused(above: &[&str]) -> bool {
    above
        .iter()
        .rev()
        .map(|l| l.trim_start())
        .take_while(|l| l.starts_with("///") || l.starts_with("#["))
        .any(|l| l.trim_start_matches('/').trim_start().starts_with(EXCUSE))
}
