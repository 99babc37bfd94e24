//! The `key=value` markers kata-rs-cri prints (tests/tests/cri.rs and cri_net.rs read them)
//! and the text helpers that make a value one word.

use kata_rs_cri::Res;

/// Prints `key=value`; values are one word (the test reads up to the first space).
pub fn marker(key: &str, value: impl std::fmt::Display) {
    println!("{key}={value}");
}

/// Prints `key=ok`, or `key=failed` and the error on an `error| ` line.
pub fn outcome<T>(key: &str, r: &Res<T>) {
    match r {
        Ok(_) => marker(key, "ok"),
        Err(e) => {
            marker(key, "failed");
            println!("error| {key}: {e}");
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// One word for a marker: spaces would cut the value.
pub fn word(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.split_whitespace().collect::<Vec<_>>().join("_")
    }
}
