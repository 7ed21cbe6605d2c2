//! Why a connection ended, or never began.

use std::fmt;
use std::io;
use std::time::Duration;

use torsion_reactor::CloseKind;

/// Why a connection ended, as handed to `connection_lost` (Twisted's
/// `ConnectionDone`, `ConnectionLost` and `ConnectionAborted` failures).
///
/// [`CloseReason::is_clean`] tells an orderly close from a failure; a
/// failure carries the operating system's error.
#[doc(alias = "ConnectionDone")]
#[doc(alias = "ConnectionLost")]
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed the connection with `lose_connection`, after every
    /// queued byte was handed to the kernel.
    Closed,
    /// The peer ended its side of the stream (end of file), and every byte
    /// queued for it was handed to the kernel before the connection was
    /// closed.
    ClosedByPeer,
    /// This side dropped the connection with `abort_connection`: queued
    /// data was discarded and the peer was sent a reset.
    #[doc(alias = "ConnectionAborted")]
    Aborted,
    /// The connection failed: a reset from the peer, a broken pipe, a
    /// timeout, or another error from the operating system.
    Lost(io::Error),
    /// The reactor shut down: what the kernel would take of the queue was
    /// sent, then the connection was closed. Not clean: the rest of the
    /// queue was dropped.
    Shutdown,
    /// This side closed the connection because the peer broke the protocol
    /// (an oversized or malformed frame); the text names the fault. What
    /// was queued before was still sent.
    ProtocolError(String),
    /// The producer registered with the transport panicked in one of its
    /// callbacks: the queue was dropped and the connection closed (as
    /// Twisted loses a connection whose producer raised). Other
    /// connections are not affected.
    ProducerPanicked {
        /// The callback that panicked: `"pause_producing"` or
        /// `"resume_producing"`.
        callback: &'static str,
        /// The panic's message.
        message: String,
    },
}

impl CloseReason {
    /// True for an orderly close by either side ([`CloseReason::Closed`],
    /// [`CloseReason::ClosedByPeer`]).
    pub fn is_clean(&self) -> bool {
        matches!(self, CloseReason::Closed | CloseReason::ClosedByPeer)
    }

    /// The reason's kind, as the reactor's counters tally closes
    /// ([`ReactorStats::closed`](torsion_reactor::ReactorStats::closed)).
    pub fn kind(&self) -> CloseKind {
        match self {
            CloseReason::Closed => CloseKind::Clean,
            CloseReason::ClosedByPeer => CloseKind::ByPeer,
            CloseReason::Aborted => CloseKind::Aborted,
            CloseReason::Lost(_) => CloseKind::Lost,
            CloseReason::Shutdown => CloseKind::Shutdown,
            CloseReason::ProtocolError(_) => CloseKind::ProtocolError,
            CloseReason::ProducerPanicked { .. } => CloseKind::ProducerPanicked,
        }
    }

    /// The operating system's error, for [`CloseReason::Lost`].
    pub fn error(&self) -> Option<&io::Error> {
        match self {
            CloseReason::Lost(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Closed => f.write_str("connection was closed cleanly by this side"),
            CloseReason::ClosedByPeer => f.write_str("connection was closed cleanly by the peer"),
            CloseReason::Aborted => f.write_str("connection was aborted by this side"),
            CloseReason::Lost(e) => write!(f, "connection was lost: {e}"),
            CloseReason::Shutdown => f.write_str("connection was closed as the reactor shut down"),
            CloseReason::ProtocolError(fault) => {
                write!(f, "connection was closed for a protocol error: {fault}")
            }
            CloseReason::ProducerPanicked { callback, message } => write!(
                f,
                "connection was closed because its producer panicked in {callback}: {message}"
            ),
        }
    }
}

impl std::error::Error for CloseReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error().map(|e| e as _)
    }
}

/// Why an outgoing connection could not be made, as handed to
/// `client_connection_failed` (Twisted's `ConnectError` family).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The host name could not be resolved to any address (Twisted's
    /// `DNSLookupError`).
    #[doc(alias = "DNSLookupError")]
    Resolve {
        /// The name that was looked up.
        host: String,
        /// What the resolver said.
        error: io::Error,
    },
    /// Nothing answered within the timeout (Twisted's `TimeoutError`).
    #[doc(alias = "TimeoutError")]
    TimedOut(Duration),
    /// The peer refused the connection: nothing listens there (Twisted's
    /// `ConnectionRefusedError`).
    #[doc(alias = "ConnectionRefusedError")]
    Refused(io::Error),
    /// No route to the network or host (`ENETUNREACH`, `EHOSTUNREACH`).
    Unreachable(io::Error),
    /// The connection attempt failed for another reason (no descriptors
    /// left, permission denied, ...).
    Failed(io::Error),
    /// The attempt was cancelled with `stop_connecting` (Twisted's
    /// `UserError`).
    Cancelled,
}

impl ConnectError {
    /// Classifies an error returned by a connect attempt.
    pub fn from_io(error: io::Error) -> ConnectError {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ConnectError::Refused(error),
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
                ConnectError::Unreachable(error)
            }
            _ => ConnectError::Failed(error),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve { host, error } => {
                write!(f, "could not resolve host name {host:?}: {error}")
            }
            ConnectError::TimedOut(after) => {
                write!(f, "connection attempt timed out after {after:?}")
            }
            ConnectError::Refused(e) => write!(f, "connection was refused: {e}"),
            ConnectError::Unreachable(e) => write!(f, "destination is unreachable: {e}"),
            ConnectError::Failed(e) => write!(f, "connection attempt failed: {e}"),
            ConnectError::Cancelled => f.write_str("connection attempt was cancelled"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve { error, .. } => Some(error),
            ConnectError::Refused(e) | ConnectError::Unreachable(e) | ConnectError::Failed(e) => {
                Some(e)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_classified() {
        let classify = |errno| ConnectError::from_io(io::Error::from_raw_os_error(errno));
        assert!(matches!(
            classify(libc::ECONNREFUSED),
            ConnectError::Refused(_)
        ));
        assert!(matches!(
            classify(libc::ENETUNREACH),
            ConnectError::Unreachable(_)
        ));
        assert!(matches!(
            classify(libc::EHOSTUNREACH),
            ConnectError::Unreachable(_)
        ));
        assert!(matches!(classify(libc::EMFILE), ConnectError::Failed(_)));
        let text = classify(libc::EHOSTUNREACH).to_string();
        assert!(text.starts_with("destination is unreachable"), "{text}");
        let resolve = ConnectError::Resolve {
            host: "example.invalid".into(),
            error: io::Error::new(io::ErrorKind::NotFound, "Name or service not known"),
        };
        assert_eq!(
            resolve.to_string(),
            "could not resolve host name \"example.invalid\": Name or service not known"
        );
        assert_eq!(
            ConnectError::TimedOut(std::time::Duration::from_secs(5)).to_string(),
            "connection attempt timed out after 5s"
        );
    }

    #[test]
    fn close_reasons_tell_clean_from_failed() {
        assert!(CloseReason::Closed.is_clean());
        assert!(CloseReason::ClosedByPeer.is_clean());
        assert!(!CloseReason::Aborted.is_clean());
        assert!(!CloseReason::Shutdown.is_clean());
        let lost = CloseReason::Lost(io::Error::from_raw_os_error(libc::ECONNRESET));
        assert!(!lost.is_clean());
        assert_eq!(lost.error().unwrap().kind(), io::ErrorKind::ConnectionReset);
        let panicked = CloseReason::ProducerPanicked {
            callback: "resume_producing",
            message: "boom".into(),
        };
        assert!(!panicked.is_clean());
        assert_eq!(
            panicked.to_string(),
            "connection was closed because its producer panicked in resume_producing: boom"
        );
    }
}
