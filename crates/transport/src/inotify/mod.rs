//! Filesystem events on the reactor (Twisted's `INotify`): watch files
//! and directories, optionally whole trees, and hear what happens to them.
//!
//! ```no_run
//! use torsion_transport::inotify::{INotify, FsMask, WatchOptions};
//! use torsion_transport::reactor::Reactor;
//!
//! let reactor = Reactor::new()?;
//! let notifier = INotify::new(&reactor)?;
//! let options = WatchOptions { auto_add: true, recursive: true };
//! notifier.watch("/tmp", FsMask::WATCH_MASK, options, |_notifier, event| {
//!     println!("{} {}", event.mask(), event.path().display());
//! })?;
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Linux only (inotify); elsewhere [`INotify::watch`] returns an
//! [`io::ErrorKind::Unsupported`] error that says so.
//!
//! # What it does that Twisted's does not
//! - Deleting one watched directory (`DELETE_SELF`) ends that watch only;
//!   a watch is forgotten when the kernel says it is gone (`IGNORED`).
//! - The kernel's queue overflowing reaches every watch as a
//!   [`FsMask::Q_OVERFLOW`] event: events were lost, rescan. Trees are
//!   walked again first, so their watches match the disk.
//! - Paths stay right across renames inside a watched tree: the two
//!   halves of a rename are paired by their cookie, and a directory that
//!   leaves the tree stops being watched.
//! - With `auto_add`, a new directory is watched, then read, and what it
//!   already holds is reported as created; the kernel's own `CREATE` for
//!   an entry the scan reported is not reported again.
//! - Unmounts are reported.

mod mask;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use torsion_reactor::{panic_message, Handler, Interest, Reactor, Readiness, Registration};

pub use self::mask::FsMask;
use crate::sys::inotify as sys;

/// Size of the read buffer: about 1,000 events with short names.
const BUFFER_SIZE: usize = 32 * 1024;

/// Reads per readiness event before the reactor's other sources get
/// their turn (level-triggered: what is left is reported again).
const READS_PER_EVENT: usize = 8;

/// Renames whose first half waits for its second (they come together;
/// this only bounds memory against halves that never pair).
const PENDING_MOVES: usize = 64;

/// Names remembered from scans at most: past this, a scan's entries are
/// still reported but not remembered, so the kernel's `CREATE` for one
/// of them may be reported a second time (a duplicate, never a loss).
/// Remembered names go when the queue is next found drained, which a
/// steady flood can put off; this bounds the memory meanwhile.
const SCANNED_NAMES: usize = if cfg!(test) { 4 } else { 65_536 };

/// What a watch asks of the kernel beyond what its user asked for: the
/// renames and deletions that keep a tree's paths, watches and scanned
/// names right.
const TREE_BITS: u32 = 0x40 | 0x80 | 0x200 | 0x800; // MOVED_FROM | MOVED_TO | DELETE | MOVE_SELF
const CREATE: u32 = 0x100;
const ONLYDIR_NOFOLLOW: u32 = 0x0100_0000 | 0x0200_0000;
const MASK_ADD: u32 = 0x2000_0000;
/// `IN_MASK_CREATE` (Linux 4.18): fail with `EEXIST` rather than touch
/// an existing watch.
const MASK_CREATE: u32 = 0x1000_0000;
const ISDIR: u32 = 0x4000_0000;

/// How to watch a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch directories created (or moved) under a watched directory
    /// too, and report what a new directory already holds by the time
    /// its watch is in place (Twisted's `autoAdd`). Default: off.
    #[doc(alias = "autoAdd")]
    pub auto_add: bool,
    /// Watch every directory under the path as it is now. Default: off.
    pub recursive: bool,
}

/// One filesystem event, as a watch's callback hears it.
#[derive(Clone, Copy)]
pub struct FsEvent<'a> {
    path: &'a Path,
    mask: FsMask,
    cookie: u32,
    moved_from: Option<&'a Path>,
    synthetic: bool,
}

impl<'a> FsEvent<'a> {
    /// The path the event concerns: the entry inside a watched directory
    /// (`dir/name`), or the watched path itself for events on it
    /// (`DELETE_SELF`, `MOVE_SELF`, `IGNORED`, `UNMOUNT`, `Q_OVERFLOW`).
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// What happened, with [`FsMask::ISDIR`] if the subject is a directory.
    pub fn mask(&self) -> FsMask {
        self.mask
    }

    /// The cookie that pairs the `MOVED_FROM` and `MOVED_TO` halves of a
    /// rename; zero for other events.
    pub fn cookie(&self) -> u32 {
        self.cookie
    }

    /// For a `MOVED_TO` whose `MOVED_FROM` this watcher saw: where the
    /// entry came from.
    pub fn moved_from(&self) -> Option<&'a Path> {
        self.moved_from
    }

    /// True if the subject is a directory.
    pub fn is_dir(&self) -> bool {
        self.mask.contains(FsMask::ISDIR)
    }

    /// True if events were lost ([`FsMask::Q_OVERFLOW`]): rescan what the
    /// watch covers. With the watched path, the kernel's queue
    /// overflowed; with a directory below it, that directory (new under
    /// `auto_add`, or moved in) could not be watched (the watch limit,
    /// say; the reason is logged) and its events will be lost.
    pub fn is_overflow(&self) -> bool {
        self.mask.contains(FsMask::Q_OVERFLOW)
    }

    /// True for a `CREATE` found by reading a new directory under
    /// `auto_add` rather than reported by the kernel.
    pub fn is_synthetic(&self) -> bool {
        self.synthetic
    }
}

impl fmt::Debug for FsEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FsEvent");
        s.field("path", &self.path).field("mask", &self.mask);
        if self.cookie != 0 {
            s.field("cookie", &self.cookie);
        }
        if let Some(from) = self.moved_from {
            s.field("moved_from", &from);
        }
        if self.synthetic {
            s.field("synthetic", &true);
        }
        s.finish()
    }
}

impl fmt::Display for FsEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.mask, self.path.display())
    }
}

type Callback = dyn FnMut(&INotify, &FsEvent<'_>);
type SharedCallback = Rc<RefCell<Box<Callback>>>;

/// A watch the user asked for, with its callback.
struct Root {
    path: PathBuf,
    wd: i32,
    mask: FsMask,
    options: WatchOptions,
    callback: SharedCallback,
}

impl Root {
    fn is_tree(&self) -> bool {
        self.options.auto_add || self.options.recursive
    }

    /// The kernel mask for this root's watches (`sub`: below the root),
    /// without `MASK_ADD`/`MASK_CREATE`.
    fn kernel_mask(&self, sub: bool) -> u32 {
        let mut bits =
            self.mask.bits() & !(FsMask::ISDIR.bits() | FsMask::MASK_ADD.bits() | MASK_CREATE);
        if self.is_tree() {
            bits |= TREE_BITS;
        }
        if self.options.auto_add {
            bits |= CREATE;
        }
        if sub {
            // Below the root: directories only, links not followed; of
            // the user's flags only EXCL_UNLINK still makes sense.
            let keep = FsMask::ALL_EVENTS | FsMask::EXCL_UNLINK;
            bits = (bits & keep.bits()) | ONLYDIR_NOFOLLOW;
            // A directory watched already (by another root) keeps its
            // watch; what this one adds is filtered out for the owner.
            bits |= MASK_ADD;
        }
        bits
    }
}

/// One kernel watch.
struct Watch {
    path: PathBuf,
    root: u64,
    parent: Option<i32>,
    /// Watched subdirectories by name.
    children: HashMap<OsString, i32>,
    /// The cookie of a rename of this directory whose second half has not
    /// been seen.
    moving: Option<u32>,
}

struct PendingMove {
    cookie: u32,
    from: PathBuf,
    watch: Option<i32>,
}

/// What a scan saw of one entry.
struct Scanned {
    /// The read during which it was scanned.
    read: u64,
    inode: u64,
}

#[derive(Default)]
struct State {
    watches: HashMap<i32, Watch>,
    roots: HashMap<u64, Root>,
    next_root: u64,
    moves: VecDeque<PendingMove>,
    /// Entries reported by scans of new directories, by watch: the
    /// kernel's `CREATE`/`MOVED_TO` for one of them is not reported again
    /// if the name still has the inode the scan saw (a file replaced
    /// since is news). Any other event for the name (`DELETE`,
    /// `MOVED_FROM`) forgets it. Each is tagged with the read during
    /// which it was scanned; once a later read finds the queue drained,
    /// every event queued before the scan has been seen and the entry
    /// goes.
    scanned: HashMap<i32, HashMap<OsString, Scanned>>,
    /// How many names `scanned` holds (at most [`SCANNED_NAMES`]).
    scanned_names: usize,
    reads: u64,
}

struct Inner {
    /// Empty off Linux.
    registration: OnceCell<Registration<File>>,
    state: RefCell<State>,
    buffer: Cell<Option<Box<[u8]>>>,
    /// Where each event's path is built, kept between reads.
    scratch: Cell<PathBuf>,
}

/// Watches files and directories and reports their events to callbacks,
/// on the reactor's thread (Twisted's `twisted.internet.inotify.INotify`).
///
/// One inotify instance; cheap to clone (clones share it). Dropping the
/// last clone closes the instance and every watch with it (inside a
/// callback: no further event is delivered). Each callback
/// runs on the reactor's thread; a callback that panics is logged and
/// costs its own watch (as if [`ignore`](INotify::ignore)d), nothing
/// else.
#[doc(alias = "Inotify")]
#[derive(Clone)]
pub struct INotify {
    inner: Rc<Inner>,
}

impl fmt::Debug for INotify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.try_borrow();
        let mut s = f.debug_struct("INotify");
        if let Ok(state) = state {
            s.field("watches", &state.watches.len())
                .field("roots", &state.roots.len());
        }
        s.finish()
    }
}

impl INotify {
    /// A new watcher on `reactor`. Off Linux it is created, but
    /// [`watch`](INotify::watch) refuses.
    ///
    /// # Errors
    /// If the kernel refuses an instance (`EMFILE`: the per-user limit,
    /// `fs.inotify.max_user_instances`) or the reactor refuses it.
    pub fn new(reactor: &Reactor) -> io::Result<INotify> {
        let inner = Rc::new(Inner {
            registration: OnceCell::new(),
            state: RefCell::new(State::default()),
            buffer: Cell::new(None),
            scratch: Cell::new(PathBuf::new()),
        });
        if sys::SUPPORTED {
            let fd = sys::init()?;
            let registration = reactor.register(
                File::from(fd),
                Interest::READABLE,
                Rc::new(Reader(Rc::downgrade(&inner))),
            )?;
            let _ = inner.registration.set(registration);
        }
        Ok(INotify { inner })
    }
}

/// The reactor's handler: holds the watcher weakly, so dropping the
/// last [`INotify`] closes the instance.
struct Reader(Weak<Inner>);

impl Handler for Reader {
    fn ready(&self, _reactor: &Reactor, _readiness: Readiness) {
        if let Some(inner) = self.0.upgrade() {
            INotify { inner }.read_events();
        }
    }
}

/// What to do once an event is delivered.
enum After {
    Nothing,
    /// A directory appeared under a watch of a tree: watch it and what it
    /// holds; `scan` reports what it already holds as created.
    AddDir {
        parent: i32,
        name: OsString,
        scan: bool,
    },
    /// This watch and those below it are gone or left the tree.
    Remove(i32),
}

/// A directory to walk: its entries are watched for the root of watch
/// `attach`, under their names, or under `key/name` when `dir` is
/// watched by another root (`key` is its path from `attach`'s).
struct Below {
    dir: PathBuf,
    attach: i32,
    key: Option<OsString>,
}

/// How [`INotify::add_tree`] treats what it finds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// The initial walk of a recursive watch: failures are the caller's.
    Strict,
    /// A directory moved in: watched silently.
    Quiet,
    /// A directory created under `auto_add`: its contents are reported,
    /// tagged with this read.
    Scan(u64),
    /// After lost events: a tree walked again, its own watches descended
    /// into and given the place the walk finds them at.
    Again,
}

/// The kernel's error with the path it concerns; the kernel's own
/// error (and its errno) stays reachable as the source.
#[derive(Debug)]
struct PathError {
    message: String,
    source: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) => " (the inotify watch limit, fs.inotify.max_user_watches, is reached)",
        _ => "",
    };
    let message = format!("{what} {}: {e}{hint}", path.display());
    io::Error::new(e.kind(), PathError { message, source: e })
}

/// True for the errors of a path that vanished while we looked.
fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

impl INotify {
    fn fd(&self) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        self.inner
            .registration
            .get()
            .map(|registration| registration.get_ref().as_fd())
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, sys::UNSUPPORTED))
    }

    /// Starts watching `path` for the events in `mask`, reported to
    /// `callback` (Twisted's `INotify.watch(path, mask, autoAdd,
    /// callbacks, recursive)`). The path may be a file or a directory;
    /// `options` say whether directories below it are watched too.
    ///
    /// `UNMOUNT` and `Q_OVERFLOW` are reported whatever the mask, and
    /// `IGNORED` for `path` itself once the kernel ends its watch (when
    /// it is deleted or unmounted, or after a `ONESHOT` event). After
    /// [`ignore`](INotify::ignore) the callback hears nothing, not even
    /// `IGNORED`.
    /// Symbolic links below `path` are not followed.
    ///
    /// # Errors
    /// - [`io::ErrorKind::Unsupported`] off Linux;
    /// - [`io::ErrorKind::InvalidInput`] if `mask` names no event;
    /// - [`io::ErrorKind::AlreadyExists`] if this watcher already watches
    ///   `path` (one callback per directory), naming the watch that
    ///   covers it; that watch is left as it was;
    /// - what the kernel says about `path` or, for a recursive watch, a
    ///   directory below it, named in the message (`ENOSPC` is the watch
    ///   limit), with the kernel's own error (its errno) as the
    ///   [`source`](std::error::Error::source); a recursive watch that
    ///   fails leaves nothing watched.
    ///   Directories that vanish during the walk are skipped.
    pub fn watch<P, F>(
        &self,
        path: P,
        mask: FsMask,
        options: WatchOptions,
        callback: F,
    ) -> io::Result<()>
    where
        P: AsRef<Path>,
        F: FnMut(&INotify, &FsEvent<'_>) + 'static,
    {
        let path = path.as_ref();
        let fd = self.fd()?;
        if !mask.intersects(FsMask::ALL_EVENTS) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the mask {mask:?} names no event to watch for"),
            ));
        }
        let mut state = self.inner.state.borrow_mut();
        let id = state.next_root;
        state.next_root += 1;
        let mut root = Root {
            path: path.to_path_buf(),
            wd: -1,
            mask,
            options,
            callback: Rc::new(RefCell::new(Box::new(callback))),
        };
        // A watch the kernel has already is left as it is: merging this
        // mask into it (a `ONESHOT`, say) would change another root's.
        let mask = root.kernel_mask(false);
        let wd = match sys::add_watch(fd, path, mask | MASK_CREATE) {
            // Should a kernel refuse the flag: the path is checked for
            // a watch of ours first, so none is touched.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                if let Some(e) = Self::already(&state, path) {
                    return Err(e);
                }
                sys::add_watch(fd, path, mask | MASK_ADD)
            }
            other => other,
        };
        let wd = match wd {
            Ok(wd) => wd,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(Self::already(&state, path).unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is already watched by this INotify", path.display()),
                    )
                }))
            }
            Err(e) => return Err(with_path(e, "cannot watch", path)),
        };
        if let Some(known) = state.watches.get(&wd) {
            // Only on a kernel that ignores MASK_CREATE (before 4.18, it
            // is not refused there): the mask just replaced the existing
            // watch's; give the owner its own back.
            let owner = state
                .roots
                .get(&known.root)
                .map(|owner| owner.kernel_mask(known.parent.is_some()));
            if let Some(owner) = owner {
                let _ = sys::add_watch(fd, path, owner);
            }
            return Err(Self::already(&state, path).unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is already watched by this INotify", path.display()),
                )
            }));
        }
        root.wd = wd;
        state.watches.insert(
            wd,
            Watch {
                path: path.to_path_buf(),
                root: id,
                parent: None,
                children: HashMap::new(),
                moving: None,
            },
        );
        state.roots.insert(id, root);
        if options.recursive {
            if let Err(e) = Self::add_tree(&mut state, fd, wd, Walk::Strict, &mut Vec::new()) {
                Self::remove(&mut state, fd, wd);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The error for a `path` some watch of this watcher covers (the
    /// same directory or file, however spelled), naming the path that
    /// watch was asked for.
    fn already(state: &State, path: &Path) -> Option<io::Error> {
        let meta = std::fs::metadata(path).ok()?;
        let watch = state.watches.values().find(|watch| {
            std::fs::metadata(&watch.path)
                .is_ok_and(|other| other.dev() == meta.dev() && other.ino() == meta.ino())
        })?;
        let root = state.roots.get(&watch.root)?;
        let how = if watch.parent.is_none() {
            String::new()
        } else {
            format!(" (below {})", root.path.display())
        };
        Some(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is already watched by this INotify, as {}{how}",
                path.display(),
                watch.path.display()
            ),
        ))
    }

    /// Stops watching `path`, and the directories watched below it on its
    /// behalf (Twisted's `INotify.ignore`). Its callback hears nothing
    /// more.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] if `path` is not watched;
    /// [`io::ErrorKind::Unsupported`] off Linux.
    pub fn ignore(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let fd = self.fd()?;
        let mut state = self.inner.state.borrow_mut();
        let wd = state
            .roots
            .values()
            .find(|root| root.path == path)
            .map(|root| root.wd)
            .or_else(|| {
                state
                    .watches
                    .iter()
                    .find(|(_, watch)| watch.path == path)
                    .map(|(wd, _)| *wd)
            });
        match wd {
            Some(wd) => {
                Self::remove(&mut state, fd, wd);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not watched", path.display()),
            )),
        }
    }

    /// The paths watched now (the paths given to [`watch`](INotify::watch)
    /// and the directories watched below them), in no particular order.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let state = self.inner.state.borrow();
        state
            .watches
            .values()
            .map(|watch| watch.path.clone())
            .collect()
    }

    /// Watches the directories below watch `start` (itself watched).
    /// Under [`Walk::Scan`], every entry found is added to `found` and
    /// remembered as scanned; outside [`Walk::Strict`], a directory that
    /// cannot be watched is added as `Q_OVERFLOW`.
    fn add_tree(
        state: &mut State,
        fd: std::os::fd::BorrowedFd<'_>,
        start: i32,
        walk: Walk,
        found: &mut Vec<(PathBuf, FsMask)>,
    ) -> io::Result<HashSet<i32>> {
        let Some(dir) = state.watches.get(&start).map(|watch| watch.path.clone()) else {
            return Ok(HashSet::new());
        };
        let queue = VecDeque::from([Below {
            dir,
            attach: start,
            key: None,
        }]);
        Self::walk(state, fd, queue, walk, found)
    }

    /// Watches the directories below those in `queue`, for the root of
    /// their `attach` watch.
    ///
    /// A directory another root watches already keeps its watch (and
    /// its events go to that root), but what lies below it is watched
    /// for this root too: those watches hang from the nearest watch of
    /// this root, under a key holding the path between them (`b/c`,
    /// never an entry's name), so removing, renaming and repathing that
    /// watch take them along.
    ///
    /// Returns the watches of this root the walk found or made (those it
    /// found only under [`Walk::Again`]).
    fn walk(
        state: &mut State,
        fd: std::os::fd::BorrowedFd<'_>,
        mut queue: VecDeque<Below>,
        walk: Walk,
        found: &mut Vec<(PathBuf, FsMask)>,
    ) -> io::Result<HashSet<i32>> {
        let mut seen = HashSet::new();
        let Some(root_id) = queue
            .front()
            .and_then(|below| state.watches.get(&below.attach))
            .map(|watch| watch.root)
        else {
            return Ok(seen);
        };
        let Some(mask) = state.roots.get(&root_id).map(|root| root.kernel_mask(true)) else {
            return Ok(seen);
        };
        // Foreign directories walked through, against loops of mounts.
        let mut through = Vec::new();
        while let Some(Below { dir, attach, key }) = queue.pop_front() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if vanished(&e) || walk != Walk::Strict => {
                    tracing::debug!(error = %e, dir = %dir.display(), "cannot read a watched directory");
                    continue;
                }
                Err(e) => return Err(with_path(e, "cannot read", &dir)),
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if walk == Walk::Strict && !vanished(&e) => {
                        return Err(with_path(e, "cannot read", &dir))
                    }
                    Err(_) => break,
                };
                let name = entry.file_name();
                // The entry's type as the directory says: a symbolic link
                // is not followed.
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let path = dir.join(&name);
                if let Walk::Scan(read) = walk {
                    // Below a foreign directory the kernel's events go to
                    // its owner: nothing to suppress for this root.
                    if key.is_none() && state.scanned_names < SCANNED_NAMES {
                        let scanned = Scanned {
                            read,
                            inode: entry.ino(),
                        };
                        let names = state.scanned.entry(attach).or_default();
                        if names.insert(name.clone(), scanned).is_none() {
                            state.scanned_names += 1;
                        }
                    }
                    let kind = if is_dir {
                        FsMask::CREATE | FsMask::ISDIR
                    } else {
                        FsMask::CREATE
                    };
                    found.push((path.clone(), kind));
                }
                if !is_dir {
                    continue;
                }
                let child = match sys::add_watch(fd, &path, mask) {
                    Ok(child) => child,
                    Err(e) if vanished(&e) => continue,
                    Err(e) if walk == Walk::Strict => {
                        return Err(with_path(e, "cannot watch", &path))
                    }
                    Err(e) => {
                        tracing::warn!(error = %with_path(e, "cannot watch", &path), "a new directory is not watched");
                        found.push((path, FsMask::Q_OVERFLOW));
                        continue;
                    }
                };
                let key = match &key {
                    None => name,
                    Some(key) => {
                        let mut key = key.clone();
                        key.push("/");
                        key.push(&name);
                        key
                    }
                };
                if let Some(known) = state.watches.get(&child) {
                    if known.root == root_id && walk == Walk::Again && seen.insert(child) {
                        // Found where the walk says it is now.
                        if let Some(old) = known.parent {
                            if let Some(old) = state.watches.get_mut(&old) {
                                old.children.retain(|_, wd| *wd != child);
                            }
                        }
                        if let Some(parent) = state.watches.get_mut(&attach) {
                            parent.children.insert(key, child);
                        }
                        if let Some(watch) = state.watches.get_mut(&child) {
                            watch.parent = Some(attach);
                            watch.path = path.clone();
                            watch.moving = None;
                        }
                        queue.push_back(Below {
                            dir: path,
                            attach: child,
                            key: None,
                        });
                        continue;
                    }
                    if known.root != root_id && !through.contains(&child) {
                        through.push(child);
                        queue.push_back(Below {
                            dir: path,
                            attach,
                            key: Some(key),
                        });
                    }
                    continue;
                }
                seen.insert(child);
                state.watches.insert(
                    child,
                    Watch {
                        path: path.clone(),
                        root: root_id,
                        parent: Some(attach),
                        children: HashMap::new(),
                        moving: None,
                    },
                );
                if let Some(parent) = state.watches.get_mut(&attach) {
                    parent.children.insert(key, child);
                }
                queue.push_back(Below {
                    dir: path,
                    attach: child,
                    key: None,
                });
            }
        }
        Ok(seen)
    }

    /// Forgets watch `wd` and every watch below it, asking the kernel to
    /// drop them (their `IGNORED` events find nothing and are dropped).
    /// A root's watch takes its root (and callback) with it.
    fn remove(state: &mut State, fd: std::os::fd::BorrowedFd<'_>, wd: i32) {
        if let Some(parent) = state.watches.get(&wd).and_then(|watch| watch.parent) {
            if let Some(parent) = state.watches.get_mut(&parent) {
                parent.children.retain(|_, child| *child != wd);
            }
        }
        let mut stack = vec![wd];
        while let Some(wd) = stack.pop() {
            let Some(watch) = state.watches.remove(&wd) else {
                continue;
            };
            // EINVAL: the kernel dropped it already.
            let _ = sys::rm_watch(fd, wd);
            if let Some(names) = state.scanned.remove(&wd) {
                state.scanned_names -= names.len();
            }
            if watch.parent.is_none() {
                state.roots.retain(|_, root| root.wd != wd);
            }
            stack.extend(watch.children.into_values());
        }
    }

    /// Takes the watched subdirectory `name` out of watch `parent`'s
    /// children, keeping its watch; returns it.
    fn detach(state: &mut State, parent: i32, name: &OsStr) -> Option<i32> {
        state.watches.get_mut(&parent)?.children.remove(name)
    }

    /// Gives watch `wd` (and those below it) the path `path`.
    fn repath(state: &mut State, wd: i32, path: PathBuf) {
        let mut stack = vec![(wd, path)];
        while let Some((wd, path)) = stack.pop() {
            let Some(watch) = state.watches.get_mut(&wd) else {
                continue;
            };
            for (name, child) in &watch.children {
                stack.push((*child, path.join(name)));
            }
            watch.path = path;
        }
    }

    /// True once every user's handle is gone (a callback dropped the
    /// last): only the reader's own, for the read under way, is left,
    /// and nothing more is delivered.
    fn closed(&self) -> bool {
        Rc::strong_count(&self.inner) == 1
    }

    /// Reads what the kernel queued, a bounded amount per readiness.
    fn read_events(&self) {
        let Some(registration) = self.inner.registration.get() else {
            return;
        };
        let mut buffer = self
            .inner
            .buffer
            .take()
            .unwrap_or_else(|| vec![0; BUFFER_SIZE].into_boxed_slice());
        let mut scratch = self.inner.scratch.take();
        for _ in 0..READS_PER_EVENT {
            if self.closed() {
                break;
            }
            let read = {
                let mut state = self.inner.state.borrow_mut();
                state.reads += 1;
                state.reads
            };
            let (len, drained) = match (&mut registration.get_ref()).read(&mut buffer) {
                // With room for the longest event left, the queue was
                // empty when the read returned.
                Ok(len) => (len, len + sys::MAX_EVENT <= buffer.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Not expected from inotify; stop rather than spin.
                    tracing::error!(error = %e, "cannot read filesystem events; no more will be reported");
                    let _ = registration.set_interest(Interest::NONE);
                    break;
                }
            };
            sys::parse(&buffer[..len], |raw| {
                self.event(
                    raw.wd,
                    raw.mask,
                    raw.cookie,
                    OsStr::from_bytes(raw.name),
                    read,
                    &mut scratch,
                );
            });
            if drained {
                let mut state = self.inner.state.borrow_mut();
                if !state.scanned.is_empty() {
                    state.scanned.retain(|_, names| {
                        names.retain(|_, scanned| scanned.read >= read);
                        !names.is_empty()
                    });
                    state.scanned_names = state.scanned.values().map(HashMap::len).sum();
                }
                break;
            }
        }
        self.inner.buffer.set(Some(buffer));
        self.inner.scratch.set(scratch);
    }

    /// Handles one event from the kernel.
    fn event(&self, wd: i32, bits: u32, cookie: u32, name: &OsStr, read: u64, path: &mut PathBuf) {
        if bits & FsMask::Q_OVERFLOW.bits() != 0 {
            self.overflow();
            return;
        }
        let Ok(fd) = self.fd() else { return };
        let mut guard = self.inner.state.borrow_mut();
        let state = &mut *guard;
        let Some(watch) = state.watches.get(&wd) else {
            return;
        };
        let Some(root) = state.roots.get(&watch.root) else {
            if bits & FsMask::IGNORED.bits() != 0 {
                // A directory detached from its tree (below) outlived
                // the tree's root: only now is it gone.
                state.watches.remove(&wd);
            }
            return;
        };
        let root_id = watch.root;
        let is_root_watch = watch.parent.is_none();
        let auto_add = root.options.auto_add;
        let is_tree = root.is_tree();
        let mut deliver = root
            .mask
            .intersects(FsMask::from_bits(bits) & FsMask::ALL_EVENTS)
            || bits & FsMask::UNMOUNT.bits() != 0;
        let callback = root.callback.clone();
        path.clear();
        path.push(&watch.path);
        if !name.is_empty() {
            path.push(name);
        }
        let is_dir = bits & ISDIR != 0;
        let has = |kind: FsMask| bits & kind.bits() != 0;
        let mut after = After::Nothing;
        let mut moved_from = None;

        // Entries a scan reported: the kernel's own report of their
        // arrival is a duplicate if the name still holds what the scan
        // saw (one `lstat`, only for such names); their departure ends
        // the matter.
        if !name.is_empty() && !state.scanned.is_empty() {
            if let Some(names) = state.scanned.get_mut(&wd) {
                if let Some(scanned) = names.remove(name) {
                    state.scanned_names -= 1;
                    if names.is_empty() {
                        state.scanned.remove(&wd);
                    }
                    let arrival = has(FsMask::CREATE) || has(FsMask::MOVED_TO);
                    if arrival
                        && std::fs::symlink_metadata(&*path)
                            .is_ok_and(|meta| meta.ino() == scanned.inode)
                    {
                        return;
                    }
                }
            }
        }

        if has(FsMask::MOVED_FROM) {
            // The name is free at once (a new directory may take it
            // before this one's `MOVE_SELF` arrives); the watch is kept
            // until the rename's second half or `MOVE_SELF` decides.
            let child = if is_dir && is_tree {
                Self::detach(state, wd, name)
            } else {
                None
            };
            if let Some(child) = child.and_then(|child| state.watches.get_mut(&child)) {
                child.moving = Some(cookie);
            }
            if state.moves.len() == PENDING_MOVES {
                state.moves.pop_front();
            }
            state.moves.push_back(PendingMove {
                cookie,
                from: path.clone(),
                watch: child,
            });
        } else if has(FsMask::MOVED_TO) {
            let pending = state
                .moves
                .iter()
                .position(|pending| pending.cookie == cookie)
                .and_then(|at| state.moves.remove(at));
            let mut known = false;
            if let Some(pending) = pending {
                if let Some(moved) = pending.watch {
                    if let Some(watch) = state
                        .watches
                        .get(&moved)
                        .filter(|w| w.moving == Some(cookie))
                    {
                        known = true;
                        if watch.root == root_id {
                            // Renamed inside the tree: same watches, new paths.
                            if let Some(old) = watch.parent {
                                if let Some(old) = state.watches.get_mut(&old) {
                                    old.children.retain(|_, child| *child != moved);
                                }
                            }
                            if let Some(new_parent) = state.watches.get_mut(&wd) {
                                new_parent.children.insert(name.to_os_string(), moved);
                            }
                            if let Some(watch) = state.watches.get_mut(&moved) {
                                watch.parent = Some(wd);
                                watch.moving = None;
                            }
                            Self::repath(state, moved, path.clone());
                        } else {
                            // Into another watch's tree: that one takes it.
                            Self::remove(state, fd, moved);
                            known = false;
                        }
                    }
                }
                moved_from = Some(pending.from);
            }
            if !known && is_dir && auto_add {
                after = After::AddDir {
                    parent: wd,
                    name: name.to_os_string(),
                    scan: false,
                };
            }
        } else if has(FsMask::CREATE) {
            let watched = state
                .watches
                .get(&wd)
                .is_some_and(|watch| watch.children.contains_key(name));
            if is_dir && auto_add && !watched {
                after = After::AddDir {
                    parent: wd,
                    name: name.to_os_string(),
                    scan: true,
                };
            }
        } else if has(FsMask::DELETE) && is_dir && is_tree {
            // The name is free at once: a directory made again under it
            // is a new one to watch. The old watch stays until its
            // `IGNORED`, which waits while the old directory is open.
            Self::detach(state, wd, name);
        } else if has(FsMask::MOVE_SELF) {
            let watch = state.watches.get_mut(&wd).expect("looked up above");
            if watch.moving.take().is_some() && !is_root_watch {
                // Its rename had no second half here: it left the tree.
                after = After::Remove(wd);
            }
        } else if has(FsMask::IGNORED) {
            // The kernel dropped this watch: only now is it forgotten.
            deliver = is_root_watch;
            after = After::Remove(wd);
        }
        // Never borrowed while a callback runs: it may watch or ignore.
        drop(guard);

        if deliver {
            let event = FsEvent {
                path,
                mask: FsMask::from_bits(bits),
                cookie,
                moved_from: moved_from.as_deref(),
                synthetic: false,
            };
            self.deliver(root_id, &callback, &event);
        }
        match after {
            After::Nothing => {}
            After::Remove(wd) => {
                let mut state = self.inner.state.borrow_mut();
                Self::remove(&mut state, fd, wd);
            }
            After::AddDir { parent, name, scan } => {
                self.add_dir(fd, parent, &name, scan.then_some(read), root_id, &callback);
            }
        }
    }

    /// Watches a directory that appeared under watch `parent`, and what
    /// it holds; with `scan`, reports what it holds as created.
    fn add_dir(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        parent: i32,
        name: &OsStr,
        scan: Option<u64>,
        root_id: u64,
        callback: &SharedCallback,
    ) {
        let mut found = Vec::new();
        let wants_create = 'watch: {
            let mut state = self.inner.state.borrow_mut();
            let state = &mut *state;
            let Some(root) = state.roots.get(&root_id) else {
                return;
            };
            let mask = root.kernel_mask(true);
            let wants_create = root.mask.contains(FsMask::CREATE);
            let Some(dir) = state
                .watches
                .get(&parent)
                .map(|watch| watch.path.join(name))
            else {
                return;
            };
            let wd = match sys::add_watch(fd, &dir, mask) {
                Ok(wd) => wd,
                Err(e) if vanished(&e) => return,
                Err(e) => {
                    tracing::warn!(error = %with_path(e, "cannot watch", &dir), "a new directory is not watched");
                    found.push((dir, FsMask::Q_OVERFLOW));
                    break 'watch wants_create;
                }
            };
            let walk = scan.map_or(Walk::Quiet, Walk::Scan);
            if let Some(known) = state.watches.get(&wd) {
                if known.root != root_id {
                    // Another root's: watch what lies below it for this one.
                    let below = Below {
                        dir,
                        attach: parent,
                        key: Some(name.to_os_string()),
                    };
                    let _ = Self::walk(state, fd, VecDeque::from([below]), walk, &mut found);
                } else {
                    return;
                }
            } else {
                state.watches.insert(
                    wd,
                    Watch {
                        path: dir,
                        root: root_id,
                        parent: Some(parent),
                        children: HashMap::new(),
                        moving: None,
                    },
                );
                if let Some(parent) = state.watches.get_mut(&parent) {
                    parent.children.insert(name.to_os_string(), wd);
                }
                let _ = Self::add_tree(state, fd, wd, walk, &mut found);
            }
            wants_create
        };
        for (path, mask) in found {
            // A directory that could not be watched is always told: its
            // events will be lost.
            let lost = mask == FsMask::Q_OVERFLOW;
            if !wants_create && !lost {
                continue;
            }
            let event = FsEvent {
                path: &path,
                mask,
                cookie: 0,
                moved_from: None,
                synthetic: !lost,
            };
            if !self.deliver(root_id, callback, &event) {
                return;
            }
        }
    }

    /// Events were lost: every tree is walked again (new directories
    /// watched, moved ones repathed, vanished ones forgotten), then every
    /// watch hears it once, with its own path.
    fn overflow(&self) {
        let mut lost = Vec::new();
        let targets: Vec<(u64, PathBuf, SharedCallback)> = {
            let mut state = self.inner.state.borrow_mut();
            let state = &mut *state;
            state.scanned.clear();
            state.scanned_names = 0;
            state.moves.clear();
            for watch in state.watches.values_mut() {
                watch.moving = None;
            }
            if let Ok(fd) = self.fd() {
                let trees: Vec<(u64, i32)> = state
                    .roots
                    .iter()
                    .filter(|(_, root)| root.is_tree())
                    .map(|(id, root)| (*id, root.wd))
                    .collect();
                for (id, wd) in trees {
                    let mut found = Vec::new();
                    let seen =
                        Self::add_tree(state, fd, wd, Walk::Again, &mut found).unwrap_or_default();
                    let stale: Vec<i32> = state
                        .watches
                        .iter()
                        .filter(|(sub, watch)| {
                            watch.root == id && watch.parent.is_some() && !seen.contains(*sub)
                        })
                        .map(|(sub, _)| *sub)
                        .collect();
                    // Deleted, or moved out, while events were lost.
                    for sub in stale {
                        Self::remove(state, fd, sub);
                    }
                    if let Some(root) = state.roots.get(&id) {
                        let callback = root.callback.clone();
                        lost.extend(
                            found
                                .into_iter()
                                .map(|(path, _)| (id, path, callback.clone())),
                        );
                    }
                }
            }
            state
                .roots
                .iter()
                .map(|(id, root)| (*id, root.path.clone(), root.callback.clone()))
                .collect()
        };
        tracing::warn!("the inotify queue overflowed; events were lost");
        for (id, path, callback) in targets.into_iter().chain(lost) {
            let event = FsEvent {
                path: &path,
                mask: FsMask::Q_OVERFLOW,
                cookie: 0,
                moved_from: None,
                synthetic: false,
            };
            self.deliver(id, &callback, &event);
        }
    }

    /// Calls a root's callback; a panic costs the root its watch. Returns
    /// false if the root is gone (now or before).
    fn deliver(
        &self,
        root_id: u64,
        callback: &RefCell<Box<Callback>>,
        event: &FsEvent<'_>,
    ) -> bool {
        if self.closed() || !self.inner.state.borrow().roots.contains_key(&root_id) {
            return false;
        }
        let Ok(mut callback) = callback.try_borrow_mut() else {
            return false;
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| callback(self, event)));
        drop(callback);
        let Err(payload) = result else {
            return true;
        };
        tracing::error!(
            path = %event.path.display(),
            panic = panic_message(&*payload),
            "a filesystem event callback panicked; its watch is removed"
        );
        if let Ok(fd) = self.fd() {
            let mut state = self.inner.state.borrow_mut();
            if let Some(wd) = state.roots.get(&root_id).map(|root| root.wd) {
                Self::remove(&mut state, fd, wd);
            }
        }
        false
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn the_names_remembered_from_scans_are_bounded() {
        let dir =
            std::env::temp_dir().join(format!("torsion-inotify-scanned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let reactor = Reactor::new().unwrap();
        let notifier = INotify::new(&reactor).unwrap();
        let options = WatchOptions {
            auto_add: true,
            recursive: false,
        };
        let heard = Rc::new(Cell::new(0));
        let counter = heard.clone();
        notifier
            .watch(&dir, FsMask::CREATE, options, move |_, _| {
                counter.set(counter.get() + 1)
            })
            .unwrap();
        // Made before the reading: a scan finds the ten files.
        std::fs::create_dir(dir.join("d")).unwrap();
        for i in 0..10 {
            std::fs::write(dir.join(format!("d/f{i}")), b"").unwrap();
        }
        // As the reactor's handler does: a handle of its own.
        notifier.clone().read_events();
        // Reported all the same: the directory and its ten files.
        assert_eq!(heard.get(), 11);
        let state = notifier.inner.state.borrow();
        let remembered: usize = state.scanned.values().map(HashMap::len).sum();
        // The limit under test is 4.
        assert!(remembered <= 4, "{remembered} names remembered");
        drop(state);
        drop(notifier);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
