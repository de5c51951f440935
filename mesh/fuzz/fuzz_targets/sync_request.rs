//! The catch-up request decoder (`/huiyan/sync/1` requests): clean failure or a request that
//! survives a round trip.
#![no_main]

use huiyan_mesh::wire::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(Request::decode(&r.encode()), Ok(r));
    }
});
