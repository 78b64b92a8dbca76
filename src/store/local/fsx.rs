//! Opening files that hold or guard secrets the way ssh does: never through a symlink, never a
//! file or directory that another user owns or that group or others can access.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use super::io_error;
use crate::store::{StoreError, StoreErrorKind};

/// Creates `dir` (and missing parents) private to the owner, then checks it.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| io_error(dir, "cannot create the directory", &e))?;
    }
    check_dir(dir)
}

/// Refuses a directory that is not a directory, belongs to another user, or that group or
/// others can access.
pub(crate) fn check_dir(dir: &Path) -> Result<(), StoreError> {
    let meta = std::fs::metadata(dir).map_err(|e| io_error(dir, "cannot read", &e))?;
    if !meta.is_dir() {
        return Err(config(format!("{} is not a directory", dir.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        check_owner(dir, meta.uid())?;
        if meta.mode() & 0o077 != 0 {
            return Err(config(format!(
                "{} is accessible by group or others (mode {:o}); tokens must be private: run `chmod 700 {}`",
                dir.display(),
                meta.mode() & 0o777,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Opens `path` for reading if it exists, refusing a symlink, a non-regular file, another
/// user's file, or one that group or others can access.
pub(crate) fn open_private(path: &Path) -> Result<Option<File>, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true);
    no_follow(&mut options);
    match options.open(path) {
        Ok(file) => {
            check_file(path, &file)?;
            Ok(Some(file))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if is_symlink_refusal(&e) => Err(symlink(path)),
        Err(e) => Err(io_error(path, "cannot open", &e)),
    }
}

/// Opens (creating with mode 0600 if missing) a lock file, with the same checks.
pub(crate) fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    no_follow(&mut options);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(file) => {
            check_file(path, &file)?;
            Ok(file)
        }
        Err(e) if is_symlink_refusal(&e) => Err(symlink(path)),
        Err(e) => Err(io_error(path, "cannot open the lock file", &e)),
    }
}

fn no_follow(options: &mut OpenOptions) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    #[cfg(not(unix))]
    let _ = options;
}

/// `open` with `O_NOFOLLOW` on a symlink fails with `ELOOP`.
fn is_symlink_refusal(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

fn symlink(path: &Path) -> StoreError {
    config(format!(
        "{} is a symbolic link; keepfresh does not follow links to token files: point it at the file itself",
        path.display()
    ))
}

fn check_file(path: &Path, file: &File) -> Result<(), StoreError> {
    let meta = file
        .metadata()
        .map_err(|e| io_error(path, "cannot read", &e))?;
    if !meta.is_file() {
        return Err(config(format!("{} is not a regular file", path.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        check_owner(path, meta.uid())?;
        if meta.mode() & 0o077 != 0 {
            return Err(config(format!(
                "{} is accessible by group or others (mode {:o}); tokens must be private: run `chmod 600 {}`",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn check_owner(path: &Path, uid: u32) -> Result<(), StoreError> {
    let me = rustix::process::geteuid().as_raw();
    if uid != me {
        return Err(config(format!(
            "{} belongs to user {uid}, not to this user ({me}); refusing tokens another user could have planted or can read",
            path.display()
        )));
    }
    Ok(())
}

fn config(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Config, message)
}
