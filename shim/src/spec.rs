//! Adjustments the shim makes to a container's OCI spec before it goes to the agent.

use serde_json::Value;

/// Gives a spec that asks for a new UTS namespace but names no hostname the node's
/// hostname, as runc does (a new UTS namespace starts as a copy of the creator's), so the
/// container sees the same hostname under kata-rs as under runc. Specs that set a hostname
/// (CRI always does) and specs that are not JSON objects are returned unchanged.
pub fn with_default_hostname(spec: Vec<u8>, node_hostname: &str) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(&spec) else {
        return spec;
    };
    let has_hostname = v
        .get("hostname")
        .and_then(Value::as_str)
        .is_some_and(|h| !h.is_empty());
    let new_uts = v
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.get("type").and_then(Value::as_str) == Some("uts")
                    && n.get("path")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
            })
        });
    if has_hostname || !new_uts || node_hostname.is_empty() {
        return spec;
    }
    let Some(obj) = v.as_object_mut() else {
        return spec;
    };
    obj.insert("hostname".into(), Value::String(node_hostname.into()));
    serde_json::to_vec(&v).unwrap_or(spec)
}

/// The node's hostname, empty when it cannot be read.
pub fn node_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostname_of(spec: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(spec).unwrap();
        v.get("hostname")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    #[test]
    fn new_uts_namespace_without_hostname_gets_the_nodes() {
        let spec =
            br#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"uts"},{"type":"pid"}]}}"#;
        let out = with_default_hostname(spec.to_vec(), "node-1");
        assert_eq!(hostname_of(&out).as_deref(), Some("node-1"));
    }

    #[test]
    fn explicit_hostname_and_shared_uts_are_kept() {
        let named = br#"{"hostname":"pod-a","linux":{"namespaces":[{"type":"uts"}]}}"#;
        assert_eq!(
            with_default_hostname(named.to_vec(), "node-1"),
            named.to_vec()
        );
        let joined = br#"{"linux":{"namespaces":[{"type":"uts","path":"/proc/1/ns/uts"}]}}"#;
        assert_eq!(
            with_default_hostname(joined.to_vec(), "node-1"),
            joined.to_vec()
        );
        let no_uts = br#"{"linux":{"namespaces":[{"type":"pid"}]}}"#;
        assert_eq!(
            with_default_hostname(no_uts.to_vec(), "node-1"),
            no_uts.to_vec()
        );
    }

    #[test]
    fn malformed_specs_pass_through_unchanged() {
        for bad in [&b"not json"[..], b"[1,2]", b"{\"linux\":5}"] {
            assert_eq!(with_default_hostname(bad.to_vec(), "node-1"), bad.to_vec());
        }
    }
}
