//! Twisted's finger tutorial, step 4: each query runs a program and sends
//! back what it prints (the tutorial's "use a local command" step, with
//! `utils.getProcessOutput`). By default the program is the system's
//! `finger`; any other can be given, and gets the user name as its last
//! argument (never through a shell).
//!
//! A connection asks one question: the first line is the query and later
//! lines are ignored. The child is killed if the client leaves before it
//! is done, or after ten seconds. Its output goes out with `\r\n` line
//! ends. A client that half-closes right after its query (`nc -N`) gets
//! no answer: the end of its input closes the connection, as it does in
//! Twisted's version. Each child that ends prints `finger: USER: REASON`.
//!
//! ```text
//! cargo run -p torsion-examples --example finger4_process -- PORT [PROGRAM [ARGS...]]
//! ```

use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{
    Address, CloseReason, DelayedCall, Factory, ProcessOptions, ProcessProtocol, ProcessReason,
    ProcessTransportRef, Reactor, ReactorProcess, ReactorTcp, TransportRef,
};

/// The most of a program's output passed on to one client.
const MAX_OUTPUT: usize = 64 * 1024;

/// How long a child may run before it is killed.
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The command to run per query, without the user name.
struct Command {
    program: String,
    args: Vec<String>,
}

/// One finger query: validates the name, then hands the connection to a
/// child process.
struct Finger {
    command: Rc<Command>,
    /// The first line arrived: later ones are ignored (a client that sends
    /// many lines at once must not start a child per line).
    asked: bool,
    /// The child answering, with the timer that kills it at the time
    /// limit; both are stopped if the client leaves first.
    child: Option<(ProcessTransportRef, DelayedCall)>,
}

impl LineHandler for Finger {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, user: &[u8]) {
        if std::mem::replace(&mut self.asked, true) {
            return;
        }
        let reply = |text: &[u8]| {
            lines.send_line(transport, text);
            transport.lose_connection();
        };
        // A name is letters, digits, '.', '_' and '-', not starting with
        // '-' (it would read as an option).
        let valid = !user.is_empty()
            && user[0] != b'-'
            && user
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return reply(b"No such user");
        }
        let Some(reactor) = transport.reactor() else {
            return reply(b"Shutting down");
        };
        let user = String::from_utf8_lossy(user).into_owned();
        let collect = Collect {
            client: transport.clone(),
            user: user.clone(),
            output: Vec::new(),
        };
        let args = self.command.args.iter().cloned().chain([user]);
        match reactor.spawn_process(collect, &self.command.program, args, ProcessOptions::new()) {
            Ok(child) => {
                let timed_out = child.clone();
                let timer = reactor.call_later(TIME_LIMIT, move |_| {
                    let _ = timed_out.signal_process("KILL");
                });
                self.child = Some((child, timer));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot run the finger command");
                reply(b"Internal error");
            }
        }
    }

    fn connection_lost(&mut self, _reason: &CloseReason) {
        // Once the child is done, both fail harmlessly (it is reaped, the
        // timer cancelled).
        if let Some((child, timer)) = self.child.take() {
            let _ = timer.cancel();
            let _ = child.signal_process("KILL");
        }
    }
}

/// Gathers the child's output and writes it to the client when the child
/// is done (Twisted's `getProcessOutput` and its callback in one).
struct Collect {
    /// The client's connection: a clone of its `TransportRef`.
    client: TransportRef,
    user: String,
    output: Vec<u8>,
}

impl ProcessProtocol for Collect {
    fn connection_made(&mut self, transport: &ProcessTransportRef) {
        transport.close_stdin();
    }

    fn out_received(&mut self, _transport: &ProcessTransportRef, data: &[u8]) {
        let room = MAX_OUTPUT - self.output.len();
        self.output.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn process_ended(&mut self, reason: ProcessReason) {
        println!("finger: {}: {reason}", self.user);
        if self.output.is_empty() {
            self.client.write(b"No such user\r\n");
        } else {
            self.client.write(&crlf_lines(&self.output));
        }
        self.client.lose_connection();
    }
}

/// `output` with every line ended by `\r\n`, the last one included.
fn crlf_lines(output: &[u8]) -> Vec<u8> {
    let output = output.strip_suffix(b"\n").unwrap_or(output);
    let mut lines = Vec::with_capacity(output.len() + 16);
    for line in output.split(|&b| b == b'\n') {
        lines.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        lines.extend_from_slice(b"\r\n");
    }
    lines
}

struct FingerFactory {
    command: Rc<Command>,
}

impl Factory for FingerFactory {
    type Protocol = LineReceiver<Finger>;

    fn build_protocol(&self, _peer: &Address) -> Option<LineReceiver<Finger>> {
        let mut receiver = LineReceiver::new(Finger {
            command: Rc::clone(&self.command),
            asked: false,
            child: None,
        });
        // Clients that end lines with a bare "\n" are answered too.
        receiver.state_mut().set_accept_bare_newline(true);
        Some(receiver)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or("usage: finger4_process PORT [PROGRAM [ARGS...]]")?
        .parse()?;
    let command = Command {
        program: args.next().unwrap_or_else(|| "finger".to_owned()),
        args: args.collect(),
    };
    let reactor = Reactor::new()?;
    let factory = FingerFactory {
        command: Rc::new(command),
    };
    let listening = reactor.listen_tcp(port, factory)?;
    println!(
        "finger: listening on port {}",
        listening.get_host().port().unwrap_or(port)
    );
    reactor.run()?;
    Ok(())
}
