//! Arguments: their normalisation, and the keyed digest records keep of
//! them. Normalisation: a call's arguments are brought to the types the
//! tool's input schema declares before they are validated, constrained and
//! sent, so the backend receives what the schema promises. Today that is
//! one rule: a number with a zero fraction (`4521.0`) where the schema
//! declares `integer` becomes the integer `4521` (JSON Schema counts
//! `4521.0` as an integer, but a backend templating it into a path would
//! see `4521.0`).
//!
//! Deliberately conservative: nothing else is coerced (no strings to
//! numbers, no rounding of `4521.5`, which validation then refuses), and
//! only where the schema says so unambiguously: `type: integer` or a type
//! list whose only numeric member is `integer`. Nested objects and arrays
//! are followed through `properties`, `additionalProperties` (a schema),
//! `items` (a schema, or a list for tuples) and `prefixItems`. Schemas
//! reached through `$ref`, `anyOf`, `oneOf` or `allOf` are left alone.

use hmac::{KeyInit, Mac};
use serde_json::{Map, Number, Value};

/// Normalises `args` in place to what `schema` (a tool's input schema, an
/// object schema) declares.
pub fn normalize(schema: &Value, args: &mut Map<String, Value>) {
    if let Value::Object(schema) = schema {
        normalize_input(schema, args);
    }
}

/// The same, for an input schema held as a JSON object (as the catalog
/// holds a tool's `input_schema`), without copying it into a `Value`.
pub fn normalize_input(schema: &Map<String, Value>, args: &mut Map<String, Value>) {
    normalize_fields(schema, args, 0);
}

/// Deeper than this, values are left as they are (a hostile, deeply nested
/// argument costs nothing; validation still runs on it).
const MAX_DEPTH: usize = 64;

fn normalize_fields(schema: &Map<String, Value>, object: &mut Map<String, Value>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (name, value) in object.iter_mut() {
        let sub = properties.and_then(|p| p.get(name)).or(additional);
        if let Some(sub) = sub {
            normalize_value(sub, value, depth + 1);
        }
    }
}

fn normalize_value(schema: &Value, value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Number(n) => {
            if declares_integer(schema)
                && let Some(i) = integral(n)
            {
                *value = Value::Number(i);
            }
        }
        Value::Object(map) => {
            if let Value::Object(schema) = schema {
                normalize_fields(schema, map, depth);
            }
        }
        Value::Array(items) => {
            let prefix = schema
                .get("prefixItems")
                .and_then(Value::as_array)
                .or_else(|| schema.get("items").and_then(Value::as_array));
            let rest = schema.get("items").filter(|i| i.is_object());
            for (i, item) in items.iter_mut().enumerate() {
                let sub = prefix.and_then(|p| p.get(i)).or(rest);
                if let Some(sub) = sub {
                    normalize_value(sub, item, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// `type: integer`, or a list of types with `integer` and not `number`
/// (where `number` is allowed too, a float is a legitimate value).
fn declares_integer(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(types)) => {
            types.iter().any(|t| t == "integer") && !types.iter().any(|t| t == "number")
        }
        _ => false,
    }
}

/// The integer a float with a zero fraction stands for, if it fits.
fn integral(n: &Number) -> Option<Number> {
    if n.is_i64() || n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f.fract() != 0.0 {
        return None;
    }
    // Within ±2^63 the conversion is exact for integral floats; beyond it
    // the value is left as it is (validation and the backend decide).
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        #[allow(clippy::cast_possible_truncation)]
        return Some(Number::from(f as i64));
    }
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return Some(Number::from(f as u64));
    }
    None
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Keyed digest of the arguments in canonical form (keys sorted at every
/// level), so equal arguments give equal digests whatever their key order.
pub fn digest(key: &[u8], arguments: &Map<String, Value>) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch cannot be taken.
        <HmacSha256 as KeyInit>::new_from_slice(&[0u8; 32]).expect("fixed-size key")
    });
    write_canonical(&mut mac, &Value::Object(arguments.clone()));
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

fn write_canonical(mac: &mut HmacSha256, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            mac.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    mac.update(b",");
                }
                mac.update(Value::String(k.clone()).to_string().as_bytes());
                mac.update(b":");
                write_canonical(mac, &m[k]);
            }
            mac.update(b"}");
        }
        Value::Array(a) => {
            mac.update(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    mac.update(b",");
                }
                write_canonical(mac, x);
            }
            mac.update(b"]");
        }
        scalar => mac.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(schema: Value, args: Value) -> Value {
        let mut map = args.as_object().cloned().expect("object");
        normalize(&schema, &mut map);
        Value::Object(map)
    }

    #[test]
    fn integral_floats_become_integers_where_the_schema_says_integer() {
        let schema = json!({
            "type": "object",
            "properties": {
                "ticket_id": { "type": "integer" },
                "amount": { "type": "number" },
                "name": { "type": "string" },
            }
        });
        let out = run(
            schema.clone(),
            json!({ "ticket_id": 4521.0, "amount": 40.0, "name": "4521.0", "extra": 2.0 }),
        );
        assert_eq!(out["ticket_id"], json!(4521));
        // The catalog's form of the schema (a JSON object) gives the same.
        let mut again = json!({ "ticket_id": 4521.0 })
            .as_object()
            .cloned()
            .expect("object");
        normalize_input(schema.as_object().expect("object schema"), &mut again);
        assert_eq!(again["ticket_id"].to_string(), "4521");
        assert!(out["ticket_id"].is_i64());
        assert_eq!(out["ticket_id"].to_string(), "4521");
        // `number` keeps its float; strings and undeclared values are untouched.
        assert_eq!(out["amount"].to_string(), "40.0");
        assert_eq!(out["name"], json!("4521.0"));
        assert_eq!(out["extra"].to_string(), "2.0");
    }

    #[test]
    fn fractions_and_other_kinds_are_left_for_validation() {
        let schema = json!({ "properties": { "n": { "type": "integer" } } });
        assert_eq!(
            run(schema.clone(), json!({ "n": 4521.5 }))["n"],
            json!(4521.5)
        );
        assert_eq!(run(schema.clone(), json!({ "n": "7" }))["n"], json!("7"));
        assert_eq!(
            run(schema.clone(), json!({ "n": -3.0 }))["n"].to_string(),
            "-3"
        );
        assert_eq!(
            run(schema.clone(), json!({ "n": 1e300 }))["n"],
            json!(1e300)
        );
        assert_eq!(run(schema, json!({ "n": 12 }))["n"].to_string(), "12");
    }

    #[test]
    fn type_lists_normalise_only_when_number_is_not_allowed() {
        let only_int = json!({ "properties": { "n": { "type": ["integer", "null"] } } });
        assert_eq!(run(only_int, json!({ "n": 2.0 }))["n"].to_string(), "2");
        let either = json!({ "properties": { "n": { "type": ["integer", "number"] } } });
        assert_eq!(run(either, json!({ "n": 2.0 }))["n"].to_string(), "2.0");
    }

    #[test]
    fn nested_objects_and_arrays_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "order": {
                    "type": "object",
                    "properties": {
                        "lines": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": { "qty": { "type": "integer" }, "price": { "type": "number" } }
                            }
                        }
                    }
                },
                "ids": { "type": "array", "items": { "type": "integer" } },
                "pair": { "type": "array", "prefixItems": [{ "type": "integer" }, { "type": "number" }] },
                "counts": { "type": "object", "additionalProperties": { "type": "integer" } },
            }
        });
        let out = run(
            schema,
            json!({
                "order": { "lines": [{ "qty": 2.0, "price": 3.0 }, { "qty": 5.0 }] },
                "ids": [1.0, 2, 3.0],
                "pair": [7.0, 8.0],
                "counts": { "a": 1.0, "b": 2.0 },
            }),
        );
        assert_eq!(
            out.to_string(),
            json!({
                "order": { "lines": [{ "qty": 2, "price": 3.0 }, { "qty": 5 }] },
                "ids": [1, 2, 3],
                "pair": [7, 8.0],
                "counts": { "a": 1, "b": 2 },
            })
            .to_string()
        );
    }

    #[test]
    fn a_deeply_nested_value_does_not_recurse_without_bound() {
        let mut schema = json!({ "type": "integer" });
        let mut value = json!(1.0);
        for _ in 0..200 {
            schema = json!({ "type": "array", "items": schema });
            value = json!([value]);
        }
        let schema = json!({ "properties": { "deep": schema } });
        let out = run(schema, json!({ "deep": value }));
        // Beyond the depth bound the float stays a float.
        assert!(out.to_string().contains("1.0"));
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    #[test]
    fn digest_ignores_key_order_and_depends_on_key_and_values() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,"s"]}}"#).expect("json");
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":[1,"s"],"y":2},"b":1}"#).expect("json");
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":[1,"s"],"y":3},"b":1}"#).expect("json");
        assert_eq!(digest(b"k1", &a), digest(b"k1", &b));
        assert_ne!(digest(b"k1", &a), digest(b"k1", &c));
        assert_ne!(digest(b"k1", &a), digest(b"k2", &a));
        assert!(!digest(b"k1", &a).contains('s'.to_string().repeat(2).as_str()));
    }
}
