//! The Cedar schema, generated from the manifests, and the one mapping from
//! a tool's JSON arguments to Cedar values that the schema describes.
//!
//! Each tool is a Cedar action (`Action::"billing.refund"`, a member of
//! `Action::"call"`) whose context type carries the tool's arguments as
//! typed by its input schema, so a policy that names an argument the tool
//! does not have, or compares a string with a number, fails validation at
//! load instead of silently never matching.
//!
//! JSON Schema to Cedar: `string` -> `String`, `integer` -> `Long`,
//! `number` -> `decimal` (Cedar has no floats; a value with more than four
//! decimal places cannot be represented and the call is refused), `boolean`
//! -> `Bool`, an object with `properties` -> a record (attributes optional
//! unless `required`), an array -> a `Set` of its item type. Anything else
//! (unions, `null`, untyped values) is left out of the context, so policies
//! cannot depend on it.

use std::sync::LazyLock;

use cedar_policy::RestrictedExpression;
use cedar_policy_core::ast;
use serde_json::{Map, Number, Value, json};

use super::{AgentFacts, ConnectorFacts, ToolFacts};

/// The Cedar type of one argument, derived from its JSON Schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// `String`.
    Str,
    /// `Long`.
    Long,
    /// `decimal` (four decimal places).
    Decimal,
    /// `Bool`.
    Bool,
    /// A record: attribute, its shape, whether required.
    Record(Vec<(String, Shape, bool)>),
    /// A set of values of one shape.
    Set(Box<Shape>),
}

/// How deep argument objects are mapped; deeper values are left out.
const MAX_DEPTH: usize = 8;

/// The shape of a tool's arguments (its input schema is an object schema).
pub fn args_shape(input_schema: &Map<String, Value>) -> Shape {
    record_shape(input_schema, 0).unwrap_or(Shape::Record(Vec::new()))
}

fn record_shape(schema: &Map<String, Value>, depth: usize) -> Option<Shape> {
    let props = schema.get("properties")?.as_object()?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut attrs: Vec<(String, Shape, bool)> = props
        .iter()
        .filter_map(|(name, s)| {
            let shape = shape_of(s.as_object()?, depth + 1)?;
            Some((name.clone(), shape, required.contains(&name.as_str())))
        })
        .collect();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Shape::Record(attrs))
}

fn shape_of(schema: &Map<String, Value>, depth: usize) -> Option<Shape> {
    if depth > MAX_DEPTH {
        return None;
    }
    match schema.get("type")?.as_str()? {
        "string" => Some(Shape::Str),
        "integer" => Some(Shape::Long),
        "number" => Some(Shape::Decimal),
        "boolean" => Some(Shape::Bool),
        "object" => record_shape(schema, depth),
        "array" => {
            let items = schema.get("items")?.as_object()?;
            Some(Shape::Set(Box::new(shape_of(items, depth + 1)?)))
        }
        _ => None,
    }
}

impl Shape {
    /// The Cedar JSON-schema type for this shape.
    pub fn cedar_type(&self) -> Value {
        match self {
            Shape::Str => json!({ "type": "String" }),
            Shape::Long => json!({ "type": "Long" }),
            Shape::Decimal => json!({ "type": "Extension", "name": "decimal" }),
            Shape::Bool => json!({ "type": "Boolean" }),
            Shape::Set(inner) => json!({ "type": "Set", "element": inner.cedar_type() }),
            Shape::Record(attrs) => {
                let mut a = Map::new();
                for (name, shape, required) in attrs {
                    let mut t = shape.cedar_type();
                    t["required"] = Value::Bool(*required);
                    a.insert(name.clone(), t);
                }
                json!({ "type": "Record", "attributes": a })
            }
        }
    }

    /// The Cedar record fields for an object (the arguments themselves):
    /// only the attributes this record shape declares, in order. `Err`: a
    /// value cannot be represented (the call must be refused).
    pub fn record_fields(
        &self,
        obj: &Map<String, Value>,
    ) -> Result<Vec<(String, RestrictedExpression)>, String> {
        let mut out = Vec::new();
        if let Shape::Record(attrs) = self {
            for (name, shape, _) in attrs {
                let mapped = match obj.get(name) {
                    // The error names the argument, never its value:
                    // refusals are recorded, and records hold no argument.
                    Some(v) => shape.to_expr(v).map_err(|e| format!("`{name}` {e}"))?,
                    None => None,
                };
                if let Some(c) = mapped {
                    out.push((name.clone(), c));
                }
            }
        }
        Ok(out)
    }

    /// The Cedar value for `value` (already validated against the input
    /// schema). `Ok(None)`: nothing to map (left out); `Err`: the value
    /// cannot be represented (the call must be refused).
    pub fn to_expr(&self, value: &Value) -> Result<Option<RestrictedExpression>, String> {
        Ok(match (self, value) {
            (Shape::Str, Value::String(s)) => Some(RestrictedExpression::new_string(s.clone())),
            (Shape::Long, Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(RestrictedExpression::new_long(i)),
                None => return Err("does not fit a 64-bit integer".to_string()),
            },
            (Shape::Decimal, Value::Number(n)) => Some(decimal_expr(&decimal_text(n)?)),
            (Shape::Bool, Value::Bool(b)) => Some(RestrictedExpression::new_bool(*b)),
            (Shape::Set(inner), Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(v) = inner.to_expr(item)? {
                        out.push(v);
                    }
                }
                Some(RestrictedExpression::new_set(out))
            }
            (Shape::Record(_), Value::Object(obj)) => Some(
                RestrictedExpression::new_record(self.record_fields(obj)?)
                    .map_err(|e| e.to_string())?,
            ),
            // A value of another kind than declared: the schema check
            // refuses those before policy, so only unmapped kinds get here.
            _ => None,
        })
    }
}

/// Cedar's extension function names, parsed once: the public constructors
/// (`RestrictedExpression::new_decimal`, `new_datetime`) run the Cedar
/// parser on the name at every call, which cost ~6 µs each, more than the
/// rest of a decision's context.
static DECIMAL: LazyLock<ast::Name> = LazyLock::new(|| extension_name("decimal"));
static DATETIME: LazyLock<ast::Name> = LazyLock::new(|| extension_name("datetime"));

fn extension_name(name: &str) -> ast::Name {
    #[allow(clippy::expect_used)]
    ast::Name::unqualified_name(name.parse().expect("a valid Cedar identifier"))
}

fn extension_call(name: &ast::Name, arg: &str) -> RestrictedExpression {
    ast::RestrictedExpr::call_extension_fn(name.clone(), [ast::RestrictedExpr::val(arg)]).into()
}

/// `decimal("<text>")`; the text is checked when the context is built.
pub fn decimal_expr(text: &str) -> RestrictedExpression {
    extension_call(&DECIMAL, text)
}

/// `datetime("<text>")`; the text is checked when the context is built.
pub fn datetime_expr(text: &str) -> RestrictedExpression {
    extension_call(&DATETIME, text)
}

/// The largest whole part a Cedar `decimal` holds.
const DECIMAL_MAX_WHOLE: u64 = 922_337_203_685_477;

/// `n` as fixed-point units of 1/10,000 (Cedar's `decimal`): exact, or an
/// error when `n` has more than four decimal places or is out of range.
pub fn decimal_units(n: &Number) -> Result<i64, String> {
    let text = decimal_text(n)?;
    let negative = text.starts_with('-');
    let digits = text.trim_start_matches('-');
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let whole: i64 = whole.parse().map_err(|_| "is out of range".to_string())?;
    let mut frac_units: i64 = 0;
    for (i, c) in frac
        .chars()
        .chain(std::iter::repeat('0'))
        .take(4)
        .enumerate()
    {
        let d = c
            .to_digit(10)
            .ok_or_else(|| "is not a number".to_string())?;
        frac_units += i64::from(d) * 10_i64.pow(3 - i as u32);
    }
    let units = whole
        .checked_mul(10_000)
        .and_then(|w| w.checked_add(frac_units))
        .ok_or_else(|| "is out of range".to_string())?;
    Ok(if negative { -units } else { units })
}

/// `units` (1/10,000) as text, without trailing zeros: `12345000` -> `1234.5`.
pub fn units_text(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    let (whole, frac) = (abs / 10_000, abs % 10_000);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:04}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// The text Cedar's `decimal()` accepts for `n` (always with a point).
fn decimal_text(n: &Number) -> Result<String, String> {
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > DECIMAL_MAX_WHOLE {
            return Err("is too large for a decimal".to_string());
        }
        return Ok(format!("{i}.0"));
    }
    if n.as_u64().is_some() {
        return Err("is too large for a decimal".to_string());
    }
    let f = n.as_f64().ok_or_else(|| "is not a number".to_string())?;
    if !f.is_finite() {
        return Err("is not finite".to_string());
    }
    // Rust prints the shortest text that reads back as the same float,
    // never in exponent form.
    let text = format!("{f}");
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
    if frac.len() > 4 {
        return Err(
            "has more than 4 decimal places, which policies cannot compare exactly".to_string(),
        );
    }
    let whole_abs: u64 = whole
        .trim_start_matches('-')
        .parse()
        .map_err(|_| "is out of range".to_string())?;
    if whole_abs > DECIMAL_MAX_WHOLE {
        return Err("is too large for a decimal".to_string());
    }
    Ok(format!("{whole}.{frac}"))
}

/// The Cedar schema (JSON form): the entity types and one action per tool.
pub fn cedar_schema(tools: &[ToolFacts]) -> Value {
    let string = || json!({ "type": "String" });
    let strings = || json!({ "type": "Set", "element": { "type": "String" } });
    let boolean = || json!({ "type": "Boolean" });
    let record = |attrs: Value| json!({ "type": "Record", "attributes": attrs });
    let mut actions = Map::new();
    actions.insert("call".into(), json!({}));
    for t in tools {
        let context = record(json!({
            "args": t.shape.cedar_type(),
            "task": {
                "type": "Record",
                "required": false,
                "attributes": {
                    "id": string(),
                    "purpose": string(),
                    "tools": strings(),
                    "constraints": strings(),
                    "started_by": string(),
                    "within_constraints": boolean(),
                    "violated_constraints": strings(),
                },
            },
            "now": record(json!({
                "datetime": { "type": "Extension", "name": "datetime" },
                "hour_utc": { "type": "Long" },
                "weekday_utc": { "type": "Long" },
            })),
        }));
        actions.insert(
            t.name.clone(),
            json!({
                "memberOf": [{ "id": "call" }],
                "appliesTo": {
                    "principalTypes": ["Agent"],
                    "resourceTypes": ["Tool"],
                    "context": context,
                },
            }),
        );
    }
    json!({
        "": {
            "entityTypes": {
                "Agent": { "shape": record(json!({
                    "owners": record(json!({
                        "business": string(), "system": string(), "security": string(),
                    })),
                    "approved_by": string(),
                    "labels": strings(),
                })) },
                "Connector": { "shape": record(json!({
                    "owners": record(json!({ "system": string(), "security": string() })),
                })) },
                "Tool": {
                    "memberOfTypes": ["Connector"],
                    "shape": record(json!({
                        "name": string(),
                        "connector": string(),
                        "risk": string(),
                        "risk_level": { "type": "Long" },
                        "read_only": boolean(),
                        "destructive": boolean(),
                        "idempotent": boolean(),
                        "open_world": boolean(),
                        "labels": strings(),
                    })),
                },
            },
            "actions": actions,
        }
    })
}

/// The entities (agents, connectors, tools) in Cedar's JSON entity form.
pub fn cedar_entities(
    agents: &[AgentFacts],
    connectors: &[ConnectorFacts],
    tools: &[ToolFacts],
) -> Value {
    let mut out = Vec::new();
    for a in agents {
        out.push(json!({
            "uid": { "type": "Agent", "id": a.id },
            "attrs": {
                "owners": {
                    "business": a.owners.business.name,
                    "system": a.owners.system.name,
                    "security": a.owners.security.name,
                },
                "approved_by": a.approved_by,
                "labels": a.labels,
            },
            "parents": [],
        }));
    }
    for c in connectors {
        out.push(json!({
            "uid": { "type": "Connector", "id": c.id },
            "attrs": {
                "owners": { "system": c.owners.system.name, "security": c.owners.security.name },
            },
            "parents": [],
        }));
    }
    for t in tools {
        let h = &t.hints;
        let read_only = h.read_only.unwrap_or(false);
        out.push(json!({
            "uid": { "type": "Tool", "id": t.name },
            "attrs": {
                "name": t.name,
                "connector": t.connector,
                "risk": t.risk.as_str(),
                "risk_level": t.risk as i64,
                "read_only": read_only,
                // The same pessimistic default `tools/list` shows.
                "destructive": h.destructive.unwrap_or(!read_only),
                "idempotent": h.idempotent.unwrap_or(false),
                "open_world": h.open_world.unwrap_or(false),
                "labels": t.labels,
            },
            "parents": [{ "type": "Connector", "id": t.connector }],
        }));
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: Value) -> Number {
        match v {
            Value::Number(n) => n,
            _ => panic!("not a number"),
        }
    }

    #[test]
    fn decimals_are_exact_or_refused() {
        assert_eq!(decimal_units(&n(json!(40))), Ok(400_000));
        assert_eq!(decimal_units(&n(json!(40.5))), Ok(405_000));
        assert_eq!(decimal_units(&n(json!(0.0001))), Ok(1));
        assert_eq!(decimal_units(&n(json!(-2.25))), Ok(-22_500));
        assert!(decimal_units(&n(json!(0.00001))).is_err());
        assert!(decimal_units(&n(json!(1e300))).is_err());
        assert!(decimal_units(&n(json!(u64::MAX))).is_err());
        assert_eq!(units_text(405_000), "40.5");
        assert_eq!(units_text(10_000_000), "1000");
        assert_eq!(units_text(-1), "-0.0001");
    }

    #[test]
    fn arguments_map_to_their_declared_cedar_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "amount": { "type": "number" },
                "count": { "type": "integer" },
                "note": { "type": "string" },
                "tags": { "type": "array", "items": { "type": "string" } },
                "anything": {},
            },
            "required": ["amount"],
        });
        let shape = args_shape(schema.as_object().expect("object"));
        let Shape::Record(attrs) = &shape else {
            panic!("record")
        };
        let names: Vec<&str> = attrs.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(names, ["amount", "count", "note", "tags"]);
        assert!(attrs[0].2 && !attrs[1].2);
        let args = json!({ "amount": 12.5, "count": 3, "tags": ["a"], "anything": [1] });
        let fields = shape
            .record_fields(args.as_object().expect("object"))
            .expect("maps");
        let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["amount", "count", "tags"]);
        let bad = json!({ "amount": 0.123456 });
        assert!(
            shape
                .record_fields(bad.as_object().expect("object"))
                .is_err()
        );
    }
}
