//! Regression tests for what fuzzing found (FUZZING.md, "Findings"): each
//! input is the minimised one, run through the same public entry point.

use tollgate::manifest::{Source, load_sources};

/// A manifest value starting with a multi-byte character that first
/// appears inside a longer word (`zéx` before `éx`) made the error locator
/// resume its search in the middle of the `é` and panic, so the gateway
/// crashed on a bad manifest instead of reporting it.
#[test]
fn error_locator_survives_a_multibyte_value_inside_a_word() {
    let text = "zéx: 1\nkind: éx\n";
    let errors = load_sources(&[Source {
        path: "m.yaml".into(),
        text: text.into(),
    }])
    .expect_err("an unknown kind is an error");
    assert_eq!(errors.0.len(), 1, "{errors}");
    let e = &errors.0[0];
    assert!(e.message.contains("unknown kind `éx`"), "{e}");
    // Located at the `kind` value, not at the word that merely contains it.
    assert_eq!((e.line, e.column), (2, 7), "{e}");
}
