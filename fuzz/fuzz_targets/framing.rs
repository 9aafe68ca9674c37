//! The framing guard never panics, and reads a byte stream the same way whatever the cuts between
//! reads.
#![no_main]

use geolb::framing::Scanner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Scanner::new(8192);
    let at_once = whole.feed(stream).map(|f| (f.request, f.why));
    let mut pieces = Scanner::new(8192);
    let step = usize::from(cuts % 16) + 1;
    let mut found = None;
    for chunk in stream.chunks(step) {
        if let Some(f) = pieces.feed(chunk) {
            found = Some((f.request, f.why));
            break;
        }
    }
    assert_eq!(at_once, found, "cut every {step} bytes");
});
