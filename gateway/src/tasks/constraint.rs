//! Argument constraints of a task: `amount <= 500`, `currency == "EUR"`,
//! `ticket_id in [4521, 4522]`. Deliberately tiny: one argument, one
//! operator, one literal. Anything richer belongs in policy.

use serde_json::Value;

/// A parsed constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// The text as written (shown in refusals and records).
    pub text: String,
    /// Argument name.
    pub arg: String,
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
    /// Parses `ARG OP LITERAL`; literals are JSON (numbers, strings in
    /// double quotes, booleans, or a list for `in`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad = || {
            format!(
                "constraint `{t}` must look like `amount <= 500`, `currency == \"EUR\"` or `id in [1, 2]`"
            )
        };
        let arg_end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .ok_or_else(bad)?;
        let arg = &t[..arg_end];
        if arg.is_empty() {
            return Err(bad());
        }
        let rest = t[arg_end..].trim_start();
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
            op,
            value,
        })
    }

    /// Whether `args` satisfy the constraint. An absent argument satisfies
    /// it (the tool's schema decides whether the argument is required).
    pub fn allows(&self, args: &serde_json::Map<String, Value>) -> bool {
        let Some(actual) = args.get(&self.arg) else {
            return true;
        };
        let num = |v: &Value| v.as_f64();
        match self.op {
            Op::Eq => actual == &self.value,
            Op::Ne => actual != &self.value,
            Op::In => self
                .value
                .as_array()
                .is_some_and(|list| list.contains(actual)),
            op => match (num(actual), num(&self.value)) {
                (Some(a), Some(b)) => match op {
                    Op::Le => a <= b,
                    Op::Lt => a < b,
                    Op::Ge => a >= b,
                    Op::Gt => a > b,
                    _ => false,
                },
                // A non-number where a number is compared fails closed.
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn numeric_string_and_list_constraints() {
        let c = Constraint::parse("amount <= 500").expect("valid");
        assert!(c.allows(&args(json!({ "amount": 40 }))));
        assert!(c.allows(&args(json!({ "amount": 500.0 }))));
        assert!(!c.allows(&args(json!({ "amount": 500.01 }))));
        assert!(!c.allows(&args(json!({ "amount": "40" }))));
        assert!(c.allows(&args(json!({ "other": 1 }))));
        let c = Constraint::parse("currency == \"EUR\"").expect("valid");
        assert!(c.allows(&args(json!({ "currency": "EUR" }))));
        assert!(!c.allows(&args(json!({ "currency": "USD" }))));
        let c = Constraint::parse("ticket_id in [4521, 4522]").expect("valid");
        assert!(c.allows(&args(json!({ "ticket_id": 4522 }))));
        assert!(!c.allows(&args(json!({ "ticket_id": 1 }))));
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
        ] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
    }
}
