//! The echo protocol, unchanged, over a serial port (Twisted's
//! `SerialPort`): every byte received on the line is written back.
//!
//! ```text
//! cargo run -p torsion-examples --example serial_echo -- /dev/ttyUSB0 --baud 115200
//! ```
//!
//! (`serial_echo DEVICE 115200` works too; the default is 9600.)
//!
//! Prints `serial_echo: open on DEVICE at N baud` once the port is set
//! up; exits when the device goes away (unplugged, or the other end of a
//! pseudo-terminal closed), with status 1 and the reason.

use std::process::ExitCode;

use torsion_echo::Echo;
use torsion_protocol::{
    CloseReason, Protocol, Reactor, SerialPort, SerialSettings, TransportRef, WeakReactor,
};

/// Runs a protocol and stops the reactor when its connection ends,
/// keeping the reason.
struct UntilClosed<P> {
    inner: P,
    reactor: WeakReactor,
    reason: std::rc::Rc<std::cell::RefCell<Option<String>>>,
}

impl<P: Protocol> Protocol for UntilClosed<P> {
    fn connection_made(&mut self, transport: &TransportRef) {
        self.inner.connection_made(transport);
    }
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        self.inner.data_received(transport, data);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.inner.connection_lost(reason);
        if !reason.is_clean() {
            *self.reason.borrow_mut() = Some(reason.to_string());
        }
        if let Some(reactor) = self.reactor.upgrade() {
            let _ = reactor.stop();
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: serial_echo DEVICE [--baud N | N]");
    ExitCode::from(2)
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut args = std::env::args().skip(1);
    let Some(device) = args.next() else {
        return Ok(usage());
    };
    let mut baud = 9600;
    while let Some(arg) = args.next() {
        let value = if arg == "--baud" {
            args.next()
        } else {
            Some(arg)
        };
        match value.map(|n| n.parse::<u32>()) {
            // 0 is no speed (B0 hangs the line up).
            Some(Ok(n)) if n > 0 => baud = n,
            _ => return Ok(usage()),
        }
    }
    let reactor = Reactor::new()?;
    let reason: std::rc::Rc<std::cell::RefCell<Option<String>>> = Default::default();
    let protocol = UntilClosed {
        inner: Echo,
        reactor: reactor.downgrade(),
        reason: std::rc::Rc::clone(&reason),
    };
    let _port = SerialPort::open(&reactor, protocol, &device, &SerialSettings::baud(baud))?;
    println!("serial_echo: open on {device} at {baud} baud");
    reactor.run()?;
    let reason = reason.borrow_mut().take();
    match reason {
        Some(reason) => {
            eprintln!("serial_echo: {reason}");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
