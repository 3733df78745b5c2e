//! `keys` commands: KEK creation, life cycle, wrong KEK, corrupted keyring.

use crate::util::Scratch;

#[test]
fn new_kek_is_32_private_bytes_and_is_never_overwritten() {
    let s = Scratch::new();
    let kek = std::fs::read(&s.kek).unwrap();
    assert_eq!(kek.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&s.kek).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = s
        .run(&["keys", "new-kek", "--out", s.kek.to_str().unwrap()])
        .fails();
    assert!(again.contains("never overwritten"), "{again}");
    assert_eq!(std::fs::read(&s.kek).unwrap(), kek);
}

#[test]
fn life_cycle_init_rotate_retire_destroy_import_list() {
    let s = Scratch::with_tenants(&["brand-a"]);
    assert!(s
        .keys(&["rotate", "--tenant", "brand-a"])
        .ok()
        .contains("rotated to brand-a v2 (active"));
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    assert!(s
        .keys(&["destroy", "--tenant", "brand-a", "--version", "3"])
        .fails()
        .contains("active version"));
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    let secret = s.path("escrow.hex");
    std::fs::write(
        &secret,
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n",
    )
    .unwrap();
    let imported = s
        .keys(&[
            "import",
            "--tenant",
            "brand-a",
            "--version",
            "7",
            "--secret-file",
            secret.to_str().unwrap(),
        ])
        .ok();
    assert!(
        imported.contains("v7 (retired, fingerprint 8503faa5f9adca1a)"),
        "{imported}"
    );

    let list: serde_json::Value =
        serde_json::from_str(&s.keys(&["list", "--tenant", "brand-a", "--json"]).ok()).unwrap();
    let states: Vec<(u64, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            (1, "destroyed"),
            (2, "retired"),
            (3, "active"),
            (7, "retired")
        ]
    );
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.get("wrapped").is_none() || v["state"] != "destroyed"));
    let table = s.keys(&["list", "--tenant", "brand-a"]).ok();
    assert!(
        table.contains("FINGERPRINT") && table.contains("8503faa5f9adca1a"),
        "{table}"
    );

    assert!(s
        .keys(&["retire", "--tenant", "brand-a", "--version", "3"])
        .ok()
        .contains("retired brand-a v3"));
    let actions = s
        .run(&[
            "audit",
            "show",
            "--json",
            "--audit-log",
            s.audit_log().to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
        ])
        .ok();
    let actions: Vec<String> = actions
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        ["init", "rotate", "rotate", "destroy", "import", "retire"]
    );
    s.audit_verify().ok();
}

#[test]
fn a_wrong_kek_fails_every_key_command_and_changes_nothing() {
    let s = Scratch::with_tenants(&["brand-a"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    let wrong = s.path("wrong-kek");
    s.run(&["keys", "new-kek", "--out", wrong.to_str().unwrap()])
        .ok();
    let secret = s.path("escrow.bin");
    std::fs::write(&secret, [7u8; 32]).unwrap();
    let before = s.snapshot();
    let commands: Vec<Vec<&str>> = vec![
        vec!["init", "--tenant", "brand-b"],
        vec!["rotate", "--tenant", "brand-a"],
        vec!["list", "--tenant", "brand-a"],
        vec!["retire", "--tenant", "brand-a", "--version", "2"],
        vec!["destroy", "--tenant", "brand-a", "--version", "1"],
        vec![
            "import",
            "--tenant",
            "brand-a",
            "--version",
            "9",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    ];
    for args in commands {
        let message = s.keys_with_kek(&wrong, &args).fails();
        assert!(
            message.contains("KEK does not open the keyring"),
            "{args:?}: {message}"
        );
    }
    let lookup = s.run(&[
        "lookup",
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        wrong.to_str().unwrap(),
        "--tenant",
        "brand-a",
        "--domain",
        "email",
        "--normalizer",
        "email",
        "a@b.c",
    ]);
    assert!(lookup.fails().contains("KEK does not open"));
    let verify = s
        .run(&[
            "audit",
            "verify",
            "--audit-log",
            s.audit_log().to_str().unwrap(),
            "--kek-file",
            wrong.to_str().unwrap(),
        ])
        .fails();
    assert!(
        verify.contains("line 1") && verify.contains("MAC"),
        "{verify}"
    );
    assert_eq!(s.snapshot(), before, "nothing changed on disk");
}

#[test]
fn unusable_kek_files_are_explained() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let short = s.path("short-kek");
    std::fs::write(&short, b"not a key").unwrap();
    assert!(s
        .keys_with_kek(&short, &["list", "--tenant", "brand-a"])
        .fails()
        .contains("neither 32 raw bytes nor the base64"));
    let missing = s.path("missing-kek");
    assert!(s
        .keys_with_kek(&missing, &["list", "--tenant", "brand-a"])
        .fails()
        .contains("cannot read the KEK file"));
    // The base64 form of the same KEK works.
    let b64 = s.path("kek.b64");
    use base64::Engine as _;
    std::fs::write(
        &b64,
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&s.kek).unwrap()) + "\n",
    )
    .unwrap();
    s.keys_with_kek(&b64, &["list", "--tenant", "brand-a"]).ok();
}

#[test]
fn a_corrupted_keyring_is_a_clear_error_never_a_panic() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let text = std::fs::read_to_string(&s.keyring).unwrap();
    for (what, corrupted) in [
        ("truncated", text[..text.len() / 3].to_string()),
        ("state edited", text.replace("\"active\"", "\"retired\"")),
        ("garbage", "\u{1}\u{2}".to_string()),
    ] {
        std::fs::write(&s.keyring, &corrupted).unwrap();
        let message = s.keys(&["rotate", "--tenant", "brand-a"]).fails();
        assert!(
            message.contains("corrupted or was edited"),
            "{what}: {message}"
        );
        assert_eq!(
            std::fs::read_to_string(&s.keyring).unwrap(),
            corrupted,
            "{what}: left as found"
        );
    }
}

#[test]
fn lookup_gives_one_token_per_live_version_and_is_audited() {
    let s = Scratch::with_tenants(&["brand-a"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    let args = |value: &'static str| {
        vec![
            "lookup".to_string(),
            "--keyring".into(),
            s.keyring.to_str().unwrap().into(),
            "--kek-file".into(),
            s.kek.to_str().unwrap().into(),
            "--tenant".into(),
            "brand-a".into(),
            "--domain".into(),
            "email".into(),
            "--normalizer".into(),
            "email".into(),
            value.into(),
        ]
    };
    let a = s
        .run(
            &args("Alice@Example.com")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .ok();
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines.len(), 2, "{a}");
    assert!(
        lines[0].starts_with("2 v2.") && lines[1].starts_with("3 v3."),
        "{a}"
    );
    let stdin_args = args("-");
    let b = s
        .run_with_stdin(
            &stdin_args.iter().map(String::as_str).collect::<Vec<_>>(),
            Some(b"  alice@example.COM\n"),
        )
        .ok();
    assert_eq!(a, b, "same person, same tokens, whatever the typing");
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    assert_eq!(log.matches("\"action\":\"lookup\"").count(), 2);
    assert!(
        !log.to_lowercase().contains("alice"),
        "the looked-up value is never logged"
    );
    s.audit_verify().ok();
}
