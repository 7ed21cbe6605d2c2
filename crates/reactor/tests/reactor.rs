//! Running, stopping, threads and I/O dispatch on a real poller.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};
use torsion_reactor::testing::{DescriptorGuard, Watchdog};

use torsion_reactor::{
    Handler, Interest, Reactor, ReactorError, Readiness, Registration, WeakReactor,
};

#[test]
fn stop_when_not_running_is_an_error() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    assert!(matches!(reactor.stop(), Err(ReactorError::NotRunning)));
}

#[test]
fn run_returns_after_stop_and_can_run_again() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    for _ in 0..2 {
        reactor.call_soon(|r| {
            assert!(r.is_running());
            r.stop().unwrap();
            // A second stop while stopping is refused, as in Twisted.
            assert!(matches!(r.stop(), Err(ReactorError::NotRunning)));
        });
        reactor.run().unwrap();
        assert!(!reactor.is_running());
    }
}

#[test]
fn run_inside_a_callback_is_refused() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let result = Rc::new(RefCell::new(None));
    let r2 = result.clone();
    reactor.call_soon(move |r| {
        *r2.borrow_mut() = Some(matches!(r.run(), Err(ReactorError::AlreadyRunning)));
        *r2.borrow_mut() = Some(
            r2.borrow().unwrap()
                && matches!(r.iterate(Duration::ZERO), Err(ReactorError::AlreadyRunning)),
        );
        r.stop().unwrap();
    });
    reactor.run().unwrap();
    assert_eq!(*result.borrow(), Some(true));
}

#[test]
fn the_loop_waits_for_the_next_timer() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let start = Instant::now();
    reactor.call_later(Duration::from_millis(30), |r| r.stop().unwrap());
    reactor.run().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(30));
}

thread_local! {
    /// What calls from other threads saw, on the reactor's thread.
    static SEEN: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn call_from_thread_wakes_the_loop_and_keeps_per_thread_order() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(10));
    let threads: Vec<_> = (0..2)
        .map(|thread| {
            let handle = reactor.handle();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    handle
                        .call_from_thread(move |reactor| {
                            let done = SEEN.with(|seen| {
                                seen.borrow_mut().push((thread, i));
                                seen.borrow().len() == 2000
                            });
                            if done {
                                reactor.stop().unwrap();
                            }
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    reactor.run().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    SEEN.with(|seen| {
        let seen = seen.borrow();
        for thread in 0..2 {
            let order: Vec<u32> = seen
                .iter()
                .filter(|(t, _)| *t == thread)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(order, (0..1000).collect::<Vec<_>>());
        }
    });
}

#[test]
fn stop_from_another_thread() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(10));
    let handle = reactor.handle();
    let thread = std::thread::spawn(move || handle.stop().unwrap());
    reactor.run().unwrap();
    thread.join().unwrap();
}

#[test]
fn call_from_thread_after_drop_is_refused() {
    let fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    drop(reactor);
    assert!(handle.call_from_thread(|_| {}).is_err());
    handle.wake();
    // A surviving handle does not keep the reactor's descriptors open.
    fds.check();
}

#[test]
fn defer_to_thread_returns_results_and_panics_to_the_loop() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(10));
    let results = Rc::new(RefCell::new(Vec::new()));
    for i in 0..20u64 {
        let results = results.clone();
        reactor.defer_to_thread(
            move || {
                assert!(i != 13, "unlucky");
                i * i
            },
            move |r, result| {
                results.borrow_mut().push(result.ok());
                if results.borrow().len() == 20 {
                    r.stop().unwrap();
                }
            },
        );
    }
    reactor.run().unwrap();
    let mut got = results.borrow().clone();
    got.sort();
    let mut want: Vec<Option<u64>> = (0..20u64).map(|i| (i != 13).then_some(i * i)).collect();
    want.sort();
    assert_eq!(got, want);
}

/// A handler that reads what arrives on a Unix socket.
struct Reader {
    reg: RefCell<Option<Registration<UnixStream>>>,
    got: RefCell<Vec<u8>>,
    readiness: RefCell<Vec<Readiness>>,
    reactor: WeakReactor,
}

impl Handler for Reader {
    fn ready(&self, reactor: &Reactor, readiness: Readiness) {
        assert!(reactor.ptr_eq(&self.reactor.upgrade().unwrap()));
        self.readiness.borrow_mut().push(readiness);
        if readiness.is_woken() {
            reactor.stop().unwrap();
            return;
        }
        if !readiness.is_readable() {
            return;
        }
        let mut buf = [0u8; 64];
        let reg = self.reg.borrow();
        let mut stream = reg.as_ref().unwrap().get_ref();
        match stream.read(&mut buf) {
            Ok(0) => {
                drop(reg);
                // Dropping the registration closes the socket and removes
                // it from the reactor.
                self.reg.borrow_mut().take();
                reactor.stop().unwrap();
            }
            Ok(n) => self.got.borrow_mut().extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
}

fn reader(reactor: &Reactor, stream: UnixStream, interest: Interest) -> Rc<Reader> {
    stream.set_nonblocking(true).unwrap();
    let reader = Rc::new(Reader {
        reg: RefCell::new(None),
        got: RefCell::new(Vec::new()),
        readiness: RefCell::new(Vec::new()),
        reactor: reactor.downgrade(),
    });
    let reg = reactor.register(stream, interest, reader.clone()).unwrap();
    *reader.reg.borrow_mut() = Some(reg);
    reader
}

#[test]
fn readiness_reaches_the_handler_until_the_registration_is_dropped() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(10));
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let reader = reader(&reactor, ours, Interest::READABLE);
    assert_eq!(reactor.source_count(), 1);
    theirs.write_all(b"hello").unwrap();
    drop(theirs);
    reactor.run().unwrap();
    assert_eq!(&*reader.got.borrow(), b"hello");
    assert_eq!(reactor.source_count(), 0);
}

#[test]
fn interest_changes_and_wake() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let _watchdog = Watchdog::new(Duration::from_secs(10));
    let (ours, theirs) = UnixStream::pair().unwrap();
    let reader = reader(&reactor, ours, Interest::NONE);
    // Nothing is wanted: a turn reports nothing.
    reactor.iterate(Duration::ZERO).unwrap();
    assert!(reader.readiness.borrow().is_empty());
    // Writable is reported once asked for.
    {
        let reg = reader.reg.borrow();
        let reg = reg.as_ref().unwrap();
        reg.set_interest(Interest::WRITABLE).unwrap();
        assert_eq!(reg.interest(), Interest::WRITABLE);
    }
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(*reader.readiness.borrow(), [Readiness::WRITABLE]);
    // A wake is delivered as WOKEN without any I/O.
    {
        let reg = reader.reg.borrow();
        let reg = reg.as_ref().unwrap();
        reg.set_interest(Interest::NONE).unwrap();
        reg.wake();
    }
    reactor.run().unwrap();
    assert_eq!(
        *reader.readiness.borrow(),
        [Readiness::WRITABLE, Readiness::WOKEN]
    );
    drop(theirs);
}

#[test]
fn dropping_the_reactor_closes_registered_sources() {
    let _fds = DescriptorGuard::new();
    let reactor = Reactor::new().unwrap();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let reader = reader(&reactor, ours, Interest::READABLE);
    drop(reader);
    drop(reactor);
    // Our end is closed: the peer sees end of stream.
    let mut buf = [0u8; 1];
    assert_eq!(theirs.read(&mut buf).unwrap(), 0);
}

/// Records the order of events, for the tests of the turn's last phase.
struct Log(Rc<RefCell<Vec<&'static str>>>);

impl Handler for Log {
    fn ready(&self, reactor: &Reactor, readiness: Readiness) {
        assert!(readiness.is_woken());
        assert!(reactor.is_dispatching());
        self.0.borrow_mut().push("woken");
    }
}

#[test]
fn woken_sources_run_after_the_turns_call_soon_work_and_before_the_next_wait() {
    let _fds = DescriptorGuard::new();
    let _watchdog = Watchdog::new(Duration::from_secs(10));
    let reactor = Reactor::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let registration = Rc::new(
        reactor
            .register(ours, Interest::NONE, Rc::new(Log(log.clone())))
            .unwrap(),
    );
    assert!(!reactor.is_dispatching());
    let (reg, timer_log) = (registration.clone(), log.clone());
    reactor.call_later(Duration::ZERO, move |reactor| {
        assert!(reactor.is_dispatching());
        timer_log.borrow_mut().push("timer");
        reg.wake();
        let (reg, soon_log) = (reg.clone(), timer_log.clone());
        reactor.call_soon(move |reactor| {
            assert!(reactor.is_dispatching());
            soon_log.borrow_mut().push("soon");
            // Woken again before the woken phase: still one dispatch.
            reg.wake();
        });
    });
    // One turn that does not wait: the timer, its call_soon work, then the
    // woken source (once), all before the turn ends. Before, the woken
    // source ran before the call_soon work, and a wake made by that work
    // waited for the next turn.
    reactor.iterate(Duration::ZERO).unwrap();
    assert_eq!(*log.borrow(), ["timer", "soon", "woken"]);
    assert!(!reactor.is_dispatching());
    drop(registration);
}
