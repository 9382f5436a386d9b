//! Serving `/metrics` over HTTP/1.1 with hyper: every scrape is answered from the latest
//! rendered poll (a scrape never waits for `/proc`), and no client can hold the server, its
//! slots or its memory:
//! - every connection is accepted at once; over the limit, one that has sent nothing since its
//!   last answer (idle, or never spoke) is closed to make room, taken from the peer holding
//!   the most slots, oldest first, so a flood of silent connections costs a scraper nothing;
//! - a peer may hold at most a quarter of the slots: past that its own quiet connections make
//!   room, or the new one is closed;
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

/// What one connection has done, as the server's slot keeper sees it.
#[derive(Debug, Default)]
struct Activity {
    /// Bytes read from the client in all.
    read: AtomicU64,
    /// `read` when the server last wrote (an answer): equal means nothing is pending.
    read_at_last_write: AtomicU64,
    /// When it last read or wrote, in ms since the server started.
    last_ms: AtomicU64,
}

impl Activity {
    /// Sent nothing since its last answer (or ever): closing it loses no request.
    fn quiet(&self) -> bool {
        self.read.load(Ordering::Relaxed) == self.read_at_last_write.load(Ordering::Relaxed)
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
    /// Makes room for a new connection from `peer`: `false` when it must be closed instead.
    fn admit(&mut self, peer: IpAddr) -> bool {
        let mine = self.open.values().filter(|s| s.peer == peer).count();
        if mine >= self.per_peer {
            // The peer's own quiet connection makes room, or the new one goes.
            return self.evict(|s| s.peer == peer && s.activity.quiet());
        }
        if self.open.len() < self.max {
            return true;
        }
        // From the peer holding the most slots, a quiet connection, oldest first; failing
        // that, whichever has been silent longest (a head trickling in: slowloris).
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for s in self.open.values() {
            *counts.entry(s.peer).or_default() += 1;
        }
        let biggest = counts.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p);
        self.evict(|s| Some(s.peer) == biggest && s.activity.quiet())
            || self.evict(|s| s.activity.quiet())
            || self.evict(|_| true)
    }

    /// Closes the longest-silent connection `which` takes; whether there was one.
    fn evict(&mut self, which: impl Fn(&Slot) -> bool) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, s)| which(s))
            .min_by_key(|(_, s)| s.activity.last_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
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
                        s.evict(|s| s.activity.quiet());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        };
        let activity = Arc::new(Activity::default());
        let close = Arc::new(Notify::new());
        let id = {
            let Ok(mut s) = slots.lock() else { return };
            if !s.admit(peer.ip()) {
                continue; // dropped: closed
            }
            s.next += 1;
            let id = s.next;
            s.open.insert(
                id,
                Slot {
                    peer: peer.ip(),
                    activity: Arc::clone(&activity),
                    close: Arc::clone(&close),
                },
            );
            id
        };
        let release = Release(Arc::clone(&slots), id);
        let latest = Arc::clone(&latest);
        activity
            .last_ms
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
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

    fn add(s: &mut Slots, peer: [u8; 4], last_ms: u64, pending: bool) -> Arc<Notify> {
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(last_ms, Ordering::Relaxed);
        if pending {
            activity.read.store(10, Ordering::Relaxed);
        }
        let close = Arc::new(Notify::new());
        s.next += 1;
        let id = s.next;
        s.open.insert(
            id,
            Slot {
                peer: IpAddr::from(peer),
                activity,
                close: Arc::clone(&close),
            },
        );
        close
    }

    fn peers(s: &Slots) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = s.open.values().map(|s| s.peer).collect();
        v.sort();
        v
    }

    #[test]
    fn a_full_server_closes_the_floods_quiet_connections_never_a_request_in_progress() {
        let mut s = slots(8);
        let scraper = [10, 0, 0, 9];
        // The scraper is mid-request; the flood (two peers) holds the rest, silent.
        add(&mut s, scraper, 0, true);
        for i in 0..2 {
            add(&mut s, [10, 0, 0, 1], 10 + i, false);
        }
        for i in 0..5 {
            add(&mut s, [10, 0, 0, 2], 20 + i, false);
        }
        assert!(s.admit(IpAddr::from(scraper)));
        // The biggest peer's oldest quiet connection made room.
        assert_eq!(s.open.len(), 7);
        assert_eq!(
            peers(&s)
                .iter()
                .filter(|p| **p == IpAddr::from([10, 0, 0, 2]))
                .count(),
            4
        );
        assert!(peers(&s).contains(&IpAddr::from(scraper)));
    }

    #[test]
    fn a_peer_past_its_share_makes_room_from_its_own_or_is_refused() {
        let mut s = slots(8); // two per peer
        let flood = [10, 0, 0, 1];
        add(&mut s, flood, 1, true);
        add(&mut s, flood, 2, false);
        assert!(s.admit(IpAddr::from(flood)), "its quiet one made room");
        assert_eq!(s.open.len(), 1);
        add(&mut s, flood, 3, true);
        assert!(
            !s.admit(IpAddr::from(flood)),
            "both of its connections are mid-request: the new one goes"
        );
        assert!(
            s.admit(IpAddr::from([10, 0, 0, 2])),
            "another peer is welcome"
        );
    }
}
