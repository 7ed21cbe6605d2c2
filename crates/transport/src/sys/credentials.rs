//! The identity of the process at the other end of a Unix socket.

use std::io;

use socket2::Socket;

use crate::transport::PeerCredentials;

/// `SO_PEERCRED`: the peer's pid, uid and gid as of when it connected.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_credentials(socket: &Socket) -> io::Result<PeerCredentials> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is
    // exactly that large, and updates `len`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Not available on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn peer_credentials(_socket: &Socket) -> io::Result<PeerCredentials> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
