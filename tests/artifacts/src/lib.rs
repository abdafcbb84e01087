//! Paths of the test guests, built from source by `build.rs`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// `component` with a custom section named `name` of `len` zero bytes
/// appended: the same code under another digest (and, with `len`, another
/// size), so that no cache holds it compiled.
pub fn with_custom_section(component: &[u8], name: &str, len: usize) -> Vec<u8> {
    assert!(name.len() < 128, "the name's length is written as one byte");
    let mut out = component.to_vec();
    out.push(0);
    let mut size = 1 + name.len() + len;
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        out.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len() + len, 0);
    out
}
