//! Times the BPF TCP reader's pass against the `sock_diag` dump it replaces, over every TCP
//! socket of this namespace, three times each (root; the kernel's cost is its system time).
//!
//! `cargo run --release --example tcp_pass`
use std::time::{Duration, Instant};

use katop::collector::current_netns;
use katop::collector::sock_diag::{DiagSocket, DumpKind};
use katop::collector::tcp_iter::TcpReader;
use katop::collector::wire::DumpSink;

/// This process's system time so far (`/proc/self/stat`, in `USER_HZ` ticks).
fn system_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(12)?.parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Runs `read`, saying how many sockets it read, in how long, with how much system time.
fn timed(what: &str, read: impl FnOnce() -> usize) {
    let (started, sys) = (Instant::now(), system_time());
    let count = read();
    println!(
        "{what}: {count} sockets in {:.2?} ({:.2?} of system time)",
        started.elapsed(),
        system_time().saturating_sub(sys)
    );
}

fn main() {
    let mut reader = TcpReader::open().expect("the reader loads (as root, with clang)");
    let mut diag = DiagSocket::open().expect("a sock_diag socket");
    for _ in 0..3 {
        timed("BPF pass", || {
            let mut socks = Vec::new();
            reader
                .read_into(current_netns(), (true, true), &mut socks)
                .expect("a pass");
            socks.len()
        });
        timed("sock_diag dump", || {
            let mut sink = DumpSink::default();
            diag.dump_each(
                &[DumpKind::TCP4, DumpKind::TCP6],
                current_netns(),
                &mut sink,
            )
            .expect("a dump");
            sink.socks.len()
        });
    }
}
