//! Pods: several containers in one VM.
//!
//! A CRI runtime manager creates a pod as its sandbox (pause, "infra") container and then
//! the pod's containers, and says which is which in OCI annotations. Two dialects are
//! understood, one mapping for both ([`pod_info`]):
//!
//! | | containerd's CRI plugin | CRI-O |
//! |---|---|---|
//! | role (`sandbox` / `container`) | `io.kubernetes.cri.container-type` | `io.kubernetes.cri-o.ContainerType` |
//! | the sandbox container's id | `io.kubernetes.cri.sandbox-id` | `io.kubernetes.cri-o.SandboxID` |
//! | pod name | `io.kubernetes.cri.sandbox-name` | `io.kubernetes.cri-o.KubeName` (sandbox), `io.kubernetes.pod.name` in `io.kubernetes.cri-o.Labels` |
//! | pod namespace | `io.kubernetes.cri.sandbox-namespace` | `io.kubernetes.cri-o.Namespace` (sandbox), `io.kubernetes.pod.namespace` in `io.kubernetes.cri-o.Labels` |
//! | container name | `io.kubernetes.cri.container-name` | `io.kubernetes.container.name` in `io.kubernetes.cri-o.Labels`, else `io.kubernetes.cri-o.ContainerName` |
//!
//! Both give the sandbox container its own id as sandbox id. The grouping key (the sandbox
//! id) picks the shim socket, so every container of a pod reaches the shim process that
//! booted the pod's VM. Without a role annotation a container is its own sandbox, as
//! before (a sandbox id alone, as podman sets CRI-O's, groups nothing).
//!
//! When both dialects name the role or the sandbox id they must agree: CRI-O copies a
//! pod's Kubernetes annotations into every spec, so a user's pod annotation
//! `io.kubernetes.cri.sandbox-id` must not steer a CRI-O container into another pod's VM
//! (the first key found would). A disagreement is an error naming both annotations.
//!
//! Every container of a pod, the sandbox container's and those created later, reaches the
//! VM through the sandbox's share (`crate::share`), which is live: a container created
//! later simply appears in it.

use std::{collections::HashMap, fs::File, io::Read, path::Path};

use crate::util::{sanitize, validate_id};

/// containerd CRI annotation: `sandbox` (the pod's pause container) or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// containerd CRI annotation: the id of the pod's sandbox container.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// containerd CRI annotation: the pod's name.
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// containerd CRI annotation: the pod's namespace.
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// containerd CRI annotation: the container's name in the pod spec.
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// CRI-O annotation: `sandbox` or `container`.
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
/// CRI-O annotation: the id of the pod's sandbox (infra) container.
pub const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
/// CRI-O annotation: the pod's name (sandbox container only).
pub const CRIO_KUBE_NAME: &str = "io.kubernetes.cri-o.KubeName";
/// CRI-O annotation: the pod's namespace (sandbox container only).
pub const CRIO_NAMESPACE: &str = "io.kubernetes.cri-o.Namespace";
/// CRI-O annotation: CRI-O's container name (`k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`).
pub const CRIO_CONTAINER_NAME: &str = "io.kubernetes.cri-o.ContainerName";
/// CRI-O annotation: the kubelet's labels of the pod or container, as a JSON object.
pub const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";

/// Kubelet label: the pod's name.
const KUBE_POD_NAME: &str = "io.kubernetes.pod.name";
/// Kubelet label: the pod's namespace.
const KUBE_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Kubelet label: the container's name.
const KUBE_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Largest config.json `start` reads for the annotations.
const MAX_SPEC_SIZE: u64 = 4 * 1024 * 1024;
/// Longest name kept from an annotation (pod, namespace, container): Kubernetes names are
/// at most 253 bytes.
const MAX_NAME: usize = 253;

/// Where a container stands in a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// No role annotation: the container is its own sandbox (its own VM).
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

    /// The role as the guest sees it.
    pub fn guest(&self) -> kata_rs_protocol::guest::PodRole {
        use kata_rs_protocol::guest::PodRole as G;
        match self {
            PodRole::Single => G::Single,
            PodRole::Sandbox => G::Sandbox,
            PodRole::Container { .. } => G::Member,
        }
    }

    /// CreateContainerRequest's `sandbox_id` for container `id` in this role.
    pub fn request_sandbox_id<'a>(&'a self, id: &'a str) -> &'a str {
        self.guest().request_sandbox_id(id, self.sandbox_id(id))
    }
}

/// Which runtime manager's annotations placed the container in its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// No role annotation ([`PodRole::Single`]).
    None,
    /// containerd's CRI plugin (`io.kubernetes.cri.*`).
    Containerd,
    /// CRI-O (`io.kubernetes.cri-o.*`).
    CriO,
}

impl Dialect {
    /// The manager's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::None => "none",
            Dialect::Containerd => "containerd CRI",
            Dialect::CriO => "CRI-O",
        }
    }
}

/// A container's place in a pod, and the pod's names where the annotations give them
/// (for messages; the names are sanitized and never decide anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Sandbox, container of a pod, or alone.
    pub role: PodRole,
    /// Whose annotations said so.
    pub dialect: Dialect,
    /// The pod's name.
    pub pod_name: Option<String>,
    /// The pod's namespace.
    pub pod_namespace: Option<String>,
    /// The container's name in the pod spec (CRI-O's own name when the kubelet's label is
    /// missing).
    pub container_name: Option<String>,
}

/// The value of the containerd key `cri` or the CRI-O key `crio` with the key it came
/// from; both present with different values is an error naming both.
fn agreed<'a>(
    a: &'a HashMap<String, String>,
    cri: &'static str,
    crio: &'static str,
) -> Result<Option<(&'static str, &'a str)>, String> {
    match (a.get(cri), a.get(crio)) {
        (Some(x), Some(y)) if x != y => Err(format!(
            "annotations {cri}={:?} and {crio}={:?} contradict each other: a container is placed in a pod by containerd's or CRI-O's annotations, and where both are present they must agree",
            sanitize(x, 80),
            sanitize(y, 80)
        )),
        (_, Some(y)) => Ok(Some((crio, y.as_str()))),
        (Some(x), None) => Ok(Some((cri, x.as_str()))),
        (None, None) => Ok(None),
    }
}

/// The role of container `id` and its pod's names, from its OCI annotations (either
/// dialect, see the module doc). Errors name the annotation that is wrong.
pub fn pod_info(
    id: &str,
    annotations: Option<&HashMap<String, String>>,
) -> Result<PodInfo, String> {
    let empty = HashMap::new();
    let a = annotations.unwrap_or(&empty);
    let typ = agreed(a, CONTAINER_TYPE, CRIO_CONTAINER_TYPE)?;
    let sandbox_id = agreed(a, SANDBOX_ID, CRIO_SANDBOX_ID)?;
    let Some((type_key, typ)) = typ else {
        return Ok(PodInfo {
            role: PodRole::Single,
            dialect: Dialect::None,
            pod_name: None,
            pod_namespace: None,
            container_name: None,
        });
    };
    let dialect = if type_key == CRIO_CONTAINER_TYPE {
        Dialect::CriO
    } else {
        Dialect::Containerd
    };
    // The sandbox id annotation this dialect sends (for messages when it is missing).
    let id_key = match dialect {
        Dialect::CriO => CRIO_SANDBOX_ID,
        _ => SANDBOX_ID,
    };
    let role = match typ {
        "sandbox" => match sandbox_id {
            None => PodRole::Sandbox,
            Some((_, s)) if s == id => PodRole::Sandbox,
            Some((k, s)) => {
                return Err(format!(
                    "annotation {k} of sandbox container {id} must be its own id, not {:?}",
                    sanitize(s, 80)
                ))
            }
        },
        "container" => {
            let (k, s) = sandbox_id.ok_or_else(|| {
                format!(
                    "annotation {type_key}=container needs {id_key} (the pod's sandbox container)"
                )
            })?;
            validate_id(s).map_err(|e| format!("annotation {k}: {e}"))?;
            if s == id {
                return Err(format!(
                    "annotation {k} of container {id} names the container itself, but {type_key} is \"container\", not \"sandbox\""
                ));
            }
            PodRole::Container {
                sandbox_id: s.to_string(),
            }
        }
        other => {
            return Err(format!(
                "annotation {type_key} is {:?}: expected \"sandbox\" or \"container\"",
                sanitize(other, 80)
            ))
        }
    };
    let clean = |v: &str| sanitize(v, MAX_NAME).replace(['\n', '\t'], "?");
    let name = |k: &str| a.get(k).map(|v| clean(v));
    let (pod_name, pod_namespace, container_name) = match dialect {
        Dialect::CriO => {
            // The kubelet's labels, as CRI-O records them; informational, so a value that
            // is not a JSON object of strings only loses the names.
            let labels: HashMap<String, String> = a
                .get(CRIO_LABELS)
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default();
            let label = |k: &str| labels.get(k).map(|v| clean(v));
            (
                name(CRIO_KUBE_NAME).or_else(|| label(KUBE_POD_NAME)),
                name(CRIO_NAMESPACE).or_else(|| label(KUBE_POD_NAMESPACE)),
                label(KUBE_CONTAINER_NAME).or_else(|| name(CRIO_CONTAINER_NAME)),
            )
        }
        _ => (
            name(SANDBOX_NAME),
            name(SANDBOX_NAMESPACE),
            name(CONTAINER_NAME),
        ),
    };
    Ok(PodInfo {
        role,
        dialect,
        pod_name,
        pod_namespace,
        container_name,
    })
}

/// The role of container `id` from its OCI annotations ([`pod_info`] without the names).
/// Errors say which annotation is wrong.
pub fn pod_role(
    id: &str,
    annotations: Option<&HashMap<String, String>>,
) -> Result<PodRole, String> {
    pod_info(id, annotations).map(|i| i.role)
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

/// A pod sandbox's host namespaces that a VM cannot give its containers, refused at
/// RunPodSandbox (the sandbox container's Create) with an error naming the pod option.
///
/// CRI leaves a namespace out of the sandbox's OCI spec for NamespaceMode NODE: no `pid`
/// entry for `hostPID`, no `ipc` entry for `hostIPC`. The pod's containers run in a guest
/// kernel, whose processes and System V IPC objects are not the node's, so such a pod would
/// run with a meaning other than the one it asked for. A missing `network` entry
/// (`hostNetwork`) is accepted: docs/host-network.md says what that pod gets.
pub fn refuse_host_namespaces(spec: &oci_spec::runtime::Spec) -> Result<(), String> {
    use oci_spec::runtime::LinuxNamespaceType as T;
    let has = |t: T| {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == t))
    };
    let refused: Vec<&str> = [
        (T::Pid, "hostPID (the node's PID namespace)"),
        (T::Ipc, "hostIPC (the node's IPC namespace)"),
    ]
    .into_iter()
    .filter(|(t, _)| !has(*t))
    .map(|(_, what)| what)
    .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the pod asks for {}, which kata-rs cannot give: its containers run in a VM with its \
         own kernel, which cannot share the node's namespaces (run the pod with a runc \
         runtime class, or without that option)",
        refused.join(" and ")
    ))
}

/// The annotations of the OCI spec `<bundle>/config.json`, `None` when it cannot be read
/// or parsed (bounded read).
pub fn bundle_annotations(bundle: &Path) -> Option<HashMap<String, String>> {
    let f = File::open(bundle.join("config.json")).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_SPEC_SIZE).read_to_end(&mut buf).ok()?;
    annotations_of(&buf)
}

/// The annotations of an OCI spec's JSON, read without parsing the rest of it.
pub fn annotations_of(spec_json: &[u8]) -> Option<HashMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: Option<HashMap<String, String>>,
    }
    serde_json::from_slice::<Annotated>(spec_json)
        .ok()?
        .annotations
}

#[cfg(test)]
mod tests;
