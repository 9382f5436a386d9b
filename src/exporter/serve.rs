//! Serving `/metrics` over HTTP/1.1 with hyper: every scrape is answered from the latest
//! rendered poll (a scrape never waits for `/proc`), and no client can hold the server, its
//! slots or its memory:
//! - every connection is accepted at once; over the limit one is closed to make room, taken
//!   from the peer holding the most slots: first one idle after an answer, then one that never
//!   spoke, then a head trickling in (slowloris), longest silent first; a new connection has
//!   [`GRACE`] to say something before it can be taken, so a scraper is not closed before its
//!   request arrives. A flood of silent or trickling connections costs a scraper nothing;
//! - a peer (an IPv4 address, an IPv6 /64) holds at most a quarter of the slots: past that its
//!   own connections make room for its new one, so a peer can crowd out only itself;
//! - a request head is at most 16 KiB and must arrive within [`HEAD_TIMEOUT`], which also
//!   closes a kept-alive connection idle that long; a connection lives at most 30 s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The latest poll's metrics, in both formats.
#[derive(Debug, Default)]
pub struct Rendered {
    pub openmetrics: Bytes,
    pub prometheus: Bytes,
}

pub type Latest = Arc<RwLock<Arc<Rendered>>>;

const MAX_HEAD: usize = 16 * 1024;
/// Time for a request head to arrive, and for a kept-alive connection to stay idle.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a new connection, or one in the middle of a request, has before it can be closed to
/// make room.
pub const GRACE: Duration = Duration::from_millis(250);

/// What one connection has done, as the server's slot keeper sees it.
#[derive(Debug, Default)]
struct Activity {
    /// Bytes read from the client in all.
    read: AtomicU64,
    /// `read` when the server last wrote (an answer): equal means nothing is pending.
    read_at_last_write: AtomicU64,
    /// When it last read or wrote (or was accepted), in ms since the server started.
    last_ms: AtomicU64,
    /// Whether it was ever answered.
    answered: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// Sent nothing since its last answer (or ever): closing it loses no request.
    fn quiet(&self) -> bool {
        self.read.load(Ordering::Relaxed) == self.read_at_last_write.load(Ordering::Relaxed)
    }

    /// How readily it is closed to make room at `now_ms` (lower first): `0` when it has sent
    /// nothing since its last answer (idle) or ever (past its grace), `1` for a head trickling
    /// in; `None` while it is new or making progress.
    fn rank(&self, now_ms: u64) -> Option<u8> {
        let quiet = self.quiet();
        if quiet && self.answered.load(Ordering::Relaxed) {
            return Some(0);
        }
        let silent = now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed));
        if silent < GRACE.as_millis() as u64 {
            None
        } else {
            Some(u8::from(!quiet))
        }
    }
}

/// Who a peer is, for its share of slots: its IPv4 address, or its IPv6 /64 (a host has a
/// whole /64 to connect from).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// A client's stream, counting what it does.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Tracked {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.activity.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.read.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            let read = self.activity.read.load(Ordering::Relaxed);
            self.activity
                .read_at_last_write
                .store(read, Ordering::Relaxed);
            self.activity.answered.store(true, Ordering::Relaxed);
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection's slot.
struct Slot {
    peer: IpAddr,
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

/// The connections served now.
struct Slots {
    max: usize,
    per_peer: usize,
    next: u64,
    open: HashMap<u64, Slot>,
}

impl Slots {
    /// Makes room for a new connection from `peer` at `now_ms` (it is always taken in).
    fn admit(&mut self, peer: IpAddr, now_ms: u64) {
        let mine = self.open.values().filter(|s| s.peer == peer).count();
        if mine >= self.per_peer {
            // The peer's own make room: it crowds out no one but itself.
            self.evict(now_ms, |s| s.peer == peer, true);
            return;
        }
        if self.open.len() < self.max {
            return;
        }
        let _ = self.evict(now_ms, |_| true, false) || self.evict(now_ms, |_| true, true);
    }

    /// Closes, of the connections `which` takes, the most readily closed: by rank, then from
    /// the peer holding the most slots, then the longest silent; with `any`, one still in its
    /// grace too. Whether there was one.
    fn evict(&mut self, now_ms: u64, which: impl Fn(&Slot) -> bool, any: bool) -> bool {
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for s in self.open.values() {
            *held.entry(s.peer).or_default() += 1;
        }
        let victim = self
            .open
            .iter()
            .filter(|(_, s)| which(s))
            .filter_map(|(id, s)| {
                let rank = s.activity.rank(now_ms).or(any.then_some(u8::MAX))?;
                let crowd = std::cmp::Reverse(held.get(&s.peer).copied().unwrap_or(0));
                Some((rank, crowd, s.activity.last_ms.load(Ordering::Relaxed), *id))
            })
            .min()
            .map(|(_, _, _, id)| id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(s) => {
                s.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Takes a connection's slot back when its task ends.
struct Release(Arc<Mutex<Slots>>, u64);

impl Drop for Release {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.open.remove(&self.1);
        }
    }
}

/// Serves until `stop` completes, with at most `max` connections at once.
pub async fn serve(
    listener: TcpListener,
    latest: Latest,
    max: usize,
    stop: impl std::future::Future<Output = ()>,
) {
    let epoch = Instant::now();
    let slots = Arc::new(Mutex::new(Slots {
        max: max.max(1),
        per_peer: (max / 4).max(1),
        next: 0,
        open: HashMap::new(),
    }));
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => {
                if let Ok(a) = accepted {
                    a
                } else {
                    // Out of fds and the like: free a quiet slot's, and try again shortly
                    // rather than spin.
                    if let Ok(mut s) = slots.lock() {
                        let now = epoch.elapsed().as_millis() as u64;
                        s.evict(now, |_| true, false);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        };
        let now = epoch.elapsed().as_millis() as u64;
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(now, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let peer = peer_key(peer.ip());
        let id = {
            let Ok(mut s) = slots.lock() else { return };
            s.admit(peer, now);
            s.next += 1;
            let id = s.next;
            s.open.insert(
                id,
                Slot {
                    peer,
                    activity: Arc::clone(&activity),
                    close: Arc::clone(&close),
                },
            );
            id
        };
        let release = Release(Arc::clone(&slots), id);
        let latest = Arc::clone(&latest);
        let io = Tracked {
            inner: stream,
            activity,
            epoch,
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let latest = Arc::clone(&latest);
                async move { Ok::<_, Infallible>(respond(&req, &latest)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
                () = close.notified() => {}
            }
            drop(release);
        });
    }
}

/// The answer to one request: `/metrics` in the format asked for (`OpenMetrics` when `Accept`
/// names it, else the Prometheus text format), a short page at `/`, 404 elsewhere.
pub fn respond(req: &Request<Incoming>, latest: &Latest) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a static response is valid")
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    match req.uri().path() {
        "/metrics" => {}
        "/" => return text(StatusCode::OK, "katop exporter: metrics at /metrics\n"),
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            )
        }
    }
    let rendered = latest.read().map(|r| Arc::clone(&r)).unwrap_or_default();
    let wants_openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (body, kind) = if wants_openmetrics {
        (
            rendered.openmetrics.clone(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            rendered.prometheus.clone(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .body(Full::new(body))
        .expect("a metrics response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize) -> Slots {
        Slots {
            max,
            per_peer: (max / 4).max(1),
            next: 0,
            open: HashMap::new(),
        }
    }

    /// What a connection has done so far.
    #[derive(Clone, Copy)]
    enum Did {
        /// Answered, and quiet since.
        Idle,
        /// Never said a word.
        Silent,
        /// Part of a request head, then nothing.
        Trickled,
    }

    fn add(s: &mut Slots, peer: IpAddr, last_ms: u64, did: Did) -> u64 {
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(last_ms, Ordering::Relaxed);
        match did {
            Did::Idle => {
                activity.read.store(10, Ordering::Relaxed);
                activity.read_at_last_write.store(10, Ordering::Relaxed);
                activity.answered.store(true, Ordering::Relaxed);
            }
            Did::Silent => {}
            Did::Trickled => activity.read.store(3, Ordering::Relaxed),
        }
        s.next += 1;
        let id = s.next;
        s.open.insert(
            id,
            Slot {
                peer,
                activity,
                close: Arc::new(Notify::new()),
            },
        );
        id
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_full_server_closes_the_quiet_first_longest_silent_first() {
        let mut t = slots(4);
        let trickling = add(&mut t, ip(1), 100, Did::Trickled);
        let silent = add(&mut t, ip(2), 500, Did::Silent);
        let idle = add(&mut t, ip(3), 900, Did::Idle);
        let new = add(&mut t, ip(4), 990, Did::Silent); // in its grace
        let mut gone = Vec::new();
        for peer in 5..9 {
            let before: Vec<u64> = t.open.keys().copied().collect();
            t.admit(ip(peer), 1000);
            gone.extend(before.into_iter().filter(|id| !t.open.contains_key(id)));
            add(&mut t, ip(peer), 1000, Did::Silent);
        }
        // Quiet ones (never spoke, idle after an answer), then a trickling head, and one in
        // its grace only when nothing else is left.
        assert_eq!(gone, vec![silent, idle, trickling, new]);
    }

    #[test]
    fn among_equals_the_floods_go_before_a_lone_clients() {
        let mut s = slots(8);
        s.per_peer = 8;
        let lone = add(&mut s, ip(1), 100, Did::Silent);
        for t in 0..7 {
            add(&mut s, ip(2), 300 + t, Did::Silent);
        }
        s.admit(ip(3), 1000);
        assert!(s.open.contains_key(&lone), "the flood's own went first");
        assert_eq!(s.open.values().filter(|x| x.peer == ip(2)).count(), 6);
    }

    #[test]
    fn a_new_connection_has_its_grace_while_others_can_make_room() {
        let mut s = slots(4);
        let new = add(&mut s, ip(9), 1000, Did::Silent);
        for t in 0..3 {
            add(&mut s, ip(t + 1), 10, Did::Trickled);
        }
        // A burst of connections at the same moment: the trickling heads go, not the new one.
        for _ in 0..3 {
            s.admit(ip(7), 1100);
            add(&mut s, ip(7), 1100, Did::Silent);
        }
        assert!(s.open.contains_key(&new), "closed within its grace");
    }

    #[test]
    fn a_peer_past_its_share_crowds_out_only_itself() {
        let mut s = slots(8); // two per peer
        let flood = ip(1);
        let a = add(&mut s, flood, 1, Did::Trickled);
        let b = add(&mut s, flood, 2, Did::Trickled);
        let other = add(&mut s, ip(2), 0, Did::Silent);
        s.admit(flood, 1000);
        assert!(!s.open.contains_key(&a), "its own longest silent made room");
        assert!(s.open.contains_key(&b) && s.open.contains_key(&other));
    }

    #[test]
    fn peers_are_addresses_and_ipv6_slash_64s() {
        let v6 = |s: &str| peer_key(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2::5"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::5"), v6("2001:db8:1:3::5"));
        assert_eq!(v6("::ffff:127.0.0.1"), ip(1));
        assert_ne!(peer_key(ip(1)), peer_key(ip(2)));
    }
}
