//! The audit log verified with its public key alone (no KEK, no keyring): every kind of
//! tampering is detected and the first bad entry, the cut or the forged head is named.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pseudonymize::audit::{verify_signed, AuditPublicKey, SignedHead, Verified};
use pseudonymize::{Error, Kek, Keyring};

/// A keyring's audit log and its exported public key; the keyring and the KEK are gone
/// once the history is written, as on an auditor's machine.
struct Audited {
    dir: tempfile::TempDir,
    log: PathBuf,
    public: PathBuf,
}

/// Writes a history of six entries with a keyring under `kek` in `dir`, exports the
/// public key, then deletes the keyring.
fn write_history(dir: &Path, kek: &Kek) -> (PathBuf, PathBuf) {
    let keyring = dir.join("keyring.json");
    let log = dir.join("keyring.json.audit.jsonl");
    let mut ring = Keyring::open_or_new(&keyring, kek).unwrap();
    let mut audit = ring.audit_log(&log).unwrap();
    ring.init(&mut audit, "alice", "brand-a").unwrap();
    ring.rotate(&mut audit, "alice", "brand-a").unwrap();
    ring.record(
        &mut audit,
        "bob",
        "lookup",
        "brand-a",
        "domain=email normalizer=email".into(),
    )
    .unwrap();
    ring.rotate(&mut audit, "alice", "brand-a").unwrap();
    ring.destroy(&mut audit, "carol", "brand-a", 1).unwrap();
    ring.init(&mut audit, "alice", "brand-b").unwrap();
    let public = dir.join("audit.pub");
    ring.audit_public_key().to_file(&public).unwrap();
    std::fs::remove_file(&keyring).unwrap();
    (log, public)
}

/// The history of one of two keyrings (`ours`, or another one), written once per test
/// binary; tests copy it before changing it.
fn history(ours: bool) -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static OURS: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    static OTHER: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    let (cell, seed) = if ours { (&OURS, 0x5a) } else { (&OTHER, 0x11) };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (log, public) = write_history(dir.path(), &Kek::from_bytes([seed; 32]));
        (dir, log, public)
    })
}

/// Another keyring's log and public key (read only).
fn other_history() -> (&'static Path, &'static Path) {
    let (_, log, public) = history(false);
    (log, public)
}

fn audited() -> Audited {
    let (_, log, public) = history(true);
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &Path| {
        let to = dir.path().join(from.file_name().unwrap());
        std::fs::copy(from, &to).unwrap();
        to
    };
    let log_copy = copy(log);
    copy(&SignedHead::default_path(log));
    let public = copy(public);
    Audited {
        log: log_copy,
        public,
        dir,
    }
}

impl Audited {
    fn verify(&self) -> Result<Verified, Error> {
        verify_signed(&self.log, &self.key(), None)
    }

    fn key(&self) -> AuditPublicKey {
        AuditPublicKey::from_file(&self.public).unwrap()
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

    fn head(&self) -> PathBuf {
        SignedHead::default_path(&self.log)
    }
}

/// The 1-based line a tampered-log error names.
fn bad_line(result: Result<Verified, Error>) -> (usize, String) {
    match result {
        Err(Error::AuditTampered { line, detail, .. }) => (line, detail),
        Err(other) => panic!("expected a tampered-log error, got {other}"),
        Ok(verified) => panic!("expected a tampered-log error, got {verified:?}"),
    }
}

/// Another value of the same JSON type.
fn altered(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Number(n) => (n.as_u64().unwrap() + 1).into(),
        serde_json::Value::String(s) => {
            // Change the last character but keep hex hex and base64 base64.
            let mut chars: Vec<char> = s.chars().collect();
            let last = chars.last_mut().unwrap();
            *last = if *last == 'A' { 'B' } else { 'A' };
            chars.into_iter().collect::<String>().into()
        }
        other => panic!("no audit field holds {other}"),
    }
}

#[test]
fn an_intact_log_verifies_with_the_public_key_alone() {
    let a = audited();
    let verified = a.verify().unwrap();
    let actions: Vec<&str> = verified.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["init", "rotate", "lookup", "rotate", "destroy", "init"]
    );
    assert_eq!(verified.unsigned, 0, "every entry is signed");
    assert_eq!(verified.head.as_ref().map(|h| h.seq), Some(6));
    // The head file may live elsewhere, e.g. copied to the auditor's own storage.
    let copy = a.dir.path().join("head-copy.json");
    std::fs::copy(a.head(), &copy).unwrap();
    std::fs::remove_file(a.head()).unwrap();
    assert_eq!(
        verify_signed(&a.log, &a.key(), Some(&copy))
            .unwrap()
            .entries
            .len(),
        6
    );
}

#[test]
fn editing_any_field_of_any_entry_is_named_at_that_entry() {
    let a = audited();
    let original = a.lines();
    let mut edits = 0;
    for (index, line) in original.iter().enumerate() {
        let entry: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        assert_eq!(
            &serde_json::to_string(&entry).unwrap(),
            line,
            "re-serializing an entry unchanged gives its bytes back"
        );
        for field in entry.keys() {
            let mut edited = entry.clone();
            edited.insert(field.clone(), altered(&entry[field]));
            let mut lines = original.clone();
            lines[index] = serde_json::to_string(&edited).unwrap();
            a.write_lines(&lines);
            let (named, detail) = bad_line(a.verify());
            assert_eq!(
                named,
                index + 1,
                "`{field}` of line {}: {detail}",
                index + 1
            );
            edits += 1;
        }
    }
    assert!(
        edits >= 6 * 8,
        "seq, time, actor, action, tenant, prev, mac, sig and more: {edits}"
    );
    a.write_lines(&original);
    a.verify().unwrap();
}

#[test]
fn deleting_or_reordering_entries_is_named() {
    let a = audited();
    let original = a.lines();
    for index in 0..original.len() - 1 {
        let mut lines = original.clone();
        lines.remove(index);
        a.write_lines(&lines);
        let (named, detail) = bad_line(a.verify());
        assert_eq!(named, index + 1, "deleting line {}: {detail}", index + 1);
        assert!(detail.contains("sequence"), "{detail}");

        let mut lines = original.clone();
        lines.swap(index, index + 1);
        a.write_lines(&lines);
        let (named, _) = bad_line(a.verify());
        assert_eq!(
            named,
            index + 1,
            "swapping lines {} and {}",
            index + 1,
            index + 2
        );
    }
}

#[test]
fn truncating_the_last_entry_is_detected_by_the_signed_head() {
    let a = audited();
    let mut lines = a.lines();
    lines.pop();
    a.write_lines(&lines);
    match a.verify().unwrap_err() {
        Error::AuditCutShort { last, head, .. } => assert_eq!((last, head), (5, 6)),
        other => panic!("expected a log cut short, got {other}"),
    }
    std::fs::write(&a.log, "").unwrap();
    let message = a.verify().unwrap_err().to_string();
    assert!(
        message.contains("ends at sequence 0") && message.contains("records sequence 6"),
        "{message}"
    );
}

#[test]
fn a_forged_edited_or_missing_head_is_named() {
    let a = audited();
    let key = a.key();
    let head = std::fs::read_to_string(a.head()).unwrap();
    let mut lines = a.lines();
    lines.pop();
    a.write_lines(&lines);

    // Moved back to the new last entry, to hide the cut: the signature no longer holds.
    let previous_hash = hex_sha256(lines.last().unwrap());
    let mut moved: serde_json::Value = serde_json::from_str(&head).unwrap();
    moved["seq"] = 5.into();
    moved["hash"] = previous_hash.into();
    std::fs::write(a.head(), moved.to_string()).unwrap();
    let forged = verify_signed(&a.log, &key, None).unwrap_err();
    assert!(
        matches!(&forged, Error::InvalidAuditHead { detail, .. } if detail.contains("signature does not verify")),
        "{forged}"
    );

    // Signed, but by another keyring's key.
    let (other_log, _) = other_history();
    std::fs::copy(SignedHead::default_path(other_log), a.head()).unwrap();
    assert!(matches!(
        verify_signed(&a.log, &key, None).unwrap_err(),
        Error::InvalidAuditHead { .. }
    ));

    // A head that is not one, and no head at all.
    std::fs::write(a.head(), "{}").unwrap();
    assert!(matches!(
        verify_signed(&a.log, &key, None).unwrap_err(),
        Error::InvalidAuditHead { detail, .. } if detail.contains("not a signed head")
    ));
    std::fs::remove_file(a.head()).unwrap();
    assert!(matches!(
        verify_signed(&a.log, &key, None).unwrap_err(),
        Error::InvalidAuditHead { detail, .. } if detail.contains("does not exist")
    ));
}

#[test]
fn a_last_entry_replaced_from_another_log_is_named() {
    let a = audited();
    // The last line replaced by one with the same sequence from another log: its
    // signature fails first, at that line.
    let (other_log, _) = other_history();
    let mut lines = a.lines();
    lines[5] = std::fs::read_to_string(other_log)
        .unwrap()
        .lines()
        .nth(5)
        .unwrap()
        .to_string();
    a.write_lines(&lines);
    assert_eq!(bad_line(a.verify()).0, 6);
}

#[test]
fn another_keys_public_key_fails_at_the_first_entry() {
    let a = audited();
    let (_, other_public) = other_history();
    let wrong = AuditPublicKey::from_file(other_public).unwrap();
    assert_ne!(wrong.fingerprint(), a.key().fingerprint());
    let (line, detail) = bad_line(verify_signed(&a.log, &wrong, None));
    assert_eq!(line, 1);
    assert!(
        detail.contains("signature") && detail.contains(&wrong.fingerprint()),
        "{detail}"
    );
}

#[test]
fn an_edited_public_key_file_is_refused() {
    let a = audited();
    let text = std::fs::read_to_string(&a.public).unwrap();
    let (_, other_public) = other_history();
    let other_text = std::fs::read_to_string(other_public).unwrap();
    // The key line of one file with the fingerprint line of the other.
    let spliced = format!(
        "{}\n{}\n",
        other_text.lines().next().unwrap(),
        text.lines().nth(1).unwrap()
    );
    std::fs::write(&a.public, spliced).unwrap();
    let error = AuditPublicKey::from_file(&a.public).unwrap_err();
    assert!(matches!(error, Error::InvalidAuditKey { .. }), "{error}");
    assert!(error.to_string().contains("audit export-key"), "{error}");
}

fn hex_sha256(line: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(line.as_bytes()))
}
