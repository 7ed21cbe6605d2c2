//! A line echo over standard input and output (Twisted's `StandardIO`):
//! every line read from stdin is written back to stdout; at the end of
//! stdin the program writes what is queued and exits.
//!
//! ```text
//! printf 'one\ntwo\n' | cargo run -p torsion-examples --example stdio_echo
//! ```
//!
//! Standard input may be a pipe, a terminal, a file or `/dev/null`; the
//! descriptors shared with the shell are never made non-blocking.

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{CloseReason, Reactor, StandardIo, TransportRef};

/// Writes each line back; stops the reactor when stdin ends.
struct Echo {
    reactor: torsion_protocol::WeakReactor,
}

impl LineHandler for Echo {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]) {
        lines.send_line(transport, line);
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        if !reason.is_clean() {
            eprintln!("stdio_echo: {reason}");
        }
        if let Some(reactor) = self.reactor.upgrade() {
            let _ = reactor.stop();
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let reactor = Reactor::new()?;
    let echo = Echo {
        reactor: reactor.downgrade(),
    };
    let _stdio = StandardIo::new(&reactor, LineReceiver::with_delimiter(echo, b"\n"))?;
    reactor.run()?;
    Ok(())
}
