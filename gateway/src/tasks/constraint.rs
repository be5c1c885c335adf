//! Argument constraints of a task: `amount <= 500`, `currency == "EUR"`,
//! `ticket_id in [4521, 4522]`, `amount? <= 500`. Deliberately tiny: one
//! top-level argument, one operator, one literal. Anything richer belongs
//! in policy.
//!
//! Semantics, chosen to fail closed:
//! - numbers compare by value wherever they appear (`1 == 1.0`, `500.0`
//!   satisfies `amount <= 500`, `in [4521]` matches `4521.0`);
//! - a constraint applies to a tool whose input schema declares its
//!   argument, and to any call that carries the argument anyway;
//! - where it applies, a missing argument FAILS it, unless the constraint is
//!   written optional with `?` after the name (`amount? <= 500`: absent is
//!   fine, present must hold);
//! - a value of the wrong kind (a string where a number is compared) fails.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// A parsed constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// The text as written (shown in refusals and records).
    pub text: String,
    /// Argument name.
    pub arg: String,
    optional: bool,
    op: Op,
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
    Ne,
    In,
}

impl Constraint {
    /// Parses `ARG OP LITERAL` or `ARG? OP LITERAL`; literals are JSON
    /// (numbers, strings in double quotes, booleans, or a list for `in`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad = || {
            format!(
                "constraint `{t}` must look like `amount <= 500`, `amount? <= 500` (absent allowed), \
                 `currency == \"EUR\"` or `id in [1, 2]`"
            )
        };
        let arg_end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .ok_or_else(bad)?;
        let arg = &t[..arg_end];
        if arg.is_empty() {
            return Err(bad());
        }
        let mut rest = &t[arg_end..];
        let optional = match rest.strip_prefix('?') {
            Some(r) => {
                rest = r;
                true
            }
            None => false,
        };
        let rest = rest.trim_start();
        let (op, literal) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("in ", Op::In),
        ]
        .iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|lit| (*op, lit.trim())))
        .ok_or_else(bad)?;
        let value: Value = serde_json::from_str(literal).map_err(|_| bad())?;
        match op {
            Op::Le | Op::Lt | Op::Ge | Op::Gt if !value.is_number() => {
                return Err(format!("constraint `{t}`: compare numbers only"));
            }
            Op::In if !value.is_array() => {
                return Err(format!("constraint `{t}`: `in` needs a list"));
            }
            _ => {}
        }
        Ok(Self {
            text: t.to_string(),
            arg: arg.to_string(),
            optional,
            op,
            value,
        })
    }

    /// Whether the constraint was written optional (`amount? <= 500`).
    pub fn is_optional(&self) -> bool {
        self.optional
    }

    /// Whether the constraint concerns a call to a tool with this input
    /// schema carrying these arguments: the schema declares the argument at
    /// the top level, or the call carries it anyway.
    pub fn applies_to(&self, input_schema: &Map<String, Value>, args: &Map<String, Value>) -> bool {
        args.contains_key(&self.arg)
            || input_schema
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key(&self.arg))
    }

    /// Whether `args` satisfy the constraint. A missing argument fails it
    /// unless the constraint is optional.
    pub fn allows(&self, args: &Map<String, Value>) -> bool {
        let Some(actual) = args.get(&self.arg) else {
            return self.optional;
        };
        match self.op {
            Op::Eq => same(actual, &self.value),
            Op::Ne => !same(actual, &self.value),
            Op::In => self
                .value
                .as_array()
                .is_some_and(|list| list.iter().any(|v| same(actual, v))),
            op => match num_cmp(actual, &self.value) {
                Some(ord) => op_holds(op, ord),
                // A non-number where a number is compared fails closed.
                None => false,
            },
        }
    }

    /// Whether every call that satisfies `self` also satisfies `other`
    /// (`self` is at least as strict). Recognises the same argument with a
    /// tighter or equal bound (`amount <= 100` implies `amount <= 500`), an
    /// equality or list whose values all satisfy `other`, and a sub-list.
    /// An optional constraint never implies a required one. Anything not
    /// recognised is `false` (fail closed).
    pub fn implies(&self, other: &Constraint) -> bool {
        if self.arg != other.arg || (self.optional && !other.optional) {
            return false;
        }
        // Every value `self` admits, when `self` admits only finitely many.
        let finite: Option<Vec<&Value>> = match self.op {
            Op::Eq => Some(vec![&self.value]),
            Op::In => self.value.as_array().map(|l| l.iter().collect()),
            _ => None,
        };
        if let Some(values) = finite {
            return values.into_iter().all(|v| {
                let mut one = Map::new();
                one.insert(other.arg.clone(), v.clone());
                other.allows(&one)
            });
        }
        match (self.op, other.op) {
            (Op::Ne, Op::Ne) => same(&self.value, &other.value),
            (a @ (Op::Le | Op::Lt), b @ (Op::Le | Op::Lt))
            | (a @ (Op::Ge | Op::Gt), b @ (Op::Ge | Op::Gt)) => {
                let Some(ord) = num_cmp(&self.value, &other.value) else {
                    return false;
                };
                let upper = matches!(a, Op::Le | Op::Lt);
                // Distance from `self`'s bound to `other`'s, in the
                // direction `other` allows.
                let inside = if upper {
                    ord == Ordering::Less
                } else {
                    ord == Ordering::Greater
                };
                inside || (ord == Ordering::Equal && (a == b || matches!(a, Op::Lt | Op::Gt)))
            }
            _ => false,
        }
    }
}

/// Every stored constraint the call breaks (all of them, for the policy
/// decision and its explanation); one that no longer parses is broken.
pub fn violated(
    constraints: &[String],
    input_schema: &Map<String, Value>,
    args: &Map<String, Value>,
) -> Vec<String> {
    constraints
        .iter()
        .filter(|text| match Constraint::parse(text) {
            Ok(c) => c.applies_to(input_schema, args) && !c.allows(args),
            Err(_) => true,
        })
        .cloned()
        .collect()
}

fn op_holds(op: Op, ord: Ordering) -> bool {
    match op {
        Op::Le => ord != Ordering::Greater,
        Op::Lt => ord == Ordering::Less,
        Op::Ge => ord != Ordering::Less,
        Op::Gt => ord == Ordering::Greater,
        _ => false,
    }
}

/// Compares two JSON numbers by value: exactly when both are integers,
/// as floats otherwise. `None` when either is not a number.
fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    let (Value::Number(a), Value::Number(b)) = (a, b) else {
        return None;
    };
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// JSON equality with numbers compared by value, at any depth.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num_cmp(a, b) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn c(text: &str) -> Constraint {
        Constraint::parse(text).expect("valid constraint")
    }

    #[test]
    fn numeric_string_and_list_constraints() {
        let k = c("amount <= 500");
        assert!(k.allows(&args(json!({ "amount": 40 }))));
        assert!(k.allows(&args(json!({ "amount": 500.0 }))));
        assert!(!k.allows(&args(json!({ "amount": 500.01 }))));
        assert!(!k.allows(&args(json!({ "amount": "40" }))));
        let k = c("currency == \"EUR\"");
        assert!(k.allows(&args(json!({ "currency": "EUR" }))));
        assert!(!k.allows(&args(json!({ "currency": "USD" }))));
        let k = c("ticket_id in [4521, 4522]");
        assert!(k.allows(&args(json!({ "ticket_id": 4522 }))));
        assert!(!k.allows(&args(json!({ "ticket_id": 1 }))));
    }

    #[test]
    fn numbers_compare_by_value() {
        // A literal written as a float bounds integer arguments, and back.
        let k = c("amount <= 500.0");
        assert!(k.allows(&args(json!({ "amount": 500 }))));
        assert!(!k.allows(&args(json!({ "amount": 501 }))));
        assert!(c("qty == 1").allows(&args(json!({ "qty": 1.0 }))));
        assert!(c("qty == 1.0").allows(&args(json!({ "qty": 1 }))));
        assert!(!c("qty != 1").allows(&args(json!({ "qty": 1.0 }))));
        assert!(c("qty != 1").allows(&args(json!({ "qty": 1.5 }))));
        assert!(c("ticket_id in [4521, 4522]").allows(&args(json!({ "ticket_id": 4521.0 }))));
        assert!(c("ticket_id in [4521.0]").allows(&args(json!({ "ticket_id": 4521 }))));
        assert!(!c("ticket_id in [4521]").allows(&args(json!({ "ticket_id": "4521" }))));
        // Large integers compare exactly, not through a lossy float.
        assert!(
            !c("id == 9007199254740993").allows(&args(json!({ "id": 9_007_199_254_740_992_u64 })))
        );
        assert!(c("id >= -3").allows(&args(json!({ "id": u64::MAX }))));
    }

    #[test]
    fn a_missing_argument_fails_unless_the_constraint_is_optional() {
        let k = c("amount <= 500");
        assert!(!k.allows(&args(json!({ "other": 1 }))));
        assert!(!k.is_optional());
        let k = c("amount? <= 500");
        assert!(k.is_optional());
        assert_eq!(k.arg, "amount");
        assert!(k.allows(&args(json!({ "other": 1 }))));
        assert!(k.allows(&args(json!({ "amount": 20 }))));
        assert!(!k.allows(&args(json!({ "amount": 501 }))));
        assert!(!k.allows(&args(json!({ "amount": null }))));
        assert!(c("currency? == \"EUR\"").allows(&args(json!({}))));
    }

    #[test]
    fn constraints_apply_to_tools_declaring_the_argument_or_calls_carrying_it() {
        let refund = args(json!({ "properties": { "amount": { "type": "number" } } }));
        let ticket = args(json!({ "properties": { "ticket_id": { "type": "integer" } } }));
        let stored = vec!["amount <= 500".to_string()];
        assert_eq!(violated(&stored, &refund, &args(json!({}))), stored);
        assert!(violated(&stored, &refund, &args(json!({ "amount": 40 }))).is_empty());
        // A tool without that argument is not concerned...
        assert!(violated(&stored, &ticket, &args(json!({ "ticket_id": 1 }))).is_empty());
        // ...unless the call carries it anyway.
        assert_eq!(
            violated(&stored, &ticket, &args(json!({ "amount": 900 }))),
            stored
        );
        let broken = vec!["amount <=".to_string()];
        assert_eq!(
            violated(&broken, &refund, &args(json!({ "amount": 1 }))),
            broken
        );
    }

    #[test]
    fn implication_recognises_equal_or_stricter_constraints() {
        let op = c("amount <= 500");
        assert!(c("amount <= 500").implies(&op));
        assert!(c("amount <= 500.0").implies(&op));
        assert!(c("amount <= 100").implies(&op));
        assert!(c("amount < 500").implies(&op));
        assert!(c("amount == 20").implies(&op));
        assert!(c("amount in [1, 499.5]").implies(&op));
        assert!(!c("amount <= 501").implies(&op));
        assert!(!c("amount in [1, 501]").implies(&op));
        assert!(!c("amount >= 1").implies(&op));
        assert!(!c("other <= 1").implies(&op));
        // Optional is weaker than required, not the other way round.
        assert!(!c("amount? <= 100").implies(&op));
        assert!(c("amount <= 100").implies(&c("amount? <= 500")));
        assert!(c("amount < 10").implies(&c("amount < 10")));
        assert!(!c("amount <= 10").implies(&c("amount < 10")));
        assert!(c("amount > 10").implies(&c("amount >= 10")));
        assert!(!c("amount >= 10").implies(&c("amount > 10")));
        assert!(c("currency == \"EUR\"").implies(&c("currency in [\"EUR\", \"USD\"]")));
        assert!(!c("currency in [\"EUR\", \"GBP\"]").implies(&c("currency == \"EUR\"")));
        assert!(c("currency != \"USD\"").implies(&c("currency != \"USD\"")));
        assert!(!c("currency != \"GBP\"").implies(&c("currency != \"USD\"")));
    }

    #[test]
    fn malformed_constraints_are_rejected() {
        for bad in [
            "",
            "amount",
            "amount <= lots",
            "<= 5",
            "amount ~ 5",
            "name < \"x\"",
            "id in 5",
            "amount ?? <= 5",
            "?amount <= 5",
        ] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
    }
}
