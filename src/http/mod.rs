//! The optional HTTP listener (`[http] bind`): Prometheus metrics at `/metrics`,
//! a liveness check at `/health`, the admin API under `/api/v1/` (see `api.rs`)
//! and a dashboard at `/` that reads that API, served by axum on the broker's own
//! runtime.
//!
//! Nothing here is on the MQTT hot path: a scrape reads the broker's atomic
//! counters and takes the same short read locks as a `$SYS` refresh.

mod api;
mod prometheus;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// The dashboard, compiled into the binary: no CDN, no build step at install time.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");

/// What the admin API needs besides the broker.
pub struct Admin {
    /// The bearer token; `None` turns the API (and so the dashboard) off.
    pub token: Option<String>,
    /// Reloads certificates and auth files, as SIGHUP does; `Err` lists what failed.
    pub reload: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// The routes, over `broker`.
pub fn router(broker: Arc<Broker>, admin: Admin) -> Router {
    let registry = Arc::new(prometheus::registry(broker.clone()));
    Router::new()
        .nest("/api/v1", api::router(broker, admin))
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    DASHBOARD_HTML,
                )
            }),
        )
        .route(
            "/dashboard.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    DASHBOARD_JS,
                )
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { metrics(&registry) }
            }),
        )
}

/// Serves until `shutdown`, then lets requests in progress finish; `hard_stop`
/// drops whatever is left (a scraper that does not read).
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    admin: Admin,
    (shutdown, hard_stop): (CancellationToken, CancellationToken),
) {
    let server = axum::serve(listener, router(broker, admin))
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    tokio::select! {
        served = server => if let Err(error) = served {
            tracing::error!(%error, "the HTTP listener failed");
        },
        () = hard_stop.cancelled() => {}
    }
}

fn metrics(registry: &prometheus_client::registry::Registry) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "could not encode the metrics\n".to_string(),
        ),
    }
}
