//! Files that hold secrets (a KEK): readable and writable by their owner only.

use std::fs::OpenOptions;

/// Options that create a file with mode 0600 (on Unix); add how to open it.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}
