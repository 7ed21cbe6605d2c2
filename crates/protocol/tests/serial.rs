//! Serial ports on pseudo-terminals made by the test (no hardware): the
//! port opens the slave end by its path, the test plays the device on
//! the master end. Data both ways in random chunks, a large write under
//! back-pressure, settings read back, settings a pty cannot keep refused,
//! the other end closing (hang-up) ends the connection at once, and every
//! descriptor given back.
#![cfg(target_os = "linux")]

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use torsion_protocol::testing::{guarded_reactor, DescriptorGuard, PseudoTerminal, XorShift};
use torsion_protocol::{
    CloseReason, DataBits, HungUp, Parity, Producer, Protocol, SerialPort, SerialSettings,
    StopBits, TransportRef, UnsupportedSettings, WeakReactor,
};

/// A new pseudo-terminal: (a master descriptor, the slave's path, the
/// pair, which holds the slave open).
fn pty() -> (File, PathBuf, PseudoTerminal) {
    let pair = PseudoTerminal::open().unwrap();
    let master = pair.master().try_clone().unwrap();
    (master, pair.path().to_path_buf(), pair)
}

/// Echoes; records how the connection ended and stops the reactor.
struct Echo {
    lost: Rc<RefCell<Option<CloseReason>>>,
    reactor: WeakReactor,
}

impl Protocol for Echo {
    fn data_received(&mut self, transport: &TransportRef, data: &[u8]) {
        transport.write(data);
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        *self.lost.borrow_mut() = Some(reason_copy(reason));
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.stop().unwrap();
        }
    }
}

/// A `CloseReason` is not `Clone`: keep what the tests look at.
fn reason_copy(reason: &CloseReason) -> CloseReason {
    match reason {
        CloseReason::Lost(e) if HungUp::is(e) => CloseReason::Lost(io::Error::new(
            io::ErrorKind::NotConnected,
            HungUp {
                path: PathBuf::new(),
            },
        )),
        CloseReason::Lost(e) => CloseReason::Lost(io::Error::new(e.kind(), e.to_string())),
        CloseReason::Closed => CloseReason::Closed,
        other => CloseReason::ProtocolError(other.to_string()),
    }
}

fn is_hang_up(reason: &CloseReason) -> bool {
    matches!(reason, CloseReason::Lost(e) if HungUp::is(e))
}

#[test]
fn data_both_ways_in_random_chunks_then_hang_up() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (master, path, slave) = pty();
        let lost = Rc::new(RefCell::new(None));
        let echo = Echo {
            lost: lost.clone(),
            reactor: reactor.downgrade(),
        };
        let port = SerialPort::open(&reactor, echo, &path, &SerialSettings::baud(115_200)).unwrap();
        drop(slave);

        // The device: writes 256 KiB in random chunks, reads the echo in
        // random chunks, then goes away.
        let mut random = XorShift::new(16);
        let data = random.bytes(256 * 1024);
        let sent = data.clone();
        let mut writer = master.try_clone().unwrap();
        let write = thread::spawn(move || {
            let mut at = 0;
            while at < sent.len() {
                let n = (1 + random.below(3000) as usize).min(sent.len() - at);
                writer.write_all(&sent[at..at + n]).unwrap();
                at += n;
            }
        });
        let mut reader = master;
        let read = thread::spawn(move || {
            let mut random = XorShift::new(61);
            let mut got = Vec::new();
            let mut buf = vec![0; 4096];
            while got.len() < 256 * 1024 {
                let want = 1 + random.below(4096) as usize;
                let n = reader.read(&mut buf[..want]).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        // The reader's end of the master is its last descriptor: when it
        // has read everything, the device is gone.
        let turns = reactor.turn_count();
        reactor.run().unwrap();
        write.join().unwrap();
        let got = read.join().unwrap();
        assert!(got == data, "the echo differs from what was sent");
        let reason = lost.borrow_mut().take().expect("connection_lost");
        assert!(is_hang_up(&reason), "{reason}");
        assert!(reactor.turn_count() > turns);
        assert!(!port.is_open());
        assert_eq!(
            port.settings().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
    }
    guard.check();
}

/// Does nothing but record how the connection ended.
struct Quiet {
    lost: Rc<RefCell<Option<CloseReason>>>,
    reactor: WeakReactor,
    pause: bool,
}

impl Protocol for Quiet {
    fn connection_made(&mut self, transport: &TransportRef) {
        if self.pause {
            transport.pause_reading();
        }
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: &CloseReason) {
        *self.lost.borrow_mut() = Some(reason_copy(reason));
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.stop().unwrap();
        }
    }
}

fn quiet(
    reactor: &torsion_protocol::Reactor,
    pause: bool,
) -> (Quiet, Rc<RefCell<Option<CloseReason>>>) {
    let lost = Rc::new(RefCell::new(None));
    let protocol = Quiet {
        lost: lost.clone(),
        reactor: reactor.downgrade(),
        pause,
    };
    (protocol, lost)
}

#[test]
fn hang_up_ends_the_connection_at_once_reading_or_not() {
    let guard = DescriptorGuard::new();
    for pause in [false, true] {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (master, path, slave) = pty();
        let (protocol, lost) = quiet(&reactor, pause);
        let port = SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        drop(slave);
        // Something queued that can never be sent, and the other end gone.
        port.transport().write(b"never read");
        drop(master);
        let before = reactor.turn_count();
        reactor.run().unwrap();
        let turns = reactor.turn_count() - before;
        eprintln!("paused {pause}: connection_lost after {turns} turns");
        let reason = lost.borrow_mut().take().expect("connection_lost");
        assert!(is_hang_up(&reason), "paused {pause}: {reason}");
        assert!(reason.to_string().contains("hung up"), "{reason}");
        // The hang-up is seen on the first wait, and the close takes at
        // most one more turn: no busy loop on the hang-up epoll repeats.
        assert!(turns <= 2, "paused {pause}: {turns} turns");
        drop(port);
    }
    guard.check();
}

#[test]
fn settings_round_trip() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (_master, path, _slave) = pty();
        let (protocol, _lost) = quiet(&reactor, false);
        let settings = SerialSettings {
            stop_bits: StopBits::Two,
            xon_xoff: true,
            rts_cts: true,
            ..SerialSettings::baud(115_200)
        };
        let port = SerialPort::open(&reactor, protocol, &path, &settings).unwrap();
        assert_eq!(port.settings().unwrap(), settings);
        assert_eq!(port.path(), path.as_path());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Exclusive: a second open is refused (root may still open).
            let (protocol, _lost) = quiet(&reactor, false);
            let error = SerialPort::open(&reactor, protocol, &path, &settings)
                .err()
                .unwrap();
            assert_eq!(error.raw_os_error(), None);
            assert!(error.to_string().contains("exclusively"), "{error}");
        }

        port.set_baud_rate(57_600).unwrap();
        assert_eq!(port.settings().unwrap().baud_rate, 57_600);
        // Not a standard rate: Linux's BOTHER.
        port.set_baud_rate(250_000).unwrap();
        assert_eq!(port.settings().unwrap().baud_rate, 250_000);

        let plain = SerialSettings {
            exclusive: false,
            ..SerialSettings::baud(9600)
        };
        port.set_settings(&plain).unwrap();
        assert_eq!(port.settings().unwrap(), plain);

        // A break on a line without one (a pty): accepted, ended by a
        // timer.
        port.send_break(Duration::from_millis(1)).unwrap();
        assert_eq!(reactor.pending_call_count(), 1);
        assert_eq!(port.in_waiting().unwrap(), 0);
        assert_eq!(port.out_waiting().unwrap(), 0);
        port.flush_input().unwrap();
        port.flush_output().unwrap();
    }
    guard.check();
}

/// Whether the terminal at `path` is claimed exclusively (`TIOCGEXCL`).
fn exclusive(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .unwrap();
    let mut value: libc::c_int = 0;
    // SAFETY: TIOCGEXCL writes one int through the pointer.
    let done = unsafe { libc::ioctl(file.as_raw_fd(), libc::TIOCGEXCL, &mut value) };
    assert_eq!(done, 0, "{}", io::Error::last_os_error());
    value != 0
}

fn refused(error: &io::Error) -> Vec<&'static str> {
    let unsupported = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<UnsupportedSettings>())
        .unwrap_or_else(|| panic!("not UnsupportedSettings: {error}"));
    unsupported.refused.iter().map(|r| r.setting).collect()
}

#[test]
fn settings_a_pty_cannot_keep_are_refused() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (_master, path, _slave) = pty();
        let seven_even = SerialSettings {
            data_bits: DataBits::Seven,
            parity: Parity::Even,
            ..SerialSettings::default()
        };
        // At open: refused, named, and nothing left open.
        let (protocol, lost) = quiet(&reactor, false);
        let error = match SerialPort::open(&reactor, protocol, &path, &seven_even) {
            Err(e) => e,
            Ok(_) => panic!("a pty kept 7E1"),
        };
        assert_eq!(error.kind(), io::ErrorKind::Unsupported);
        assert_eq!(refused(&error), ["data bits", "parity"]);
        assert!(
            error.to_string().contains("data bits seven (kept eight)"),
            "{error}"
        );
        assert!(lost.borrow().is_none());
        // The claim made for the refused open was given back.
        assert!(!exclusive(&path), "left exclusive");

        // On an open port: refused, and the previous settings kept.
        let (protocol, _lost) = quiet(&reactor, false);
        let settings = SerialSettings::baud(19_200);
        let port = SerialPort::open(&reactor, protocol, &path, &settings).unwrap();
        let odd = SerialSettings {
            parity: Parity::Odd,
            ..SerialSettings::baud(38_400)
        };
        let error = port.set_settings(&odd).unwrap_err();
        assert_eq!(refused(&error), ["parity"]);
        assert_eq!(port.settings().unwrap(), settings);

        // No modem lines on a pty.
        for error in [
            port.modem_lines().unwrap_err(),
            port.cts().unwrap_err(),
            port.set_dtr(true).unwrap_err(),
            port.set_rts(false).unwrap_err(),
        ] {
            assert_eq!(error.kind(), io::ErrorKind::Unsupported, "{error}");
            assert!(
                error.to_string().contains("no modem control lines"),
                "{error}"
            );
        }

        // Not a terminal; not there.
        let (protocol, _lost) = quiet(&reactor, false);
        let error = SerialPort::open(&reactor, protocol, "/dev/null", &settings)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        let (protocol, _lost) = quiet(&reactor, false);
        let error = SerialPort::open(&reactor, protocol, "/dev/no-such-tty", &settings)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        assert!(error.to_string().contains("/dev/no-such-tty"), "{error}");
        drop(port);
    }
    guard.check();
}

/// What the flood tells the reader of the pty: it paused (the reader
/// then takes a quota), or everything is written (the reader takes the
/// rest).
enum Gate {
    Paused,
    Done,
}

/// Writes `total` bytes as a streaming producer, counting pauses and
/// telling the reader of each.
struct Flood {
    transport: RefCell<Option<TransportRef>>,
    left: Cell<usize>,
    paused: Cell<bool>,
    pauses: Cell<usize>,
    random: RefCell<XorShift>,
    gate: std::sync::mpsc::Sender<Gate>,
}

impl Flood {
    fn run(&self) {
        let transport = self.transport.borrow().clone().unwrap();
        while !self.paused.get() && self.left.get() > 0 {
            let n = self.left.get().min(16 * 1024);
            transport.write(&self.random.borrow_mut().bytes(n));
            self.left.set(self.left.get() - n);
        }
        if self.left.get() == 0 {
            let _ = self.gate.send(Gate::Done);
            transport.unregister_producer();
            transport.lose_connection();
        }
    }
}

impl Producer for Flood {
    fn pause_producing(&self) {
        self.paused.set(true);
        self.pauses.set(self.pauses.get() + 1);
        let _ = self.gate.send(Gate::Paused);
    }
    fn resume_producing(&self) {
        self.paused.set(false);
        self.run();
    }
}

struct Writer {
    flood: Rc<Flood>,
    lost: Rc<RefCell<Option<CloseReason>>>,
    reactor: WeakReactor,
}

impl Protocol for Writer {
    fn connection_made(&mut self, transport: &TransportRef) {
        *self.flood.transport.borrow_mut() = Some(transport.clone());
        transport
            .register_producer(self.flood.clone(), true)
            .unwrap();
        self.flood.run();
    }
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: &CloseReason) {
        self.flood.transport.borrow_mut().take();
        *self.lost.borrow_mut() = Some(reason_copy(reason));
        self.reactor.upgrade().unwrap().stop().unwrap();
    }
}

#[test]
fn large_write_under_back_pressure() {
    const TOTAL: usize = 4 * 1024 * 1024;
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let (mut master, path, slave) = pty();
        let (gate, gated) = std::sync::mpsc::channel();
        let flood = Rc::new(Flood {
            gate,
            transport: RefCell::new(None),
            left: Cell::new(TOTAL),
            paused: Cell::new(false),
            pauses: Cell::new(0),
            random: RefCell::new(XorShift::new(5)),
        });
        let lost = Rc::new(RefCell::new(None));
        let writer = Writer {
            flood: flood.clone(),
            lost: lost.clone(),
            reactor: reactor.downgrade(),
        };
        let port = SerialPort::open(&reactor, writer, &path, &SerialSettings::default()).unwrap();
        // The pty holds about 20 KiB: the rest waits in the transport,
        // and the producer was paused at the high watermark.
        assert!(flood.pauses.get() >= 1);
        let queued = port.transport().get_write_buffer_size();
        assert!(
            (40 * 1024..TOTAL).contains(&queued),
            "{queued} bytes queued"
        );
        // The reader is gated by the producer: after each pause it reads
        // QUOTA bytes, and only once everything is written the rest. The
        // producer pauses as soon as the queue is above its 64 KiB high
        // watermark, so what is written and unread is at most the pty's
        // buffer (64 KiB) plus the watermark plus one 16 KiB chunk: when
        // the last byte is written the reader has read at least
        // TOTAL - 144 KiB, a quota per pause.
        const QUOTA: usize = 256 * 1024;
        let read = thread::spawn(move || {
            let mut got = Vec::with_capacity(TOTAL);
            let mut buf = vec![0; 64 * 1024];
            let mut tokens = 0;
            let mut take = |got: &mut Vec<u8>, want: usize| {
                let end = got.len() + want;
                while got.len() < end {
                    let n = master.read(&mut buf[..(end - got.len()).min(64 * 1024)]);
                    got.extend_from_slice(&buf[..n.unwrap()]);
                }
            };
            loop {
                match gated.recv().expect("the flood ends with Done") {
                    Gate::Paused => {
                        tokens += 1;
                        let want = QUOTA.min(TOTAL - got.len());
                        take(&mut got, want);
                    }
                    Gate::Done => {
                        let want = TOTAL - got.len();
                        take(&mut got, want);
                        break;
                    }
                }
            }
            (got, tokens, master)
        });
        reactor.run().unwrap();
        let reason = lost.borrow_mut().take().expect("connection_lost");
        assert!(matches!(reason, CloseReason::Closed), "{reason}");
        let (got, tokens, master) = read.join().unwrap();
        assert!(got == XorShift::new(5).bytes(TOTAL), "bytes differ");
        let pauses = flood.pauses.get();
        assert_eq!(tokens, pauses, "every pause reached the reader");
        assert!(pauses >= (TOTAL - 144 * 1024) / QUOTA, "{pauses} pauses");
        drop((master, slave, port));
    }
    guard.check();
}

/// Panics on its first data.
struct Panicky {
    lost: Rc<RefCell<Option<CloseReason>>>,
    reactor: WeakReactor,
}

impl Protocol for Panicky {
    fn data_received(&mut self, _transport: &TransportRef, _data: &[u8]) {
        panic!("a protocol bug");
    }
    fn connection_lost(&mut self, reason: &CloseReason) {
        *self.lost.borrow_mut() = Some(reason_copy(reason));
        self.reactor.upgrade().unwrap().stop().unwrap();
    }
}

#[test]
fn a_panicking_protocol_aborts_its_port_alone() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (mut master, path, _pair) = pty();
        let lost = Rc::new(RefCell::new(None));
        let protocol = Panicky {
            lost: lost.clone(),
            reactor: reactor.downgrade(),
        };
        let port = SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        assert!(exclusive(&path));
        master.write_all(b"boom").unwrap();
        reactor.run().unwrap();
        let reason = lost.borrow_mut().take().expect("connection_lost");
        assert!(
            matches!(&reason, CloseReason::ProtocolError(text) if text.contains("aborted")),
            "{reason}"
        );
        assert!(!port.is_open());
        // The reactor goes on.
        reactor.call_soon(|reactor| reactor.stop().unwrap());
        reactor.run().unwrap();
    }
    guard.check();
}

#[test]
fn closing_the_port_gives_its_claim_back() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        // The pair holds the slave open: the tty outlives the port.
        let (_master, path, _pair) = pty();
        let (protocol, lost) = quiet(&reactor, false);
        let port = SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        assert!(exclusive(&path));
        port.lose_connection();
        reactor.run().unwrap();
        assert!(matches!(*lost.borrow(), Some(CloseReason::Closed)));
        drop(port);
        assert!(!exclusive(&path), "the claim outlived the port");
    }
    guard.check();
}

#[test]
fn baud_rate_zero_is_refused() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (_master, path, _pair) = pty();
        let is_zero_baud = |error: &io::Error| {
            error.kind() == io::ErrorKind::InvalidInput && error.to_string().contains("baud rate 0")
        };
        // At open: refused before anything is claimed or changed.
        let (protocol, _lost) = quiet(&reactor, false);
        let error = SerialPort::open(&reactor, protocol, &path, &SerialSettings::baud(0))
            .err()
            .expect("0 baud opened");
        assert!(is_zero_baud(&error), "{error}");
        assert!(!exclusive(&path), "left exclusive");

        // On an open port: refused, the speed kept.
        let (protocol, _lost) = quiet(&reactor, false);
        let port =
            SerialPort::open(&reactor, protocol, &path, &SerialSettings::baud(19_200)).unwrap();
        let error = port.set_baud_rate(0).unwrap_err();
        assert!(is_zero_baud(&error), "{error}");
        let error = port.set_settings(&SerialSettings::baud(0)).unwrap_err();
        assert!(is_zero_baud(&error), "{error}");
        assert_eq!(port.settings().unwrap(), SerialSettings::baud(19_200));
    }
    guard.check();
}

/// Reads what the master end has now, without waiting.
fn drain_now(master: &mut File) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: plain fcntl calls on a descriptor we hold.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut total = 0;
    let mut buf = [0; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return total,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn abort_drops_what_the_kernel_holds() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (mut master, path, _pair) = pty();
        let (protocol, lost) = quiet(&reactor, false);
        let port = SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        let transport = port.transport();
        let total = 64 * 1024;
        transport.write(&vec![b'x'; total]);
        for _ in 0..5 {
            reactor.iterate(Duration::ZERO).unwrap();
        }
        let queued = transport.get_write_buffer_size();
        let in_kernel = total - queued;
        transport.abort_connection();
        reactor.run().unwrap();
        let reason = lost.borrow_mut().take().expect("connection_lost");
        assert!(reason.to_string().contains("aborted"), "{reason}");
        // What the master's line discipline had already taken (4 KiB)
        // stays; the rest of what the kernel held was dropped (without
        // the flush the master read all 15 KiB).
        let read = drain_now(&mut master);
        eprintln!("kernel took {in_kernel}, master read {read}");
        assert!(in_kernel > 8192, "kernel took only {in_kernel}");
        assert!(
            read < in_kernel,
            "kernel took {in_kernel}, master read {read}"
        );
        drop(port);
    }
    guard.check();
}

#[test]
fn a_later_break_is_not_ended_by_an_earlier_ones_timer() {
    let guard = DescriptorGuard::new();
    {
        let (reactor, clock) = torsion_protocol::Reactor::with_manual_clock().unwrap();
        let (_master, path, _pair) = pty();
        let (protocol, _lost) = quiet(&reactor, false);
        let port = SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        let before = reactor.pending_call_count();
        port.send_break(Duration::from_millis(100)).unwrap();
        clock.advance(Duration::from_millis(50));
        // A second break while the first is on: one break, to the later
        // end (150 ms), not two timers of which the first ends both.
        port.send_break(Duration::from_millis(100)).unwrap();
        assert_eq!(reactor.pending_call_count(), before + 1);
        clock.advance(Duration::from_millis(60));
        assert_eq!(reactor.pending_call_count(), before + 1, "ended at 100 ms");
        clock.advance(Duration::from_millis(40));
        assert_eq!(reactor.pending_call_count(), before);
        // A shorter break inside a longer one does not shorten it.
        port.send_break(Duration::from_millis(100)).unwrap();
        port.send_break(Duration::from_millis(10)).unwrap();
        assert_eq!(reactor.pending_call_count(), before + 1);
        clock.advance(Duration::from_millis(50));
        assert_eq!(reactor.pending_call_count(), before + 1, "shortened");
        clock.advance(Duration::from_millis(50));
        assert_eq!(reactor.pending_call_count(), before);
        drop(port);
    }
    guard.check();
}

#[test]
fn control_errors_name_the_device() {
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (_master, path, _pair) = pty();
        let (protocol, lost) = quiet(&reactor, false);
        let port = SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        port.lose_connection();
        reactor.run().unwrap();
        assert!(lost.borrow().is_some());
        let error = port.flush_input().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotConnected);
        let name = path.display().to_string();
        assert!(error.to_string().contains(&name), "{error}");
        let error = port.set_baud_rate(57_600).unwrap_err();
        assert!(error.to_string().contains(&name), "{error}");
    }
    guard.check();
}

#[test]
fn no_claim_asked_on_a_claimed_device_is_refused_and_leaves_the_claim() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only a privileged process opens a claimed device");
        return;
    }
    let guard = DescriptorGuard::new();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(30));
        let (_master, path, _pair) = pty();
        let (protocol, _lost) = quiet(&reactor, false);
        let first =
            SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        let shared = SerialSettings {
            exclusive: false,
            ..SerialSettings::default()
        };
        let (protocol, _lost) = quiet(&reactor, false);
        let error = SerialPort::open(&reactor, protocol, &path, &shared)
            .err()
            .expect("opened as not exclusive, reads back exclusive");
        assert_eq!(refused(&error), ["exclusive"]);
        // The first port's claim is still there, and still its own.
        assert!(exclusive(&path));
        assert!(first.settings().unwrap().exclusive);
        first.lose_connection();
        reactor.run().unwrap();
        drop(first);
        assert!(!exclusive(&path));
    }
    guard.check();
}

#[test]
fn a_break_under_way_ends_with_the_port() {
    let guard = DescriptorGuard::new();
    {
        let _watchdog = torsion_protocol::testing::Watchdog::new(Duration::from_secs(30));
        let (reactor, _clock) = torsion_protocol::Reactor::with_manual_clock().unwrap();
        let (_master, path, _pair) = pty();
        let (protocol, _lost) = quiet(&reactor, false);
        let port = SerialPort::open(&reactor, protocol, &path, &SerialSettings::default()).unwrap();
        let before = reactor.pending_call_count();
        port.send_break(Duration::from_secs(10)).unwrap();
        assert_eq!(reactor.pending_call_count(), before + 1);
        port.transport().abort_connection();
        reactor.run().unwrap();
        assert!(!port.is_open());
        assert_eq!(
            reactor.pending_call_count(),
            before,
            "the break's timer outlived the port"
        );
        drop(port);
    }
    guard.check();
}
