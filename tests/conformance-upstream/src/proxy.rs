//! `--proxy-to URL`: a pass-through HTTP proxy that adds
//! `Authorization: Bearer $TOLLGATE_AGENT_KEY` to every request. The
//! conformance suite cannot send headers of its own, and Tollgate refuses
//! every unauthenticated request: this lets the suite run through the
//! gateway as an agent. Responses (SSE included) are streamed back as they
//! come; the `Host` header is passed on as the suite sent it, so the
//! gateway's DNS-rebinding check sees what the suite meant it to.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

#[derive(Clone)]
struct Proxy {
    target: String,
    bearer: String,
    client: reqwest::Client,
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    match forward_inner(&p, req).await {
        Ok(r) => r,
        Err(e) => Response::builder()
            .status(502)
            .body(Body::from(format!("proxy: {e:#}")))
            .unwrap_or_default(),
    }
}

async fn forward_inner(p: &Proxy, req: Request) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await?;
    let path = parts
        .uri
        .path_and_query()
        .map(|x| x.as_str())
        .unwrap_or("/");
    let mut out = p
        .client
        .request(parts.method.clone(), format!("{}{path}", p.target))
        .body(body);
    for (name, value) in &parts.headers {
        if name == "authorization" || name == "content-length" || name == "connection" {
            continue;
        }
        out = out.header(name, value);
    }
    out = out.header("authorization", format!("Bearer {}", p.bearer));
    let resp = out.send().await.context("the gateway did not answer")?;
    let mut builder = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if name == "content-length" || name == "transfer-encoding" || name == "connection" {
            continue;
        }
        builder = builder.header(name, value);
    }
    Ok(builder.body(Body::from_stream(resp.bytes_stream()))?)
}

/// Serves the proxy on `listen`, forwarding to `target` (scheme, host and
/// port; paths are kept).
pub async fn serve(listen: SocketAddr, target: String) -> anyhow::Result<()> {
    let bearer = std::env::var("TOLLGATE_AGENT_KEY")
        .context("--proxy-to needs the agent key in TOLLGATE_AGENT_KEY")?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()?;
    let target = target.trim_end_matches('/').to_string();
    let app = axum::Router::new().fallback(forward).with_state(Proxy {
        target,
        bearer,
        client,
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}/mcp")?;
    stdout.flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}
