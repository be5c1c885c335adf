//! Multi round-trip requests (SEP-2322, protocol 2026-07-28): the tools and
//! the prompt of the suite's `input-required-result-*` scenarios.
//!
//! Round 1 answers with an `InputRequiredResult` (the client must run the
//! listed elicitation, sampling or roots requests); the client retries with
//! `inputResponses` and the echoed `requestState`. The state is an opaque
//! handle into a table kept here, so an altered one is simply unknown and
//! refused (-32602): the integrity check the tampered-state scenario asks
//! for, without sealing anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock, ErrorData,
    GetPromptResponse, GetPromptResult, InputRequiredResult, InputResponses, PromptMessage, Role,
};
use serde_json::{Value, json};

/// The tools this module serves, with their descriptions.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "test_input_required_result_elicitation",
        "Asks for a name through an InputRequiredResult",
    ),
    (
        "test_input_required_result_sampling",
        "Asks for a sampling result through an InputRequiredResult",
    ),
    (
        "test_input_required_result_list_roots",
        "Asks for the client's roots through an InputRequiredResult",
    ),
    (
        "test_input_required_result_request_state",
        "An InputRequiredResult whose requestState must come back",
    ),
    (
        "test_input_required_result_multiple_inputs",
        "Elicitation, sampling and roots in one InputRequiredResult",
    ),
    (
        "test_input_required_result_multi_round",
        "Two rounds of input, the requestState changing between them",
    ),
    (
        "test_input_required_result_tampered_state",
        "Refuses an altered requestState",
    ),
    (
        "test_input_required_result_capabilities",
        "Asks only for what the client declared it can do",
    ),
];

pub const PROMPT: &str = "test_input_required_result_prompt";

/// The issued request states: handle -> what it stands for.
#[derive(Debug, Clone, Default)]
pub struct States {
    issued: Arc<Mutex<HashMap<String, String>>>,
    next: Arc<AtomicU64>,
}

impl States {
    fn issue(&self, stands_for: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let handle = format!("{stands_for}.{n}.{:x}", std::process::id());
        if let Ok(mut issued) = self.issued.lock() {
            issued.insert(handle.clone(), stands_for.to_owned());
        }
        handle
    }

    /// What a returned state stands for; an unknown (altered, invented)
    /// state is an invalid-params error.
    fn open(&self, state: Option<&str>) -> Result<String, ErrorData> {
        let state = state.ok_or_else(|| ErrorData::invalid_params("requestState missing", None))?;
        self.issued
            .lock()
            .ok()
            .and_then(|issued| issued.get(state).cloned())
            .ok_or_else(|| {
                ErrorData::invalid_params("requestState failed its integrity check", None)
            })
    }
}

fn elicit(message: &str, field: &str, kind: &str) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": { field: { "type": kind } },
                "required": [field]
            }
        }
    })
}

fn sample(text: &str, max_tokens: u32) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{ "role": "user", "content": { "type": "text", "text": text } }],
            "maxTokens": max_tokens
        }
    })
}

fn roots() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

fn input_required(
    requests: Value,
    state: Option<String>,
) -> Result<InputRequiredResult, ErrorData> {
    let mut result = json!({ "resultType": "input_required", "inputRequests": requests });
    if let Some(state) = state {
        result["requestState"] = Value::String(state);
    }
    serde_json::from_value(result)
        .map_err(|e| ErrorData::internal_error(format!("building InputRequiredResult: {e}"), None))
}

/// An accepted elicitation's `content.FIELD`, when the response has one.
fn elicited<'a>(responses: &'a InputResponses, key: &str, field: &str) -> Option<&'a str> {
    let response = responses.get(key)?;
    if response.get("action").and_then(Value::as_str) != Some("accept") {
        return None;
    }
    response.get("content")?.get(field)?.as_str()
}

fn sampled(responses: &InputResponses, key: &str) -> Option<String> {
    let content = responses.get(key)?.get("content")?;
    let first = match content {
        Value::Array(items) => items.first()?,
        other => other,
    };
    first.get("text")?.as_str().map(str::to_owned)
}

fn first_root(responses: &InputResponses, key: &str) -> Option<String> {
    let roots = responses.get(key)?.get("roots")?.as_array()?;
    roots.first()?.get("uri")?.as_str().map(str::to_owned)
}

fn done(text: impl Into<String>) -> Result<CallToolResponse, ErrorData> {
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
}

fn ask(requests: Value, state: Option<String>) -> Result<CallToolResponse, ErrorData> {
    Ok(CallToolResponse::InputRequired(input_required(
        requests, state,
    )?))
}

/// One `tools/call` of a tool in [`TOOLS`]; `None` for another tool.
pub fn call_tool(
    states: &States,
    name: &str,
    responses: Option<&InputResponses>,
    state: Option<&str>,
    client: Option<&ClientCapabilities>,
) -> Option<Result<CallToolResponse, ErrorData>> {
    let empty = InputResponses::new();
    let r = responses.unwrap_or(&empty);
    let name_request = || elicit("What is your name?", "name", "string");
    let reply = match name {
        "test_input_required_result_elicitation" => match elicited(r, "user_name", "name") {
            Some(name) => done(format!("Hello, {name}!")),
            None => ask(json!({ "user_name": name_request() }), None),
        },
        "test_input_required_result_sampling" => match sampled(r, "capital_question") {
            Some(text) => done(format!("Sampling response: {text}")),
            None => ask(
                json!({ "capital_question": sample("What is the capital of France?", 100) }),
                None,
            ),
        },
        "test_input_required_result_list_roots" => match first_root(r, "client_roots") {
            Some(uri) => done(format!("First root: {uri}")),
            None if r.contains_key("client_roots") => done("The client has no roots"),
            None => ask(json!({ "client_roots": roots() }), None),
        },
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => {
            if r.contains_key("confirm") {
                match states.open(state) {
                    Ok(stands_for) if stands_for == name => done("Confirmed: state-ok"),
                    Ok(_) => Err(ErrorData::invalid_params(
                        "requestState belongs to another request",
                        None,
                    )),
                    Err(e) => Err(e),
                }
            } else {
                let confirm = elicit("Please confirm", "ok", "boolean");
                ask(json!({ "confirm": confirm }), Some(states.issue(name)))
            }
        }
        "test_input_required_result_multiple_inputs" => {
            let all = ["user_name", "greeting", "client_roots"]
                .iter()
                .all(|k| r.contains_key(*k));
            if all {
                match states.open(state) {
                    Ok(_) => {
                        let who = elicited(r, "user_name", "name").unwrap_or("someone");
                        let greeting = sampled(r, "greeting").unwrap_or_default();
                        done(format!("All inputs received from {who}: {greeting}"))
                    }
                    Err(e) => Err(e),
                }
            } else {
                let requests = json!({
                    "user_name": name_request(),
                    "greeting": sample("Generate a greeting", 50),
                    "client_roots": roots()
                });
                ask(requests, Some(states.issue(name)))
            }
        }
        "test_input_required_result_multi_round" => {
            let round = if r.is_empty() {
                None
            } else {
                Some(states.open(state))
            };
            match round {
                Some(Err(e)) => Err(e),
                Some(Ok(round)) if round == "multi_round.2" && r.contains_key("step2") => {
                    let color = elicited(r, "step2", "color").unwrap_or("unknown");
                    done(format!("Both steps done; favorite color {color}"))
                }
                Some(Ok(round)) if round == "multi_round.1" && r.contains_key("step1") => {
                    let step2 = elicit("Step 2: What is your favorite color?", "color", "string");
                    ask(
                        json!({ "step2": step2 }),
                        Some(states.issue("multi_round.2")),
                    )
                }
                _ => {
                    let step1 = elicit("Step 1: What is your name?", "name", "string");
                    ask(
                        json!({ "step1": step1 }),
                        Some(states.issue("multi_round.1")),
                    )
                }
            }
        }
        "test_input_required_result_capabilities" => {
            if !r.is_empty() {
                return Some(done("Inputs received"));
            }
            let caps = client.cloned().unwrap_or_default();
            let mut requests = serde_json::Map::new();
            if caps.elicitation.is_some() {
                requests.insert("user_name".into(), name_request());
            }
            if caps.sampling.is_some() {
                requests.insert("greeting".into(), sample("Generate a greeting", 50));
            }
            if caps.roots.is_some() {
                requests.insert("client_roots".into(), roots());
            }
            if requests.is_empty() {
                done("The client declared no capability to ask through")
            } else {
                ask(Value::Object(requests), None)
            }
        }
        _ => return None,
    };
    Some(reply)
}

/// `prompts/get` of [`PROMPT`].
pub fn get_prompt(responses: Option<&InputResponses>) -> Result<GetPromptResponse, ErrorData> {
    let empty = InputResponses::new();
    let r = responses.unwrap_or(&empty);
    match elicited(r, "user_context", "context") {
        Some(context) => Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Use this context: {context}"),
        )])
        .into()),
        None => {
            let request = elicit("What context should the prompt use?", "context", "string");
            Ok(GetPromptResponse::InputRequired(input_required(
                json!({ "user_context": request }),
                None,
            )?))
        }
    }
}
