//! Twisted's finger tutorial, step 3: the table is read from a file and
//! read again by a timer (the tutorial's "read status from a file" step,
//! which re-arms a `reactor.callLater`; here a `LoopingCall` does the
//! same). Each line of the file is `user:status`; spaces around either
//! part are dropped.
//!
//! ```text
//! cargo run -p torsion-examples --example finger3_file -- PORT FILE [SECONDS]   # default 30 s
//! ```
//!
//! Each reading prints `finger: loaded N users`; a file that cannot be
//! read keeps the table as it was (and says why on stderr).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use torsion_protocol::basic::{LineHandler, LineReceiver, LineState};
use torsion_protocol::{Address, Factory, LoopingCall, Reactor, ReactorTcp, TransportRef};

/// The table, shared by the factory, the timer and every connection.
type Users = Rc<RefCell<HashMap<Vec<u8>, Vec<u8>>>>;

/// One finger query, answered from the table as it is now.
struct Finger {
    users: Users,
}

impl LineHandler for Finger {
    fn line_received(&mut self, lines: &mut LineState, transport: &TransportRef, user: &[u8]) {
        match self.users.borrow().get(user) {
            Some(status) => lines.send_line(transport, status),
            None => lines.send_line(transport, b"No such user"),
        }
        transport.lose_connection();
    }
}

struct FingerFactory {
    users: Users,
}

impl Factory for FingerFactory {
    type Protocol = LineReceiver<Finger>;

    fn build_protocol(&self, _peer: &Address) -> Option<LineReceiver<Finger>> {
        let mut receiver = LineReceiver::new(Finger {
            users: Rc::clone(&self.users),
        });
        // Clients that end lines with a bare "\n" are answered too.
        receiver.state_mut().set_accept_bare_newline(true);
        Some(receiver)
    }
}

/// Parses `user:status` lines; lines without a colon are skipped.
fn parse(text: &[u8]) -> HashMap<Vec<u8>, Vec<u8>> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let (user, status) = (&line[..colon], &line[colon + 1..]);
            // Spaces around either part go, and the "\r" of a CRLF file.
            Some((user.trim_ascii().to_vec(), status.trim_ascii().to_vec()))
        })
        .collect()
}

/// Replaces the table with the file's contents, or keeps it and says why.
fn load(path: &Path, users: &Users) {
    match std::fs::read(path) {
        Ok(text) => {
            let table = parse(&text);
            println!("finger: loaded {} users", table.len());
            *users.borrow_mut() = table;
        }
        Err(error) => eprintln!("finger: cannot read {}: {error}", path.display()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let mut args = std::env::args().skip(1);
    let usage = "usage: finger3_file PORT FILE [SECONDS]";
    let port: u16 = args.next().ok_or(usage)?.parse()?;
    let path = PathBuf::from(args.next().ok_or(usage)?);
    let seconds: f64 = args.next().map_or(Ok(30.0), |s| s.parse())?;
    // Zero would read the file on every turn of the loop.
    if seconds <= 0.0 || seconds.is_nan() {
        return Err(format!("{usage} (SECONDS above 0)").into());
    }
    let interval = Duration::try_from_secs_f64(seconds)?;

    let reactor = Reactor::new()?;
    let users: Users = Rc::default();
    // The first call runs at once (`now`), so the table is full before the
    // first connection can arrive; then one every interval.
    let refresh = {
        let users = Rc::clone(&users);
        LoopingCall::new(&reactor, move |_| load(&path, &users))
    };
    refresh.start(interval, true)?;
    let listening = reactor.listen_tcp(port, FingerFactory { users })?;
    println!(
        "finger: listening on port {}",
        listening.get_host().port().unwrap_or(port)
    );
    reactor.run()?;
    Ok(())
}
