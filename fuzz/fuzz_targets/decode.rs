//! Every decoder kumo store runs on bytes it did not produce: gRPC request messages (and the
//! server's validation of them), Raft proposals, WAL records, HTTP/2 connection bytes. See
//! `kumo_store::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kumo_store::fuzzing::decode_requests(data);
});
