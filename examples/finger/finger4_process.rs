//! Twisted's finger tutorial, step 4: each query runs a program and sends
//! back what it prints (the tutorial's "use a local command" step, with
//! `utils.getProcessOutput`). By default the program is the system's
//! `finger`; any other can be given, and gets the user name as its last
//! argument (never through a shell).
//!
//! ```text
//! cargo run -p torsion-examples --example finger4_process -- PORT [PROGRAM [ARGS...]]
//! ```

use std::rc::Rc;

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{
    Address, Factory, ProcessOptions, ProcessProtocol, ProcessReason, ProcessTransportRef, Reactor,
    ReactorProcess, ReactorTcp, TransportRef,
};

/// The most of a program's output passed on to one client.
const MAX_OUTPUT: usize = 64 * 1024;

/// The command to run per query, without the user name.
struct Command {
    program: String,
    args: Vec<String>,
}

/// One finger query: validates the name, then hands the connection to a
/// child process.
struct Finger {
    command: Rc<Command>,
}

impl LineHandler for Finger {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, user: &[u8]) {
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
            output: Vec::new(),
        };
        let args = self.command.args.iter().cloned().chain([user]);
        let spawned =
            reactor.spawn_process(collect, &self.command.program, args, ProcessOptions::new());
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot run the finger command");
            reply(b"Internal error");
        }
    }
}

/// Gathers the child's output and writes it to the client when the child
/// is done (Twisted's `getProcessOutput` and its callback in one).
struct Collect {
    /// The client's connection: a clone of its `TransportRef`.
    client: TransportRef,
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
        if reason != ProcessReason::Done {
            tracing::info!(%reason, "the finger command failed");
        }
        if self.output.is_empty() {
            self.client.write(b"No such user\r\n");
        } else {
            self.client.write(&self.output);
        }
        self.client.lose_connection();
    }
}

struct FingerFactory {
    command: Rc<Command>,
}

impl Factory for FingerFactory {
    type Protocol = LineReceiver<Finger>;

    fn build_protocol(&self, _peer: &Address) -> Option<LineReceiver<Finger>> {
        Some(LineReceiver::new(Finger {
            command: Rc::clone(&self.command),
        }))
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
