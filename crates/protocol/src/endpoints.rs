//! Endpoint strings (Twisted's `serverFromString` / `clientFromString`):
//! a listening or connecting address written as text, as in a
//! configuration file or on a command line.
//!
//! | string | meaning |
//! |---|---|
//! | `tcp:8000` | listen on TCP port 8000, every IPv4 interface |
//! | `tcp:8000:interface=127.0.0.1:backlog=50` | on one interface, with a backlog |
//! | `tcp:host=example.org:port=80:timeout=10` | connect to a TCP host (`tcp:example.org:80` too) |
//! | `unix:/run/x.sock` | a Unix socket path |
//! | `unix:path=/run/x.sock:mode=660` | with the socket file's mode, in octal |
//! | `udp:9000`, `udp:port=9000:interface=::1` | a UDP port |
//!
//! Fields are separated by `:`; a literal `:` (in an IPv6 address), `=` or
//! `\` is escaped with `\`, as in `interface=\:\:1`. A field is `key=value`
//! when a plain word comes before its first unescaped `=`, so `unix:a\=b`
//! is the path `a=b`. A string that cannot be parsed gives an
//! [`EndpointError`] that points at the bad part.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use torsion_transport::reactor::Reactor;
use torsion_transport::DatagramTransportRef;

use crate::connector::{Connector, DEFAULT_CONNECT_TIMEOUT};
use crate::datagram::DatagramProtocol;
use crate::factory::{ClientFactory, Factory};
use crate::port::ListeningPort;
use crate::tcp::{ListenOptions, ReactorTcp};
use crate::udp::{ReactorUdp, UdpOptions};
use crate::unix::{ReactorUnix, UnixListenOptions};

/// Where to listen, parsed from a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEndpoint {
    /// A TCP port.
    Tcp {
        /// The port (0 for any free one).
        port: u16,
        /// The interface and backlog.
        options: ListenOptions,
    },
    /// A Unix socket path.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// Its mode and backlog.
        options: UnixListenOptions,
    },
    /// A UDP port.
    Udp {
        /// The port.
        port: u16,
        /// The interface.
        interface: IpAddr,
    },
}

/// Where to connect, parsed from a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEndpoint {
    /// A TCP host and port.
    Tcp {
        /// A name or an IP address.
        host: String,
        /// The port.
        port: u16,
        /// The connect timeout.
        timeout: Duration,
    },
    /// A Unix socket path.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// The connect timeout.
        timeout: Duration,
    },
}

/// A string that is not a valid endpoint: what is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointError {
    /// The whole string.
    pub input: String,
    /// Byte offset of the bad part.
    pub position: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid endpoint: {}", self.message)?;
        writeln!(f, "  {}", self.input)?;
        write!(
            f,
            "  {}^",
            " ".repeat(self.input[..self.position].chars().count())
        )
    }
}

impl std::error::Error for EndpointError {}

/// One `:`-separated field: its text (unescaped), where it starts, and its
/// `key=` if it has one.
struct Field {
    key: Option<String>,
    value: String,
    start: usize,
    value_start: usize,
}

impl Field {
    /// The field `raw` (as written, escapes included) at `start`, whose
    /// text once unescaped is `text`. `equals` locates its first unescaped
    /// `=`: at `raw[equals.0]`, `text[equals.1]`.
    fn new(raw: &str, start: usize, text: String, equals: Option<(usize, usize)>) -> Field {
        // A key is a plain word before the first unescaped '='. Checking
        // it as written keeps an escaped character, '=' included, from
        // ever forming one.
        match equals {
            Some((raw_at, text_at))
                if raw_at > 0
                    && raw[..raw_at]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Field {
                    key: Some(raw[..raw_at].to_owned()),
                    value: text[text_at + 1..].to_owned(),
                    start,
                    value_start: start + raw_at + 1,
                }
            }
            _ => Field {
                key: None,
                value: text,
                start,
                value_start: start,
            },
        }
    }
}

fn split(input: &str) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut text = String::new();
    let mut start = 0;
    let mut equals = None;
    let mut chars = input.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    text.push(next);
                }
            }
            ':' => {
                let text = std::mem::take(&mut text);
                fields.push(Field::new(&input[start..at], start, text, equals.take()));
                start = at + 1;
            }
            '=' if equals.is_none() => {
                equals = Some((at - start, text.len()));
                text.push(c);
            }
            c => text.push(c),
        }
    }
    fields.push(Field::new(&input[start..], start, text, equals));
    fields
}

struct Parser<'a> {
    input: &'a str,
}

impl Parser<'_> {
    fn error(&self, position: usize, message: impl Into<String>) -> EndpointError {
        EndpointError {
            input: self.input.to_owned(),
            position: position.min(self.input.len()),
            message: message.into(),
        }
    }

    /// Splits into the kind and its arguments: positional values in order,
    /// keyword values by name.
    fn parse(&self) -> Result<(String, Vec<Field>), EndpointError> {
        let mut fields = split(self.input);
        let kind = fields.remove(0);
        if kind.value.is_empty() {
            return Err(self.error(0, "missing the endpoint type (tcp, unix or udp)"));
        }
        if fields.is_empty() {
            return Err(self.error(
                self.input.len(),
                format!("{}: missing arguments", kind.value),
            ));
        }
        Ok((kind.value, fields))
    }

    /// Assigns fields to `names`: positional ones in order, `key=value` by
    /// key. Unknown keys and duplicates are errors.
    fn assign<'f>(
        &self,
        fields: &'f [Field],
        names: &[&str],
    ) -> Result<Vec<Option<&'f Field>>, EndpointError> {
        let mut assigned: Vec<Option<&Field>> = vec![None; names.len()];
        let mut next_positional = 0;
        for field in fields {
            let index = match &field.key {
                Some(key) => names.iter().position(|name| name == key).ok_or_else(|| {
                    self.error(
                        field.start,
                        format!(
                            "unknown option {key:?} (expected one of {})",
                            names.join(", ")
                        ),
                    )
                })?,
                None => {
                    let index = next_positional;
                    next_positional += 1;
                    if index >= names.len() {
                        return Err(self.error(field.start, "too many arguments"));
                    }
                    index
                }
            };
            if assigned[index].is_some() {
                return Err(self.error(field.start, format!("{} given twice", names[index])));
            }
            assigned[index] = Some(field);
        }
        Ok(assigned)
    }

    fn port(&self, field: Option<&Field>) -> Result<u16, EndpointError> {
        let field = field.ok_or_else(|| self.error(self.input.len(), "missing the port"))?;
        field.value.parse().map_err(|_| {
            self.error(
                field.value_start,
                format!("port {:?} is not a number from 0 to 65535", field.value),
            )
        })
    }

    fn interface(&self, field: Option<&Field>) -> Result<IpAddr, EndpointError> {
        match field {
            None => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Some(field) => field.value.parse().map_err(|_| {
                self.error(
                    field.value_start,
                    format!("interface {:?} is not an IP address", field.value),
                )
            }),
        }
    }

    fn number<T: std::str::FromStr>(
        &self,
        field: Option<&Field>,
        what: &str,
    ) -> Result<Option<T>, EndpointError> {
        field
            .map(|field| {
                field.value.parse().map_err(|_| {
                    self.error(
                        field.value_start,
                        format!("{what} {:?} is not a number", field.value),
                    )
                })
            })
            .transpose()
    }

    fn path(&self, field: Option<&Field>) -> Result<PathBuf, EndpointError> {
        match field {
            Some(field) if !field.value.is_empty() => Ok(PathBuf::from(&field.value)),
            Some(field) => Err(self.error(field.value_start, "empty path")),
            None => Err(self.error(self.input.len(), "missing the path")),
        }
    }

    fn timeout(&self, field: Option<&Field>) -> Result<Duration, EndpointError> {
        let seconds: Option<f64> = self.number(field, "timeout")?;
        match seconds {
            None => Ok(DEFAULT_CONNECT_TIMEOUT),
            Some(s) if s > 0.0 => Duration::try_from_secs_f64(s)
                .map_err(|_| self.error(field.map_or(0, |f| f.value_start), "timeout is too long")),
            Some(_) => Err(self.error(
                field.map_or(0, |f| f.value_start),
                "timeout must be positive",
            )),
        }
    }
}

/// Parses a listening endpoint (Twisted's `serverFromString`).
///
/// # Errors
/// An [`EndpointError`] pointing at the bad part.
#[doc(alias = "serverFromString")]
pub fn server_from_string(input: &str) -> Result<ServerEndpoint, EndpointError> {
    let parser = Parser { input };
    let (kind, fields) = parser.parse()?;
    match kind.as_str() {
        "tcp" => {
            let [port, interface, backlog] =
                parser.assign(&fields, &["port", "interface", "backlog"])?[..]
            else {
                unreachable!()
            };
            let defaults = ListenOptions::default();
            Ok(ServerEndpoint::Tcp {
                port: parser.port(port)?,
                options: ListenOptions {
                    interface: parser.interface(interface)?,
                    backlog: parser
                        .number(backlog, "backlog")?
                        .unwrap_or(defaults.backlog),
                    ..defaults
                },
            })
        }
        "unix" => {
            let [path, mode, backlog] = parser.assign(&fields, &["path", "mode", "backlog"])?[..]
            else {
                unreachable!()
            };
            let mode = mode
                .map(|field| {
                    u32::from_str_radix(&field.value, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            parser.error(
                                field.value_start,
                                format!("mode {:?} is not an octal file mode", field.value),
                            )
                        })
                })
                .transpose()?;
            let defaults = UnixListenOptions::default();
            Ok(ServerEndpoint::Unix {
                path: parser.path(path)?,
                options: UnixListenOptions {
                    mode,
                    backlog: parser
                        .number(backlog, "backlog")?
                        .unwrap_or(defaults.backlog),
                },
            })
        }
        "udp" => {
            let [port, interface] = parser.assign(&fields, &["port", "interface"])?[..] else {
                unreachable!()
            };
            Ok(ServerEndpoint::Udp {
                port: parser.port(port)?,
                interface: parser.interface(interface)?,
            })
        }
        other => Err(parser.error(
            0,
            format!("unknown endpoint type {other:?} (expected tcp, unix or udp)"),
        )),
    }
}

/// Parses a connecting endpoint (Twisted's `clientFromString`).
///
/// # Errors
/// An [`EndpointError`] pointing at the bad part.
#[doc(alias = "clientFromString")]
pub fn client_from_string(input: &str) -> Result<ClientEndpoint, EndpointError> {
    let parser = Parser { input };
    let (kind, fields) = parser.parse()?;
    match kind.as_str() {
        "tcp" => {
            let [host, port, timeout] = parser.assign(&fields, &["host", "port", "timeout"])?[..]
            else {
                unreachable!()
            };
            let host = match host {
                Some(field) if !field.value.is_empty() => field.value.clone(),
                Some(field) => return Err(parser.error(field.value_start, "empty host")),
                None => return Err(parser.error(input.len(), "missing the host")),
            };
            Ok(ClientEndpoint::Tcp {
                host,
                port: parser.port(port)?,
                timeout: parser.timeout(timeout)?,
            })
        }
        "unix" => {
            let [path, timeout] = parser.assign(&fields, &["path", "timeout"])?[..] else {
                unreachable!()
            };
            Ok(ClientEndpoint::Unix {
                path: parser.path(path)?,
                timeout: parser.timeout(timeout)?,
            })
        }
        other => Err(parser.error(
            0,
            format!("unknown endpoint type {other:?} (expected tcp or unix)"),
        )),
    }
}

impl ServerEndpoint {
    /// Listens here with `factory` (TCP and Unix endpoints).
    ///
    /// # Errors
    /// `InvalidInput` for a UDP endpoint (use
    /// [`ServerEndpoint::listen_datagram`]); otherwise as for the matching
    /// `listen_*` call.
    pub fn listen<F: Factory>(&self, reactor: &Reactor, factory: F) -> io::Result<ListeningPort> {
        match self {
            ServerEndpoint::Tcp { port, options } => {
                reactor.listen_tcp_with(*port, factory, *options)
            }
            ServerEndpoint::Unix { path, options } => reactor.listen_unix(path, factory, *options),
            ServerEndpoint::Udp { .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a UDP endpoint takes a datagram protocol, not a factory",
            )),
        }
    }

    /// Listens here with a datagram protocol (UDP endpoints).
    ///
    /// # Errors
    /// `InvalidInput` for stream endpoints; otherwise as for `listen_udp`.
    pub fn listen_datagram<P: DatagramProtocol>(
        &self,
        reactor: &Reactor,
        protocol: P,
    ) -> io::Result<DatagramTransportRef> {
        match self {
            ServerEndpoint::Udp { port, interface } => reactor.listen_udp_with(
                *port,
                protocol,
                UdpOptions {
                    interface: *interface,
                    ..UdpOptions::default()
                },
            ),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a stream endpoint takes a factory, not a datagram protocol",
            )),
        }
    }
}

impl ClientEndpoint {
    /// Connects here with `factory`.
    pub fn connect<F: ClientFactory>(&self, reactor: &Reactor, factory: F) -> Connector {
        match self {
            ClientEndpoint::Tcp {
                host,
                port,
                timeout,
            } => reactor.connect_tcp(host, *port, factory, *timeout),
            ClientEndpoint::Unix { path, timeout } => reactor.connect_unix(path, factory, *timeout),
        }
    }
}
