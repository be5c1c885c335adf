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

/// YAML ends a line at a lone CR too, so an error's line counts CRs: a
/// file with CR line breaks gets a line number inside the file as an
/// editor shows it (the fuzz target's oracle first counted LF only).
#[test]
fn manifest_errors_count_lone_cr_as_a_line_break() {
    let text = "kind: Agent\rid: a\r\tbroken: [\r";
    let errors = load_sources(&[Source {
        path: "cr.yaml".into(),
        text: text.into(),
    }])
    .expect_err("a tab in the indentation is an error");
    let lines = text.split('\r').filter(|l| !l.is_empty()).count();
    for e in &errors.0 {
        assert!(
            e.line >= 1 && e.line <= lines + 1,
            "{e} (file has {lines} lines)"
        );
        assert_eq!(e.file, std::path::Path::new("cr.yaml"));
    }
}

/// The issuer lookup reads `iss` from a payload that is not strict JSON
/// (invalid UTF-8 inside another claim, which serde skips unchecked). That
/// is harmless: it only chooses whose keys then verify the whole token.
/// Pinned so a change of this behaviour is a decision, not an accident.
#[test]
fn issuer_lookup_tolerates_invalid_utf8_in_other_claims() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let payload = b"{\"iss\":\"https://issuer.example\",\"aud\":\"\x94x\",\"sub\":\"a\"}";
    let token = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"ES256","kid":"k"}"#),
        b64(payload),
        b64(&[7u8; 64])
    );
    assert_eq!(
        tollgate::identity::unverified_issuer(&token).as_deref(),
        Ok("https://issuer.example")
    );
    assert!(serde_json::from_slice::<serde_json::Value>(payload).is_err());
}
