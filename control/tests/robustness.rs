//! Malformed input of any kind is refused with an error, never a panic: every truncation
//! and many single-character edits of the example files, hostile documents, and random text.

use std::path::{Path, PathBuf};

use control::config::{self, ConfigError};
use proptest::prelude::*;

fn examples() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .expect("configs/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable");
            (p, text)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty());
    out
}

/// Parses `text`; on error checks that the error is well formed (points inside the text,
/// names the file). Returns whether the text was accepted.
fn parse_checked(text: &str) -> bool {
    let file = Path::new("mutant.yaml");
    match config::parse_str(text, file) {
        Ok(c) => {
            let _ = c.describe();
            true
        }
        Err(e) => {
            assert_well_formed(&e, text);
            false
        }
    }
}

fn assert_well_formed(e: &ConfigError, text: &str) {
    let shown = e.to_string();
    assert!(shown.starts_with("mutant.yaml"), "{shown}");
    assert!(!e.message().is_empty(), "{shown}");
    if let Some(line) = e.line() {
        let lines = text.lines().count() + 1;
        assert!(
            line >= 1 && line <= lines,
            "line {line} outside 1..={lines}: {shown}"
        );
    }
}

fn char_boundaries(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
}

#[test]
fn every_truncation_is_refused_or_accepted_without_panic() {
    for (path, text) in examples() {
        let mut refused = 0;
        for cut in char_boundaries(&text) {
            if !parse_checked(&text[..cut]) {
                refused += 1;
            }
        }
        assert!(refused > 0, "{}: no truncation was refused", path.display());
        assert!(
            parse_checked(&text),
            "{} itself must be valid",
            path.display()
        );
    }
}

#[test]
fn single_character_edits_never_panic() {
    const INSERTS: &[&str] = &[
        ":", "-", " ", "\t", "\n", "[", "]", "{", "}", "\"", "'", "&a", "*a", "!", "!!int ", "#",
        "|", ">", "?", "%", "@", "`", ",", "\u{feff}", "\0", "é", "<<: ", "---\n",
    ];
    for (_, text) in examples() {
        let cuts: Vec<usize> = char_boundaries(&text).collect();
        for (n, &at) in cuts.iter().enumerate() {
            // Deletion of the character at `at`.
            if let Some(&next) = cuts.get(n + 1) {
                parse_checked(&format!("{}{}", &text[..at], &text[next..]));
            }
            // Insertions at a third of the positions (rotating which inserts) keep the run short.
            for (k, ins) in INSERTS.iter().enumerate() {
                if (n + k) % 3 == 0 {
                    parse_checked(&format!("{}{ins}{}", &text[..at], &text[at..]));
                }
            }
        }
    }
}

#[test]
fn line_level_edits_never_panic() {
    for (_, text) in examples() {
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() {
            let mut dropped = lines.clone();
            dropped.remove(i);
            parse_checked(&dropped.join("\n"));
            let mut doubled = lines.clone();
            doubled.insert(i, lines[i]);
            parse_checked(&doubled.join("\n"));
            let mut dedented = lines.clone();
            dedented[i] = lines[i].trim_start();
            parse_checked(&dedented.join("\n"));
        }
    }
}

#[test]
fn hostile_documents_are_refused() {
    let deep_seq = "[".repeat(100_000);
    let deep_map = "{a: ".repeat(50_000);
    let deep_block: String = (0..2_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        laughs.push_str(&format!(
            "{}: &{} [*{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}]\n",
            (b'a' + i) as char,
            (b'a' + i) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char
        ));
    }
    let nodes_bomb = format!(
        "cluster: {{name: d, cluster_cidr: 10.0.0.0/8}}\nx: &x [{}]\nnodes: [*x, *x, *x]\n",
        vec!["{name: n, pod_cidr: 10.0.0.0/24}"; 50].join(", ")
    );
    let long_key = format!("{}: 1\n", "k".repeat(1_000_000));
    let cases: Vec<String> = vec![
        deep_seq, deep_map, deep_block, laughs, nodes_bomb, long_key,
        String::new(), "\n\n\n".into(), "---\n...\n".into(), "~".into(), "null".into(),
        "- 1\n- 2\n".into(), "\"just a string\"".into(), "cluster:\nnodes:\n".into(),
        "cluster: {}\nnodes: {}\n".into(), "--- a\n--- b\n".into(), "? [a, b]\n: c\n".into(),
        "cluster: !!binary aGVsbG8=\nnodes: []\n".into(), "cluster: *unknown\n".into(),
        "%YAML 1.2\n%YAML 1.2\n---\na: 1\n".into(), "\u{feff}cluster: {}\n".into(),
        "cluster:\n  name: d\n  cluster_cidr: 10.0.0.0/8\nnodes:\n  - name: n\n    pod_cidr: 10.0.0.0/24\n    pods:\n      - {name: p, ip: 10.0.0.2, port: {kind: tap, interface: t, mac: 1}}\n".into(),
        "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - name: n\n    pod_cidr: 10.0.0.0/24\n    pods: ~\n".into(),
        "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - name: n\n    pod_cidr: 10.0.0.0/24\n    pods:\n      - ~\n".into(),
        "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - name: n\n    pod_cidr: 10.0.0.0/24\n    <<: {gateway: 10.0.0.9}\n".into(),
    ];
    for text in &cases {
        let started = std::time::Instant::now();
        parse_checked(text);
        // Not a timing assertion on the product: a guard that no input makes the parser
        // loop for minutes (budget and alias limits must stop it).
        assert!(
            started.elapsed().as_secs() < 60,
            "input starting {:?} took too long",
            &text[..text.len().min(40)]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_yamlish_text_never_panics(text in "[a-z0-9_:\\-\\[\\]{}\"' \t\n#&*!|>?,./]{0,200}") {
        parse_checked(&text);
    }

    #[test]
    fn random_splices_of_an_example_never_panic(
        which in 0usize..8,
        start in 0usize..4096,
        len in 0usize..64,
        insert in "[ -~\t\n]{0,16}",
    ) {
        let all = examples();
        let (_, text) = &all[which % all.len()];
        let cuts: Vec<usize> = char_boundaries(text).collect();
        let a = cuts[start % cuts.len()];
        let b = cuts[(start + len).min(cuts.len() - 1)].max(a);
        parse_checked(&format!("{}{insert}{}", &text[..a], &text[b..]));
    }
}
