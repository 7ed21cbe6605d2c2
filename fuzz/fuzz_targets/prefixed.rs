//! The length-prefixed receivers (1-, 2- and 4-byte prefixes), each fed
//! the same input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_fuzz::{run, Strings};
use torsion_protocol::basic::PrefixedStringReceiver;

fuzz_target!(|input: &[u8]| {
    run::<PrefixedStringReceiver<Strings, 1>>(input);
    run::<PrefixedStringReceiver<Strings, 2>>(input);
    run::<PrefixedStringReceiver<Strings, 4>>(input);
});
