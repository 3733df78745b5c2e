//! `audit verify` and `audit show` on intact and tampered logs.

use crate::util::Scratch;

/// A keyring with six operations on the log.
fn scratch_with_history() -> Scratch {
    let s = Scratch::with_tenants(&["brand-a", "brand-b"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    s.keys(&["rotate", "--tenant", "brand-b"]).ok();
    s
}

fn lines(s: &Scratch) -> Vec<String> {
    std::fs::read_to_string(s.audit_log())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write(s: &Scratch, lines: &[String]) {
    std::fs::write(
        s.audit_log(),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn an_intact_log_verifies_and_shows() {
    let s = scratch_with_history();
    let out = s.audit_verify().ok();
    assert!(out.starts_with("OK: 6 entries"), "{out}");
    let shown = s
        .run(&[
            "audit",
            "show",
            "--audit-log",
            s.audit_log().to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(shown.lines().count(), 7, "header and six entries: {shown}");
    assert!(
        shown.contains("test-officer") && shown.contains("destroy"),
        "{shown}"
    );
}

/// A named tampering of the log's lines, and the line `audit verify` must name.
type Tampering = (&'static str, fn(&mut Vec<String>), &'static str);

#[test]
fn every_kind_of_tampering_fails_verification_and_names_the_line() {
    let cases: Vec<Tampering> = vec![
        (
            "edit",
            |l: &mut Vec<String>| l[3] = l[3].replace("test-officer", "someone-else"),
            "line 4",
        ),
        (
            "edit time",
            |l: &mut Vec<String>| l[0] = l[0].replacen("\"time\":\"2", "\"time\":\"1", 1),
            "line 1",
        ),
        ("delete", |l: &mut Vec<String>| drop(l.remove(2)), "line 3"),
        ("reorder", |l: &mut Vec<String>| l.swap(4, 5), "line 5"),
        (
            "duplicate",
            |l: &mut Vec<String>| {
                let x = l[1].clone();
                l.insert(2, x)
            },
            "line 3",
        ),
        (
            "cut off the last entry",
            |l: &mut Vec<String>| drop(l.pop()),
            "ends at sequence 5",
        ),
    ];
    for (what, tamper, expected) in cases {
        let s = scratch_with_history();
        let mut l = lines(&s);
        tamper(&mut l);
        write(&s, &l);
        let message = s.audit_verify().fails();
        assert!(
            message.contains("FAILED") && message.contains(expected),
            "{what}: {message}"
        );
    }
}

#[test]
fn a_half_written_last_line_fails() {
    let s = scratch_with_history();
    let text = std::fs::read_to_string(s.audit_log()).unwrap();
    std::fs::write(s.audit_log(), &text[..text.len() - 20]).unwrap();
    assert!(s.audit_verify().fails().contains("incomplete"));
}

#[test]
fn key_operations_refuse_a_broken_trail() {
    let s = scratch_with_history();
    let mut l = lines(&s);
    l.pop();
    write(&s, &l);
    let message = s.keys(&["rotate", "--tenant", "brand-a"]).fails();
    assert!(
        message.contains("audit log") && message.contains("does not verify"),
        "{message}"
    );
}
