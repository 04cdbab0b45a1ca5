//! The admin API under `/api/v1/`: JSON in and out, a bearer token
//! (`[http] admin_token`) on every request, and JSON errors with the right status
//! for bad input. Without an `admin_token` the API is off (403), so that turning
//! on `/metrics` never opens it by accident.
//!
//! | route | does |
//! |---|---|
//! | `GET /api/v1/stats` | the dashboard's counters: clients, subscriptions, retained, publish totals, uptime |
//! | `GET /api/v1/clients?search=` | connected clients: id, peer, listener, user, version, connected since, queued, subscriptions |
//! | `POST /api/v1/clients/{client_id}/kick` | disconnects a client (v5: DISCONNECT 0x98 Administrative action) |
//! | `GET /api/v1/sessions` | every session, online or not, with its queue length |
//! | `DELETE /api/v1/sessions/{client_id}` | deletes an offline session (409 if it is online) |
//! | `GET /api/v1/retained?filter=` | retained messages matching a filter (default `#`) |
//! | `DELETE /api/v1/retained?filter=` | clears them (as an empty retained PUBLISH would) |
//! | `POST /api/v1/publish` | `{"topic", "payload", "qos", "retain"}` |
//! | `POST /api/v1/reload` | reloads certificates, CRL, password and ACL files, as SIGHUP does (422 lists what failed; the rest keeps its previous version) |

use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::broker::message::Message;
use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::protocol::{ClientId, Properties, QoS, TopicFilter, TopicName};

/// Largest request body accepted; a publish bigger than this is not an admin task.
const MAX_BODY: usize = 64 * 1024;

/// A JSON error: `{"error": "..."}` with a status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The routes, behind the token check.
pub(super) fn router(broker: Arc<Broker>, admin: super::Admin) -> Router {
    let token = Arc::new(admin.token);
    let reload = Arc::new(admin.reload);
    let started = Instant::now();
    Router::new()
        .route(
            "/reload",
            post(move || async move {
                match reload() {
                    Ok(()) => Ok(Json(json!({ "reloaded": true }))),
                    Err(error) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, error)),
                }
            }),
        )
        .route(
            "/stats",
            get(move |State(broker): State<Arc<Broker>>| async move { stats(&broker, started) }),
        )
        .route("/clients", get(clients))
        .route("/clients/{client_id}/kick", post(kick))
        .route("/sessions", get(sessions))
        .route("/sessions/{client_id}", delete(delete_session))
        .route("/retained", get(retained).delete(delete_retained))
        .route("/publish", post(publish))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(move |request, next| {
            authorize(token.clone(), request, next)
        }))
        .with_state(broker)
}

/// Lets a request through only with `Authorization: Bearer <admin_token>`,
/// compared in constant time.
async fn authorize(token: Arc<Option<String>>, request: Request, next: Next) -> Response {
    let Some(token) = token.as_deref() else {
        let message = "the admin API is off: set http.admin_token";
        return ApiError(StatusCode::FORBIDDEN, message.into()).into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let is_valid = presented.is_some_and(|presented| {
        subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), token.as_bytes()).into()
    });
    if !is_valid {
        let mut response = ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    next.run(request).await
}

fn stats(broker: &Broker, started: Instant) -> Json<Value> {
    let metrics = broker.metrics();
    let get = Metrics::get;
    let census = broker.census();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": started.elapsed().as_secs(),
        "clients_connected": census.online,
        "clients_disconnected": census.offline,
        "subscriptions": broker.subscription_count(),
        "retained": broker.retained_census().0,
        "publish_received": get(&metrics.messages_received),
        "publish_sent": get(&metrics.messages_sent),
        "publish_dropped": metrics.deliveries_dropped(),
        "bytes_received": get(&metrics.bytes_received),
        "bytes_sent": get(&metrics.bytes_sent),
    }))
}

#[derive(Deserialize)]
struct Search {
    search: Option<String>,
}

async fn clients(
    State(broker): State<Arc<Broker>>,
    query: Result<Query<Search>, QueryRejection>,
) -> ApiResult {
    let Query(search) = query?;
    let queued: std::collections::HashMap<ClientId, usize> = broker
        .sessions()
        .into_iter()
        .map(|(client_id, _, queued)| (client_id, queued))
        .collect();
    let mut clients: Vec<Value> = broker
        .directory()
        .list()
        .into_iter()
        .filter(|(client_id, info)| match &search.search {
            Some(needle) => {
                client_id.as_str().contains(needle.as_str())
                    || info
                        .username
                        .as_deref()
                        .is_some_and(|user| user.contains(needle.as_str()))
            }
            None => true,
        })
        .map(|(client_id, info)| {
            let since = info
                .connected_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            json!({
                "client_id": client_id.as_str(),
                "peer": info.peer.map(|peer| peer.to_string()),
                "listener": &*info.listener,
                "username": info.username,
                "version": info.version,
                "connected_since": since,
                "queued": queued.get(&client_id).copied().unwrap_or(0),
                "subscriptions": broker.subscriptions_of(&client_id),
            })
        })
        .collect();
    clients.sort_by(|a, b| a["client_id"].as_str().cmp(&b["client_id"].as_str()));
    Ok(Json(json!({ "clients": clients })))
}

async fn kick(State(broker): State<Arc<Broker>>, Path(client_id): Path<String>) -> ApiResult {
    let client_id = ClientId::new(client_id);
    if !broker.kick(&client_id) {
        let message = format!("client {client_id} is not connected");
        return Err(ApiError(StatusCode::NOT_FOUND, message));
    }
    tracing::info!(client_id = %client_id, "kick requested through the admin API");
    Ok(Json(json!({ "kicked": client_id.as_str() })))
}

async fn sessions(State(broker): State<Arc<Broker>>) -> ApiResult {
    let mut sessions: Vec<Value> = broker
        .sessions()
        .into_iter()
        .map(|(client_id, is_online, queued)| {
            json!({ "client_id": client_id.as_str(), "online": is_online, "queued": queued })
        })
        .collect();
    sessions.sort_by(|a, b| a["client_id"].as_str().cmp(&b["client_id"].as_str()));
    Ok(Json(json!({ "sessions": sessions })))
}

async fn delete_session(
    State(broker): State<Arc<Broker>>,
    Path(client_id): Path<String>,
) -> ApiResult {
    let client_id = ClientId::new(client_id);
    if broker
        .directory()
        .list()
        .iter()
        .any(|(id, _)| *id == client_id)
    {
        let message = format!("client {client_id} is connected");
        return Err(ApiError(StatusCode::CONFLICT, message));
    }
    match broker.delete_offline_session(&client_id) {
        Ok(true) => Ok(Json(json!({ "deleted": client_id.as_str() }))),
        Ok(false) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no offline session {client_id}"),
        )),
        Err(error) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string(),
        )),
    }
}

#[derive(Deserialize)]
struct FilterQuery {
    filter: Option<String>,
}

fn parse_filter(
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> Result<TopicFilter, ApiError> {
    let Query(query) = query?;
    let text = query.filter.unwrap_or_else(|| "#".to_string());
    TopicFilter::new(text.clone())
        .map_err(|error| ApiError(StatusCode::BAD_REQUEST, format!("filter {text:?}: {error}")))
}

async fn retained(
    State(broker): State<Arc<Broker>>,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> ApiResult {
    let filter = parse_filter(query)?;
    let mut messages: Vec<Value> = broker
        .retained_matching(&filter, Instant::now())
        .iter()
        .map(|message| {
            json!({
                "topic": message.topic.as_str(),
                "payload": String::from_utf8_lossy(&message.payload),
                "qos": message.qos as u8,
            })
        })
        .collect();
    messages.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    Ok(Json(json!({ "retained": messages })))
}

async fn delete_retained(
    State(broker): State<Arc<Broker>>,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> ApiResult {
    let filter = parse_filter(query)?;
    let publisher = ClientId::new("$admin");
    let mut deleted = 0;
    for message in broker.retained_matching(&filter, Instant::now()) {
        let clear = Message {
            topic: message.topic.clone(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
            expires_at: None,
        };
        broker
            .publish(&publisher, Arc::new(clear))
            .map_err(|error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
        deleted += 1;
    }
    Ok(Json(json!({ "deleted": deleted })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

async fn publish(
    State(broker): State<Arc<Broker>>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> ApiResult {
    let Json(request) = body?;
    let topic = TopicName::new(request.topic.clone()).map_err(|error| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("topic {:?}: {error}", request.topic),
        )
    })?;
    let qos = match request.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("qos {other}: must be 0, 1 or 2"),
            ))
        }
    };
    let message = Message {
        topic,
        payload: Bytes::from(request.payload),
        qos,
        retain: request.retain,
        properties: Properties::default(),
        expires_at: None,
    };
    let routed = broker
        .publish(&ClientId::new("$admin"), Arc::new(message))
        .map_err(|error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    Ok(Json(
        json!({ "matched": routed.matched, "dropped": routed.dropped }),
    ))
}
