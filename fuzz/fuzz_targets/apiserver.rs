//! What kumo apiserver does with request bodies: JSON, YAML and protobuf decoding with the
//! create pipeline, and every patch type (JSON, merge, strategic merge, server-side apply) on
//! fixed live objects with the update pipeline. See `kumo_apiserver::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kumo_apiserver::fuzzing::decode_and_patch(data);
});
