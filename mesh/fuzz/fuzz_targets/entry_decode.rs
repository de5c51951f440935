//! The log entry decoder: any bytes either fail cleanly or decode to an entry that re-encodes to
//! exactly the same bytes (the encoding is canonical), and whose checks do not panic.
#![no_main]

use huiyan_mesh::log::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Entry::decode(data) {
        assert_eq!(
            e.encode(),
            data,
            "a decoded entry re-encodes to other bytes"
        );
        let _ = e.check_signature();
        let _ = e.check_follows(None);
        let w = e.withheld();
        assert_eq!(w.hash(), e.hash(), "withholding changed the hash");
        assert_eq!(Entry::decode(&w.encode()).as_ref(), Ok(&w));
    }
});
