//! The netstring receiver.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_fuzz::{run, Strings};
use torsion_protocol::basic::NetstringReceiver;

fuzz_target!(|input: &[u8]| run::<NetstringReceiver<Strings>>(input));
