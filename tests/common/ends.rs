//! Watching why connections end: `katop history --follow --json` read on a thread, the
//! exporter's end counter of one cause, and the connections the tests make.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Reaped;

/// `katop history --follow --json` over `filter`, its events read on a thread.
pub struct Follow {
    _child: Reaped,
    events: Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Follow {
    pub fn start(filter: &str) -> Follow {
        Follow::start_every(filter, "200ms")
    }

    pub fn start_every(filter: &str, interval: &str) -> Follow {
        Follow::spawn_in(
            "host",
            &[
                "history",
                "--follow",
                "--json",
                "--interval",
                interval,
                "--filter",
                filter,
            ],
        )
    }

    /// katop with `args`, printing JSON lines.
    pub fn spawn(args: &[&str]) -> Follow {
        Follow::spawn_in("host", args)
    }

    /// katop reading namespaces `netns` (`KATOP_NETNS`), with `args`.
    pub fn spawn_in(netns: &str, args: &[&str]) -> Follow {
        let mut child: Child = Command::new(env!("CARGO_BIN_EXE_katop"))
            .args(args)
            .env("KATOP_NETNS", netns)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        // What katop says (a warning that causes are inferred, say) is shown with a failure.
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("katop history: {line}");
            }
        });
        Follow {
            _child: Reaped(child),
            events,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 60 s) for an event `pred` takes, and returns it.
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        self.wait_new(what, pred)
    }

    /// Waits for an event not seen yet that `pred` takes.
    pub fn wait_new(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(e) => panic!("no event for {what} ({e}); seen:\n{:#?}", self.seen),
            }
        }
    }

    /// Waits for the end of a connection (as the side with these `ends` sees it), and returns
    /// the event.
    pub fn closed(&mut self, (local, remote): (SocketAddr, SocketAddr)) -> Value {
        let (local, remote) = (local.to_string(), remote.to_string());
        self.wait(&format!("{local} closed"), |v| {
            v["event"] == "closed" && v["local"] == local.as_str() && v["remote"] == remote.as_str()
        })
    }

    /// Connects to `l` until katop reports a connection opening (one made before its first
    /// poll is only listed): from then on its tracepoints are on. Returns that connection.
    pub fn watching(&mut self, l: &TcpListener) -> (TcpStream, TcpStream) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut made = Vec::new();
        loop {
            made.push(pair(l));
            let wanted: Vec<String> = made
                .iter()
                .map(|p| p.0.local_addr().unwrap().to_string())
                .collect();
            if let Ok(v) = self.events.recv_timeout(Duration::from_millis(500)) {
                self.seen.push(v);
            }
            let opened = self.seen.iter().find_map(|v| {
                let local = v["local"].as_str()?;
                (v["event"] == "opened").then_some(())?;
                wanted.iter().position(|w| w == local)
            });
            if let Some(i) = opened {
                return made.swap_remove(i);
            }
            assert!(
                Instant::now() < deadline,
                "katop never told a connection opening; seen:\n{:#?}",
                self.seen
            );
        }
    }

    /// Follows `filter`'s connections too, once katop watches (a loopback connection of its
    /// own seen opening says so).
    pub fn watching_also(filter: &str) -> Follow {
        let (l, own) = listener();
        let mut h = Follow::start(&format!("({filter}) or {own}"));
        h.watching(&l);
        h
    }
}

/// `katop exporter` beside a test: its end counter of one cause, by the tracepoints.
pub struct Counted {
    _child: Reaped,
    addr: SocketAddr,
    series: String,
}

impl Counted {
    pub fn start(cause: &str) -> Counted {
        Self::start_in(cause, "host")
    }

    /// Counting only the ends of connections in network namespace `netns` (a poll saw them).
    pub fn start_in(cause: &str, netns: &str) -> Counted {
        let mut child = Command::new(env!("CARGO_BIN_EXE_katop"))
            .args(["exporter", "--listen", "127.0.0.1:0", "--interval", "200ms"])
            .env("KATOP_NETNS", netns)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = super::serving(&mut child, "katop exporter");
        Counted {
            _child: Reaped(child),
            addr,
            series: format!(
                "katop_tcp_connections_closed_total{{cause=\"{cause}\",cause_source=\"tracepoint\"}} "
            ),
        }
    }

    /// The counter now (once the exporter serves it).
    pub fn now(&self) -> f64 {
        super::wait_until("the end counter", || {
            self.scrape()?
                .lines()
                .find(|l| l.starts_with(&self.series))?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
    }

    /// The exporter's page, once it answers.
    pub fn scrape(&self) -> Option<String> {
        let mut s = TcpStream::connect(self.addr).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Waits until the counter has gone past `before` (no other test here ends a connection
    /// this way meanwhile).
    pub fn grew_from(&self, before: f64) {
        super::wait_until("the end counted", || (self.now() > before).then_some(()));
    }
}

/// A stream's (local, remote) addresses.
pub fn ends(s: &TcpStream) -> (SocketAddr, SocketAddr) {
    (s.local_addr().unwrap(), s.peer_addr().unwrap())
}

pub fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    super::connect(l, None)
}

pub fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let filter = format!("src:{a} or dst:{a}", a = l.local_addr().unwrap());
    (l, filter)
}

pub fn cause(v: &Value) -> (&str, &str) {
    (
        v["cause"].as_str().unwrap_or("?"),
        v["cause_source"].as_str().unwrap_or("?"),
    )
}
