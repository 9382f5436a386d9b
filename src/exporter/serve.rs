//! Serving `/metrics` over HTTP/1.1 with hyper: every scrape is answered from the latest
//! rendered poll (a scrape never waits for `/proc`), and no client can hold the server or its
//! memory: a request head is at most 16 KiB, it must arrive within 10 s, a connection lives
//! at most 30 s, and at most 64 are served at once (more wait in the kernel's backlog).

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The latest poll's metrics, in both formats.
#[derive(Debug, Default)]
pub struct Rendered {
    pub openmetrics: Bytes,
    pub prometheus: Bytes,
}

pub type Latest = Arc<RwLock<Arc<Rendered>>>;

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 64;

/// Serves until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    latest: Latest,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => return,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((s, _)) = accepted else {
                    // Out of fds and the like: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                s
            }
        };
        let latest = Arc::clone(&latest);
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
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
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
