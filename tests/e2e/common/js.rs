//! Building the JavaScript and TypeScript test guests with `weft build`,
//! once per test run (and again only when their inputs change).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::build::{build_guest, files_under};
use super::repo_root;

static BUILT: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Builds `tests/guests-js/<file>` (for `class`, if given) into
/// `target/js-guests` unless an identical build exists, and precompiles it
/// into the shared cache. Returns the component's path.
pub fn js_component(file: &str, class: Option<&str>) -> String {
    js_component_at(&repo_root().join("tests/guests-js").join(file), class)
}

/// Like [`js_component`] for any module (e.g. an example).
pub fn js_component_at(source: &Path, class: Option<&str>) -> String {
    let stem = source.file_stem().unwrap().to_string_lossy();
    let ext = source.extension().unwrap().to_string_lossy();
    // Named by its directory too: examples are all `app.ts`.
    let parent = source
        .parent()
        .and_then(|p| p.file_name())
        .unwrap_or_default()
        .to_string_lossy();
    let key = format!("{parent}-{stem}-{ext}-{}", class.unwrap_or("default"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    let root = repo_root();
    let sdk = root.join("guest-sdk-js");
    assert!(
        sdk.join("node_modules/@bytecodealliance/componentize-js")
            .is_dir(),
        "the JavaScript SDK's packages are not installed; run `npm ci` in guest-sdk-js (scripts/test.sh does)"
    );
    let mut inputs = vec![
        source.to_owned(),
        sdk.join("build.mjs"),
        sdk.join("package-lock.json"),
    ];
    files_under(&sdk.join("src"), &[], &mut inputs);
    files_under(&sdk.join("wit"), &[], &mut inputs);
    // The build pre-initializes the engine with weft's own Wizer.
    inputs.push(root.join("host/src/cli/wizer.rs"));
    let path = build_guest(source, class, &[], &inputs, "js-guests", &key);
    built.insert(key, path.clone());
    path
}

/// A loopback server that counts `POST /hit/<name>` by name and answers
/// with the new count.
pub fn counter() -> (String, Arc<Mutex<BTreeMap<String, u32>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let c = counts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap_or(0);
            let name = line
                .split(' ')
                .nth(1)
                .and_then(|p| p.strip_prefix("/hit/"))
                .unwrap_or("?")
                .to_owned();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap_or(0) > 0 && header != "\r\n" {
                header.clear();
            }
            let n = {
                let mut m = c.lock().unwrap();
                let n = m.entry(name).or_insert(0);
                *n += 1;
                *n
            };
            let body = n.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, counts)
}
