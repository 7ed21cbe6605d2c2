//! Helpers shared by this crate's integration tests (each test file that
//! needs them says `mod support;`).

use std::cell::RefCell;

use torsion_reactor::{Handler, Reactor, Readiness};

/// Records every readiness it hears.
#[derive(Default)]
pub struct Recorder {
    pub heard: RefCell<Vec<Readiness>>,
}

impl Handler for Recorder {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        self.heard.borrow_mut().push(readiness);
    }
}
