//! Serving the API's connections: one task per connection, with the limits `axum::serve` does not set.
//!
//! - *A header-read timeout* ([`HEADER_READ_TIMEOUT`]): hyper only enforces one when it has a timer, and
//!   [`super::REQUEST_TIMEOUT`] starts once the headers are in. Without it a client that sends half a request
//!   line and goes quiet (a dropped Wi-Fi, or an attacker) holds its connection forever, and a draining node
//!   waits for it.
//! - *A cap on open connections* ([`MAX_CONNECTIONS`]): past it new connections are closed at once, so
//!   slow clients cannot take every file descriptor the media loop and the edge's control calls need.
//! - *A bounded graceful stop*: once told to stop, the listener closes, idle keep-alive connections close,
//!   requests in flight finish — for at most [`SHUTDOWN_GRACE`], after which the rest are dropped.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send a request's headers (from the connection's start, or from the end of the
/// previous response on a keep-alive connection).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Open HTTP connections at most. Far above what an edge and a node's own clients hold (each client opens a
/// connection for an offer and maybe a `DELETE`), far below the descriptor limit.
pub(crate) const MAX_CONNECTIONS: usize = 4_096;

/// How long a stop waits for the requests in flight.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The connection limits (see the module docs); tests shorten them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Serves `app` on `listener` until `stop` completes, then stops gracefully (module docs). Accept errors
/// (out of descriptors, a connection reset before it was accepted) are logged and served past.
pub(crate) async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: impl Future<Output = ()>) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "could not accept an HTTP connection");
                // Out of descriptors: give the open connections a moment to finish instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::warn!(
                max = limits.max_connections,
                "too many open HTTP connections; closing a new one (raise the descriptor budget or find the slow clients)"
            );
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::info!(grace = ?limits.shutdown_grace, "HTTP connections still open after the grace; dropping them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    fn short() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 2,
            shutdown_grace: Duration::from_millis(500),
        }
    }

    async fn start(limits: Limits) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, async move {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    /// Reads until the peer closes (or 3 s pass), returning what arrived.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_request_whose_headers_never_finish_is_cut_off() {
        let (addr, _stop, _server) = start(short()).await;
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        let answer = read_to_close(&mut half).await;
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(2), "closed after {waited:?}, not held open");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        // A whole request on a fresh connection is still served.
        let mut whole = TcpStream::connect(addr).await.unwrap();
        whole.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        assert!(read_to_close(&mut whole).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_the_cap_frees_up() {
        let (addr, _stop, _server) = start(Limits { header_read_timeout: Duration::from_secs(30), ..short() }).await;
        let first = TcpStream::connect(addr).await.unwrap();
        let second = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(read_to_close(&mut third).await, "", "the third connection is closed without an answer");
        drop((first, second));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        assert!(read_to_close(&mut fourth).await.starts_with("HTTP/1.1 200"), "a freed slot is used again");
    }

    #[tokio::test]
    async fn a_stop_is_not_held_up_by_a_quiet_connection() {
        let (addr, stop, server) = start(Limits { header_read_timeout: Duration::from_secs(30), ..short() }).await;
        let mut quiet = TcpStream::connect(addr).await.unwrap();
        quiet.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = tokio::time::Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), server).await.expect("stopped within its grace").unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
