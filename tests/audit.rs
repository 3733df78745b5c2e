//! `audit verify` and `audit show` on intact and tampered logs, with the KEK or with the
//! public key from `audit export-key` alone.

use std::path::Path;

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

/// Exports the public key of the scratch keyring to `audit.pub`; returns its fingerprint.
fn export_key(s: &Scratch) -> String {
    let out = s
        .run(&[
            "audit",
            "export-key",
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
            "--out",
            s.path("audit.pub").to_str().unwrap(),
        ])
        .ok();
    let fingerprint = out
        .split("fingerprint ")
        .nth(1)
        .and_then(|rest| rest.get(..16))
        .unwrap_or_else(|| panic!("no fingerprint in: {out}"))
        .to_string();
    assert!(
        out.contains("--public-key") && out.contains("no KEK and no keyring"),
        "{out}"
    );
    fingerprint
}

/// Runs `audit SUB --audit-log LOG --public-key KEY` in `s`'s directory.
fn with_public_key(s: &Scratch, sub: &str, log: &Path, key: &Path) -> crate::util::Run {
    s.run(&[
        "audit",
        sub,
        "--audit-log",
        log.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
    ])
}

#[test]
fn an_auditor_verifies_with_the_public_key_alone() {
    let s = scratch_with_history();
    let fingerprint = export_key(&s);
    let key_file = std::fs::read_to_string(s.path("audit.pub")).unwrap();
    assert!(
        key_file.starts_with("pseudopipe-audit-key/1 ")
            && key_file.contains(&format!("fingerprint {fingerprint}")),
        "{key_file}"
    );
    // The auditor's copy: the log, its signed head and the public key; no KEK, no keyring.
    let auditor = Scratch::new();
    std::fs::remove_file(&auditor.kek).unwrap();
    let log = auditor.path("copy.audit.jsonl");
    std::fs::copy(s.audit_log(), &log).unwrap();
    std::fs::copy(
        s.path("keyring.json.audit.jsonl.head"),
        auditor.path("copy.audit.jsonl.head"),
    )
    .unwrap();
    let key = auditor.path("audit.pub");
    std::fs::copy(s.path("audit.pub"), &key).unwrap();

    let out = with_public_key(&auditor, "verify", &log, &key).ok();
    assert!(
        out.starts_with("OK: 6 entries")
            && out.contains(&format!(
                "every signature valid under audit key {fingerprint}"
            ))
            && out.contains("signed head"),
        "{out}"
    );
    let shown = with_public_key(&auditor, "show", &log, &key).ok();
    assert_eq!(shown.lines().count(), 7, "header and six entries: {shown}");
    assert!(shown.contains("destroy"), "{shown}");
}

#[test]
fn with_the_public_key_every_kind_of_tampering_is_named() {
    type Tampering = (&'static str, fn(&Scratch), &'static str);
    let cases: Vec<Tampering> = vec![
        (
            "edit",
            |s| {
                let mut l = lines(s);
                l[3] = l[3].replace("test-officer", "someone-else");
                write(s, &l)
            },
            "line 4 is the first bad entry: its signature",
        ),
        (
            "delete",
            |s| {
                let mut l = lines(s);
                l.remove(2);
                write(s, &l)
            },
            "line 3",
        ),
        (
            "cut off the last entry",
            |s| {
                let mut l = lines(s);
                l.pop();
                write(s, &l)
            },
            "ends at sequence 5 but its signed head",
        ),
        (
            "forge the head",
            |s| {
                let head = s.path("keyring.json.audit.jsonl.head");
                let text = std::fs::read_to_string(&head).unwrap();
                std::fs::write(&head, text.replace("\"seq\":6", "\"seq\":5")).unwrap();
            },
            "its signature does not verify",
        ),
        (
            "delete the head",
            |s| std::fs::remove_file(s.path("keyring.json.audit.jsonl.head")).unwrap(),
            "does not exist",
        ),
        (
            "another keyring's key",
            |s| {
                let other = Scratch::with_tenants(&["brand-a"]);
                export_key(&other);
                std::fs::copy(other.path("audit.pub"), s.path("audit.pub")).unwrap();
            },
            "line 1 is the first bad entry",
        ),
    ];
    for (what, tamper, expected) in cases {
        let s = scratch_with_history();
        export_key(&s);
        tamper(&s);
        let message = with_public_key(&s, "verify", &s.audit_log(), &s.path("audit.pub")).fails();
        assert!(
            message.starts_with("FAILED: ") && message.contains(expected),
            "{what}: {message}"
        );
    }
}

#[test]
fn an_unusable_public_key_file_is_explained() {
    let s = scratch_with_history();
    let key = s.path("audit.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host\n").unwrap();
    let message = with_public_key(&s, "verify", &s.audit_log(), &key).fails();
    assert!(
        message.contains("is not usable") && message.contains("audit export-key"),
        "{message}"
    );
    let missing = with_public_key(&s, "verify", &s.audit_log(), &s.path("none.pub")).fails();
    assert!(
        missing.contains("cannot read the audit public key"),
        "{missing}"
    );
}

#[test]
fn verify_takes_a_public_key_or_a_kek_not_both_nor_neither() {
    let s = scratch_with_history();
    export_key(&s);
    let log = s.audit_log();
    let neither = s.run(&["audit", "verify", "--audit-log", log.to_str().unwrap()]);
    assert_eq!(neither.output.status.code(), Some(2));
    assert!(
        neither.stderr().contains("--public-key") && neither.stderr().contains("--kek-file"),
        "{}",
        neither.stderr()
    );
    let both = s.run(&[
        "audit",
        "verify",
        "--audit-log",
        log.to_str().unwrap(),
        "--public-key",
        s.path("audit.pub").to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
    ]);
    assert_eq!(both.output.status.code(), Some(2), "{}", both.stderr());
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

/// Under `umask 000`, every file the audit trail writes is created 0600 (the keyring, the
/// KEK and a quarantine too); a log, head or public key an administrator opened to a group
/// (0640) stays so when appended to or replaced, and one opened to everyone is narrowed
/// to 0640.
#[test]
fn every_file_of_the_trail_is_private_whatever_the_umask() {
    let s = Scratch::new();
    let keyring = s.keyring.to_str().unwrap();
    let kek = s.kek.to_str().unwrap();
    let keys = |sub: &str| {
        s.run_under_umask_000(&[
            "keys",
            sub,
            "--keyring",
            keyring,
            "--kek-file",
            kek,
            "--tenant",
            "brand-a",
        ])
        .ok()
    };
    keys("init");
    let public = s.path("audit.pub");
    s.run_under_umask_000(&[
        "audit",
        "export-key",
        "--keyring",
        keyring,
        "--kek-file",
        kek,
        "--out",
        public.to_str().unwrap(),
    ])
    .ok();
    for format in ["html", "md"] {
        let out = s.path(&format!("report.{format}"));
        s.run_under_umask_000(&[
            "audit",
            "report",
            "--audit-log",
            s.audit_log().to_str().unwrap(),
            "--keyring",
            keyring,
            "--kek-file",
            kek,
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
    }
    let quarantine = s.path("quarantine.jsonl");
    let input = s.path("export.jsonl");
    std::fs::write(&input, "not json\n").unwrap();
    s.run_under_umask_000(&[
        "pseudonymize",
        "--policy",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/coupon_redemption.policy.toml"
        ),
        "--keyring",
        keyring,
        "--kek-file",
        kek,
        "--input",
        input.to_str().unwrap(),
        "--output",
        s.path("out.jsonl").to_str().unwrap(),
        "--quarantine",
        quarantine.to_str().unwrap(),
    ])
    .ok();
    let head = s.path("keyring.json.audit.jsonl.head");
    for file in [
        s.audit_log(),
        head.clone(),
        s.path("keyring.json.lock"),
        public.clone(),
        s.path("report.html"),
        s.path("report.md"),
        s.keyring.clone(),
        s.kek.clone(),
        quarantine,
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // Opened to an auditors' group by an administrator: kept, never widened.
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    set(&s.audit_log(), 0o640);
    set(&head, 0o644);
    set(&public, 0o640);
    keys("rotate");
    s.run_under_umask_000(&[
        "audit",
        "export-key",
        "--keyring",
        keyring,
        "--kek-file",
        kek,
        "--out",
        public.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(mode(&s.audit_log()), 0o640);
    assert_eq!(mode(&head), 0o640, "narrowed to the group");
    assert_eq!(mode(&public), 0o640);
    s.audit_verify().ok();
}
