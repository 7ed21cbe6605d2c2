//! The platform corners of standard I/O: what a descriptor is, a private
//! re-open through `/proc/self/fd`, per-call non-blocking socket I/O, and
//! putting `/dev/null` on a descriptor.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// What kind of file a descriptor refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileType {
    Pipe,
    CharDevice,
    Socket,
    Other,
}

pub(crate) fn file_type(fd: RawFd) -> io::Result<FileType> {
    // SAFETY: stat is plain data that fstat fills in.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `stat`; an invalid descriptor is EBADF.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match stat.st_mode & libc::S_IFMT {
        libc::S_IFIFO => FileType::Pipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::Other,
    })
}

/// A new open file description of what `fd` refers to, non-blocking and
/// close-on-exec (Linux: `/proc/self/fd/N`).
pub(crate) fn reopen(fd: RawFd, write: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{fd}"))
}

/// A close-on-exec copy of `fd` (same description).
pub(crate) fn duplicate(fd: RawFd) -> io::Result<File> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor or fails.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by no one else.
    Ok(unsafe { File::from_raw_fd(copy) })
}

pub(crate) fn status_flags(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL reads the description's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(flags)
    }
}

pub(crate) fn set_status_flags(fd: BorrowedFd<'_>, flags: i32) {
    // SAFETY: F_SETFL on a borrowed, open descriptor; failure is ignored.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) };
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NOSIGNAL: libc::c_int = 0;

pub(crate) fn send_dontwait(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    // SAFETY: send reads `data.len()` bytes from `data`.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub(crate) fn recv_dontwait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `shutdown(fd, SHUT_WR)`: the peer sees the end of stream, whoever
/// else holds the socket.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown on a borrowed, open socket.
    if unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts `/dev/null` on descriptor `fd` (closing what was there).
pub(crate) fn replace_with_null(fd: RawFd) -> io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: dup2 replaces `fd` atomically with a copy of an open
    // descriptor.
    if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
