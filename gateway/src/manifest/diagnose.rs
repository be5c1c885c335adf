//! Serde's errors said plainly. serde reports `invalid type: string "3s",
//! expected u64` or `missing field` (one at a time); this module turns that
//! into the field's path, what it takes in words, what it got, every
//! missing field at once and the nearest known name. It reads the field's
//! shape from the generated JSON Schema (`types::json_schema`), so it knows
//! the same fields and values as the loader.

use std::sync::LazyLock;

use serde_json::Value;

use super::Code;

/// A problem in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plain {
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
}

/// One step into a document: a mapping key or a list position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where in a document an error is, as serde saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Place(Vec<Step>);

impl Place {
    /// The path serde_path_to_error tracked, up to the first step it could
    /// not name.
    pub fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let mut steps = Vec::new();
        for segment in path.iter() {
            match segment {
                Segment::Map { key } => steps.push(Step::Key(key.clone())),
                Segment::Seq { index } => steps.push(Step::Index(*index)),
                Segment::Enum { .. } | Segment::Unknown => break,
            }
        }
        Place(steps)
    }

    /// The place one step up (the mapping that holds this field).
    fn parent(&self) -> Place {
        let mut steps = self.0.clone();
        steps.pop();
        Place(steps)
    }

    /// The last key on the way (the field's own name), if any.
    fn field(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
    }
}

/// `http.timeout_ms`, `tools[0].risk`; empty at the top of a document.
impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Explains serde's `message` (its own position already removed) about
/// `place` in a document of type `root` (a `$defs` name of the schema,
/// e.g. `AgentManifest`) whose text is `text`.
pub(super) fn explain(root: &str, text: &str, place: &Place, message: &str) -> Plain {
    let message = strip_serde_path(message);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return unknown_field(place, rest);
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return unknown_variant(root, place, rest);
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return missing_fields(root, text, place, rest);
    }
    if let Some(rest) = message.strip_prefix("duplicate field ") {
        let at = in_place(place);
        return Plain {
            code: Code::Duplicate,
            message: format!("field {rest} appears twice{at}"),
            hint: Some("keep one of them".into()),
        };
    }
    for (prefix, code) in [
        ("invalid type: ", Code::TypeMismatch),
        ("invalid value: ", Code::InvalidValue),
    ] {
        if let Some((got, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "))
        {
            return mismatch(root, place, code, got, expected);
        }
    }
    let at = place.to_string();
    Plain {
        code: Code::InvalidValue,
        message: if at.is_empty() {
            message.to_string()
        } else {
            format!("`{at}`: {message}")
        },
        hint: None,
    }
}

/// serde_yaml_ng puts its own `tools[0].risk: ` before the message; the
/// place is reported separately (and structured), so it goes.
fn strip_serde_path(message: &str) -> &str {
    const STARTS: [&str; 7] = [
        "unknown field ",
        "unknown variant ",
        "missing field ",
        "duplicate field ",
        "invalid type: ",
        "invalid value: ",
        "invalid length ",
    ];
    STARTS
        .iter()
        .filter_map(|s| message.find(s))
        .min()
        .map_or(message, |i| &message[i..])
}

/// ` in `owners`` or nothing at the top of the document.
fn in_place(place: &Place) -> String {
    let at = place.to_string();
    if at.is_empty() {
        String::new()
    } else {
        format!(" in `{at}`")
    }
}

/// The names between backticks in serde's text, in order.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn unknown_field(place: &Place, rest: &str) -> Plain {
    let names = backticked(rest);
    let Some((wanted, known)) = names.split_first() else {
        return Plain {
            code: Code::UnknownField,
            message: format!("unknown field {rest}"),
            hint: None,
        };
    };
    // serde_path_to_error puts the unknown key itself last.
    let container = if place.field() == Some(*wanted) {
        place.parent()
    } else {
        place.clone()
    };
    let hint = match closest(wanted, known.iter().copied()) {
        Some(near) => Some(format!("did you mean `{near}`?")),
        None if known.is_empty() => Some("this mapping takes no fields".into()),
        None => Some(format!("the fields here are {}", list(known))),
    };
    Plain {
        code: Code::UnknownField,
        message: format!("unknown field `{wanted}`{}", in_place(&container)),
        hint,
    }
}

fn unknown_variant(root: &str, place: &Place, rest: &str) -> Plain {
    let names = backticked(rest);
    let Some((wanted, serde_known)) = names.split_first() else {
        return Plain {
            code: Code::UnknownValue,
            message: format!("unknown value {rest}"),
            hint: None,
        };
    };
    let schema_known = schema_at(root, place)
        .map(|node| variants(schema(), node))
        .unwrap_or_default();
    let known: Vec<&str> = if schema_known.is_empty() {
        serde_known.to_vec()
    } else {
        schema_known.iter().map(String::as_str).collect()
    };
    let field = place.to_string();
    let message = if field.is_empty() {
        format!("unknown value `{wanted}`; expected one of {}", list(&known))
    } else {
        format!("`{field}` must be one of {}, got `{wanted}`", list(&known))
    };
    let hint = closest_ignoring_case(wanted, &known).map(|near| format!("did you mean `{near}`?"));
    Plain {
        code: Code::UnknownValue,
        message,
        hint,
    }
}

fn missing_fields(root: &str, text: &str, place: &Place, rest: &str) -> Plain {
    let first = backticked(rest).first().map(|s| s.to_string());
    let required: Vec<String> = schema_at(root, place)
        .and_then(|node| node.get("required"))
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let present = present_keys(text, place);
    let mut missing: Vec<String> = match &present {
        Some(keys) => required.into_iter().filter(|r| !keys.contains(r)).collect(),
        None => Vec::new(),
    };
    if missing.is_empty() {
        missing.extend(first);
    }
    let at = in_place(place);
    let names: Vec<&str> = missing.iter().map(String::as_str).collect();
    let message = match names.as_slice() {
        [one] => format!("missing field `{one}`{at}"),
        more => format!("missing fields {}{at}", join(more, "and")),
    };
    // For one field, say what it is for: the schema's first sentence.
    let hint = match names.as_slice() {
        [one] => {
            let mut inner = place.clone();
            inner.0.push(Step::Key((*one).to_string()));
            schema_at(root, &inner)
                .and_then(|n| n.get("description"))
                .or_else(|| {
                    schema_at(root, place)
                        .and_then(|n| n.get("properties"))
                        .and_then(|p| p.get(*one))
                        .and_then(|p| p.get("description"))
                })
                .and_then(Value::as_str)
                .map(|d| format!("`{one}`: {}", first_sentence(d)))
        }
        _ => None,
    };
    Plain {
        code: Code::MissingField,
        message,
        hint,
    }
}

fn mismatch(root: &str, place: &Place, code: Code, got: &str, expected: &str) -> Plain {
    let node = schema_at(root, place);
    let field = place.field().unwrap_or("");
    let mut wanted = expected_in_words(node, field, expected);
    let got = got_in_words(got);
    // `-1` is a whole number; what it is not is 0 or more.
    if got.starts_with("`-") && wanted.starts_with("a whole number") {
        wanted.push_str(" (0 or more)");
    }
    let at = place.to_string();
    let message = if at.is_empty() {
        format!("a manifest document must be {wanted}, got {got}")
    } else {
        format!("`{at}` must be {wanted}, got {got}")
    };
    let hint = node
        .and_then(|n| n.get("description"))
        .and_then(Value::as_str)
        .map(|d| format!("`{field}`: {}", first_sentence(d)))
        .filter(|_| !field.is_empty());
    Plain {
        code,
        message,
        hint,
    }
}

/// What a field takes, in words: its fixed values, or its type (with the
/// unit its name gives: `_ms`, `_seconds`, `_bytes`); serde's own
/// `expected` when the schema does not say.
fn expected_in_words(node: Option<&Value>, field: &str, serde_expected: &str) -> String {
    let unit = if field.ends_with("_ms") {
        " of milliseconds"
    } else if field.ends_with("_seconds") {
        " of seconds"
    } else if field.ends_with("_bytes") {
        " of bytes"
    } else {
        ""
    };
    if let Some(node) = node {
        let values = variants(schema(), node);
        if !values.is_empty() {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            return format!("one of {}", list(&values));
        }
        if let Some(words) = type_of(node).and_then(|t| type_in_words(t, unit)) {
            return words;
        }
    }
    match serde_expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => format!("a whole number{unit}"),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "`true` or `false`".into(),
        "a string" | "a borrowed string" | "a character" => "text".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping (`key: value` entries)".into(),
        "socket address" => "an address and port, like `127.0.0.1:8931`".into(),
        s if s.starts_with("struct ") => "a mapping (`key: value` entries)".into(),
        s => s.to_string(),
    }
}

fn type_in_words(t: &str, unit: &str) -> Option<String> {
    Some(match t {
        "integer" => format!("a whole number{unit}"),
        "number" => "a number".into(),
        "boolean" => "`true` or `false`".into(),
        "string" => "text".into(),
        "array" => "a list".into(),
        "object" => "a mapping (`key: value` entries)".into(),
        _ => return None,
    })
}

/// serde's description of the value it got (`string "3s"`, `integer
/// `5``, `sequence`), as a reader would name it.
fn got_in_words(got: &str) -> String {
    if let Some(s) = got.strip_prefix("string ") {
        return format!("`{s}`");
    }
    for prefix in ["integer ", "floating point ", "boolean ", "character "] {
        if let Some(v) = got.strip_prefix(prefix) {
            return v.to_string();
        }
    }
    match got {
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        "unit value" | "unit" => "nothing (an empty value)".into(),
        other => other.to_string(),
    }
}

/// `a`, `b` or `c`.
fn list(names: &[&str]) -> String {
    join(names, "or")
}

/// `a`, `b` and `c` (or another last word).
fn join(names: &[&str], last_word: &str) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {last_word} {last}", init.join(", ")),
    }
}

fn first_sentence(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(i) => flat[..=i].to_string(),
        None => flat,
    }
}

/// The known name closest to `wanted`, if one is close enough to be a
/// typo: 1 edit for short words, 2 up to 8 characters, 3 beyond, so `nme`
/// finds `name` but `zzzz` finds nothing.
pub(crate) fn closest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let known: Vec<&str> = known.collect();
    let limit = match wanted.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    // Optimal string alignment: a swapped pair (`Agnet`) is one edit.
    let near = known
        .iter()
        .map(|k| (strsim::osa_distance(wanted, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    if near.is_some() || wanted.chars().count() < 2 {
        return near;
    }
    // A shortened word (`hi` for `high`, `desc` for `description`): the
    // one known name it begins, if only one.
    let mut prefixed = known.iter().filter(|k| k.starts_with(wanted));
    match (prefixed.next(), prefixed.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// Like [`closest`], where `Get` should find `GET` and `Es256` `ES256`.
fn closest_ignoring_case<'a>(wanted: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = wanted.to_lowercase();
    known
        .iter()
        .find(|k| k.to_lowercase() == lower)
        .copied()
        .or_else(|| closest(wanted, known.iter().copied()))
}

fn schema() -> &'static Value {
    static SCHEMA: LazyLock<Value> = LazyLock::new(super::types::json_schema);
    &SCHEMA
}

/// The schema of the value at `place` in a `root` document.
fn schema_at(root: &str, place: &Place) -> Option<&'static Value> {
    let schema = schema();
    let mut node = resolve(schema, schema.get("$defs")?.get(root)?);
    for step in &place.0 {
        let next = match step {
            Step::Key(k) => node
                .get("properties")
                .and_then(|p| p.get(k))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?,
            Step::Index(_) => node.get("items")?,
        };
        node = resolve(schema, next);
    }
    Some(node)
}

/// Follows `$ref`s, and looks through `Option` (`anyOf: [X, null]`).
fn resolve<'a>(schema: &'a Value, mut node: &'a Value) -> &'a Value {
    // Bounded: the manifest types do not nest references this deep.
    for _ in 0..16 {
        if let Some(name) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
            && let Some(def) = schema.get("$defs").and_then(|d| d.get(name))
        {
            node = def;
            continue;
        }
        if let Some(alts) = node.get("anyOf").and_then(Value::as_array) {
            let mut real = alts.iter().filter(|a| type_of(a) != Some("null"));
            if let (Some(one), None) = (real.next(), real.next()) {
                node = one;
                continue;
            }
        }
        break;
    }
    node
}

/// A node's type, looking past `null` in `["integer", "null"]`.
fn type_of(node: &Value) -> Option<&str> {
    match node.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// The fixed values a node allows (`enum`, or `oneOf` of `const`s).
fn variants(schema: &Value, node: &Value) -> Vec<String> {
    let node = resolve(schema, node);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(e) = node.get("enum") {
        return strings(e);
    }
    let mut out = Vec::new();
    for key in ["oneOf", "anyOf"] {
        for alt in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let alt = resolve(schema, alt);
            if let Some(c) = alt.get("const").and_then(Value::as_str) {
                out.push(c.to_string());
            } else if let Some(e) = alt.get("enum") {
                out.extend(strings(e));
            }
        }
    }
    out
}

/// The keys of the mapping at `place` in the document text; `None` when
/// the text does not parse or there is no mapping there.
fn present_keys(text: &str, place: &Place) -> Option<Vec<String>> {
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    for step in &place.0 {
        value = match step {
            Step::Key(k) => value.get(k.as_str())?.clone(),
            Step::Index(i) => value.get(*i)?.clone(),
        };
    }
    let map = value.as_mapping()?;
    Some(
        map.keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(steps: &[&str]) -> Place {
        Place(
            steps
                .iter()
                .map(|s| match s.parse() {
                    Ok(i) => Step::Index(i),
                    Err(_) => Step::Key((*s).to_string()),
                })
                .collect(),
        )
    }

    #[test]
    fn a_type_error_names_the_field_and_says_what_it_takes_in_words() {
        let p = explain(
            "ConnectorManifest",
            "",
            &place(&["http", "timeout_ms"]),
            "http.timeout_ms: invalid type: string \"3s\", expected u64",
        );
        assert_eq!(p.code, Code::TypeMismatch);
        assert_eq!(
            p.message,
            "`http.timeout_ms` must be a whole number of milliseconds, got `\"3s\"`"
        );
    }

    #[test]
    fn an_enum_given_a_list_lists_its_values() {
        let p = explain(
            "ConnectorManifest",
            "",
            &place(&["tools", "0", "risk"]),
            "invalid type: sequence, expected a YAML tag starting with '!'",
        );
        assert_eq!(
            p.message,
            "`tools[0].risk` must be one of `low`, `medium`, `high` or `critical`, got a list"
        );
    }

    #[test]
    fn unknown_names_get_the_nearest_known_one() {
        let p = explain(
            "ConnectorManifest",
            "",
            &place(&["tools", "0", "nme"]),
            "tools[0]: unknown field `nme`, expected one of `name`, `title`, `description`",
        );
        assert_eq!(p.code, Code::UnknownField);
        assert_eq!(p.message, "unknown field `nme` in `tools[0]`");
        assert_eq!(p.hint.as_deref(), Some("did you mean `name`?"));

        let p = explain(
            "ConnectorManifest",
            "",
            &place(&["tools", "0", "risk"]),
            "unknown variant `hihg`, expected one of `low`, `medium`, `high`, `critical`",
        );
        assert_eq!(p.code, Code::UnknownValue);
        assert_eq!(p.hint.as_deref(), Some("did you mean `high`?"));
        assert_eq!(closest("zzzz", ["name"].into_iter()), None);
        assert_eq!(closest("hi", ["low", "high"].into_iter()), Some("high"));
        assert_eq!(closest("m", ["medium", "low"].into_iter()), None);
        assert_eq!(
            closest("Agnet", ["Connector", "Agent"].into_iter()),
            Some("Agent")
        );
    }

    #[test]
    fn every_missing_field_is_listed_at_once() {
        let text = "owners:\n  business: { name: a }\n";
        let p = explain(
            "AgentManifest",
            text,
            &place(&["owners", "business"]),
            "missing field `contact`",
        );
        assert_eq!(p.message, "missing field `contact` in `owners.business`");
        let p = explain(
            "AgentManifest",
            "kind: Agent\nid: x\n",
            &place(&[]),
            "missing field `description`",
        );
        assert_eq!(p.code, Code::MissingField);
        assert_eq!(
            p.message,
            "missing fields `description`, `owners`, `deployment`, `review_by` and `tools`"
        );
    }
}
