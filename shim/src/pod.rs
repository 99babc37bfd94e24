//! Pods: several containers in one VM.
//!
//! CRI creates a pod as its sandbox (pause) container (annotation
//! `io.kubernetes.cri.container-type = sandbox`, `io.kubernetes.cri.sandbox-id` = its own
//! id) and then the pod's containers (`container-type = container`, `sandbox-id` = the
//! pause container's id). The grouping key (the sandbox id) picks the shim socket, so every
//! container of a pod reaches the shim process that booted the pod's VM. Without the
//! annotations a container is its own sandbox, as before.
//!
//! Every container of a pod, the sandbox container's and those created later, reaches the
//! VM through the sandbox's share (`crate::share`), which is live: a container created
//! later simply appears in it.

use std::{collections::HashMap, fs::File, io::Read, path::Path};

use crate::util::{sanitize, validate_id};

/// CRI annotation: `sandbox` (the pod's pause container) or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the id of the pod's sandbox container.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// Largest config.json `start` reads for the annotations.
const MAX_SPEC_SIZE: u64 = 4 * 1024 * 1024;

/// Where a container stands in a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// No CRI annotations: the container is its own sandbox (its own VM).
    Single,
    /// The pod's sandbox container: it boots the VM (sandbox id = container id).
    Sandbox,
    /// A container of the pod whose sandbox container is `sandbox_id`.
    Container {
        /// The sandbox container's id.
        sandbox_id: String,
    },
}

impl PodRole {
    /// The sandbox id of container `id` in this role.
    pub fn sandbox_id<'a>(&'a self, id: &'a str) -> &'a str {
        match self {
            PodRole::Container { sandbox_id } => sandbox_id,
            _ => id,
        }
    }
}

/// The role of container `id` from its OCI annotations. Errors say which annotation is
/// wrong.
pub fn pod_role(
    id: &str,
    annotations: Option<&HashMap<String, String>>,
) -> Result<PodRole, String> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let sandbox_id = get(SANDBOX_ID);
    match get(CONTAINER_TYPE) {
        None => Ok(PodRole::Single),
        Some("sandbox") => match sandbox_id {
            None => Ok(PodRole::Sandbox),
            Some(s) if s == id => Ok(PodRole::Sandbox),
            Some(s) => Err(format!(
                "annotation {SANDBOX_ID} of sandbox container {id} must be its own id, not {:?}",
                sanitize(s, 80)
            )),
        },
        Some("container") => {
            let s = sandbox_id.ok_or_else(|| {
                format!("annotation {CONTAINER_TYPE}=container needs {SANDBOX_ID} (the pod's sandbox container)")
            })?;
            validate_id(s).map_err(|e| format!("annotation {SANDBOX_ID}: {e}"))?;
            if s == id {
                return Err(format!(
                    "annotation {SANDBOX_ID} of container {id} names the container itself, but {CONTAINER_TYPE} is \"container\", not \"sandbox\""
                ));
            }
            Ok(PodRole::Container {
                sandbox_id: s.to_string(),
            })
        }
        Some(other) => Err(format!(
            "annotation {CONTAINER_TYPE} is {:?}: expected \"sandbox\" or \"container\"",
            sanitize(other, 80)
        )),
    }
}

/// The shim grouping key of container `id` (the `start` subcommand): its sandbox id, so
/// that a pod's containers reach the shim that runs the pod's VM. A bad annotation groups
/// the container by its own id; Create then reports the error.
pub fn grouping_key(id: &str, annotations: Option<&HashMap<String, String>>) -> String {
    match pod_role(id, annotations) {
        Ok(r) => r.sandbox_id(id).to_string(),
        Err(_) => id.to_string(),
    }
}

/// The annotations of the OCI spec `<bundle>/config.json`, `None` when it cannot be read
/// or parsed (bounded read).
pub fn bundle_annotations(bundle: &Path) -> Option<HashMap<String, String>> {
    let f = File::open(bundle.join("config.json")).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_SPEC_SIZE).read_to_end(&mut buf).ok()?;
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: Option<HashMap<String, String>>,
    }
    serde_json::from_slice::<Annotated>(&buf).ok()?.annotations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn roles_from_cri_annotations() {
        assert_eq!(pod_role("c1", None).unwrap(), PodRole::Single);
        assert_eq!(
            pod_role("c1", Some(&ann(&[("x", "y")]))).unwrap(),
            PodRole::Single
        );
        let sb = ann(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "pod1")]);
        assert_eq!(pod_role("pod1", Some(&sb)).unwrap(), PodRole::Sandbox);
        assert_eq!(
            pod_role("pod1", Some(&ann(&[(CONTAINER_TYPE, "sandbox")]))).unwrap(),
            PodRole::Sandbox
        );
        let e = pod_role("other", Some(&sb)).unwrap_err();
        assert!(e.contains("must be its own id"), "{e}");
        let c = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "pod1")]);
        assert_eq!(
            pod_role("c1", Some(&c)).unwrap(),
            PodRole::Container {
                sandbox_id: "pod1".into()
            }
        );
        assert_eq!(pod_role("c1", Some(&c)).unwrap().sandbox_id("c1"), "pod1");
        assert_eq!(PodRole::Sandbox.sandbox_id("pod1"), "pod1");
        let e = pod_role("pod1", Some(&c)).unwrap_err();
        assert!(e.contains("names the container itself"), "{e}");
        let e = pod_role("c1", Some(&ann(&[(CONTAINER_TYPE, "container")]))).unwrap_err();
        assert!(e.contains("needs io.kubernetes.cri.sandbox-id"), "{e}");
        let bad = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "../x")]);
        assert!(pod_role("c1", Some(&bad))
            .unwrap_err()
            .contains("invalid container id"));
        let e = pod_role("c1", Some(&ann(&[(CONTAINER_TYPE, "vm\n")]))).unwrap_err();
        assert!(e.contains("expected \"sandbox\" or \"container\""), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn grouping_key_is_the_sandbox_id() {
        let c = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "pod1")]);
        assert_eq!(grouping_key("c1", Some(&c)), "pod1");
        let sb = ann(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "pod1")]);
        assert_eq!(grouping_key("pod1", Some(&sb)), "pod1");
        assert_eq!(grouping_key("c1", None), "c1");
        let bad = ann(&[(CONTAINER_TYPE, "container")]);
        assert_eq!(grouping_key("c1", Some(&bad)), "c1");
    }

    #[test]
    fn annotations_from_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(bundle_annotations(dir.path()), None);
        std::fs::write(
            dir.path().join("config.json"),
            br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"p"}}"#,
        )
        .unwrap();
        let a = bundle_annotations(dir.path()).unwrap();
        assert_eq!(a.get(SANDBOX_ID).map(String::as_str), Some("p"));
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        assert_eq!(bundle_annotations(dir.path()), None);
        std::fs::write(dir.path().join("config.json"), b"not json").unwrap();
        assert_eq!(bundle_annotations(dir.path()), None);
    }
}
