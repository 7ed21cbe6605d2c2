//! Unix-domain stream sockets: listening on a path, safely.
//!
//! A socket file outlives the process that bound it. Binding over a stale
//! file (left by a process that died) must work, but binding over the file
//! of a server that is still alive must not steal its address. Before
//! binding, [`bind_listener`] connects to an existing file: a refusal means
//! nobody listens (stale: the file is replaced); an answer means a live
//! server (an `AddrInUse` error). The file is removed when the listener
//! stops, unless another socket has replaced it meanwhile.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket};

use crate::net;

/// The socket file a listener created, identified by device and inode so
/// it is removed only if it is still the same file.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl SocketFile {
    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still the one the listener created.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.device && meta.ino() == self.inode => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove the socket file");
                }
            }
            _ => {}
        }
    }
}

/// Creates a non-blocking Unix stream socket listening on `path`, with the
/// file's permission bits set to `mode` if given (for example `0o660`).
///
/// # Errors
/// `AddrInUse` if a live server listens on `path`; `AlreadyExists` if
/// `path` exists and is not a socket; others as `bind(2)` and `listen(2)`
/// report them.
pub fn bind_listener(
    path: &Path,
    backlog: i32,
    mode: Option<u32>,
) -> io::Result<(Socket, SocketFile)> {
    remove_if_stale(path, probe_stream)?;
    let socket = net::stream_socket(Domain::UNIX)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_owned(),
        device: meta.dev(),
        inode: meta.ino(),
    };
    let listening = (|| {
        if let Some(mode) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        socket.listen(backlog)
    })();
    if let Err(e) = listening {
        file.remove();
        return Err(e);
    }
    Ok((socket, file))
}

/// Removes `path` if it is a socket file nobody listens on any more.
/// `probe` connects to it the way its kind of socket is connected to: an
/// answer means a live server, a refusal a stale file.
fn remove_if_stale(path: &Path, probe: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match probe(path) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is listening on {}", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

fn probe_stream(path: &Path) -> io::Result<()> {
    std::os::unix::net::UnixStream::connect(path).map(drop)
}

fn probe_datagram(path: &Path) -> io::Result<()> {
    std::os::unix::net::UnixDatagram::unbound()?.connect(path)
}

/// A non-blocking Unix datagram socket bound to `path`, with the socket
/// file handled as for [`bind_listener`] (stale files replaced, live ones
/// refused).
///
/// # Errors
/// As for [`bind_listener`].
pub fn bind_datagram(path: &Path, mode: Option<u32>) -> io::Result<(Socket, SocketFile)> {
    remove_if_stale(path, probe_datagram)?;
    let socket = net::bind_datagram(&SockAddr::unix(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_owned(),
        device: meta.dev(),
        inode: meta.ino(),
    };
    if let Some(mode) = mode {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            file.remove();
            return Err(e);
        }
    }
    Ok((socket, file))
}

/// A non-blocking Unix datagram socket with no name: it can send, but
/// nobody can answer it.
///
/// # Errors
/// If the socket cannot be created.
pub fn unbound_datagram() -> io::Result<Socket> {
    crate::sys::datagram_socket(Domain::UNIX, None)
}
