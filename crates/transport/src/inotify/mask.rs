//! [`FsMask`]: the kinds of filesystem event, as a typed set.

use std::fmt;

/// A set of inotify event kinds and watch flags (Twisted's `IN_*`
/// constants, which are the kernel's bits).
///
/// Sets combine with `|` and `&`. [`FsMask::WATCH_MASK`] is the default
/// for a watch. `Display` writes the names as `inotifywait` does
/// (`CREATE,ISDIR`); `Debug` as `FsMask(CREATE | ISDIR)`.
///
/// ```
/// use torsion_transport::inotify::FsMask;
///
/// let mask = FsMask::CREATE | FsMask::ISDIR;
/// assert!(mask.contains(FsMask::CREATE));
/// assert_eq!(mask.to_string(), "CREATE,ISDIR");
/// assert_eq!(mask.human_readable(), ["create", "is_dir"]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FsMask(u32);

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $bits:expr, $alias:literal, $human:literal;)*) => {
        impl FsMask {
            $(
                $(#[$doc])*
                #[doc(alias = $alias)]
                pub const $name: FsMask = FsMask($bits);
            )*
        }

        /// Every named bit: (bit, `Display` name, Twisted's name).
        const NAMES: &[(u32, &str, &str)] = &[$(($bits, stringify!($name), $human)),*];
    };
}

kinds! {
    /// A file was read.
    ACCESS = 0x1, "IN_ACCESS", "access";
    /// A file was written.
    MODIFY = 0x2, "IN_MODIFY", "modify";
    /// Metadata changed: permissions, timestamps, owner, link count.
    ATTRIB = 0x4, "IN_ATTRIB", "attrib";
    /// A file opened for writing was closed.
    CLOSE_WRITE = 0x8, "IN_CLOSE_WRITE", "close_write";
    /// A file not opened for writing was closed.
    CLOSE_NOWRITE = 0x10, "IN_CLOSE_NOWRITE", "close_nowrite";
    /// A file or directory was opened.
    OPEN = 0x20, "IN_OPEN", "open";
    /// An entry was renamed away from the watched directory (its
    /// [`FsEvent::cookie`](super::FsEvent::cookie) pairs it with the
    /// `MOVED_TO`).
    MOVED_FROM = 0x40, "IN_MOVED_FROM", "moved_from";
    /// An entry was renamed into the watched directory.
    MOVED_TO = 0x80, "IN_MOVED_TO", "moved_to";
    /// An entry was created in the watched directory.
    CREATE = 0x100, "IN_CREATE", "create";
    /// An entry was deleted from the watched directory.
    DELETE = 0x200, "IN_DELETE", "delete";
    /// The watched file or directory itself was deleted.
    DELETE_SELF = 0x400, "IN_DELETE_SELF", "delete_self";
    /// The watched file or directory itself was moved.
    MOVE_SELF = 0x800, "IN_MOVE_SELF", "move_self";
    /// The filesystem holding the watched object was unmounted; always
    /// reported.
    UNMOUNT = 0x2000, "IN_UNMOUNT", "unmount";
    /// The kernel's queue overflowed: events were lost, rescan. Always
    /// reported, once per watch, with the watched path.
    Q_OVERFLOW = 0x4000, "IN_Q_OVERFLOW", "queue_overflow";
    /// The watch is gone (removed, or its object deleted or unmounted);
    /// always reported for the watched path itself.
    IGNORED = 0x8000, "IN_IGNORED", "ignored";
    /// Watch the path only if it is a directory.
    ONLYDIR = 0x0100_0000, "IN_ONLYDIR", "only_dir";
    /// Do not follow the path if it is a symbolic link.
    DONT_FOLLOW = 0x0200_0000, "IN_DONT_FOLLOW", "dont_follow";
    /// No more events for entries once they are unlinked from the
    /// watched directory.
    EXCL_UNLINK = 0x0400_0000, "IN_EXCL_UNLINK", "excl_unlink";
    /// Add to the mask of an existing watch (always done here).
    MASK_ADD = 0x2000_0000, "IN_MASK_ADD", "mask_add";
    /// In an event: its subject is a directory.
    ISDIR = 0x4000_0000, "IN_ISDIR", "is_dir";
    /// Report one event, then remove the watch.
    ONESHOT = 0x8000_0000, "IN_ONESHOT", "one_shot";
}

impl FsMask {
    /// No kind at all.
    pub const EMPTY: FsMask = FsMask(0);
    /// Both kinds of close.
    #[doc(alias = "IN_CLOSE")]
    pub const CLOSE: FsMask = FsMask(0x8 | 0x10);
    /// Both halves of a rename.
    #[doc(alias = "IN_MOVED")]
    pub const MOVED: FsMask = FsMask(0x40 | 0x80);
    /// Content or metadata changed (`MODIFY | ATTRIB`).
    #[doc(alias = "IN_CHANGED")]
    pub const CHANGED: FsMask = FsMask(0x2 | 0x4);
    /// Every event kind a watch can ask for.
    #[doc(alias = "IN_ALL_EVENTS")]
    pub const ALL_EVENTS: FsMask = FsMask(0xfff);
    /// What a watch reports by default (Twisted's default):
    /// `MODIFY | ATTRIB | CREATE | DELETE | DELETE_SELF | MOVE_SELF |
    /// UNMOUNT | MOVED_FROM | MOVED_TO`.
    #[doc(alias = "IN_WATCH_MASK")]
    pub const WATCH_MASK: FsMask =
        FsMask(0x2 | 0x4 | 0x100 | 0x200 | 0x400 | 0x800 | 0x2000 | 0x40 | 0x80);

    /// The set with these kernel bits.
    pub const fn from_bits(bits: u32) -> FsMask {
        FsMask(bits)
    }

    /// The kernel bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is in this set.
    pub const fn contains(self, other: FsMask) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if this set and `other` share a bit.
    pub const fn intersects(self, other: FsMask) -> bool {
        self.0 & other.0 != 0
    }

    /// True if the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the bits in the set, as Twisted's
    /// `humanReadableMask` gives them (`["create", "is_dir"]`).
    #[doc(alias = "humanReadableMask")]
    pub fn human_readable(self) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _, _)| self.0 & bit != 0)
            .map(|(_, _, human)| *human)
            .collect()
    }

    /// Writes the names joined by `separator`; unnamed bits in hex.
    fn write_names(self, f: &mut fmt::Formatter<'_>, separator: &str) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let result = if first {
                Ok(())
            } else {
                f.write_str(separator)
            };
            first = false;
            result
        };
        for (bit, name, _) in NAMES {
            if self.0 & bit != 0 {
                sep(f)?;
                f.write_str(name)?;
                rest &= !bit;
            }
        }
        if rest != 0 {
            sep(f)?;
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for FsMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_names(f, ",")
    }
}

impl fmt::Debug for FsMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FsMask(")?;
        self.write_names(f, " | ")?;
        f.write_str(")")
    }
}

impl std::ops::BitOr for FsMask {
    type Output = FsMask;
    fn bitor(self, rhs: FsMask) -> FsMask {
        FsMask(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for FsMask {
    fn bitor_assign(&mut self, rhs: FsMask) {
        self.0 |= rhs.0;
    }
}

impl std::ops::BitAnd for FsMask {
    type Output = FsMask;
    fn bitand(self, rhs: FsMask) -> FsMask {
        FsMask(self.0 & rhs.0)
    }
}

impl std::ops::Not for FsMask {
    type Output = FsMask;
    fn not(self) -> FsMask {
        FsMask(!self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_well() {
        assert_eq!(
            format!("{:?}", FsMask::MOVED),
            "FsMask(MOVED_FROM | MOVED_TO)"
        );
        assert_eq!(
            FsMask::from_bits(0x1000 | 0x100).to_string(),
            "CREATE,0x1000"
        );
        assert_eq!(FsMask::EMPTY.to_string(), "");
        assert!(FsMask::WATCH_MASK.contains(FsMask::MOVED | FsMask::CHANGED));
    }
}
