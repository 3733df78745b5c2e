//! `keys` commands: KEK creation, life cycle, KEK rotation (`rewrap`), crypto-shredding,
//! wrong KEK, corrupted keyring.

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
        "--ticket",
        "DSR-1",
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
            "--ticket".into(),
            "DSR-1".into(),
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

/// The tokens `lookup` gives for one e-mail address under `kek`.
fn lookup(s: &Scratch, kek: &std::path::Path) -> String {
    s.run(&[
        "lookup",
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        kek.to_str().unwrap(),
        "--tenant",
        "brand-a",
        "--domain",
        "email",
        "--normalizer",
        "email",
        "--ticket",
        "DSR-1",
        "alice@example.com",
    ])
    .ok()
}

/// Runs `keys rewrap` from the scratch KEK to `new`.
fn rewrap(s: &Scratch, old: &std::path::Path, new: &std::path::Path) -> crate::util::Run {
    s.run(&[
        "keys",
        "rewrap",
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        old.to_str().unwrap(),
        "--new-kek-file",
        new.to_str().unwrap(),
    ])
}

fn new_kek(s: &Scratch, name: &str) -> std::path::PathBuf {
    let path = s.path(name);
    s.run(&["keys", "new-kek", "--out", path.to_str().unwrap()])
        .ok();
    path
}

#[test]
fn rewrap_moves_every_key_to_the_new_kek_and_is_audited() {
    let s = Scratch::with_tenants(&["brand-a", "brand-b"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    let public = s.path("audit.pub");
    s.run(&[
        "audit",
        "export-key",
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--out",
        public.to_str().unwrap(),
    ])
    .ok();
    let tokens = lookup(&s, &s.kek);
    let new = new_kek(&s, "kek-2");

    let out = rewrap(&s, &s.kek, &new).ok();
    assert!(
        out.contains("re-wrapped 2 key versions") && out.contains("--kek-file"),
        "brand-a v2 and brand-b v1 (v1 of brand-a is destroyed): {out}"
    );
    assert!(s
        .keys(&["list", "--tenant", "brand-a"])
        .fails()
        .contains("KEK does not open the keyring"));
    s.keys_with_kek(&new, &["list", "--tenant", "brand-a"]).ok();
    assert_eq!(lookup(&s, &new), tokens, "the same secrets, wrapped anew");

    // The trail: one `rewrap` entry with one-way KEK fingerprints, never a KEK.
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    let entry: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["action"] == "rewrap")
        .expect("a rewrap entry");
    let details = entry["details"].as_str().unwrap();
    let fields: Vec<&str> = details.split(' ').collect();
    assert_eq!(fields.len(), 3, "{details}");
    assert_eq!(fields[0], "versions=2");
    for (field, name) in fields[1..].iter().zip(["old_kek=", "new_kek="]) {
        let fingerprint = field.strip_prefix(name).expect(name);
        assert!(
            fingerprint.len() == 8 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
            "{details}"
        );
    }
    assert_ne!(fields[1][8..], fields[2][8..]);
    use base64::Engine as _;
    for kek in [&s.kek, &new] {
        let bytes = std::fs::read(kek).unwrap();
        assert!(!log.contains(&hex::encode(&bytes)));
        assert!(!log.contains(&base64::engine::general_purpose::STANDARD.encode(&bytes)));
    }

    // The whole log verifies with the keyring under the new KEK, and with the public
    // key exported before the rewrap: the audit keys did not change.
    let verified = s
        .run(&[
            "audit",
            "verify",
            "--audit-log",
            s.audit_log().to_str().unwrap(),
            "--kek-file",
            new.to_str().unwrap(),
            "--keyring",
            s.keyring.to_str().unwrap(),
        ])
        .ok();
    assert!(verified.starts_with("OK: 7 entries"), "{verified}");
    s.run(&[
        "audit",
        "verify",
        "--audit-log",
        s.audit_log().to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ])
    .ok();
    s.keys_with_kek(&new, &["rotate", "--tenant", "brand-b"])
        .ok();

    // Run again: already done. With the same KEK twice: refused.
    let again = rewrap(&s, &s.kek, &new).fails();
    assert!(
        again.contains("already wrapped under the new KEK"),
        "{again}"
    );
    let same = rewrap(&s, &new, &new).fails();
    assert!(same.contains("keys new-kek"), "{same}");
}

#[test]
fn a_rewrap_that_cannot_write_leaves_the_old_keyring_usable() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let new = new_kek(&s, "kek-2");
    let before = std::fs::read(&s.keyring).unwrap();
    // A directory where the temporary keyring goes: the write fails before the rename.
    let tmp = s.path("keyring.json.tmp");
    std::fs::create_dir(&tmp).unwrap();
    let message = rewrap(&s, &s.kek, &new).fails();
    assert!(message.contains("cannot write the keyring"), "{message}");
    assert_eq!(std::fs::read(&s.keyring).unwrap(), before);
    s.keys(&["list", "--tenant", "brand-a"]).ok();
    assert!(s
        .keys_with_kek(&new, &["list", "--tenant", "brand-a"])
        .fails()
        .contains("KEK does not open the keyring"));
    s.audit_verify().ok();
    // Once the obstacle is gone, the same command completes.
    std::fs::remove_dir(&tmp).unwrap();
    rewrap(&s, &s.kek, &new).ok();
    s.keys_with_kek(&new, &["list", "--tenant", "brand-a"]).ok();
}

#[test]
fn destroy_removes_the_wrapped_secret_from_the_keyring_file() {
    let s = Scratch::with_tenants(&["brand-a"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.keyring).unwrap()).unwrap();
    let wrapped = file["body"]["tenants"]["brand-a"][0]["wrapped"]
        .as_str()
        .expect("v1's wrapped secret")
        .to_string();
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&wrapped)
        .unwrap();

    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    let bytes = std::fs::read(&s.keyring).unwrap();
    assert!(
        !bytes
            .windows(wrapped.len())
            .any(|w| w == wrapped.as_bytes())
            && !bytes.windows(blob.len()).any(|w| w == blob),
        "the keyring file no longer holds v1's wrapped secret"
    );
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    assert!(!log.contains(&wrapped), "nor does the audit log");

    let list: serde_json::Value =
        serde_json::from_str(&s.keys(&["list", "--tenant", "brand-a", "--json"]).ok()).unwrap();
    assert_eq!(list[0]["state"], "destroyed");
    assert!(list[0]["destroyed_at"].is_string() && list[0].get("wrapped").is_none());
    let tokens = lookup(&s, &s.kek);
    assert!(
        tokens.lines().all(|l| l.starts_with("2 v2.")),
        "no token of a destroyed version: {tokens}"
    );
}

/// `keys list` shows fingerprints, never a wrapped secret, in its table or its JSON; the
/// JSON rows hold exactly the documented fields.
#[test]
fn keys_list_never_prints_key_material() {
    let s = Scratch::with_tenants(&["brand-a"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.keyring).unwrap()).unwrap();
    let versions = file["body"]["tenants"]["brand-a"].as_array().unwrap();
    let wrapped: Vec<&str> = versions
        .iter()
        .map(|v| {
            v["wrapped"]
                .as_str()
                .expect("a live version's wrapped secret")
        })
        .collect();
    assert_eq!(wrapped.len(), 2);
    let json = s.keys(&["list", "--tenant", "brand-a", "--json"]).ok();
    let table = s.keys(&["list", "--tenant", "brand-a"]).ok();
    for (form, out) in [("--json", &json), ("table", &table)] {
        for secret in &wrapped {
            assert!(
                !out.contains(secret),
                "{form} prints a wrapped secret: {out}"
            );
        }
        for v in versions {
            assert!(
                out.contains(v["fingerprint"].as_str().unwrap()),
                "{form} shows each fingerprint: {out}"
            );
        }
    }
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    for row in rows.as_array().unwrap() {
        let mut fields: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "activated_at",
                "created_at",
                "destroyed_at",
                "fingerprint",
                "retired_at",
                "state",
                "tenant",
                "version"
            ]
        );
    }
}

/// `lookup` args for brand-a's e-mail domain with `extra` (value, normalizer...) appended.
fn lookup_args<'a>(s: &'a Scratch, normalizer: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "lookup",
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--tenant",
        "brand-a",
        "--domain",
        "email",
        "--normalizer",
        normalizer,
    ];
    args.extend_from_slice(extra);
    args
}

/// `lookup` takes exactly one value: an empty one (argument or standard input, or empty
/// once normalized) and a second line are refused in one line that never echoes a value,
/// and nothing is audited.
#[test]
fn lookup_takes_exactly_one_value_and_refuses_an_empty_one() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let log_before = std::fs::read(s.audit_log()).unwrap();
    let ticket = ["--ticket", "DSR-1"];
    let cases: [(&str, &str, Option<&[u8]>, &str); 7] = [
        ("email", "", None, "the value to look up is empty"),
        ("email", "   ", None, "the value to look up is empty"),
        ("email", "-", Some(b""), "the value to look up is empty"),
        ("email", "-", Some(b"\n"), "the value to look up is empty"),
        (
            "email",
            "-",
            Some(b"secret-alice@example.com\nsecret-bob@example.com\n"),
            "standard input holds 2 lines, but lookup takes exactly one value",
        ),
        (
            "email",
            "-",
            Some(b"secret-alice@example.com\n\n"),
            "standard input holds 2 lines",
        ),
        (
            "digits",
            "secret-no-digits",
            None,
            "empty once normalized with `digits`",
        ),
    ];
    for (normalizer, value, stdin, expected) in cases {
        let args = lookup_args(&s, normalizer, &[ticket[0], ticket[1], value]);
        let message = s.run_with_stdin(&args, stdin).fails();
        assert!(
            message.contains(expected) && message.lines().count() == 1,
            "{value:?} {stdin:?}: {message}"
        );
        assert!(!message.contains("secret"), "a value is echoed: {message}");
    }
    assert_eq!(
        std::fs::read(s.audit_log()).unwrap(),
        log_before,
        "a refused lookup is not audited"
    );
    // One line, with or without its final newline (CRLF too), is one value.
    let one = s
        .run(&lookup_args(
            &s,
            "email",
            &[ticket[0], ticket[1], "alice@example.com"],
        ))
        .ok();
    for stdin in [
        &b"alice@example.com"[..],
        b"alice@example.com\n",
        b"alice@example.com\r\n",
    ] {
        let args = lookup_args(&s, "email", &[ticket[0], ticket[1], "-"]);
        assert_eq!(s.run_with_stdin(&args, Some(stdin)).ok(), one);
    }
}

/// With no `--actor`, no `PSEUDOPIPE_ACTOR` and no login name in the environment, a
/// command that writes an audit entry is refused, saying what to set; nothing changes.
/// `LOGNAME` alone names the actor.
#[test]
fn an_audit_entry_needs_someone_to_name() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let before = s.snapshot();
    let anonymous = |args: &[&str]| {
        let mut command = s.command(args);
        for variable in ["PSEUDOPIPE_ACTOR", "SUDO_USER", "USER", "LOGNAME"] {
            command.env_remove(variable);
        }
        command
    };
    let keyring = s.keyring.to_str().unwrap();
    let kek = s.kek.to_str().unwrap();
    let input = s.path("export.jsonl");
    std::fs::write(&input, "not json\n").unwrap();
    let commands: [Vec<&str>; 3] = [
        vec![
            "keys",
            "rotate",
            "--keyring",
            keyring,
            "--kek-file",
            kek,
            "--tenant",
            "brand-a",
        ],
        lookup_args(&s, "email", &["--ticket", "DSR-1", "alice@example.com"]),
        vec![
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
            "out.jsonl",
        ],
    ];
    for args in &commands {
        let message = Scratch::finish(anonymous(args), None).fails();
        assert!(
            message.contains("no one to name in the audit log: pass --actor NAME")
                && message.contains("USER")
                && message.lines().count() == 1,
            "{args:?}: {message}"
        );
    }
    std::fs::remove_file(&input).unwrap();
    assert_eq!(s.snapshot(), before, "nothing changed");
    let mut command = anonymous(&commands[0]);
    command.env("LOGNAME", "login-officer");
    Scratch::finish(command, None).ok();
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["actor"], "login-officer");
    assert!(!log.contains("\"actor\":\"unknown\""), "{log}");
}
