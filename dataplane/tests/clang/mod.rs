//! eBPF objects built from C with clang-19, the way users build XDP programs, for the tests
//! that load objects. Every build works in a directory of its own: tests run in parallel.
// Each test binary uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty temporary directory for one build.
fn fresh_dir(name: &str) -> PathBuf {
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-clang-{}-{n}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles the C file `source` to `out`; panics (naming the file) if clang fails.
fn compile(name: &str, source: &Path, out: &Path) {
    let status = Command::new("clang-19")
        .args(["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c"])
        .arg(source)
        .arg("-o")
        .arg(out)
        .status()
        .expect("run clang-19 (apt-get install clang-19)");
    assert!(status.success(), "clang-19 failed on {name}");
}

/// The object built from the C file `source`.
pub fn build(name: &str, source: &Path) -> Vec<u8> {
    let dir = fresh_dir(name);
    let out = dir.join(format!("{name}.o"));
    compile(name, source, &out);
    let bytes = std::fs::read(&out);
    let _ = std::fs::remove_dir_all(&dir);
    bytes.unwrap()
}

/// The object built from C source `text`.
pub fn build_text(name: &str, text: &str) -> Vec<u8> {
    let path = object_file(name, text);
    let bytes = std::fs::read(&path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    bytes.unwrap()
}

/// Builds C source `text` into an object file and returns its path, in a fresh directory the
/// caller removes.
pub fn object_file(name: &str, text: &str) -> PathBuf {
    let dir = fresh_dir(name);
    let (src, out) = (dir.join(format!("{name}.c")), dir.join(format!("{name}.o")));
    std::fs::write(&src, text).unwrap();
    compile(name, &src, &out);
    out
}
