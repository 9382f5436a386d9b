//! Builds katop's BPF readers (`src/collector/fd_iter.bpf.c`, the fd tables; and
//! `src/collector/tcp_iter.bpf.c`, the TCP sockets) with clang, when clang is installed.
//! Without clang katop is built without them and reads `/proc` and `sock_diag`, as it does
//! wherever a BPF reader cannot load: the same output, only slower.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KATOP_CLANG");
    for name in ["fd_iter", "tcp_iter"] {
        build(name);
    }
}

fn build(name: &str) {
    let source = format!("src/collector/{name}.bpf.c");
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join(format!("{name}.bpf.o"));
    let clang = std::env::var("KATOP_CLANG").unwrap_or_else(|_| "clang".into());
    // An empty object means "built without": the reader then reports why it is not used.
    let built = clang != "none"
        && Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-c"])
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .is_ok_and(|s| s.success());
    if !built {
        println!(
            "cargo:warning=katop: {clang} could not build {source}; katop reads /proc and \
             sock_diag instead (install clang for the faster BPF readers)"
        );
        std::fs::write(&object, b"").expect("OUT_DIR is writable");
    }
}
