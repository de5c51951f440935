//! The head announcement decoder (gossipsub `huiyan/heads/1`, a version vector): clean failure
//! or a vector that survives a round trip.
#![no_main]

use huiyan_mesh::wire::{decode_heads, encode_heads};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(vv) = decode_heads(data) {
        assert_eq!(decode_heads(&encode_heads(&vv)), Ok(vv));
    }
});
