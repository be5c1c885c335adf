//! Target `constraint`: task argument constraints
//! (`tollgate::tasks::constraint::Constraint`), parsing and evaluation.
//!
//! Input: the constraint text, a NUL byte, then the call's arguments as a
//! JSON object (anything else is used as the value of the constrained
//! argument, as JSON if it parses, else as a string).
//!
//! Properties: `parse` never panics; a parsed constraint keeps its trimmed
//! text and parsing that text again gives the same constraint (the type has
//! no `Display`: `text` is its rendering); `allows` is total and says yes
//! for an absent argument only when the constraint is written optional
//! (`amount? <= 500`); each operator disagrees with its negation
//! (`==`/`!=` always, `<`/`>=` and `>`/`<=` on numbers); `==` and `in`
//! accept the very literal they name.

use serde_json::{Map, Value};
use tollgate::tasks::constraint::Constraint;

/// Runs one input.
pub fn run(data: &[u8]) {
    let parts = crate::fields(data, 2);
    let text = String::from_utf8_lossy(parts[0]);
    let Ok(c) = Constraint::parse(&text) else {
        return;
    };
    assert_eq!(
        c.text,
        text.trim(),
        "the constraint's text is not its input"
    );
    assert_eq!(
        Constraint::parse(&c.text).as_ref(),
        Ok(&c),
        "parse(text) does not round trip"
    );
    // An absent argument fails a constraint unless it is written
    // optional (`amount? <= 500`).
    assert_eq!(
        c.allows(&Map::new()),
        c.is_optional(),
        "an absent argument and `{}` (optional: {})",
        c.text,
        c.is_optional()
    );

    let args = match parts.get(1) {
        Some(raw) => match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(map)) => map,
            Ok(other) => one(&c.arg, other),
            Err(_) => one(&c.arg, Value::String(String::from_utf8_lossy(raw).into())),
        },
        None => Map::new(),
    };
    let verdict = c.allows(&args);

    // The operator and literal, as the text spells them.
    let rest = c.text[c.arg.len()..].trim_start();
    let rest = rest.strip_prefix('?').unwrap_or(rest).trim_start();
    let q = if c.is_optional() { "?" } else { "" };
    let Some((op, literal)) = ["<=", ">=", "==", "!=", "<", ">", "in "]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|l| (*op, l.trim())))
    else {
        panic!("`{}` parsed but has no operator", c.text);
    };
    let negation = match op {
        "==" => Some("!="),
        "!=" => Some("=="),
        "<" => Some(">="),
        ">=" => Some("<"),
        ">" => Some("<="),
        "<=" => Some(">"),
        _ => None,
    };
    if let (Some(neg), Some(actual)) = (negation, args.get(&c.arg)) {
        let numeric = matches!(op, "==" | "!=") || actual.is_number();
        if numeric {
            let twin = Constraint::parse(&format!("{}{q} {neg} {literal}", c.arg))
                .unwrap_or_else(|e| panic!("the negation of `{}` does not parse: {e}", c.text));
            assert_eq!(
                twin.allows(&args),
                !verdict,
                "`{}` and `{}` agree on {actual}",
                c.text,
                twin.text
            );
        }
    }
    let lit: Value = serde_json::from_str(literal)
        .unwrap_or_else(|e| panic!("`{}` parsed with a literal that is not JSON: {e}", c.text));
    match op {
        "==" => assert!(
            c.allows(&one(&c.arg, lit.clone())),
            "`{}` refuses its own literal",
            c.text
        ),
        "in " => {
            for item in lit.as_array().into_iter().flatten() {
                assert!(
                    c.allows(&one(&c.arg, item.clone())),
                    "`{}` refuses its own member {item}",
                    c.text
                );
            }
        }
        _ => {}
    }
}

fn one(arg: &str, value: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(arg.to_string(), value);
    m
}
