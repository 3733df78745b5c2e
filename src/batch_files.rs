//! The files of a `pseudonymize` run: the check that none of input, output and quarantine
//! is another one, and outputs written to a temporary sibling renamed into place at the end.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// One of the run's files, as the collision check sees it.
struct Place {
    /// The option that names it (`--input`, `--output`, `--quarantine`).
    option: &'static str,
    /// As the user wrote it, or what `-` stands for.
    shown: String,
    /// Device and inode, when the file exists (through symlinks). `/dev/null` has neither
    /// this nor `resolved`.
    id: Option<(u64, u64)>,
    /// The path with every symlink and `.`/`..` resolved, when there is a path.
    resolved: Option<PathBuf>,
}

impl Place {
    /// A path given to an option; `-` is standard input (`stdin`) or output.
    fn new(option: &'static str, path: &str, stdin: bool) -> Self {
        if path == "-" {
            let stream = if stdin {
                "standard input"
            } else {
                "standard output"
            };
            return Self {
                option,
                shown: format!("- ({stream})"),
                id: stream_id(stdin),
                resolved: None,
            };
        }
        let resolved = resolve(Path::new(path));
        if resolved.as_deref() == Some(Path::new("/dev/null")) {
            // Discards what it is given: it can be named twice.
            return Self {
                option,
                shown: path.to_string(),
                id: None,
                resolved: None,
            };
        }
        let id = std::fs::metadata(path).ok().map(|m| file_id(&m));
        Self {
            option,
            shown: path.to_string(),
            id,
            resolved,
        }
    }

    fn is(&self, other: &Self) -> bool {
        matches!((self.id, other.id), (Some(a), Some(b)) if a == b)
            || matches!((&self.resolved, &other.resolved), (Some(a), Some(b)) if a == b)
    }
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The identity of the regular file standard input or output is redirected to, if it is.
#[cfg(unix)]
fn stream_id(stdin: bool) -> Option<(u64, u64)> {
    use std::os::fd::AsFd as _;
    let fd = if stdin {
        io::stdin().as_fd().try_clone_to_owned()
    } else {
        io::stdout().as_fd().try_clone_to_owned()
    };
    let meta = File::from(fd.ok()?).metadata().ok()?;
    meta.is_file().then(|| file_id(&meta))
}

#[cfg(not(unix))]
fn stream_id(_stdin: bool) -> Option<(u64, u64)> {
    None
}

/// `path` with its symlinks and `.`/`..` resolved, also when it does not exist yet (a
/// dangling symlink is followed to where it points); `None` when its folder is unknown.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut path = std::path::absolute(path).ok()?;
    for _ in 0..40 {
        if let Ok(real) = std::fs::canonicalize(&path) {
            return Some(real);
        }
        match std::fs::read_link(&path) {
            // A dangling symlink: follow it.
            Ok(target) => path = path.parent()?.join(target),
            Err(_) => {
                let parent = std::fs::canonicalize(path.parent()?).ok()?;
                return Some(parent.join(path.file_name()?));
            }
        }
    }
    None
}

/// Refuses an output or quarantine that is the input or each other, in one line naming
/// both options. Changes nothing.
pub fn check_distinct(input: &str, output: &str, quarantine: Option<&Path>) -> Result<()> {
    let input = Place::new("--input", input, true);
    let output = Place::new("--output", output, false);
    let quarantine = quarantine.map(|q| Place::new("--quarantine", &q.to_string_lossy(), false));
    for written in [Some(&output), quarantine.as_ref()].into_iter().flatten() {
        if written.is(&input) {
            bail!(
                "{} {} is the same file as {} {}: writing it would destroy the input; give {} another path (nothing was written)",
                written.option,
                written.shown,
                input.option,
                input.shown,
                written.option
            );
        }
    }
    if let Some(quarantine) = &quarantine {
        if quarantine.is(&output) {
            bail!(
                "--quarantine {} is the same file as --output {}: the quarantine holds raw personal data and must never mix with the pseudonymized output; give them different paths (nothing was written)",
                quarantine.shown,
                output.shown
            );
        }
    }
    Ok(())
}

/// Where a run writes one of its outputs.
pub enum Destination {
    /// Standard output.
    Stdout(BufWriter<io::StdoutLock<'static>>),
    /// A file that is not a regular file (`/dev/null`, a FIFO), written directly.
    Direct(BufWriter<File>),
    /// A regular file, written to a temporary sibling renamed over it by [`Destination::commit`].
    Staged {
        file: BufWriter<File>,
        partial: PathBuf,
        target: PathBuf,
    },
}

impl Destination {
    /// Opens `path` (`-`: standard output) for writing; `what` names it in messages
    /// (`the output`), `private` makes a file mode 0600 whatever the umask.
    pub fn create(path: &str, what: &str, private: bool) -> Result<Self> {
        if path == "-" {
            return Ok(Self::Stdout(BufWriter::with_capacity(
                1 << 16,
                io::stdout().lock(),
            )));
        }
        let given = Path::new(path);
        let existing = std::fs::metadata(given).ok();
        if existing.as_ref().is_some_and(std::fs::Metadata::is_dir) {
            bail!("{what} {path} is a folder; give a file path");
        }
        if existing.as_ref().is_some_and(|m| !m.is_file()) {
            let file = OpenOptions::new()
                .write(true)
                .open(given)
                .with_context(|| format!("cannot open {what} {path}"))?;
            return Ok(Self::Direct(BufWriter::with_capacity(1 << 16, file)));
        }
        // An existing file is replaced where it is, a symlink keeping pointing at it.
        let target = match existing {
            Some(_) => std::fs::canonicalize(given)
                .with_context(|| format!("cannot resolve {what} {path}"))?,
            None => given.to_path_buf(),
        };
        let name = target
            .file_name()
            .with_context(|| format!("{what} {path} names no file"))?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(format!(".{}.partial", std::process::id()));
        let partial = target.with_file_name(partial_name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o666 });
        let file = options.open(&partial).with_context(|| {
            format!(
                "cannot create {what}'s temporary file {} next to {path}",
                partial.display()
            )
        })?;
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", partial.display()))?;
        }
        Ok(Self::Staged {
            file: BufWriter::with_capacity(1 << 16, file),
            partial,
            target,
        })
    }

    /// Flushes, and puts a staged file in place (synced first, so that a crash cannot
    /// leave an empty or half file under the final name).
    pub fn commit(mut self) -> io::Result<()> {
        match &mut self {
            Self::Stdout(out) => out.flush(),
            Self::Direct(out) => out.flush(),
            Self::Staged {
                file,
                partial,
                target,
            } => {
                file.flush()?;
                file.get_ref().sync_all()?;
                std::fs::rename(&*partial, &*target)?;
                // Done: nothing left for `drop` to remove.
                partial.clear();
                Ok(())
            }
        }
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Stdout(out) => out,
            Self::Direct(out) => out,
            Self::Staged { file, .. } => file,
        }
    }
}

impl Drop for Destination {
    /// A staged file that was not committed is removed: the run failed.
    fn drop(&mut self) {
        if let Self::Staged { partial, .. } = self {
            if !partial.as_os_str().is_empty() {
                // Best effort: the error that matters is the run's.
                let _ = std::fs::remove_file(&*partial);
            }
        }
    }
}
