//! One HTTP port: `/metrics` (Prometheus text format), `/healthz` (the process is up),
//! `/readyz` (every pipeline's tables are open and it owns partitions).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::error::{IngestError, Result};
use crate::ingestor::Health;

/// Binds `addr` and serves until the process ends; returns the bound address (port 0 picks
/// a free one).
pub async fn serve(addr: SocketAddr, health: Vec<Arc<Health>>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| IngestError::Http {
            port: addr.port(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| IngestError::Http {
        port: addr.port(),
        source,
    })?;
    let health = Arc::new(health);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let health = health.clone();
                    async move { Ok::<_, Infallible>(route(&req, &health)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, "http connection");
                }
            });
        }
    });
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(req: &Request<Incoming>, health: &[Arc<Health>]) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            finlake_core::telemetry::Metrics::global().render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let ready = !health.is_empty()
                && health
                    .iter()
                    .all(|h| h.started.load(Ordering::SeqCst) && h.assigned.load(Ordering::SeqCst));
            if ready {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: tables opening or no partitions assigned\n".into(),
                    "text/plain",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}
