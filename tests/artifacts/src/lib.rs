//! Paths of the test guests, built from source by `build.rs`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
