//! Captures raw `sock_diag` reply messages as parser fixtures.
//!
//! `cargo run --example capture -- tcp4|tcp6|udp4|unix PORT_OR_INODE OUT.bin` writes the first
//! message whose local port (inet) or inode (unix) matches, netlink header included.

use katop::collector::sock_diag::{DiagSocket, DumpKind};
use katop::collector::wire;
use katop::model::{NetnsId, Proto};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, kind, key, out] = &args[..] else {
        eprintln!("usage: capture tcp4|tcp6|udp4|unix PORT_OR_INODE OUT.bin");
        std::process::exit(2);
    };
    let kind = match kind.as_str() {
        "tcp4" => DumpKind::TCP4,
        "tcp6" => DumpKind::TCP6,
        "udp4" => DumpKind::UDP4,
        "unix" => DumpKind::UNIX,
        other => panic!("unknown kind {other}"),
    };
    let key: u32 = key.parse().expect("a number");
    let mut diag = DiagSocket::open().expect("netlink");
    let mut found: Option<Vec<u8>> = None;
    diag.dump_raw(kind, |whole| {
        let mut d = whole;
        while d.len() >= 16 {
            let len = u32::from_ne_bytes(d[..4].try_into().unwrap()) as usize;
            let msg = &d[..len.min(d.len())];
            if let Ok(s) = wire::parse_sock(&msg[16..], kind.proto, NetnsId(0)) {
                let hit = if kind.proto == Proto::Unix {
                    s.inode.0 == key
                } else {
                    s.local.port() == Some(key as u16)
                };
                if hit && found.is_none() {
                    found = Some(msg.to_vec());
                }
            }
            d = &d[((len + 3) & !3).min(d.len())..];
        }
        Ok(wire::scan_done(whole))
    })
    .expect("dump");
    let msg = found.expect("no matching socket");
    std::fs::write(out, &msg).expect("write");
    println!("{} bytes -> {out}", msg.len());
}
