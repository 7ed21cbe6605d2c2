//! The endpoint-string parsers: any string is parsed or refused with an
//! error whose caret points inside (or just past) the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torsion_protocol::endpoints::{client_from_string, server_from_string};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    for result in [
        server_from_string(text).map(|_| ()),
        client_from_string(text).map(|_| ()),
    ] {
        if let Err(error) = result {
            assert_eq!(error.input, text);
            assert!(text.is_char_boundary(error.position), "{error:?}");
            assert!(!error.message.is_empty());
            let _ = error.to_string();
        }
    }
});
