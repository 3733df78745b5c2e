//! The keyring life cycle and the audit log: operations, wrong KEK, corruption, tampering.

use std::path::{Path, PathBuf};

use pseudonymize::audit::verify_log;
use pseudonymize::{Error, Kek, KeyState, Keyring, MasterSecret};

struct Fixture {
    _dir: tempfile::TempDir,
    keyring: PathBuf,
    log: PathBuf,
    kek: Kek,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        keyring: dir.path().join("keyring.json"),
        log: dir.path().join("keyring.json.audit.jsonl"),
        kek: Kek::from_bytes([0x5a; 32]),
        _dir: dir,
    }
}

impl Fixture {
    fn open(&self) -> Keyring {
        Keyring::open_or_new(&self.keyring, &self.kek).unwrap()
    }

    /// brand-a: init, rotate, rotate, destroy v1; brand-b: init. Five audit entries.
    fn populate(&self) {
        let mut ring = self.open();
        let mut log = ring.audit_log(&self.log).unwrap();
        ring.init(&mut log, "alice", "brand-a").unwrap();
        ring.rotate(&mut log, "alice", "brand-a").unwrap();
        ring.rotate(&mut log, "bob", "brand-a").unwrap();
        ring.destroy(&mut log, "carol", "brand-a", 1).unwrap();
        ring.init(&mut log, "alice", "brand-b").unwrap();
    }

    fn verify(&self) -> Result<usize, Error> {
        let head = Keyring::open(&self.keyring, &self.kek)
            .unwrap()
            .audit_head()
            .cloned();
        verify_log(&self.log, &self.kek, head.as_ref()).map(|v| v.entries.len())
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn write_lines(&self, lines: &[String]) {
        std::fs::write(
            &self.log,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }
}

fn bad_line(error: Error) -> usize {
    match error {
        Error::AuditTampered { line, .. } => line,
        other => panic!("expected a tampered-log error, got {other}"),
    }
}

#[test]
fn life_cycle_keeps_one_active_version_and_erases_destroyed_material() {
    let f = fixture();
    f.populate();
    let ring = Keyring::open(&f.keyring, &f.kek).unwrap();
    let states: Vec<(u32, KeyState)> = ring
        .versions("brand-a")
        .unwrap()
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        states,
        [
            (1, KeyState::Destroyed),
            (2, KeyState::Retired),
            (3, KeyState::Active)
        ]
    );
    assert!(ring.secret("brand-a", 1).is_none());
    assert!(ring.secret("brand-a", 2).is_some());
    let active: Vec<(String, u32)> = ring.active().map(|(t, v, _)| (t, v)).collect();
    assert_eq!(
        active,
        [("brand-a".to_string(), 3), ("brand-b".to_string(), 1)]
    );
    let text = std::fs::read_to_string(&f.keyring).unwrap();
    let v1 = &ring.versions("brand-a").unwrap()[0];
    assert!(v1.destroyed_at.is_some());
    assert_eq!(
        text.matches("\"wrapped\"").count(),
        3,
        "brand-a v2, v3 and brand-b v1 keep material; v1's is gone"
    );
    assert_eq!(f.verify().unwrap(), 5);
}

#[test]
fn refused_operations_change_nothing() {
    let f = fixture();
    f.populate();
    let before = (
        std::fs::read(&f.keyring).unwrap(),
        std::fs::read(&f.log).unwrap(),
    );
    let mut ring = f.open();
    let mut log = ring.audit_log(&f.log).unwrap();
    assert!(ring
        .destroy(&mut log, "x", "brand-a", 3)
        .unwrap_err()
        .to_string()
        .contains("active version"));
    assert!(ring
        .destroy(&mut log, "x", "brand-a", 1)
        .unwrap_err()
        .to_string()
        .contains("already destroyed"));
    assert!(ring
        .init(&mut log, "x", "brand-a")
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    assert!(ring
        .init(&mut log, "x", "Brand A")
        .unwrap_err()
        .to_string()
        .contains("not a valid tenant"));
    assert!(ring
        .retire(&mut log, "x", "brand-a", 2)
        .unwrap_err()
        .to_string()
        .contains("not active"));
    assert!(ring
        .rotate(&mut log, "x", "brand-z")
        .unwrap_err()
        .to_string()
        .contains("not in the keyring"));
    assert!(ring
        .import(
            &mut log,
            "x",
            "brand-a",
            1,
            MasterSecret::from_bytes([1; 32]),
            false
        )
        .unwrap_err()
        .to_string()
        .contains("never restored"));
    assert!(ring
        .import(
            &mut log,
            "x",
            "brand-a",
            2,
            MasterSecret::from_bytes([1; 32]),
            false
        )
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    assert_eq!(
        before,
        (
            std::fs::read(&f.keyring).unwrap(),
            std::fs::read(&f.log).unwrap()
        )
    );
}

#[test]
fn import_restores_an_escrowed_secret_with_its_fingerprint() {
    let f = fixture();
    let mut ring = f.open();
    let mut log = ring.audit_log(&f.log).unwrap();
    let m2 = MasterSecret::from_bytes(std::array::from_fn(|i| 0x20 + i as u8));
    let v = ring
        .import(&mut log, "ops", "brand-a", 2, m2, false)
        .unwrap();
    assert_eq!(
        v.fingerprint, "8503faa5f9adca1a",
        "docs/token-spec.md fingerprint of M_2"
    );
    assert_eq!(
        v.state,
        KeyState::Active,
        "the tenant had no active version"
    );
    let v5 = ring
        .import(
            &mut log,
            "ops",
            "brand-a",
            5,
            MasterSecret::from_bytes([9; 32]),
            false,
        )
        .unwrap();
    assert_eq!(v5.state, KeyState::Retired);
    let reopened = Keyring::open(&f.keyring, &f.kek).unwrap();
    assert_eq!(
        reopened.active().map(|(_, v, _)| v).collect::<Vec<_>>(),
        [2]
    );
}

#[test]
fn a_wrong_kek_is_named_and_changes_nothing() {
    let f = fixture();
    f.populate();
    let before = (
        std::fs::read(&f.keyring).unwrap(),
        std::fs::read(&f.log).unwrap(),
    );
    let wrong = Kek::from_bytes([0x11; 32]);
    let error = Keyring::open(&f.keyring, &wrong).unwrap_err();
    assert!(matches!(error, Error::WrongKek { .. }), "{error}");
    assert!(error.to_string().contains("--kek-file"));
    assert_eq!(
        bad_line(verify_log(&f.log, &wrong, None).unwrap_err()),
        1,
        "the log's MACs do not verify under another KEK"
    );
    assert_eq!(
        before,
        (
            std::fs::read(&f.keyring).unwrap(),
            std::fs::read(&f.log).unwrap()
        )
    );
}

/// A named way of damaging a keyring file's text.
type Edit = (&'static str, Box<dyn Fn(String) -> String>);

fn corrupt(path: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, edit(text)).unwrap();
}

#[test]
fn an_edited_or_truncated_keyring_is_a_clear_error() {
    let edits: Vec<Edit> = vec![
        (
            "state edited",
            Box::new(|t: String| t.replacen("\"retired\"", "\"active\"", 1)),
        ),
        (
            "fingerprint edited",
            Box::new(|t: String| t.replacen("\"fingerprint\": \"", "\"fingerprint\": \"0", 1)),
        ),
        (
            "audit head edited",
            Box::new(|t: String| t.replacen("\"seq\": 5", "\"seq\": 4", 1)),
        ),
        (
            "truncated",
            Box::new(|t: String| t[..t.len() / 2].to_string()),
        ),
        ("empty", Box::new(|_| String::new())),
        ("not json", Box::new(|_| "\u{0}\u{1}binary".to_string())),
    ];
    for (what, edit) in edits {
        let f = fixture();
        f.populate();
        corrupt(&f.keyring, edit);
        let error = Keyring::open(&f.keyring, &f.kek).expect_err(what);
        assert!(
            matches!(error, Error::CorruptKeyring { .. }),
            "{what}: {error}"
        );
        assert!(
            error.to_string().contains("corrupted or was edited"),
            "{what}: {error}"
        );
    }
}

#[test]
fn an_intact_log_verifies() {
    let f = fixture();
    f.populate();
    assert_eq!(f.verify().unwrap(), 5);
    let verified = verify_log(&f.log, &f.kek, None).unwrap();
    let actions: Vec<&str> = verified.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["init", "rotate", "rotate", "destroy", "init"]);
    assert_eq!(verified.entries[2].actor, "bob");
    assert_eq!(verified.entries[2].key_version, Some(3));
}

#[test]
fn editing_one_line_is_detected_at_that_line() {
    let f = fixture();
    f.populate();
    let mut lines = f.lines();
    lines[2] = lines[2].replace("\"bob\"", "\"mallory\"");
    f.write_lines(&lines);
    assert_eq!(bad_line(f.verify().unwrap_err()), 3);
}

#[test]
fn deleting_one_line_is_detected() {
    let f = fixture();
    f.populate();
    let mut lines = f.lines();
    lines.remove(1);
    f.write_lines(&lines);
    assert_eq!(bad_line(f.verify().unwrap_err()), 2);
}

#[test]
fn reordering_lines_is_detected() {
    let f = fixture();
    f.populate();
    let mut lines = f.lines();
    lines.swap(1, 2);
    f.write_lines(&lines);
    assert_eq!(bad_line(f.verify().unwrap_err()), 2);
}

#[test]
fn cutting_off_the_last_entry_is_detected_with_the_keyring() {
    let f = fixture();
    f.populate();
    let mut lines = f.lines();
    lines.pop();
    f.write_lines(&lines);
    assert_eq!(
        verify_log(&f.log, &f.kek, None).unwrap().entries.len(),
        4,
        "without the keyring a clean cut looks intact"
    );
    assert!(matches!(
        f.verify().unwrap_err(),
        Error::AuditTruncated {
            last: 4,
            head: 5,
            ..
        }
    ));
    std::fs::write(&f.log, "").unwrap();
    assert!(matches!(
        f.verify().unwrap_err(),
        Error::AuditTruncated {
            last: 0,
            head: 5,
            ..
        }
    ));
}

#[test]
fn a_log_that_does_not_verify_blocks_key_operations() {
    let f = fixture();
    f.populate();
    let mut lines = f.lines();
    lines.pop();
    f.write_lines(&lines);
    let ring = f.open();
    assert!(
        ring.audit_log(&f.log).is_err(),
        "no key operation on a broken trail"
    );
}
