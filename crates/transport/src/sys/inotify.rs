//! The platform corner of filesystem events: an inotify instance and its
//! watches (Linux and Android). Elsewhere every call is refused with
//! [`io::ErrorKind::Unsupported`].

/// Why filesystem events are refused off Linux.
pub(crate) const UNSUPPORTED: &str = "filesystem events need inotify, which only Linux has \
     (kqueue vnode watching is not implemented: the polling crate has no vnode filter)";

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// A new inotify instance, non-blocking and close-on-exec.
    pub(crate) fn init() -> io::Result<OwnedFd> {
        // SAFETY: no pointer is passed; the flags are valid for the call.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else
        // owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
    pub(crate) fn add_watch(fd: BorrowedFd<'_>, path: &Path, mask: u32) -> io::Result<i32> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
        // SAFETY: `path` is a NUL-terminated string that outlives the call;
        // `fd` is an open descriptor.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(wd)
        }
    }

    /// `inotify_rm_watch(fd, wd)`.
    pub(crate) fn rm_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
        // SAFETY: plain integers; `fd` is an open descriptor.
        if unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Ties the compiler to the layout the parser assumes.
    const _: () = assert!(std::mem::size_of::<libc::inotify_event>() == super::HEADER);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};
    use std::path::Path;

    fn refuse<T>() -> io::Result<T> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            super::UNSUPPORTED,
        ))
    }

    pub(crate) fn init() -> io::Result<OwnedFd> {
        refuse()
    }

    pub(crate) fn add_watch(_fd: BorrowedFd<'_>, _path: &Path, _mask: u32) -> io::Result<i32> {
        refuse()
    }

    pub(crate) fn rm_watch(_fd: BorrowedFd<'_>, _wd: i32) -> io::Result<()> {
        refuse()
    }
}

pub(crate) use imp::{add_watch, init, rm_watch};

/// Whether this platform has inotify.
pub(crate) const SUPPORTED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The size of `struct inotify_event` without its name.
pub(crate) const HEADER: usize = 16;

/// The longest event the kernel writes: the header and a name of
/// `NAME_MAX` bytes with its NUL.
pub(crate) const MAX_EVENT: usize = HEADER + 255 + 1;

/// One event as the kernel wrote it.
pub(crate) struct RawEvent<'a> {
    pub(crate) wd: i32,
    pub(crate) mask: u32,
    pub(crate) cookie: u32,
    /// The name within the watched directory, without its NUL padding;
    /// empty for an event on the watched object itself.
    pub(crate) name: &'a [u8],
}

/// Splits a buffer the kernel filled into events. Stops at a truncated
/// event (which the kernel never writes).
pub(crate) fn parse(mut buf: &[u8], mut each: impl FnMut(RawEvent<'_>)) {
    let word = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    while buf.len() >= HEADER {
        let len = word(buf, 12) as usize;
        let Some(name) = buf.get(HEADER..HEADER + len) else {
            return;
        };
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        each(RawEvent {
            wd: word(buf, 0) as i32,
            mask: word(buf, 4),
            cookie: word(buf, 8),
            name: &name[..end],
        });
        buf = &buf[HEADER + len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(wd: i32, mask: u32, cookie: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        for word in [wd as u32, mask, cookie, padded as u32] {
            buf.extend_from_slice(&word.to_ne_bytes());
        }
        buf.extend_from_slice(name);
        buf.resize(HEADER + padded, 0);
        buf
    }

    #[test]
    fn events_split_with_their_names_unpadded_and_a_truncated_tail_ignored() {
        let mut buf = event(1, 0x100, 0, b"file", 16);
        buf.extend(event(2, 0x400, 0, b"", 0));
        buf.extend(event(3, 0x40, 7, b"longer-name", 32));
        buf.extend(&event(4, 0x100, 0, b"cut", 16)[..20]);
        let mut seen = Vec::new();
        parse(&buf, |raw| {
            seen.push((raw.wd, raw.mask, raw.cookie, raw.name.to_vec()))
        });
        assert_eq!(
            seen,
            [
                (1, 0x100, 0, b"file".to_vec()),
                (2, 0x400, 0, Vec::new()),
                (3, 0x40, 7, b"longer-name".to_vec()),
            ]
        );
    }
}
