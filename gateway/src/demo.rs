//! The built-in demo backend: small helpdesk and billing HTTP APIs with
//! sample data, so the shipped manifests do something real with no other
//! service running. It is an ordinary HTTP backend to the gateway (reached
//! through the HTTP connector like any other); it only lives in this binary
//! for convenience. Started by `tollgate serve` when the manifests declare a
//! `DemoBackend`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Debug)]
struct Data {
    tickets: BTreeMap<u32, Value>,
    invoices: BTreeMap<String, Value>,
    customers: BTreeMap<String, Value>,
    refunds: Vec<Value>,
}

type Shared = Arc<Mutex<Data>>;

fn sample() -> Data {
    let tickets = [
        (4521, "Customer charged twice for invoice INV-1042", "open", "cus_ana", "Ana Lima reports two identical charges of 40.00 EUR on her card for INV-1042."),
        (4522, "Cannot reset password", "open", "cus_ben", "Password reset e-mail never arrives."),
        (4523, "Invoice address wrong", "pending", "cus_chen", "Company name on INV-1051 should read Chen Trading Ltd."),
        (4524, "Refund request for cancelled plan", "open", "cus_dev", "Plan cancelled within 14 days; asks for a refund of INV-1060 (400.00 EUR)."),
    ]
    .into_iter()
    .map(|(id, subject, status, customer, body)| {
        (id, json!({ "id": id, "subject": subject, "status": status, "customer_id": customer, "body": body, "comments": [] }))
    })
    .collect();
    let invoices = [
        ("INV-1042", "cus_ana", 40.0, "paid_twice"),
        ("INV-1051", "cus_chen", 129.0, "paid"),
        ("INV-1060", "cus_dev", 400.0, "paid"),
    ]
    .into_iter()
    .map(|(id, customer, amount, status)| {
        (id.to_string(), json!({ "id": id, "customer_id": customer, "amount": amount, "currency": "EUR", "status": status, "refunded": 0.0 }))
    })
    .collect();
    let customers = [
        ("cus_ana", "Ana Lima"),
        ("cus_ben", "Ben Okafor"),
        ("cus_chen", "Chen Wei"),
        ("cus_dev", "Dev Patel"),
    ]
    .into_iter()
    .map(|(id, name)| (id.to_string(), json!({ "id": id, "name": name })))
    .collect();
    Data {
        tickets,
        invoices,
        customers,
        refunds: Vec::new(),
    }
}

fn not_found(what: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("{what} not found") })),
    )
}

/// The demo backend's routes, with fresh sample data.
pub fn router() -> Router {
    let state: Shared = Arc::new(Mutex::new(sample()));
    Router::new()
        .route("/helpdesk/tickets", get(search_tickets))
        .route("/helpdesk/tickets/{id}", get(get_ticket))
        .route("/helpdesk/tickets/{id}/comments", post(add_comment))
        .route("/helpdesk/tickets/{id}/close", post(close_ticket))
        .route("/billing/invoices/{id}", get(get_invoice))
        .route("/billing/refunds", post(refund))
        .route("/billing/customers/{id}", delete(delete_customer))
        .with_state(state)
}

/// Where a demo backend says which gateway it belongs to, so a second
/// gateway that finds the address taken can tell a sibling on the same data
/// directory (whose credentials this backend accepts: share it) from any
/// other program (refuse to start, with a clear reason).
pub const IDENTITY_PATH: &str = "/.well-known/tollgate-demo";

/// Serves the demo backend on `listener` until the task is dropped.
///
/// With `jwks_url` (the gateway's `/.well-known/jwks.json`), the backend
/// does what a real one should: it verifies every bearer credential it is
/// given against the gateway's published keys and refuses (401) one that
/// does not verify or names another backend as audience, logging what it
/// accepted. Requests without a credential (connectors declared without
/// `auth`) pass, so the examples that declare none keep working.
pub async fn serve(listener: TcpListener, jwks_url: Option<String>) -> std::io::Result<()> {
    serve_as(listener, jwks_url, None).await
}

/// [`serve`], answering [`IDENTITY_PATH`] with `{"instance": instance}`.
pub async fn serve_as(
    listener: TcpListener,
    jwks_url: Option<String>,
    instance: Option<String>,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = match jwks_url {
        Some(url) => {
            let verifier = Arc::new(Verifier {
                url,
                keys: tokio::sync::Mutex::new(None),
                http: reqwest::Client::new(),
            });
            router().layer(axum::middleware::from_fn_with_state(verifier, verify))
        }
        None => router(),
    };
    let app = match instance {
        Some(id) => app.route(
            IDENTITY_PATH,
            get(move || std::future::ready(Json(json!({ "instance": id })))),
        ),
        None => app,
    };
    axum::serve(listener, app).await
}

#[derive(Debug)]
struct Verifier {
    url: String,
    keys: tokio::sync::Mutex<Option<jsonwebtoken::jwk::JwkSet>>,
    http: reqwest::Client,
}

impl Verifier {
    async fn key(&self, kid: &str) -> Option<jsonwebtoken::DecodingKey> {
        let mut keys = self.keys.lock().await;
        let known = keys.as_ref().and_then(|k| k.find(kid)).is_some();
        if !known {
            // First use, or a rotation: fetch the published keys again.
            let fetched = async {
                self.http
                    .get(&self.url)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            *keys = fetched.or(keys.take());
        }
        keys.as_ref()
            .and_then(|k| k.find(kid))
            .and_then(|jwk| jsonwebtoken::DecodingKey::from_jwk(jwk).ok())
    }
}

async fn verify(
    State(v): State<Arc<Verifier>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(token) = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_string)
    else {
        return next.run(request).await;
    };
    let api = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let audience = format!("urn:tollgate:connector:{api}");
    let refuse = |why: &str| {
        tracing::warn!(backend = %api, why, "demo backend refused a credential");
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": format!("credential refused: {why}") })),
        )
            .into_response()
    };
    let Some(kid) = jsonwebtoken::decode_header(&token).ok().and_then(|h| h.kid) else {
        return refuse("not a signed JWT");
    };
    let Some(key) = v.key(&kid).await else {
        return refuse("signed with a key the gateway does not publish");
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[&audience]);
    match jsonwebtoken::decode::<Value>(&token, &key, &validation) {
        Ok(data) => {
            let c = data.claims;
            tracing::info!(
                backend = %api,
                agent = %c["sub"].as_str().unwrap_or(""),
                task = %c["tid"].as_str().unwrap_or("-"),
                scope = %c["scope"].as_str().unwrap_or(""),
                "demo backend verified a gateway-minted credential"
            );
            next.run(request).await
        }
        Err(e) => refuse(&e.to_string()),
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Data> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
    status: Option<String>,
}

async fn search_tickets(State(s): State<Shared>, Query(q): Query<Search>) -> Json<Value> {
    let data = lock(&s);
    let needle = q.q.unwrap_or_default().to_lowercase();
    let hits: Vec<Value> = data
        .tickets
        .values()
        .filter(|t| q.status.as_deref().is_none_or(|st| t["status"] == st))
        .filter(|t| {
            needle.is_empty()
                || t["subject"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&needle)
                || t["body"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&needle)
        })
        .map(|t| json!({ "id": t["id"], "subject": t["subject"], "status": t["status"] }))
        .collect();
    Json(json!({ "tickets": hits, "count": hits.len() }))
}

async fn get_ticket(
    State(s): State<Shared>,
    Path(id): Path<u32>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    lock(&s)
        .tickets
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| not_found("ticket"))
}

#[derive(Deserialize)]
struct Comment {
    body: String,
}

async fn add_comment(
    State(s): State<Shared>,
    Path(id): Path<u32>,
    Json(c): Json<Comment>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let mut data = lock(&s);
    let t = data
        .tickets
        .get_mut(&id)
        .ok_or_else(|| not_found("ticket"))?;
    let comment = json!({ "body": c.body });
    if let Some(list) = t["comments"].as_array_mut() {
        list.push(comment.clone());
    }
    Ok(Json(json!({ "ticket_id": id, "added": comment })))
}

#[derive(Deserialize)]
struct Close {
    resolution: String,
}

async fn close_ticket(
    State(s): State<Shared>,
    Path(id): Path<u32>,
    Json(c): Json<Close>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let mut data = lock(&s);
    let t = data
        .tickets
        .get_mut(&id)
        .ok_or_else(|| not_found("ticket"))?;
    t["status"] = json!("closed");
    t["resolution"] = json!(c.resolution);
    Ok(Json(t.clone()))
}

async fn get_invoice(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    lock(&s)
        .invoices
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| not_found("invoice"))
}

#[derive(Deserialize)]
struct Refund {
    invoice_id: String,
    amount: f64,
    currency: String,
    reason: String,
}

async fn refund(
    State(s): State<Shared>,
    Json(r): Json<Refund>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let mut data = lock(&s);
    let inv = data
        .invoices
        .get_mut(&r.invoice_id)
        .ok_or_else(|| not_found("invoice"))?;
    let amount = inv["amount"].as_f64().unwrap_or(0.0);
    let refunded = inv["refunded"].as_f64().unwrap_or(0.0);
    if r.currency != inv["currency"] {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "currency does not match the invoice" })),
        ));
    }
    if r.amount <= 0.0 || refunded + r.amount > amount + 1e-9 {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({ "error": format!("refund would exceed the invoice amount ({amount:.2}, already refunded {refunded:.2})") }),
            ),
        ));
    }
    inv["refunded"] = json!(refunded + r.amount);
    let refund = json!({
        "refund_id": format!("RF-{}", 7000 + data.refunds.len()),
        "invoice_id": r.invoice_id, "amount": r.amount, "currency": r.currency, "reason": r.reason, "status": "issued",
    });
    data.refunds.push(refund.clone());
    Ok(Json(refund))
}

async fn delete_customer(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    lock(&s)
        .customers
        .remove(&id)
        .map(|c| Json(json!({ "deleted": c })))
        .ok_or_else(|| not_found("customer"))
}
