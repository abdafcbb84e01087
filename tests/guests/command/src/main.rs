//! A WASI command, not a workflow: weft must refuse it with a clear message.
fn main() {
    println!("hello from a command");
}
