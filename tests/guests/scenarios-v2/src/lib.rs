//! A second version of `scenarios` with the same behaviour (so its journal
//! replays) but another digest: the upgrade that matches.

#[path = "../../scenarios/src/lib.rs"]
mod v1;

/// Makes this component's bytes differ from version 1.
#[unsafe(no_mangle)]
pub extern "C" fn weft_test_version() -> u32 {
    2
}
