//! Builds katop's BPF fd reader (`src/collector/fd_iter.bpf.c`) with clang, when clang is
//! installed. Without clang katop is built without it and reads fd tables from `/proc`, as
//! it does wherever the BPF reader cannot load: the same output, only slower.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/collector/fd_iter.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=KATOP_CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("fd_iter.bpf.o");
    let clang = std::env::var("KATOP_CLANG").unwrap_or_else(|_| "clang".into());
    // An empty object means "built without": fd_iter.rs then reports why it is not used.
    let built = clang != "none"
        && Command::new(&clang)
            .args([
                "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-c", source, "-o",
            ])
            .arg(&object)
            .status()
            .is_ok_and(|s| s.success());
    if !built {
        println!(
            "cargo:warning=katop: {clang} could not build {source}; katop reads fd tables from \
             /proc instead (install clang for the faster BPF reader)"
        );
        std::fs::write(&object, b"").expect("OUT_DIR is writable");
    }
}
