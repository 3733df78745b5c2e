//! A scratch workspace for one test: temp directory, KEK, keyring, and the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The output of one run, with helpers that read like assertions.
pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> String {
        assert!(
            self.output.status.success(),
            "expected success, got {:?}\nstdout: {}\nstderr: {}",
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts failure (exit 1, no panic) and returns stdout + stderr.
    pub fn fails(&self) -> String {
        assert_eq!(
            self.output.status.code(),
            Some(1),
            "expected exit 1\nstdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        let all = format!("{}{}", self.stdout(), self.stderr());
        assert!(!all.contains("panicked"), "the binary panicked: {all}");
        all
    }
}

/// A temp directory holding a KEK (`kek`) and a keyring path (`keyring.json`).
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub kek: PathBuf,
    pub keyring: PathBuf,
}

impl Scratch {
    /// A directory with a fresh KEK and no keyring yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kek = dir.path().join("kek");
        let keyring = dir.path().join("keyring.json");
        let scratch = Self { dir, kek, keyring };
        scratch
            .run(&["keys", "new-kek", "--out", scratch.kek.to_str().unwrap()])
            .ok();
        scratch
    }

    /// A directory with a KEK and a keyring holding `tenants`, each with version 1 active.
    pub fn with_tenants(tenants: &[&str]) -> Self {
        let scratch = Self::new();
        for tenant in tenants {
            scratch.keys(&["init", "--tenant", tenant]).ok();
        }
        scratch
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path("keyring.json.audit.jsonl")
    }

    /// Runs the binary with `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut command = self.command(args);
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        Self::finish(command, stdin)
    }

    /// The binary with `args`, in the directory, with the test's actor and log level, its
    /// stdout and stderr piped and stdin empty: for a test to adjust before running it
    /// with [`Scratch::finish`].
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pseudopipe"));
        command.args(args);
        self.prepare(&mut command);
        command
    }

    fn prepare(&self, command: &mut Command) {
        command
            .current_dir(self.dir.path())
            .env("PSEUDOPIPE_ACTOR", "test-officer")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }

    /// The binary with `args` under `umask 000` (through `sh`), as an operator with a
    /// careless umask would run it.
    pub fn run_under_umask_000(&self, args: &[&str]) -> Run {
        let mut command = Command::new("sh");
        command
            .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_pseudopipe"))
            .args(args);
        self.prepare(&mut command);
        Self::finish(command, None)
    }

    /// Runs `command`, writing `stdin` to it if given (then piped).
    pub fn finish(mut command: Command, stdin: Option<&[u8]>) -> Run {
        let mut child = command.spawn().expect("the pseudopipe binary runs");
        if let Some(input) = stdin {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        Run {
            output: child.wait_with_output().unwrap(),
        }
    }

    /// Runs `keys SUB --keyring K --kek-file F ARGS`.
    pub fn keys(&self, args: &[&str]) -> Run {
        self.keys_with_kek(&self.kek, args)
    }

    pub fn keys_with_kek(&self, kek: &Path, args: &[&str]) -> Run {
        let (sub, rest) = args.split_first().unwrap();
        let mut all = vec![
            "keys",
            sub,
            "--keyring",
            self.keyring.to_str().unwrap(),
            "--kek-file",
            kek.to_str().unwrap(),
        ];
        all.extend_from_slice(rest);
        self.run(&all)
    }

    /// Runs `audit verify` (with the keyring anchor).
    pub fn audit_verify(&self) -> Run {
        self.run(&[
            "audit",
            "verify",
            "--audit-log",
            self.audit_log().to_str().unwrap(),
            "--kek-file",
            self.kek.to_str().unwrap(),
            "--keyring",
            self.keyring.to_str().unwrap(),
        ])
    }

    /// `audit report --format FORMAT --out OUT` of the scratch keyring.
    pub fn audit_report(&self, format: &str, out: &Path) -> Run {
        self.run(&[
            "audit",
            "report",
            "--audit-log",
            self.audit_log().to_str().unwrap(),
            "--keyring",
            self.keyring.to_str().unwrap(),
            "--kek-file",
            self.kek.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ])
    }

    /// Snapshot of every file in the directory, to prove a command changed nothing.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".lock"))
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    }
}
