//! Twisted's finger tutorial, step 2: answers from a table of users (the
//! tutorial's "output from empty factory" and "output from non-empty
//! factory" steps). The table lives in the factory and is lent to each
//! connection's protocol through an `Rc`.
//!
//! ```text
//! cargo run -p torsion-examples --example finger2_table [PORT]   # default 1079
//! printf 'moshez\r\n' | nc localhost 1079                        # Happy and well
//! ```

use std::collections::HashMap;
use std::rc::Rc;

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{Address, Factory, Reactor, ReactorTcp, TransportRef};

/// One finger query, answered from the shared table.
struct Finger {
    users: Rc<HashMap<Vec<u8>, Vec<u8>>>,
}

impl LineHandler for Finger {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, user: &[u8]) {
        let answer = self
            .users
            .get(user)
            .map_or(&b"No such user"[..], Vec::as_slice);
        lines.send_line(transport, answer);
        transport.lose_connection();
    }
}

/// Holds the table; every protocol it builds shares it.
struct FingerFactory {
    users: Rc<HashMap<Vec<u8>, Vec<u8>>>,
}

impl Factory for FingerFactory {
    type Protocol = LineReceiver<Finger>;

    fn build_protocol(&self, _peer: &Address) -> Option<LineReceiver<Finger>> {
        Some(LineReceiver::new(Finger {
            users: Rc::clone(&self.users),
        }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let port = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("bad port {arg:?}: {e}"))?,
        None => 1079,
    };
    let users = HashMap::from([(b"moshez".to_vec(), b"Happy and well".to_vec())]);
    let reactor = Reactor::new()?;
    let factory = FingerFactory {
        users: Rc::new(users),
    };
    let listening = reactor.listen_tcp(port, factory)?;
    println!(
        "finger: listening on port {}",
        listening.get_host().port().unwrap_or(port)
    );
    reactor.run()?;
    Ok(())
}
