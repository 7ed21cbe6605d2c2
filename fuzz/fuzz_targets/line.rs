//! The line receiver, with raw-mode switches and delimiter changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_fuzz::{run, Lines};
use torsion_protocol::basic::LineReceiver;

fuzz_target!(|input: &[u8]| run::<LineReceiver<Lines>>(input));
