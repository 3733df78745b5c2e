//! [`Process`]: a child process whose output goes to a log file and that is killed on drop.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How many log lines a panic message quotes.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// A child process started by a test: stdout and stderr go to one log file, and the
/// process (with any children it forked) is killed when this value is dropped, so a
/// failing test leaves no broker or pipeline behind.
///
/// Keep it in a local variable, not in a `static`: statics are never dropped (a
/// [`Broker`](crate::Broker) in a static has a watchdog for that).
///
/// ```no_run
/// # use std::process::Command;
/// # use std::time::Duration;
/// let mut ingest = testkit::Process::start("ingest", Command::new("pseudopipe"));
/// assert!(ingest.wait_for_log("ready", Duration::from_secs(10)), "{}", ingest.log_tail(20));
/// ingest.kill(); // kill -9, as a crash would
/// ```
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
    /// Holds the log file when the process made its own directory.
    _log_dir: Option<TempDir>,
}

impl Process {
    /// Starts `command` with its output in a fresh temporary log file.
    ///
    /// Panics with the reason if the program cannot be started.
    pub fn start(name: &str, command: Command) -> Process {
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-{name}-"))
            .tempdir()
            .expect("the temporary directory is writable");
        let log_path = dir.path().join(format!("{name}.log"));
        let mut process = Process::start_logging_to(name, command, &log_path);
        process._log_dir = Some(dir);
        process
    }

    /// Starts `command`, appending its stdout and stderr to `log_path`, so that
    /// a restarted process keeps one log.
    pub fn start_logging_to(name: &str, mut command: Command, log_path: &Path) -> Process {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", log_path.display()));
        let stderr = log.try_clone().expect("a log file handle can be cloned");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let child = command.spawn().unwrap_or_else(|error| {
            panic!("cannot start {name} ({:?}): {error}", command.get_program())
        });
        Process {
            name: name.to_owned(),
            child: Some(child),
            log_path: log_path.to_owned(),
            _log_dir: None,
        }
    }

    /// The name given at start, used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `sh` loop that kills this process (a JVM) and removes `dir` once the test
    /// process has exited. A server in a `static` is never dropped, and a JVM outlives its
    /// parent; `unsafe` being forbidden, no `prctl(PR_SET_PDEATHSIG)`.
    pub(crate) fn watchdog(&self, what: &str, dir: &Path) -> Process {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; kill -9 "$2"; sleep 0.5; rm -rf "$3""#,
            "testkit-watchdog",
            &std::process::id().to_string(),
            &self.pid().expect("a started process has a pid").to_string(),
            &crate::kafka::path_text(dir),
        ]);
        Process::start_logging_to(
            &format!("watchdog of {what}"),
            command,
            &dir.join("watchdog.log"),
        )
    }

    /// The process id, or `None` once it has been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it has not exited nor been stopped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit status if the process has exited by itself, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process and its children with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_children_of(child.id());
            // An error here means it has already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop with SIGTERM, waits up to `grace` for it to exit,
    /// then kills it. Returns the exit status if it stopped by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = self.pid()?;
        signal(pid, "TERM");
        let status = self.wait_for_exit(grace);
        self.kill();
        status
    }

    /// Freezes the process with SIGSTOP: it keeps its sockets and memory but does
    /// nothing, as a process stuck in a long GC pause or a hung machine would.
    /// [`resume`](Self::resume) lets it go on.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    /// Lets a [paused](Self::pause) process run again with SIGCONT.
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    /// Waits up to `timeout` until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.log().contains(needle))
    }

    /// The whole log so far (stdout and stderr, ANSI colour codes removed).
    pub fn log(&self) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&bytes))
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Where the log file is.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A panic message: what failed, then the tail of this process's log.
    pub fn failure(&self, what: &str) -> String {
        format!(
            "{what}\n--- last lines of {} log ({}) ---\n{}\n---",
            self.name,
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal with the `kill` program: the workspace forbids `unsafe`, so no libc.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills the direct children of `pid` (a shell's `sleep`, a forked server's workers),
/// which would otherwise outlive it.
fn kill_children_of(pid: u32) {
    for child in children_of(pid) {
        signal(child, "KILL");
    }
}

/// The direct children of `pid`, read from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_string_lossy().parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the command name, which is in parentheses and may hold spaces,
            // come the state and then the parent's pid.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// Removes ANSI escape sequences (some programs colour their log lines).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether process `pid` runs. A killed process whose parent has not reaped it yet is a
/// zombie: that is dead.
pub fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            state != Some("Z")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colour_codes() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m x"),
            "2026 ERROR x"
        );
    }

    #[test]
    fn a_process_is_killed_on_drop_with_its_children() {
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 300 & echo started; wait"]);
        let process = Process::start("sleeper", command);
        assert!(process.wait_for_log("started", Duration::from_secs(5)));
        let pid = process.pid().expect("it runs");
        let sleeper = children_of(pid);
        assert_eq!(sleeper.len(), 1, "sh should have forked one sleep");
        drop(process);
        assert!(!is_alive(pid), "sh survived");
        assert!(
            crate::wait_until(Duration::from_secs(5), || !is_alive(sleeper[0])),
            "its child survived"
        );
    }

    #[test]
    fn terminate_reports_the_exit_status() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "trap 'exit 3' TERM; echo up; while true; do sleep 0.05; done",
        ]);
        let mut process = Process::start("trap", command);
        assert!(process.wait_for_log("up", Duration::from_secs(5)));
        let status = process.terminate(Duration::from_secs(5));
        assert_eq!(status.and_then(|status| status.code()), Some(3));
        assert!(!process.is_running());
    }

    #[test]
    fn a_paused_process_does_nothing_until_resumed() {
        let mut command = Command::new("sh");
        command.args(["-c", "while true; do echo tick; sleep 0.05; done"]);
        let mut process = Process::start("ticker", command);
        assert!(process.wait_for_log("tick", Duration::from_secs(5)));
        process.pause();
        std::thread::sleep(Duration::from_millis(200));
        let ticks = process.log().matches("tick").count();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            process.log().matches("tick").count(),
            ticks,
            "it ticked while paused"
        );
        assert!(process.is_running(), "a paused process still runs");
        process.resume();
        assert!(crate::wait_until(Duration::from_secs(5), || {
            process.log().matches("tick").count() > ticks
        }));
    }
}
