//! The form POST both OAuth kinds send to a token endpoint, and the answer
//! they read back. Client secrets and tokens stay wrapped in
//! [`SecretString`] so no `Debug` shows them.

use serde::Deserialize;

use super::BrokerError;
use crate::Gateway;
use crate::manifest::types::ClientAuthMethod;
use crate::secrets::SecretString;

/// How the gateway authenticates to a token or revocation endpoint.
#[derive(Debug, Clone)]
pub(super) struct ClientAuth {
    pub(super) id: String,
    pub(super) secret: SecretString,
    pub(super) method: ClientAuthMethod,
}

/// A token endpoint's successful answer.
#[derive(Debug, Deserialize)]
pub(super) struct TokenAnswer {
    pub(super) access_token: SecretString,
    #[serde(default)]
    pub(super) expires_in: Option<u64>,
    #[serde(default)]
    pub(super) scope: Option<String>,
}

/// POSTs `form` to the token endpoint at `url`.
pub(super) async fn request(
    gw: &Gateway,
    connector: &str,
    url: &str,
    mut form: Vec<(String, String)>,
    client: Option<&ClientAuth>,
) -> Result<TokenAnswer, BrokerError> {
    let fail = |why: String| BrokerError::TokenEndpoint {
        connector: connector.to_string(),
        why,
    };
    let request = gw
        .broker
        .http
        .post(url)
        .header(http::header::ACCEPT, "application/json");
    let response = form_post(request, &mut form, client)
        .map_err(|e| fail(e.to_string()))?
        .send()
        .await
        .map_err(|e| {
            fail(if e.is_timeout() {
                "timed out".into()
            } else {
                "unreachable".into()
            })
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|_| fail("the answer was cut off".into()))?;
    if !status.is_success() {
        // Only the OAuth error code: descriptions may echo request data.
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| "no error code".into());
        return Err(fail(format!("HTTP {} ({code})", status.as_u16())));
    }
    serde_json::from_slice(&bytes).map_err(|_| fail("the answer is not a token response".into()))
}

/// A form POST to a token or revocation endpoint, with the client's
/// authentication (HTTP Basic, or form fields) applied.
pub(super) fn form_post(
    mut request: reqwest::RequestBuilder,
    form: &mut Vec<(String, String)>,
    client: Option<&ClientAuth>,
) -> Result<reqwest::RequestBuilder, serde_urlencoded::ser::Error> {
    match client {
        Some(c) if c.method == ClientAuthMethod::Basic => {
            request = request.basic_auth(&c.id, Some(c.secret.expose()))
        }
        Some(c) => {
            form.push(("client_id".into(), c.id.clone()));
            form.push(("client_secret".into(), c.secret.expose().to_string()));
        }
        None => {}
    }
    let body = serde_urlencoded::to_string(&*form)?;
    Ok(request
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body))
}
