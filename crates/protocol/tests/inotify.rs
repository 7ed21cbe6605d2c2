//! Filesystem events on real temporary directories: order, renames,
//! overflow, one deleted directory among two, `auto_add` racing the
//! files of a new directory, 2,000 watched directories, descriptors.
//! Every test drives the reactor until what it expects arrives (a
//! watchdog ends a test that waits in vain); none sleeps.
#![cfg(target_os = "linux")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use torsion_protocol::testing::{guarded_reactor, DescriptorGuard};
use torsion_protocol::{FsEvent, FsMask, INotify, Reactor, WatchOptions};

/// A directory of its own under the system's temporary directory,
/// removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "torsion-inotify-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a callback saw: (kinds, path, cookie, moved_from, synthetic).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    mask: FsMask,
    path: PathBuf,
    cookie: u32,
    moved_from: Option<PathBuf>,
    synthetic: bool,
}

type Log = Rc<RefCell<Vec<Seen>>>;

fn recorder(log: &Log) -> impl FnMut(&INotify, &FsEvent<'_>) + 'static {
    let log = log.clone();
    move |_, event| {
        log.borrow_mut().push(Seen {
            mask: event.mask(),
            path: event.path().to_path_buf(),
            cookie: event.cookie(),
            moved_from: event.moved_from().map(Path::to_path_buf),
            synthetic: event.is_synthetic(),
        })
    }
}

/// Turns the reactor until `done` holds.
fn drive(reactor: &Reactor, mut done: impl FnMut() -> bool) {
    while !done() {
        reactor.iterate(Duration::from_secs(1)).unwrap();
    }
}

/// Creates `marker` in `dir` and drives until the log shows it: every
/// event queued before it has been delivered.
fn settle(reactor: &Reactor, log: &Log, marker: &Path) {
    fs::write(marker, b"").unwrap();
    drive(reactor, || {
        log.borrow().iter().any(|seen| seen.path == marker)
    });
}

fn kinds(log: &Log) -> Vec<(String, PathBuf)> {
    log.borrow()
        .iter()
        .map(|seen| (seen.mask.to_string(), seen.path.clone()))
        .collect()
}

#[test]
fn create_modify_rename_delete_arrive_in_order_with_paired_cookies() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("order");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let mask = FsMask::CREATE | FsMask::MODIFY | FsMask::MOVED | FsMask::DELETE;
        notifier
            .watch(dir.path(), mask, WatchOptions::default(), recorder(&log))
            .unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let mut file = fs::File::create(&a).unwrap();
        file.write_all(b"hello").unwrap();
        drop(file);
        fs::rename(&a, &b).unwrap();
        fs::remove_file(&b).unwrap();
        drive(&reactor, || log.borrow().len() >= 5);
        assert_eq!(
            kinds(&log),
            [
                ("CREATE".to_owned(), a.clone()),
                ("MODIFY".to_owned(), a.clone()),
                ("MOVED_FROM".to_owned(), a.clone()),
                ("MOVED_TO".to_owned(), b.clone()),
                ("DELETE".to_owned(), b.clone()),
            ]
        );
        let log = log.borrow();
        assert_ne!(log[2].cookie, 0);
        assert_eq!(log[2].cookie, log[3].cookie);
        assert_eq!(log[3].moved_from.as_deref(), Some(a.as_path()));
        assert_eq!(
            format!("{:?}", log[0].mask),
            "FsMask(CREATE)",
            "readable names"
        );
    }
    drop(dir);
    guard.check();
}

#[test]
fn an_overflowing_queue_reaches_every_watch_as_lost_events_and_the_watcher_goes_on() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("overflow");
    let other = TempDir::new("overflow-other");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(120));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let other_log: Log = Rc::default();
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                recorder(&log),
            )
            .unwrap();
        notifier
            .watch(
                other.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                recorder(&other_log),
            )
            .unwrap();
        // More files than the kernel queues, created without reading.
        let queued: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(16_384);
        for i in 0..queued + 600 {
            fs::File::create(dir.path().join(format!("f{i}"))).unwrap();
        }
        drive(&reactor, || {
            log.borrow()
                .iter()
                .any(|seen| seen.mask == FsMask::Q_OVERFLOW)
        });
        let log_now = log.borrow().clone();
        let overflow = log_now
            .iter()
            .position(|seen| seen.mask == FsMask::Q_OVERFLOW)
            .unwrap();
        assert_eq!(
            log_now[overflow].path,
            dir.path(),
            "reported with the watched path"
        );
        assert!(
            overflow >= queued - 1,
            "the queue held {overflow} events first"
        );
        // The other watch heard it too: its events may be lost as well.
        assert_eq!(
            kinds(&other_log),
            [("Q_OVERFLOW".to_owned(), other.path().to_path_buf())]
        );
        // And the watcher still works.
        settle(&reactor, &log, &dir.path().join("after"));
    }
    drop((dir, other));
    guard.check();
}

#[test]
fn deleting_one_of_two_watched_directories_leaves_the_other_watched() {
    let guard = DescriptorGuard::new();
    let parent = TempDir::new("two");
    let first = parent.path().join("first");
    let second = parent.path().join("second");
    fs::create_dir(&first).unwrap();
    fs::create_dir(&second).unwrap();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let first_log: Log = Rc::default();
        let second_log: Log = Rc::default();
        let mask = FsMask::CREATE | FsMask::DELETE_SELF;
        notifier
            .watch(&first, mask, WatchOptions::default(), recorder(&first_log))
            .unwrap();
        notifier
            .watch(
                &second,
                mask,
                WatchOptions::default(),
                recorder(&second_log),
            )
            .unwrap();
        fs::remove_dir(&first).unwrap();
        drive(&reactor, || first_log.borrow().len() >= 2);
        assert_eq!(
            kinds(&first_log),
            [
                ("DELETE_SELF".to_owned(), first.clone()),
                ("IGNORED".to_owned(), first.clone()),
            ]
        );
        // Forgotten once the kernel said IGNORED, and only then.
        assert!(notifier.ignore(&first).is_err());
        assert_eq!(notifier.watched_paths(), std::slice::from_ref(&second));
        settle(&reactor, &second_log, &second.join("still"));
        assert_eq!(second_log.borrow().len(), 1);
    }
    drop(parent);
    guard.check();
}

#[test]
fn auto_add_reports_files_made_at_once_in_a_new_directory_exactly_once() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("autoadd");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(120));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let options = WatchOptions {
            auto_add: true,
            recursive: false,
        };
        notifier
            .watch(dir.path(), FsMask::CREATE, options, recorder(&log))
            .unwrap();
        // Another thread makes directories and fills them while the
        // reactor adds their watches and reads them: the scan and the
        // kernel's events overlap.
        let root = dir.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            let mut made = Vec::new();
            for round in 0..10 {
                let sub = root.join(format!("new{round}"));
                let deeper = sub.join("deeper");
                fs::create_dir(&sub).unwrap();
                made.push(sub.clone());
                for i in 0..300 {
                    if i == 50 {
                        fs::create_dir(&deeper).unwrap();
                        made.push(deeper.clone());
                    }
                    let place = if i > 50 && i % 2 == 0 { &deeper } else { &sub };
                    let file = place.join(format!("f{i}"));
                    fs::write(&file, b"x").unwrap();
                    made.push(file);
                }
            }
            made
        });
        while !writer.is_finished() {
            reactor.iterate(Duration::from_millis(1)).unwrap();
        }
        let expected = writer.join().unwrap();
        settle(&reactor, &log, &dir.path().join("marker"));
        let mut counts: HashMap<PathBuf, usize> = HashMap::new();
        for seen in log.borrow().iter() {
            assert!(seen.mask.contains(FsMask::CREATE), "{seen:?}");
            *counts.entry(seen.path.clone()).or_default() += 1;
        }
        for path in &expected {
            assert_eq!(counts.get(path), Some(&1), "{}", path.display());
        }
        assert_eq!(counts.len(), expected.len() + 1);
        assert!(log.borrow().iter().any(|seen| seen.synthetic));
        // Files made in a directory found by a scan are reported too.
        let late = dir.path().join("new3/deeper/late");
        fs::write(&late, b"").unwrap();
        drive(&reactor, || {
            log.borrow().iter().any(|seen| seen.path == late)
        });
    }
    drop(dir);
    guard.check();
}

#[test]
fn two_thousand_directories_watched_recursively_keep_their_paths_across_renames() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("recursive");
    for i in 0..40 {
        for j in 0..49 {
            fs::create_dir_all(dir.path().join(format!("d{i}/e{j}"))).unwrap();
        }
    }
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(120));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let options = WatchOptions {
            auto_add: true,
            recursive: true,
        };
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE | FsMask::MOVED,
                options,
                recorder(&log),
            )
            .unwrap();
        assert_eq!(notifier.watched_paths().len(), 1 + 40 + 40 * 49);
        let deep = dir.path().join("d39/e48/file");
        settle(&reactor, &log, &deep);

        // A rename inside the tree: the same watches, new paths.
        fs::rename(dir.path().join("d7"), dir.path().join("renamed")).unwrap();
        let moved = dir.path().join("renamed/e3/file");
        settle(&reactor, &log, &moved);
        let pair: Vec<_> = log
            .borrow()
            .iter()
            .filter(|seen| seen.mask.intersects(FsMask::MOVED))
            .cloned()
            .collect();
        assert_eq!(pair.len(), 2);
        assert_eq!(
            pair[1].moved_from.as_deref(),
            Some(dir.path().join("d7").as_path())
        );

        // Out of the tree: no longer watched, no longer reported.
        let outside = TempDir::new("recursive-outside");
        fs::rename(dir.path().join("d8"), outside.path().join("d8")).unwrap();
        settle(&reactor, &log, &dir.path().join("marker"));
        drive(&reactor, || {
            notifier.watched_paths().len() == 1 + 39 + 39 * 49
        });
        fs::write(outside.path().join("d8/e0/unseen"), b"").unwrap();
        settle(&reactor, &log, &dir.path().join("marker2"));
        assert!(!log
            .borrow()
            .iter()
            .any(|seen| seen.path.ends_with("unseen")));

        // ignore() takes the whole tree.
        notifier.ignore(dir.path()).unwrap();
        assert!(notifier.watched_paths().is_empty());
    }
    drop(dir);
    guard.check();
}

#[test]
fn a_panicking_callback_costs_its_own_watch_only() {
    let guard = DescriptorGuard::new();
    let bad = TempDir::new("panic-bad");
    let good = TempDir::new("panic-good");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        notifier
            .watch(
                bad.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                |_, _| panic!("a callback that fails"),
            )
            .unwrap();
        notifier
            .watch(
                good.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                recorder(&log),
            )
            .unwrap();
        fs::write(bad.path().join("x"), b"").unwrap();
        settle(&reactor, &log, &good.path().join("y"));
        assert_eq!(notifier.watched_paths(), [good.path().to_path_buf()]);
        assert_eq!(reactor.caught_panic_count(), 0, "contained by the watcher");
        settle(&reactor, &log, &good.path().join("z"));
    }
    drop((bad, good));
    guard.check();
}

#[test]
fn bad_requests_get_clear_errors() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("errors");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let missing = dir.path().join("missing");
        let error = notifier
            .watch(&missing, FsMask::CREATE, WatchOptions::default(), |_, _| {})
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        assert!(error.to_string().contains("missing"), "{error}");
        // The kernel's errno is kept, as the source.
        let source = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(source, Some(libc::ENOENT), "{error:?}");
        let error = notifier
            .watch(
                dir.path(),
                FsMask::ISDIR,
                WatchOptions::default(),
                |_, _| {},
            )
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                |_, _| {},
            )
            .unwrap();
        let error = notifier
            .watch(
                dir.path(),
                FsMask::DELETE,
                WatchOptions::default(),
                |_, _| {},
            )
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            notifier.ignore(&missing).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        notifier.ignore(dir.path()).unwrap();
        drop(notifier);
        assert_eq!(reactor.source_count(), 0);
    }
    drop(dir);
    guard.check();
}

#[test]
fn a_flood_of_events_is_read_in_bounded_steps_and_timers_still_run() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("flood");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(120));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                recorder(&log),
            )
            .unwrap();
        let files = 12_000;
        for i in 0..files {
            fs::File::create(dir.path().join(format!("f{i}"))).unwrap();
        }
        let fired = Rc::new(std::cell::Cell::new(false));
        let flag = fired.clone();
        reactor.call_later(Duration::ZERO, move |_| flag.set(true));
        reactor.iterate(Duration::from_secs(1)).unwrap();
        assert!(fired.get(), "the timer ran in the first turn");
        let first_turn = log.borrow().len();
        assert!(
            first_turn > 0 && first_turn < files,
            "one turn read {first_turn} of {files} events"
        );
        // The rest come on the following turns, in order, none lost.
        drive(&reactor, || log.borrow().len() == files);
        let log = log.borrow();
        for (i, seen) in log.iter().enumerate() {
            assert_eq!(seen.path, dir.path().join(format!("f{i}")));
        }
    }
    drop(dir);
    guard.check();
}

#[test]
fn an_unmount_is_reported_then_the_watch_ends() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("unmount");
    let mount = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let point = dir.path().as_os_str();
    // Needs root (or the right capability); skipped elsewhere.
    if !mount(&[
        "mount".as_ref(),
        "-t".as_ref(),
        "tmpfs".as_ref(),
        "none".as_ref(),
        point,
    ]) {
        eprintln!("skipped: cannot mount a tmpfs here");
        drop(dir);
        return;
    }
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let inside = dir.path().join("inside");
        fs::create_dir(&inside).unwrap();
        notifier
            .watch(
                &inside,
                FsMask::CREATE,
                WatchOptions::default(),
                recorder(&log),
            )
            .unwrap();
        assert!(mount(&["umount".as_ref(), point]));
        drive(&reactor, || log.borrow().len() >= 2);
        assert_eq!(
            kinds(&log),
            [
                ("UNMOUNT,ISDIR".to_owned(), inside.clone()),
                ("IGNORED".to_owned(), inside.clone()),
            ]
        );
        assert!(notifier.watched_paths().is_empty());
    }
    drop(dir);
    guard.check();
}

#[test]
fn a_directory_moved_in_under_auto_add_is_watched_with_what_it_holds() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("moved-in");
    let outside = TempDir::new("moved-in-outside");
    fs::create_dir_all(outside.path().join("tree/inner")).unwrap();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let options = WatchOptions {
            auto_add: true,
            recursive: false,
        };
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE | FsMask::MOVED,
                options,
                recorder(&log),
            )
            .unwrap();
        fs::rename(outside.path().join("tree"), dir.path().join("tree")).unwrap();
        settle(&reactor, &log, &dir.path().join("marker"));
        let arrived = log.borrow()[0].clone();
        assert_eq!(arrived.mask, FsMask::MOVED_TO | FsMask::ISDIR);
        assert_eq!(arrived.moved_from, None, "from outside: no first half");
        let deep = dir.path().join("tree/inner/file");
        settle(&reactor, &log, &deep);
        assert_eq!(notifier.watched_paths().len(), 3);
    }
    drop((dir, outside));
    guard.check();
}

#[test]
fn a_file_replaced_after_a_scan_reported_it_is_reported_again() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("rescan-replace");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let options = WatchOptions {
            auto_add: true,
            recursive: false,
        };
        let d = dir.path().join("d");
        let x = d.join("x");
        let replaced = Rc::new(std::cell::Cell::new(false));
        let mut record = recorder(&log);
        let (x2, replaced2) = (x.clone(), replaced.clone());
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE | FsMask::MOVED_TO,
                options,
                move |notifier, event| {
                    record(notifier, event);
                    // (a) on the scan's CREATE of d/x: replace d/x.
                    if event.is_synthetic() && event.path() == x2 && !replaced2.get() {
                        replaced2.set(true);
                        fs::remove_file(&x2).unwrap();
                        fs::write(&x2, b"new").unwrap();
                        // (b) an editor's save over a scanned name.
                        let d = x2.parent().unwrap();
                        fs::write(d.join("y.tmp"), b"saved").unwrap();
                        fs::rename(d.join("y.tmp"), d.join("y")).unwrap();
                    }
                },
            )
            .unwrap();
        // Made before the reactor reads: found by the scan of d.
        fs::create_dir(&d).unwrap();
        fs::write(&x, b"old").unwrap();
        fs::write(d.join("y"), b"old").unwrap();
        drive(&reactor, || replaced.get());
        settle(&reactor, &log, &d.join("marker"));
        let seen = kinds(&log);
        let creates = seen
            .iter()
            .filter(|(kind, path)| kind == "CREATE" && *path == x)
            .count();
        assert_eq!(creates, 2, "the scan's and the new file's: {seen:?}");
        assert!(
            seen.iter()
                .any(|(kind, path)| kind == "MOVED_TO" && *path == d.join("y")),
            "the save over y: {seen:?}"
        );
    }
    drop(dir);
    guard.check();
}

#[test]
fn a_directory_made_again_while_the_old_one_is_held_open_is_watched() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("remade");
    let d = dir.path().join("d");
    fs::create_dir(&d).unwrap();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let options = WatchOptions {
            auto_add: true,
            recursive: true,
        };
        notifier
            .watch(dir.path(), FsMask::CREATE, options, recorder(&log))
            .unwrap();
        // Held open: the old d's DELETE_SELF and IGNORED wait for it.
        let held = fs::File::open(&d).unwrap();
        fs::remove_dir(&d).unwrap();
        fs::create_dir(&d).unwrap();
        settle(&reactor, &log, &dir.path().join("marker"));
        drop(held);
        let y = d.join("y");
        fs::write(&y, b"").unwrap();
        settle(&reactor, &log, &dir.path().join("marker2"));
        assert!(
            log.borrow().iter().any(|seen| seen.path == y),
            "{:?}",
            kinds(&log)
        );
        let mut paths = notifier.watched_paths();
        paths.sort();
        assert_eq!(paths, [dir.path().to_path_buf(), d.clone()]);
    }
    drop(dir);
    guard.check();
}

#[test]
fn a_refused_watch_leaves_the_existing_one_as_it_was() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("refused");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                recorder(&log),
            )
            .unwrap();
        let err = notifier
            .watch(
                dir.path(),
                FsMask::CREATE | FsMask::ONESHOT,
                WatchOptions::default(),
                |_, _| {},
            )
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert!(
            err.to_string().contains(&*dir.path().to_string_lossy()),
            "{err}"
        );
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"").unwrap();
        settle(&reactor, &log, &b);
        assert_eq!(
            kinds(&log),
            [("CREATE".to_owned(), a), ("CREATE".to_owned(), b)]
        );
        // A directory watched below a tree: the message names the tree.
        let tree = TempDir::new("refused-tree");
        let sub = tree.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let options = WatchOptions {
            auto_add: false,
            recursive: true,
        };
        notifier
            .watch(tree.path(), FsMask::CREATE, options, |_, _| {})
            .unwrap();
        let err = notifier
            .watch(&sub, FsMask::CREATE, WatchOptions::default(), |_, _| {})
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        let below = format!("below {}", tree.path().display());
        assert!(err.to_string().contains(&below), "{err}");
    }
    drop(dir);
    guard.check();
}

#[test]
fn an_ignored_watch_hears_nothing_more_not_even_ignored() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("ignore");
    let other = TempDir::new("ignore-other");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let other_log: Log = Rc::default();
        let mask = FsMask::CREATE;
        notifier
            .watch(dir.path(), mask, WatchOptions::default(), recorder(&log))
            .unwrap();
        notifier
            .watch(
                other.path(),
                mask,
                WatchOptions::default(),
                recorder(&other_log),
            )
            .unwrap();
        notifier.ignore(dir.path()).unwrap();
        fs::write(dir.path().join("a"), b"").unwrap();
        // The kernel's IGNORED for the first watch comes before this.
        settle(&reactor, &other_log, &other.path().join("marker"));
        assert_eq!(kinds(&log), []);
        assert_eq!(notifier.watched_paths(), [other.path().to_path_buf()]);
    }
    drop((dir, other));
    guard.check();
}

#[test]
fn dropping_the_last_handle_in_a_callback_ends_delivery() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("dropped");
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let count = Rc::new(std::cell::Cell::new(0));
        let holder: Rc<RefCell<Option<INotify>>> = Rc::new(RefCell::new(None));
        let (count2, holder2) = (count.clone(), holder.clone());
        notifier
            .watch(
                dir.path(),
                FsMask::CREATE,
                WatchOptions::default(),
                move |_, _| {
                    count2.set(count2.get() + 1);
                    holder2.borrow_mut().take();
                },
            )
            .unwrap();
        *holder.borrow_mut() = Some(notifier);
        // Three events in one read: the first callback drops the last handle.
        for name in ["a", "b", "c"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        drive(&reactor, || count.get() >= 1);
        for _ in 0..3 {
            reactor.iterate(Duration::from_millis(0)).unwrap();
        }
        assert_eq!(count.get(), 1);
    }
    drop(dir);
    guard.check();
}

#[test]
fn a_recursive_watch_covers_what_lies_below_a_directory_watched_already() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("overlap");
    let b = dir.path().join("b");
    let c = b.join("c");
    fs::create_dir_all(&c).unwrap();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let b_log: Log = Rc::default();
        let log: Log = Rc::default();
        notifier
            .watch(
                &b,
                FsMask::CREATE,
                WatchOptions::default(),
                recorder(&b_log),
            )
            .unwrap();
        let options = WatchOptions {
            auto_add: true,
            recursive: true,
        };
        notifier
            .watch(dir.path(), FsMask::CREATE, options, recorder(&log))
            .unwrap();
        let f = c.join("f");
        fs::write(&f, b"").unwrap();
        settle(&reactor, &log, &dir.path().join("marker"));
        assert!(
            log.borrow().iter().any(|seen| seen.path == f),
            "{:?}",
            kinds(&log)
        );
        // The same for a watched directory moved into the tree (auto_add).
        let outside = TempDir::new("overlap-outside");
        let o = outside.path().join("o");
        fs::create_dir_all(o.join("p")).unwrap();
        notifier
            .watch(&o, FsMask::CREATE, WatchOptions::default(), |_, _| {})
            .unwrap();
        let moved = dir.path().join("o");
        fs::rename(&o, &moved).unwrap();
        settle(&reactor, &log, &dir.path().join("marker2"));
        let g = moved.join("p/g");
        fs::write(&g, b"").unwrap();
        settle(&reactor, &log, &dir.path().join("marker3"));
        assert!(
            log.borrow().iter().any(|seen| seen.path == g),
            "{:?}",
            kinds(&log)
        );
        notifier.ignore(&o).unwrap();
        // Ignoring the tree leaves b's own watch alone, and the reverse.
        notifier.ignore(dir.path()).unwrap();
        settle(&reactor, &b_log, &b.join("marker"));
        let mut paths = notifier.watched_paths();
        paths.sort();
        assert_eq!(paths, std::slice::from_ref(&b));
    }
    drop(dir);
    guard.check();
}

#[test]
fn a_new_directory_that_cannot_be_watched_is_reported_as_lost_events() {
    use std::os::fd::AsRawFd;
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("unwatchable");
    // A watched directory whose path is just short of PATH_MAX: a
    // directory made in it (relative to it) has a path the kernel
    // refuses to resolve (ENAMETOOLONG), so it cannot be watched.
    let mut root = dir.path().to_path_buf();
    while root.as_os_str().len() < 4000 {
        root.push("d".repeat(200));
    }
    let pad = 4090 - root.as_os_str().len();
    root.push("e".repeat(pad));
    fs::create_dir_all(&root).unwrap();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(60));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let options = WatchOptions {
            auto_add: true,
            recursive: false,
        };
        notifier
            .watch(&root, FsMask::CREATE, options, recorder(&log))
            .unwrap();
        let handle = fs::File::open(&root).unwrap();
        let name = std::ffi::CString::new("too-long-by-now").unwrap();
        // SAFETY: a valid descriptor and a NUL-terminated name.
        let made = unsafe { libc::mkdirat(handle.as_raw_fd(), name.as_ptr(), 0o755) };
        assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
        let sub = root.join("too-long-by-now");
        drive(&reactor, || {
            log.borrow()
                .iter()
                .any(|seen| seen.mask == FsMask::Q_OVERFLOW)
        });
        let log = log.borrow();
        assert_eq!(log[0].mask, FsMask::CREATE | FsMask::ISDIR);
        assert_eq!(log[1].mask, FsMask::Q_OVERFLOW);
        assert_eq!(log[1].path, sub);
        assert!(!log[1].synthetic);
        drop(handle);
    }
    drop(dir);
    guard.check();
}

#[test]
fn after_lost_events_a_tree_is_walked_again() {
    let guard = DescriptorGuard::new();
    let dir = TempDir::new("rewalk");
    let root = dir.path();
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir_all(root.join("gone/deeper")).unwrap();
    {
        let (_watchdog, reactor) = guarded_reactor(Duration::from_secs(120));
        let notifier = INotify::new(&reactor).unwrap();
        let log: Log = Rc::default();
        let options = WatchOptions {
            auto_add: true,
            recursive: true,
        };
        notifier
            .watch(root, FsMask::CREATE, options, recorder(&log))
            .unwrap();
        let queued: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(16_384);
        for i in 0..queued + 10 {
            fs::File::create(root.join(format!("f{i}"))).unwrap();
        }
        // Lost with the overflow: a rename, a new tree, a deletion.
        fs::rename(root.join("a"), root.join("z")).unwrap();
        fs::create_dir_all(root.join("n/m")).unwrap();
        fs::remove_dir_all(root.join("gone")).unwrap();
        drive(&reactor, || {
            log.borrow()
                .iter()
                .any(|seen| seen.mask == FsMask::Q_OVERFLOW)
        });
        let (moved, new) = (root.join("z/b/f"), root.join("n/m/f"));
        fs::write(&moved, b"").unwrap();
        fs::write(&new, b"").unwrap();
        settle(&reactor, &log, &root.join("marker"));
        let log = log.borrow();
        assert!(
            log.iter().any(|seen| seen.path == moved),
            "the moved tree's path"
        );
        assert!(
            log.iter().any(|seen| seen.path == new),
            "the new tree watched"
        );
        let mut paths = notifier.watched_paths();
        paths.sort();
        let expected: Vec<PathBuf> = ["", "n", "n/m", "z", "z/b"]
            .iter()
            .map(|sub| {
                if sub.is_empty() {
                    root.to_path_buf()
                } else {
                    root.join(sub)
                }
            })
            .collect();
        assert_eq!(paths, expected);
    }
    drop(dir);
    guard.check();
}
