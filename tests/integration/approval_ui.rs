//! The review page (`/ui`): a real rmcp client's call waits for approval
//! while an approver decides it on the page.
//!
//! - Over plain HTTP: the security headers on every response, the cookie
//!   flags, sign-in only from the page's own form, forms refused without
//!   their token or from another origin (and nothing changes), agent text
//!   escaped in the HTML, errors and unknown requests as pages, a denial
//!   through the form reaching the waiting call, and sessions ending on
//!   sign-out, on revocation of the key and after eight hours.
//! - In Debian's headless Chromium through chromedriver: redirected to
//!   sign in, the queue, the request with `<script>` in its arguments shown
//!   as text (no element injected), approve with a reason, and the waiting
//!   call runs once on the backend. Without Chromium or chromedriver that
//!   test says SKIPPED loudly (CI installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};
use tollgate::server::HttpOptions;
use tollgate::store::{ApprovalFilter, ApprovalRequest, ApprovalStatus, ApproverKeyRecord};
use tollgate_tests::{Backend, TestGateway, args, now};

/// What the agent puts in its arguments: markup that must stay text.
const HOSTILE: &str = "<script>alert(1)</script><b>x</b>";

/// An ops connector whose `run` tool needs the agent's business owner,
/// `ops-lead`, who is declared as an approver.
fn manifests(url: &str) -> String {
    format!(
        r#"kind: Connector
id: ops
description: Operations
owners:
  system: {{ name: ops-team, contact: ops@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http: {{ base_url: "{url}/api" }}
tools:
  - name: run
    description: Run an operations job
    risk: high
    input_schema:
      type: object
      properties:
        job: {{ type: string }}
        note: {{ type: string }}
      required: [job]
    http: {{ request: {{ method: POST, path: /run }} }}
---
kind: Agent
id: runner
description: Runs jobs
owners:
  business: {{ name: ops-lead, contact: lead@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [ops.run]
---
kind: Approver
id: ops-lead
name: Olivia Lead
contact: lead@example.com
roles: [operations]
"#
    )
}

const POLICY: &str = r#"
@id("jobs-need-the-business-owner")
@reason("jobs change production")
@approval("owner:business")
permit (principal == Agent::"runner", action == Action::"ops.run", resource);
"#;

async fn gateway(backend: &Backend) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ops.yaml"), manifests(&backend.url)).unwrap();
    std::fs::write(dir.path().join("ops.cedar"), POLICY).unwrap();
    let gw = TestGateway::start_dir(dir, HttpOptions::default()).await;
    gw.gw.approvals().set_timing(tollgate::approvals::Timing {
        poll: Duration::from_millis(50),
        progress: Duration::from_secs(1),
    });
    gw
}

/// Issues an approver credential as `tollgate approvers issue-key` does.
async fn approver_key(gw: &TestGateway, approver: &str) -> (String, String) {
    let k = tollgate::keys::generate(tollgate::approvals::APPROVER_KEY_PREFIX, "apk_");
    let record = ApproverKeyRecord {
        key_id: k.key_id.clone(),
        approver_id: approver.into(),
        label: Some("ui test".into()),
        created_at: now(),
        revoked_at: None,
    };
    gw.gw
        .store()
        .insert_approver_key(&record, &k.hash)
        .await
        .unwrap();
    (k.key, k.key_id)
}

/// Starts the agent's call in the background; it blocks on approval.
async fn waiting_call(gw: &TestGateway, job: &str) -> Call {
    // A high-risk tool is called within a task.
    let task = gw.start_task("runner", &["ops.run"], &[], 3600).await;
    let client = gw.client(&task.token).await;
    let params = CallToolRequestParams::new("ops.run")
        .with_arguments(args(json!({ "job": job, "note": HOSTILE })));
    tokio::spawn(async move {
        let r = client.call_tool(params).await;
        drop(client);
        r
    })
}

type Call = tokio::task::JoinHandle<Result<CallToolResult, rmcp::ServiceError>>;

/// The pending request for `job`, once the call has made it (10 s at most).
async fn pending_request(gw: &TestGateway, job: &str, call: &mut Call) -> ApprovalRequest {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if call.is_finished() {
            let r = call.await.unwrap();
            panic!("the call did not wait for approval: {r:?}");
        }
        let found = gw
            .gw
            .store()
            .approvals(&ApprovalFilter {
                statuses: vec![ApprovalStatus::Pending],
                ..ApprovalFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.arguments["job"] == job);
        if let Some(r) = found {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no approval request appeared for {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn finished(call: Call) -> CallToolResult {
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the waiting call did not finish within 30 s")
        .unwrap()
        .unwrap()
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

fn run_hits(backend: &Backend) -> Vec<Value> {
    backend
        .hits()
        .into_iter()
        .filter(|h| h.path == "/api/run")
        .map(|h| h.body.unwrap_or(Value::Null))
        .collect()
}

// ---- plain HTTP ------------------------------------------------------------

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The `Set-Cookie` line for cookie `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}"))
}

/// `name=value` of a `Set-Cookie` line.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

/// The hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..].split('"').next().unwrap().to_string()
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

fn assert_secure_headers(r: &reqwest::Response) {
    assert_eq!(
        header(r, "content-security-policy"),
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "{}",
        r.url()
    );
    assert_eq!(header(r, "x-frame-options"), "DENY");
    assert_eq!(header(r, "x-content-type-options"), "nosniff");
    assert_eq!(header(r, "referrer-policy"), "no-referrer");
    assert_eq!(header(r, "cache-control"), "no-store");
    assert!(header(r, "access-control-allow-origin").is_empty());
}

struct Page {
    base: String,
    http: reqwest::Client,
}

impl Page {
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.unwrap();
        assert_secure_headers(&r);
        r
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        body: String,
    ) -> reqwest::Response {
        let origin: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        self.post_with(path, cookie, &origin, body).await
    }

    async fn post_with(
        &self,
        path: &str,
        cookie: Option<&str>,
        headers: &[(&str, &str)],
        body: String,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.unwrap();
        assert_secure_headers(&r);
        r
    }

    /// Signs in with `key` through the form; the session cookie pair.
    async fn sign_in(&self, key: &str) -> String {
        let login = self.get("/ui/login", None).await;
        let cookie = pair(&set_cookie(&login, "tollgate_ui_login"));
        let csrf = csrf_of(&login.text().await.unwrap());
        let r = self
            .post(
                "/ui/login",
                Some(&cookie),
                Some(&self.base),
                form(&[("csrf", &csrf), ("key", key), ("next", "/ui")]),
            )
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(header(&r, "location"), "/ui");
        pair(&set_cookie(&r, "tollgate_ui"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_ui_headers_cookies_forgery_and_sessions() {
    let backend = Backend::start().await;
    let gw = gateway(&backend).await;
    let page = Page {
        base: format!("http://{}", gw.addr),
        http: http(),
    };
    let (key, key_id) = approver_key(&gw, "ops-lead").await;
    let mut call = waiting_call(&gw, "rotate-logs").await;
    let request = pending_request(&gw, "rotate-logs", &mut call).await;
    let request_path = format!("/ui/requests/{}", request.id);

    // Signed out: every page sends people to sign in, the headers are on
    // redirects, pages and the style sheet alike.
    let r = page.get("/ui", None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/ui/login");
    let r = page.get(&request_path, None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        header(&r, "location"),
        format!("/ui/login?{}", form(&[("next", request_path.as_str())]))
    );
    let r = page.get("/ui/", None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/ui");
    let r = page.get("/ui/style.css", None).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/css"));

    // The sign-in form comes with a cookie of its own, and its token only
    // works with that cookie, from this origin.
    let login = page.get("/ui/login", None).await;
    assert_eq!(login.status(), 200);
    assert!(header(&login, "content-type").starts_with("text/html"));
    let login_cookie = set_cookie(&login, "tollgate_ui_login");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(login_cookie.contains(flag), "{login_cookie}");
    }
    let login_pair = pair(&login_cookie);
    let login_html = login.text().await.unwrap();
    assert!(login_html.contains("method=\"post\" action=\"/ui/login\""));
    let csrf = csrf_of(&login_html);
    let sign_in = |cookie: Option<&str>, origin: Option<&str>, csrf: &str, key: &str| {
        let body = form(&[("csrf", csrf), ("key", key), ("next", "/ui")]);
        let cookie = cookie.map(str::to_string);
        let origin = origin.map(str::to_string);
        let page = &page;
        async move {
            page.post("/ui/login", cookie.as_deref(), origin.as_deref(), body)
                .await
        }
    };
    let r = sign_in(None, None, &csrf, &key).await;
    assert_eq!(r.status(), 403, "no login cookie");
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("tollgate_ui="))
    );
    let r = sign_in(Some(&login_pair), None, "00", &key).await;
    assert_eq!(r.status(), 403, "wrong token");
    let r = sign_in(Some(&login_pair), Some("http://evil.example"), &csrf, &key).await;
    assert_eq!(r.status(), 403, "foreign origin");
    let r = sign_in(
        Some(&login_pair),
        Some(&page.base),
        &csrf,
        "tgp_not-a-real-key",
    )
    .await;
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(body.contains("not valid"), "{body}");
    assert!(!body.contains("tgp_not-a-real-key"), "the key is echoed");

    // Signing in sets the session cookie: HttpOnly, SameSite=Strict,
    // Path=/ui, an expiry, not Secure on plain http.
    let r = sign_in(Some(&login_pair), Some(&page.base), &csrf, &key).await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/ui");
    let session_cookie = set_cookie(&r, "tollgate_ui");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(session_cookie.contains(flag), "{session_cookie}");
    }
    assert!(!session_cookie.contains("Secure"), "{session_cookie}");
    assert!(!session_cookie.contains(&key), "the key is in the cookie");
    assert!(session_cookie.contains(&key_id), "{session_cookie}");
    let session = pair(&session_cookie);

    // The queue lists the request; the agent's markup is escaped.
    let r = page.get("/ui", Some(&session)).await;
    assert_eq!(r.status(), 200);
    let queue = r.text().await.unwrap();
    assert!(queue.contains(&request.id), "{queue}");
    assert!(
        queue.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;"),
        "{queue}"
    );
    assert!(!queue.contains("<script"), "{queue}");
    assert!(!queue.contains("<b>"), "{queue}");
    assert!(queue.contains("jobs change production"), "{queue}");
    assert!(queue.contains("0 of 1 required"), "{queue}");
    let r = page.get("/ui?status=bogus", Some(&session)).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown status filter"));
    let r = page
        .get("/ui?status=decided&agent=runner", Some(&session))
        .await;
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains(&request.id));

    let r = page.get(&request_path, Some(&session)).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("name=\"for_task\""), "a task: approve for it");
    let token = csrf_of(&html);

    // Forms without their token, with another session's token or from
    // another origin are refused, and nothing changes.
    let deny = format!("{request_path}/deny");
    let r = page
        .post(&deny, Some(&session), None, form(&[("reason", "no")]))
        .await;
    assert_eq!(r.status(), 403);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let r = page
        .post(
            &deny,
            Some(&session),
            None,
            form(&[("csrf", &"0".repeat(64)), ("reason", "no")]),
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = page
        .post(
            &deny,
            Some(&session),
            Some("http://127.0.0.1:1"),
            form(&[("csrf", &token), ("reason", "no")]),
        )
        .await;
    assert_eq!(r.status(), 403);
    // `Origin: null` (what the page's no-referrer policy makes browsers
    // send) passes only when the browser says the post is same-origin.
    for headers in [
        &[("origin", "null")][..],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[("origin", "null"), ("sec-fetch-site", "same-site")],
        &[
            ("origin", page.base.as_str()),
            ("sec-fetch-site", "same-site"),
        ],
    ] {
        let r = page
            .post_with(
                &deny,
                Some(&session),
                headers,
                form(&[("csrf", &token), ("reason", "no")]),
            )
            .await;
        assert_eq!(r.status(), 403, "{headers:?}");
    }
    let r = page
        .post(
            &deny,
            None,
            None,
            form(&[("csrf", &token), ("reason", "no")]),
        )
        .await;
    assert_eq!(r.status(), 303, "no session: sign in");
    let current = gw.gw.store().approval(&request.id).await.unwrap().unwrap();
    assert_eq!(current.status, ApprovalStatus::Pending);
    assert!(
        gw.gw
            .store()
            .approval_votes(&request.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!call.is_finished());

    // What `decide` refuses is said on the page, in words.
    let r = page
        .post(
            &format!("{request_path}/approve"),
            Some(&session),
            Some(&page.base),
            form(&[("csrf", &token), ("reason", "ok"), ("args", "{not json")]),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("not valid JSON"), "{body}");
    assert!(body.contains("{not json"), "what they typed is kept");
    let r = page
        .post(
            &format!("{request_path}/approve"),
            Some(&session),
            Some(&page.base),
            form(&[
                ("csrf", &token),
                ("reason", "ok"),
                ("args", r#"{"job": "rotate-logs", "extra": 1}"#),
            ]),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("is not an argument of"));
    let r = page
        .post(
            &deny,
            Some(&session),
            Some(&page.base),
            form(&[("csrf", &token), ("reason", "  ")]),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("a reason is required"));
    let r = page
        .get("/ui/requests/no-such-request", Some(&session))
        .await;
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let r = page.get("/ui/nowhere", Some(&session)).await;
    assert_eq!(r.status(), 404);
    assert!(header(&r, "content-type").starts_with("text/html"));

    // A denial through the form: 303 back with a message; the waiting call
    // is refused with the reason, and nothing reaches the backend.
    let r = page
        .post(
            &deny,
            Some(&session),
            Some(&page.base),
            form(&[("csrf", &token), ("reason", "not during the freeze")]),
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        header(&r, "location"),
        format!("{request_path}?flash=denied")
    );
    let result = finished(call).await;
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).contains("not during the freeze"),
        "{}",
        text(&result)
    );
    assert!(run_hits(&backend).is_empty());
    let r = page
        .get(&format!("{request_path}?flash=denied"), Some(&session))
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("You denied the request"), "{html}");
    assert!(html.contains("You cannot decide this request"), "{html}");
    let r = page.get("/ui?status=decided", Some(&session)).await;
    assert!(r.text().await.unwrap().contains(&request.id));
    // Deciding again is refused in words, not with a 500.
    let r = page
        .post(
            &deny,
            Some(&session),
            Some(&page.base),
            form(&[("csrf", &token), ("reason", "again")]),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("already denied"));

    // Signing out clears the cookie.
    let r = page
        .post(
            "/ui/logout",
            Some(&session),
            Some(&page.base),
            form(&[("csrf", &token)]),
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/ui/login?flash=signed-out");
    let cleared = set_cookie(&r, "tollgate_ui");
    assert!(cleared.starts_with("tollgate_ui=;") && cleared.contains("Max-Age=0"));

    // Revoking the key ends its sessions at once.
    let second = page.sign_in(&key).await;
    assert_eq!(page.get("/ui", Some(&second)).await.status(), 200);
    assert!(
        gw.gw
            .store()
            .revoke_approver_key(&key_id, &now())
            .await
            .unwrap()
    );
    let r = page.get("/ui", Some(&second)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/ui/login?flash=ended");

    // A session lasts eight hours by the gateway's clock.
    let (key2, _) = approver_key(&gw, "ops-lead").await;
    let third = page.sign_in(&key2).await;
    gw.clock.advance(Duration::from_secs(7 * 3600));
    assert_eq!(page.get("/ui", Some(&third)).await.status(), 200);
    gw.clock.advance(Duration::from_secs(3600 + 1));
    let r = page.get("/ui", Some(&third)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/ui/login?flash=ended");
    // A forged or tampered cookie is no session.
    let forged = third.replace("apk_", "apk_0");
    assert_eq!(page.get("/ui", Some(&forged)).await.status(), 303);
}

// ---- the browser -----------------------------------------------------------

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

/// chromedriver on a free port. Dropped, it is asked to shut down (which
/// ends any browser it still runs), then killed if it has not.
struct Driver {
    child: Child,
    port: u16,
    url: String,
    _profile: tempfile::TempDir,
    profile: PathBuf,
}

impl Driver {
    async fn start(binary: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let driver = Self {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            profile: profile.path().to_path_buf(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{}/status", driver.url))
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if let Some(r) = ready {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        use std::io::Write;
        // chromedriver's own `/shutdown` closes its browsers too.
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = write!(
                stream,
                "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.port
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn approval_ui_in_a_real_browser() {
    let Some(driver_bin) = chromedriver().filter(|_| Path::new(CHROMIUM).is_file()) else {
        eprintln!(
            "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             SKIPPED: approval_ui_in_a_real_browser needs {CHROMIUM} and chromedriver\n\
             (apt-get install chromium chromium-driver); the review page was NOT\n\
             tested in a browser.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    };
    let backend = Backend::start().await;
    let gw = gateway(&backend).await;
    let (key, _) = approver_key(&gw, "ops-lead").await;
    let mut call = waiting_call(&gw, "restart-cache").await;
    let request = pending_request(&gw, "restart-cache", &mut call).await;

    let driver = Driver::start(&driver_bin).await;
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--password-store=basic", "--window-size=1280,1024",
                format!("--user-data-dir={}", driver.profile.display()),
            ],
        },
    });
    let browser = tokio::time::timeout(
        Duration::from_secs(60),
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&driver.url),
    )
    .await
    .expect("no browser session within 60 s")
    .unwrap();
    let base = format!("http://{}", gw.addr);
    let flow = browse(&browser, &base, &key, &request).await;
    let seen = match &flow {
        Ok(()) => String::new(),
        Err(_) => format!(
            "at {:?}:\n{}",
            browser.current_url().await.map(|u| u.to_string()),
            browser.source().await.unwrap_or_default()
        ),
    };
    // Close the browser before judging, so a failure leaves nothing behind.
    let _ = browser.close().await;
    if let Err(e) = flow {
        panic!("{e:#}\nthe browser was {seen}");
    }

    let result = finished(call).await;
    assert_eq!(result.is_error, Some(false), "{}", text(&result));
    let hits = run_hits(&backend);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["job"], "restart-cache");
    assert_eq!(hits[0]["note"], HOSTILE);
    let decided = gw.gw.store().approval(&request.id).await.unwrap().unwrap();
    assert_eq!(decided.status, ApprovalStatus::Used);
    let votes = gw.gw.store().approval_votes(&request.id).await.unwrap();
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].approver_id, "ops-lead");
    assert_eq!(votes[0].reason, "checked the job with the on-call engineer");
    drop(driver);
}

/// The approver's steps in the browser; every wait bounded. After each
/// click the flow waits for the next page's address, so nothing is read
/// from the page being left.
async fn browse(
    b: &fantoccini::Client,
    base: &str,
    key: &str,
    request: &ApprovalRequest,
) -> anyhow::Result<()> {
    use anyhow::{Context, ensure};
    let wait = Duration::from_secs(20);
    let find = |css: &'static str| async move {
        b.wait()
            .at_most(wait)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no `{css}` within {wait:?}"))
    };
    let arrive = |path: String| async move {
        let url = reqwest::Url::parse(&format!("{base}{path}"))?;
        b.wait()
            .at_most(wait)
            .for_url(&url)
            .await
            .with_context(|| format!("not at {url} within {wait:?}"))
    };
    let request_path = format!("/ui/requests/{}", request.id);

    // Signed out: the queue sends us to sign in.
    b.goto(&format!("{base}/ui")).await?;
    arrive("/ui/login".into()).await?;
    find("#key").await?.send_keys(key).await?;
    find("form.login button[type=submit]")
        .await?
        .click()
        .await?;

    // The queue, with the request.
    arrive("/ui".into()).await?;
    find("ol.queue").await?;
    let main = find("main").await?.text().await?;
    ensure!(main.contains("restart-cache"), "queue: {main}");
    ensure!(main.contains(HOSTILE), "queue shows the arguments: {main}");
    ensure!(
        main.contains("business: ops-lead"),
        "the agent's owners: {main}"
    );
    let link = format!("a[href=\"{request_path}\"]");
    b.find(Locator::Css(&link)).await?.click().await?;

    // The request: the markup is text, no element was injected.
    arrive(request_path.clone()).await?;
    let main = find("main").await?.text().await?;
    ensure!(main.contains("<script>alert(1)</script>"), "page: {main}");
    ensure!(main.contains(HOSTILE), "page: {main}");
    ensure!(
        main.contains("jobs-need-the-business-owner"),
        "policy: {main}"
    );
    ensure!(main.contains("jobs change production"), "reason: {main}");
    ensure!(main.contains("0 of 1 required"), "quorum: {main}");
    ensure!(
        main.contains("ops-lead (route owner:business)"),
        "approvers: {main}"
    );
    ensure!(main.contains("Deadline"), "deadline: {main}");
    ensure!(
        main.contains("integration test"),
        "the task's purpose: {main}"
    );
    ensure!(
        b.find_all(Locator::Css("script")).await?.is_empty(),
        "a script element"
    );
    ensure!(
        b.find_all(Locator::Css("b")).await?.is_empty(),
        "an injected <b>"
    );
    // Within a task, "approve for this task" is offered; left unticked, the
    // approval is for this one call.
    ensure!(
        !find("#for-task").await?.is_selected().await?,
        "approve for the task is ticked by default"
    );
    let args = find("#approve-args")
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    ensure!(args.contains(HOSTILE), "the arguments box: {args}");

    // Approve with a reason: back on the request, with the news.
    find("#approve-reason")
        .await?
        .send_keys("checked the job with the on-call engineer")
        .await?;
    find("button.approve").await?.click().await?;
    arrive(format!("{request_path}?flash=approved")).await?;
    let notice = find("p.notice").await?.text().await?;
    ensure!(notice.contains("approved"), "notice: {notice}");

    // Sign out: back to the sign-in form, and the queue needs it again.
    find("form.logout button").await?.click().await?;
    arrive("/ui/login?flash=signed-out".into()).await?;
    let notice = find("p.notice").await?.text().await?;
    ensure!(notice.contains("signed out"), "notice: {notice}");
    b.goto(&format!("{base}/ui")).await?;
    arrive("/ui/login".into()).await?;
    find("form.login").await?;
    Ok(())
}
