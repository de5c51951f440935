//! The catch-up response decoder (heads, zstd-compressed entry batches, refusals): clean failure
//! or a response that survives a round trip; each entry of a batch goes through the entry
//! decoder as the swarm does.
#![no_main]

use huiyan_mesh::log::Entry;
use huiyan_mesh::wire::Response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Response::decode(data) {
        if let Response::Batch(entries) = &r {
            for e in entries {
                let _ = Entry::decode(e);
            }
        }
        assert_eq!(Response::decode(&r.encode()), Ok(r));
    }
});
