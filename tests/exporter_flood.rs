//! No client can starve the exporter of slots: hundreds of connections that say nothing and
//! dozens that trickle a request head a byte a second, from one address, from many, and from
//! the scraper's own, with the exporter at the common 1,024-file limit (64 slots), while a
//! scraper is answered every time.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

mod common;

struct Exporter(Child, SocketAddr);

impl Exporter {
    fn start() -> Exporter {
        // At 1,024 files: 64 slots, 16 for any one address.
        let mut child = Command::new("prlimit")
            .args(["--nofile=1024:1024", "--"])
            .arg(env!("CARGO_BIN_EXE_katop"))
            .args(["exporter", "--listen", "127.0.0.1:0", "--interval", "1s"])
            .env("KATOP_NETNS", "host")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = common::serving(&mut child, "katop exporter");
        Exporter(child, addr)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection to `to` from the local address `from` (any 127/8 address is this host's).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// A scrape from 127.0.0.1 that must be answered while the flood goes on. (The bound is
/// generous: an answer takes milliseconds, a starved server waits out every flooder.)
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: katop\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("no answer: {e}"))?;
    Ok(text)
}

#[test]
fn silent_and_trickling_connections_never_keep_a_scraper_waiting() {
    let raise = {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut l = getrlimit(Resource::Nofile);
        l.current = l.maximum;
        setrlimit(Resource::Nofile, l)
    };
    raise.unwrap();
    let e = Exporter::start();
    let addr = e.1;
    // 300 connections that never say a word, from 127.0.0.2.
    let silent: Vec<TcpStream> = (0..300)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 2), addr))
        .collect();
    // 64 that trickle a request head, a byte a second, from 64 addresses, and 20 more from
    // the scraper's own address.
    let stop = Arc::new(AtomicBool::new(false));
    let sources: Vec<Ipv4Addr> = (0..64)
        .map(|i| Ipv4Addr::new(127, 0, 1, 1 + i))
        .chain(std::iter::repeat_n(Ipv4Addr::LOCALHOST, 20))
        .collect();
    let mut trickling: Vec<TcpStream> = sources.iter().map(|&a| connect_from(a, addr)).collect();
    // Each has sent its first byte before the first scrape.
    for s in &mut trickling {
        s.write_all(b"G").unwrap();
    }
    let slowloris = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let head = b"ET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for &b in head.iter().cycle() {
                std::thread::sleep(Duration::from_secs(1));
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                // One closed by the server comes back at once, as an attacker's would.
                for (s, &from) in trickling.iter_mut().zip(&sources) {
                    if s.write_all(&[b]).is_err() {
                        *s = connect_from(from, addr);
                        let _ = s.write_all(b"G");
                    }
                }
            }
        })
    };
    // Scrapes spread over four seconds: before, while and after the server times heads out.
    for i in 0..40 {
        let text = scrape(addr).unwrap_or_else(|e| panic!("scrape {i}: {e}"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("katop_build_info"), "{text}");
    }
    stop.store(true, Ordering::Relaxed);
    slowloris.join().unwrap();
    drop(silent);
}
