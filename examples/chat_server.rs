//! The line-based chat server: the factory holds the connected users; each
//! user's first line is their name, every later line goes to everyone
//! else.
//!
//! ```text
//! cargo run --example chat_server [PORT]     # default 8123
//! telnet localhost 8123
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{Address, CloseReason, Factory, Reactor, ReactorTcp, TransportRef};

/// Who is connected, by name; shared by every connection.
type Users = Rc<RefCell<HashMap<String, TransportRef>>>;

struct Chat {
    users: Users,
    name: Option<String>,
}

impl Chat {
    /// Sends `message` to every user but this one.
    fn broadcast(&self, message: &str) {
        for (name, transport) in self.users.borrow().iter() {
            if Some(name) != self.name.as_ref() {
                transport.write_sequence(&[message.as_bytes(), b"\r\n"]);
            }
        }
    }
}

impl LineHandler for Chat {
    fn connection_made(&mut self, lines: &mut LineState, transport: &TransportRef) {
        lines.send_line(transport, b"What's your name?");
    }

    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, line: &[u8]) {
        let line = String::from_utf8_lossy(line).trim().to_owned();
        match &self.name {
            None => {
                if line.is_empty() || self.users.borrow().contains_key(&line) {
                    lines.send_line(transport, b"Name taken, please choose another.");
                    return;
                }
                lines.send_line(transport, format!("Welcome, {line}!").as_bytes());
                self.users
                    .borrow_mut()
                    .insert(line.clone(), transport.clone());
                self.name = Some(line.clone());
                self.broadcast(&format!("{line} has joined."));
            }
            Some(name) => self.broadcast(&format!("<{name}> {line}")),
        }
    }

    fn connection_lost(&mut self, _reason: &CloseReason) {
        if let Some(name) = &self.name {
            self.users.borrow_mut().remove(name);
            self.broadcast(&format!("{name} has left."));
        }
    }
}

struct ChatFactory {
    users: Users,
}

impl Factory for ChatFactory {
    type Protocol = LineReceiver<Chat>;

    fn build_protocol(&self, _peer: &Address) -> Option<LineReceiver<Chat>> {
        Some(LineReceiver::new(Chat {
            users: self.users.clone(),
            name: None,
        }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let port = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 8123,
    };
    let reactor = Reactor::new()?;
    reactor.listen_tcp(
        port,
        ChatFactory {
            users: Rc::default(),
        },
    )?;
    reactor.run()?;
    Ok(())
}
