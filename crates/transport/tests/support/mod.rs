//! Helpers shared by this crate's integration tests (each test file that
//! needs them says `mod support;`).

use std::cell::RefCell;
use std::rc::Rc;

use torsion_reactor::{Handler, Reactor, Readiness};
use torsion_transport::driver::{Pipe, StreamTransport};

/// What a test does with the bytes a transport reads.
pub type OnData<P> = Box<dyn Fn(&StreamTransport<P>, &[u8])>;

/// The handler of a test's pipe: runs the transport's step on each
/// readiness and hands what it reads to `on_data`.
pub struct Drive<P: Pipe> {
    pub transport: RefCell<Option<Rc<StreamTransport<P>>>>,
    pub on_data: OnData<P>,
}

impl<P: Pipe> Drive<P> {
    /// A handler with no transport yet (set `transport` once it is made).
    pub fn new(on_data: OnData<P>) -> Rc<Drive<P>> {
        Rc::new(Drive {
            transport: RefCell::new(None),
            on_data,
        })
    }
}

impl<P: Pipe> Handler for Drive<P> {
    fn ready(&self, _reactor: &Reactor, readiness: Readiness) {
        let transport = self.transport.borrow().clone();
        if let Some(transport) = transport {
            transport.process(readiness, &mut |data| (self.on_data)(&transport, data));
        }
    }
}
