//! Prints filesystem events as they happen, like `inotifywait -m -r`:
//! one line per event, `WATCHED-DIRECTORY/ EVENTS NAME`.
//!
//! ```text
//! cargo run -p torsion-examples --example watch -- /tmp/some/dir [MORE PATHS...]
//! ```
//!
//! Every path is watched with its subdirectories, and directories created
//! later are watched as they appear (`auto_add`). Prints `watching` on
//! standard error once every watch is in place; stops on Ctrl-C.

use std::io::Write;
use std::path::Path;

use torsion_protocol::{FsMask, INotify, Reactor, WatchOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    torsion_examples::init_logging();
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: watch PATH...");
        std::process::exit(2);
    }
    let reactor = Reactor::new()?;
    let notifier = INotify::new(&reactor)?;
    let options = WatchOptions {
        auto_add: true,
        recursive: true,
    };
    for path in &paths {
        let mask = FsMask::WATCH_MASK | FsMask::CLOSE_WRITE;
        notifier.watch(path, mask, options, |_, event| {
            // inotifywait's layout: the directory, the events, the name
            // (empty for an event on the watched path itself).
            let path = event.path();
            let (dir, name) = if event.mask().intersects(
                FsMask::DELETE_SELF
                    | FsMask::MOVE_SELF
                    | FsMask::IGNORED
                    | FsMask::UNMOUNT
                    | FsMask::Q_OVERFLOW,
            ) {
                (path, Path::new(""))
            } else {
                (
                    path.parent().unwrap_or(Path::new("")),
                    Path::new(path.file_name().unwrap_or_default()),
                )
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}/ {} {}",
                dir.display(),
                event.mask(),
                name.display()
            );
            let _ = out.flush();
        })?;
    }
    eprintln!("watching");
    reactor.run()?;
    Ok(())
}
