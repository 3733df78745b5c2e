//! Files that hold secrets or personal data (a KEK, a quarantine of raw events): readable
//! and writable by their owner only.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Options that create a file with mode 0600 (on Unix); add how to open it.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates or truncates `path`, mode 0600 even when it existed with another mode.
pub fn create(path: &Path) -> io::Result<File> {
    let file = options().create(true).truncate(true).open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}
