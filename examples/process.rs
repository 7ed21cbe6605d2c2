//! Runs a command, prints its standard output and error as they arrive,
//! then how it ended (Twisted's process example), and exits with the
//! command's status.
//!
//! ```text
//! cargo run -p torsion-examples --example process -- sh -c 'echo hi; echo oops >&2; exit 3'
//! ```
//!
//! Standard input is passed on to the command: what we read on ours is
//! written to its, and the end of ours closes its.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use torsion_protocol::{
    ProcessOptions, ProcessProtocol, ProcessReason, ProcessTransportRef, Protocol, Reactor,
    ReactorProcess, StandardIo, Transport, TransportRef,
};

/// Prints what the child writes, each chunk as it comes.
struct Printer {
    reactor: torsion_protocol::WeakReactor,
    status: Rc<Cell<i32>>,
}

impl ProcessProtocol for Printer {
    fn out_received(&mut self, _transport: &ProcessTransportRef, data: &[u8]) {
        print_lines("out", data);
    }

    fn err_received(&mut self, _transport: &ProcessTransportRef, data: &[u8]) {
        print_lines("err", data);
    }

    fn process_exited(&mut self, _transport: &ProcessTransportRef, reason: ProcessReason) {
        println!("exited: {reason}");
    }

    fn process_ended(&mut self, reason: ProcessReason) {
        println!("ended: {reason}");
        self.status.set(match reason {
            ProcessReason::Done => 0,
            ProcessReason::Terminated {
                exit_code: Some(code),
                ..
            } => code,
            ProcessReason::Terminated {
                signal: Some(signal),
                ..
            } => 128 + signal,
            ProcessReason::Terminated { .. } => 1,
        });
        if let Some(reactor) = self.reactor.upgrade() {
            let _ = reactor.stop();
        }
    }
}

fn print_lines(stream: &str, data: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    for line in String::from_utf8_lossy(data).lines() {
        let _ = writeln!(stdout, "{stream}: {line}");
    }
    let _ = stdout.flush();
}

/// Passes our standard input on to the child's.
struct Forward(ProcessTransportRef);

impl Protocol for Forward {
    fn data_received(&mut self, _transport: &TransportRef, data: &[u8]) {
        self.0.write(data);
    }

    fn connection_lost(&mut self, _reason: &torsion_protocol::CloseReason) {
        self.0.close_stdin();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: process PROGRAM [ARG...]");
        std::process::exit(2);
    };
    let reactor = Reactor::new()?;
    let status = Rc::new(Cell::new(1));
    let printer = Printer {
        reactor: reactor.downgrade(),
        status: status.clone(),
    };
    let child = match reactor.spawn_process(printer, &program, args, ProcessOptions::new()) {
        Ok(child) => child,
        Err(e) => {
            eprintln!("process: {e}");
            std::process::exit(127);
        }
    };
    // Our stdin goes to the child; our stdout stays ours (for printing),
    // so the standard I/O transport has no output.
    let _stdin = StandardIo::with_fds(&reactor, Forward(child.clone()), 0, None)?;
    reactor.run()?;
    std::process::exit(status.get());
}
