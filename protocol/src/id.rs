//! The one id rule of kata-rs: container, sandbox and exec ids, checked by the shim before
//! they name host files and by the agent before they name guest paths and cgroups.
//!
//! The rule is containerd's (`pkg/identifiers/validate.go`, `identifiers.Validate`, which
//! containerd applies to every container and sandbox id it creates): letters and digits,
//! with single `.`, `_` or `-` between them (`^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$`), at most
//! [`MAX_ID_LEN`] bytes. Every id containerd and its CRI plugin hand out passes; every id
//! that passes is a single safe path component (no `/`, never `.` or `..`, no leading dot).

/// Longest id: containerd's `identifiers` limit.
pub const MAX_ID_LEN: usize = 76;

/// Longest part of a refused id quoted back in the error.
const QUOTE_MAX: usize = 80;

/// Whether `id` is a valid id under the rule of this module.
pub fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    let sep = |c: u8| matches!(c, b'.' | b'_' | b'-');
    !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || sep(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !b.windows(2).any(|w| sep(w[0]) && sep(w[1]))
}

/// Checks an id (container, sandbox or exec) under containerd's rule; the error quotes
/// the id, escaped and shortened, so it is safe to log and return.
pub fn validate_id(id: &str) -> Result<(), String> {
    if is_valid_id(id) {
        return Ok(());
    }
    let mut quoted: String = id.chars().take(QUOTE_MAX).collect();
    if id.chars().nth(QUOTE_MAX).is_some() {
        quoted.push_str("...");
    }
    Err(format!(
        "invalid container id {quoted:?}: use letters and digits with single '.', '_' or '-' between them, at most {MAX_ID_LEN} characters"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_containerd_and_cri_hand_out_pass() {
        let hex64 = "0123456789abcdef".repeat(4);
        let longest = "x".repeat(MAX_ID_LEN);
        for ok in [
            "a",
            "7",
            "abc-123",
            "A.b_c",
            "pod1.c-2_x",
            hex64.as_str(),
            longest.as_str(),
        ] {
            validate_id(ok).unwrap();
        }
    }

    #[test]
    fn edge_cases_are_refused() {
        let too_long = "x".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".a",
            "-a",
            "_a",
            "a-",
            "a.",
            "a..b",
            "a-_b",
            "a+b",
            "a b",
            "a\nb",
            "ä",
            too_long.as_str(),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_error_quotes_the_id_escaped_and_short() {
        let e = validate_id("a\u{1b}[31m").unwrap_err();
        assert!(e.contains(r#""a\u{1b}[31m""#), "{e}");
        let e = validate_id(&"y".repeat(500)).unwrap_err();
        assert!(e.len() < 250, "{e}");
        assert!(e.contains("..."), "{e}");
    }
}
