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

/// A spec with no `uts` namespace at all runs in the node's UTS namespace under runc (CRI:
/// a `hostNetwork` pod), so it sees the node's hostname. In the guest that would be the
/// VM's own UTS namespace, with the guest kernel's name. This gives such a spec a UTS
/// namespace that [`with_default_hostname`] then names after the node: a new one for a
/// sandbox or single container, and for a pod's other containers (`member`) the sandbox
/// container's (a `path` tells the agent to join the pod's namespace of that type; the
/// path itself means nothing in the guest). Other specs are returned unchanged.
pub fn with_node_uts(spec: Vec<u8>, member: bool) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(&spec) else {
        return spec;
    };
    let Some(ns) = v
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    else {
        return spec;
    };
    if ns
        .iter()
        .any(|n| n.get("type").and_then(Value::as_str) == Some("uts"))
    {
        return spec;
    }
    let mut uts = serde_json::json!({ "type": "uts" });
    if member {
        uts["path"] = Value::String(HOST_UTS_MARK.into());
    }
    ns.push(uts);
    serde_json::to_vec(&v).unwrap_or(spec)
}

/// The `path` [`with_node_uts`] gives a pod member's UTS namespace: the pod's.
pub const HOST_UTS_MARK: &str = "/proc/self/ns/uts";

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
    fn no_uts_namespace_gets_one_named_after_the_node() {
        let no_uts = br#"{"linux":{"namespaces":[{"type":"pid"}]}}"#;
        let sandbox = with_default_hostname(with_node_uts(no_uts.to_vec(), false), "node-1");
        assert_eq!(hostname_of(&sandbox).as_deref(), Some("node-1"));
        let v: Value = serde_json::from_slice(&sandbox).unwrap();
        assert_eq!(
            v["linux"]["namespaces"][1],
            serde_json::json!({"type": "uts"})
        );
        // A member joins the pod's UTS namespace (named by the sandbox), no hostname of its own.
        let member = with_default_hostname(with_node_uts(no_uts.to_vec(), true), "node-1");
        assert_eq!(hostname_of(&member), None);
        let v: Value = serde_json::from_slice(&member).unwrap();
        assert_eq!(v["linux"]["namespaces"][1]["path"], HOST_UTS_MARK);
        // A spec with a UTS namespace, or without namespaces, is left alone.
        let own = br#"{"linux":{"namespaces":[{"type":"uts"}]}}"#;
        assert_eq!(with_node_uts(own.to_vec(), true), own.to_vec());
        for other in [&b"{}"[..], b"not json", b"{\"linux\":{}}"] {
            assert_eq!(with_node_uts(other.to_vec(), false), other.to_vec());
        }
    }

    #[test]
    fn malformed_specs_pass_through_unchanged() {
        for bad in [&b"not json"[..], b"[1,2]", b"{\"linux\":5}"] {
            assert_eq!(with_default_hostname(bad.to_vec(), "node-1"), bad.to_vec());
        }
    }
}
