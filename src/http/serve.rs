//! Serving the router over HTTP/1.1 with hyper directly, for what `axum::serve` does not offer:
//! read timeouts and a shutdown deadline.
//!
//! A connection moves through three phases. **Idle**: between requests; closed when nothing
//! arrives for `idle_timeout`. **Head**: from the first byte of a request until its headers are
//! parsed; closed when that takes longer than `header_read_timeout` in all, so dripping a byte a
//! second does not keep it open. **Busy**: the request is being answered; its body must arrive
//! within `body_read_timeout` in all, after which the connection is dropped without an answer.
//! The first two are enforced on the socket (`Watched`), the third before routing.
//! A body over the 1 MiB limit is read only up to one byte past it, and the router's limit
//! answers 413.
//!
//! On shutdown, listening stops, idle connections close, requests in flight finish, and any
//! connection still open after `shutdown_deadline` is dropped.

use super::idempotency::BODY_BYTES_MAX;
use crate::config::ConnectionLimits;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::Service;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// The phase of one connection, shared by its socket and its service.
#[derive(Default)]
struct Phase {
    now: AtomicU8,
    /// The connection's task, parked on a read while busy. hyper does not read again after
    /// writing an answer until the socket wakes it, so the end of a request wakes it instead,
    /// to start the idle clock.
    parked: Mutex<Option<Waker>>,
}

impl Phase {
    fn get(&self) -> u8 {
        self.now.load(Ordering::Acquire)
    }

    fn set(&self, phase: u8) {
        self.now.store(phase, Ordering::Release);
    }

    fn done(&self) {
        self.set(IDLE);
        if let Some(waker) = self.parked.lock().expect("phase lock").take() {
            waker.wake();
        }
    }

    fn park(&self, waker: &Waker) {
        *self.parked.lock().expect("phase lock") = Some(waker.clone());
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains as described above.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let app = app.clone();
                    connections.spawn(connection(stream, peer, app, limits, stop_rx.clone()));
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open,
            still_open = connections.len(),
            deadline_s = limits.shutdown_deadline.as_secs_f64(),
            "shutdown deadline passed: dropping the connections still open"
        );
        connections.shutdown().await;
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // An answer goes out whole as soon as it is written, not held back for the client's ACK of
    // the one before.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "setting TCP_NODELAY failed");
    }
    let phase = Arc::new(Phase::default());
    let io = TokioIo::new(Watched::new(stream, phase.clone(), limits));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        phase.set(BUSY);
        let mut app = app.clone();
        let phase = phase.clone();
        async move {
            let response = answer(&mut app, request, peer, limits.body_read_timeout).await;
            phase.done();
            response
        }
    });
    // hyper's own header timeout would count from the moment it waits for a request, idle
    // time included; `Watched` counts from the request's first byte instead.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection closed");
    }
}

/// Completes once shutdown starts (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Why a request was dropped without an answer.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error("reading the request body failed: {0}")]
    Body(axum::Error),
}

/// Reads the whole body within the deadline (every route takes at most 1 MiB and reads all of
/// it anyway), then routes the request.
async fn answer(
    app: &mut Router,
    request: Request<Incoming>,
    peer: SocketAddr,
    body_read_timeout: Duration,
) -> Result<Response<Body>, Dropped> {
    let (mut parts, body) = request.into_parts();
    let read = read_body(body, BODY_BYTES_MAX);
    let bytes = match tokio::time::timeout(body_read_timeout, read).await {
        Err(_) => return Err(Dropped::BodyTimeout(body_read_timeout)),
        Ok(Err(error)) => return Err(Dropped::Body(error)),
        Ok(Ok(bytes)) => bytes,
    };
    parts.extensions.insert(ConnectInfo(peer));
    let request = Request::from_parts(parts, Body::from(bytes));
    match app.call(request).await {
        Ok(response) => Ok(response),
        Err(never) => match never {},
    }
}

/// The body, or its first `max + 1` bytes if it is longer: enough for the router's body limit to
/// refuse it with a 413 in the API's shape (and its request id), without holding more.
async fn read_body(body: Incoming, max: usize) -> Result<axum::body::Bytes, axum::Error> {
    use http_body_util::BodyExt;
    let mut body = Body::new(body);
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let room = (max + 1).saturating_sub(bytes.len());
            bytes.extend_from_slice(&data[..data.len().min(room)]);
            if bytes.len() > max {
                break;
            }
        }
    }
    Ok(bytes.into())
}

/// A socket that enforces the idle and header deadlines of its connection's phase.
struct Watched {
    stream: TcpStream,
    phase: Arc<Phase>,
    limits: ConnectionLimits,
    /// The deadline being enforced and the phase it is for.
    armed: Option<(u8, Instant)>,
    sleep: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(stream: TcpStream, phase: Arc<Phase>, limits: ConnectionLimits) -> Watched {
        Watched {
            stream,
            phase,
            limits,
            armed: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// The deadline of the current phase, set when the phase is first seen.
    fn deadline(&mut self) -> Option<Instant> {
        let phase = self.phase.get();
        let limit = match phase {
            IDLE => self.limits.idle_timeout,
            HEAD => self.limits.header_read_timeout,
            _ => {
                self.armed = None;
                return None;
            }
        };
        match self.armed {
            Some((armed, at)) if armed == phase => Some(at),
            _ => {
                let at = Instant::now() + limit;
                self.armed = Some((phase, at));
                self.sleep.as_mut().reset(at);
                Some(at)
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // The first bytes after an answer start the next request's header clock.
                if buf.filled().len() > before
                    && this
                        .phase
                        .now
                        .compare_exchange(IDLE, HEAD, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    this.armed = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.deadline().is_none() {
                    this.phase.park(cx.waker());
                    // The request may have ended between reading the phase and parking.
                    if this.phase.get() == BUSY {
                        return Poll::Pending;
                    }
                }
                if this.deadline().is_some() {
                    ready!(this.sleep.as_mut().poll(cx));
                    let what = if this.phase.get() == IDLE {
                        "idle"
                    } else {
                        "reading headers"
                    };
                    tracing::debug!(what, "closing a connection at its deadline");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
