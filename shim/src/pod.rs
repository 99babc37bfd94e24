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
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec_without(types: &[&str]) -> oci_spec::runtime::Spec {
        let all = ["pid", "ipc", "uts", "mount", "network"];
        let ns: Vec<String> = all
            .iter()
            .filter(|t| !types.contains(t))
            .map(|t| format!("{{\"type\":\"{t}\"}}"))
            .collect();
        let json = format!(
            "{{\"ociVersion\":\"1.0.2\",\"linux\":{{\"namespaces\":[{}]}}}}",
            ns.join(",")
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn host_pid_and_ipc_pods_are_refused_host_network_is_not() {
        assert!(refuse_host_namespaces(&spec_without(&[])).is_ok());
        assert!(refuse_host_namespaces(&spec_without(&["network"])).is_ok());
        let e = refuse_host_namespaces(&spec_without(&["pid"])).unwrap_err();
        assert!(e.contains("hostPID") && !e.contains("hostIPC"), "{e}");
        let e = refuse_host_namespaces(&spec_without(&["ipc", "network"])).unwrap_err();
        assert!(e.contains("hostIPC") && !e.contains("hostPID"), "{e}");
        let e = refuse_host_namespaces(&spec_without(&["pid", "ipc"])).unwrap_err();
        assert!(e.contains("hostPID") && e.contains("hostIPC"), "{e}");
        // No linux section at all: nothing of the pod's own namespaces.
        let bare: oci_spec::runtime::Spec =
            serde_json::from_str("{\"ociVersion\":\"1.0.2\"}").unwrap();
        assert!(refuse_host_namespaces(&bare).is_err());
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
        assert_eq!(PodRole::Single.request_sandbox_id("c1"), "");
        assert_eq!(PodRole::Sandbox.request_sandbox_id("pod1"), "pod1");
        let member = PodRole::Container {
            sandbox_id: "pod1".into(),
        };
        assert_eq!(member.request_sandbox_id("c1"), "pod1");
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

    /// The annotations CRI-O (server/sandbox_run_linux.go) puts on a pod's sandbox (infra)
    /// container, with the kubelet's pod labels it copies in: pod `web` in namespace
    /// `shop`, sandbox id `sb1` (CRI-O's ids are 64 hex digits; short here).
    fn crio_sandbox() -> HashMap<String, String> {
        ann(&[
            (
                "io.kubernetes.cri-o.Annotations",
                r#"{"kubernetes.io/config.source":"api"}"#,
            ),
            (
                "io.kubernetes.cri-o.CgroupParent",
                "kubepods-besteffort-pod1234.slice",
            ),
            ("io.kubernetes.cri-o.ContainerID", "sb1"),
            (
                "io.kubernetes.cri-o.ContainerName",
                "k8s_POD_web_shop_1234_0",
            ),
            ("io.kubernetes.cri-o.ContainerType", "sandbox"),
            (
                "io.kubernetes.cri-o.Created",
                "2026-12-04T04:00:00.000000000Z",
            ),
            ("io.kubernetes.cri-o.HostName", "web"),
            ("io.kubernetes.cri-o.HostNetwork", "false"),
            (
                "io.kubernetes.cri-o.HostnamePath",
                "/run/containers/storage/overlay-containers/sb1/userdata/hostname",
            ),
            ("io.kubernetes.cri-o.Image", "registry.k8s.io/pause:3.9"),
            ("io.kubernetes.cri-o.KubeName", "web"),
            (
                "io.kubernetes.cri-o.Labels",
                r#"{"io.kubernetes.container.name":"POD","io.kubernetes.pod.name":"web","io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.uid":"1234"}"#,
            ),
            (
                "io.kubernetes.cri-o.LogPath",
                "/var/log/pods/shop_web_1234/sb1.log",
            ),
            (
                "io.kubernetes.cri-o.Metadata",
                r#"{"name":"web","uid":"1234","namespace":"shop"}"#,
            ),
            (
                "io.kubernetes.cri-o.MountPoint",
                "/var/lib/containers/storage/overlay/abc/merged",
            ),
            ("io.kubernetes.cri-o.Name", "k8s_web_shop_1234_0"),
            ("io.kubernetes.cri-o.Namespace", "shop"),
            ("io.kubernetes.cri-o.NamespaceOptions", r#"{"pid":1}"#),
            ("io.kubernetes.cri-o.PortMappings", "[]"),
            ("io.kubernetes.cri-o.PrivilegedRuntime", "false"),
            (
                "io.kubernetes.cri-o.ResolvPath",
                "/run/containers/storage/overlay-containers/sb1/userdata/resolv.conf",
            ),
            ("io.kubernetes.cri-o.RuntimeHandler", "kata"),
            ("io.kubernetes.cri-o.SandboxID", "sb1"),
            ("io.kubernetes.cri-o.SeccompProfilePath", ""),
            (
                "io.kubernetes.cri-o.ShmPath",
                "/run/containers/storage/overlay-containers/sb1/userdata/shm",
            ),
            ("io.container.manager", "cri-o"),
            ("io.kubernetes.container.name", "POD"),
            ("io.kubernetes.pod.name", "web"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", "1234"),
            ("kubernetes.io/config.source", "api"),
        ])
    }

    /// The annotations CRI-O (server/container_create_linux.go) puts on container `app`
    /// (id `c1`) of that pod.
    fn crio_container() -> HashMap<String, String> {
        ann(&[
            (
                "io.kubernetes.cri-o.Annotations",
                r#"{"io.kubernetes.container.hash":"5e1b","io.kubernetes.container.restartCount":"0"}"#,
            ),
            ("io.kubernetes.cri-o.ContainerID", "c1"),
            ("io.kubernetes.cri-o.ContainerType", "container"),
            (
                "io.kubernetes.cri-o.Created",
                "2026-12-04T04:00:01.000000000Z",
            ),
            ("io.kubernetes.cri-o.IP.0", "10.88.0.7"),
            (
                "io.kubernetes.cri-o.Image",
                "docker.io/library/busybox:latest",
            ),
            (
                "io.kubernetes.cri-o.ImageName",
                "docker.io/library/busybox:latest",
            ),
            (
                "io.kubernetes.cri-o.ImageRef",
                "docker.io/library/busybox@sha256:1b2c",
            ),
            (
                "io.kubernetes.cri-o.Labels",
                r#"{"io.kubernetes.container.name":"app","io.kubernetes.pod.name":"web","io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.uid":"1234"}"#,
            ),
            (
                "io.kubernetes.cri-o.LogPath",
                "/var/log/pods/shop_web_1234/app/0.log",
            ),
            ("io.kubernetes.cri-o.Metadata", r#"{"name":"app"}"#),
            (
                "io.kubernetes.cri-o.MountPoint",
                "/var/lib/containers/storage/overlay/def/merged",
            ),
            ("io.kubernetes.cri-o.Name", "k8s_app_web_shop_1234_0"),
            (
                "io.kubernetes.cri-o.ResolvPath",
                "/run/containers/storage/overlay-containers/sb1/userdata/resolv.conf",
            ),
            ("io.kubernetes.cri-o.SandboxID", "sb1"),
            ("io.kubernetes.cri-o.SandboxName", "k8s_POD_web_shop_1234_0"),
            ("io.kubernetes.cri-o.SeccompProfilePath", "RuntimeDefault"),
            ("io.kubernetes.cri-o.Stdin", "false"),
            ("io.kubernetes.cri-o.StdinOnce", "false"),
            ("io.kubernetes.cri-o.TTY", "false"),
            ("io.kubernetes.cri-o.Volumes", "[]"),
            ("io.container.manager", "cri-o"),
            ("io.kubernetes.container.hash", "5e1b"),
            ("io.kubernetes.container.restartCount", "0"),
        ])
    }

    /// containerd 1.7's CRI annotations on the same pod's sandbox and container.
    fn containerd_sandbox() -> HashMap<String, String> {
        ann(&[
            (CONTAINER_TYPE, "sandbox"),
            (SANDBOX_ID, "sb1"),
            (SANDBOX_NAME, "web"),
            (SANDBOX_NAMESPACE, "shop"),
            ("io.kubernetes.cri.sandbox-uid", "1234"),
            (
                "io.kubernetes.cri.sandbox-log-directory",
                "/var/log/pods/shop_web_1234",
            ),
            ("io.kubernetes.cri.image-name", "registry.k8s.io/pause:3.9"),
            ("io.kubernetes.cri.sandbox-cpu-period", "100000"),
            ("io.kubernetes.cri.sandbox-cpu-quota", "0"),
            ("io.kubernetes.cri.sandbox-cpu-shares", "2"),
            ("io.kubernetes.cri.sandbox-memory", "0"),
        ])
    }

    fn containerd_container() -> HashMap<String, String> {
        ann(&[
            (CONTAINER_TYPE, "container"),
            (SANDBOX_ID, "sb1"),
            (SANDBOX_NAME, "web"),
            (SANDBOX_NAMESPACE, "shop"),
            ("io.kubernetes.cri.sandbox-uid", "1234"),
            (CONTAINER_NAME, "app"),
            (
                "io.kubernetes.cri.image-name",
                "docker.io/library/busybox:latest",
            ),
        ])
    }

    #[test]
    fn crio_and_containerd_pods_map_alike() {
        for (what, sandbox, container, dialect) in [
            ("CRI-O", crio_sandbox(), crio_container(), Dialect::CriO),
            (
                "containerd",
                containerd_sandbox(),
                containerd_container(),
                Dialect::Containerd,
            ),
        ] {
            let sb = pod_info("sb1", Some(&sandbox)).unwrap();
            assert_eq!(
                sb,
                PodInfo {
                    role: PodRole::Sandbox,
                    dialect,
                    pod_name: Some("web".into()),
                    pod_namespace: Some("shop".into()),
                    container_name: match dialect {
                        Dialect::CriO => Some("POD".into()),
                        _ => None,
                    },
                },
                "{what} sandbox"
            );
            let c = pod_info("c1", Some(&container)).unwrap();
            assert_eq!(
                c,
                PodInfo {
                    role: PodRole::Container {
                        sandbox_id: "sb1".into()
                    },
                    dialect,
                    pod_name: Some("web".into()),
                    pod_namespace: Some("shop".into()),
                    container_name: Some("app".into()),
                },
                "{what} container"
            );
            // One pod, one VM: both reach the sandbox's shim.
            assert_eq!(grouping_key("sb1", Some(&sandbox)), "sb1", "{what}");
            assert_eq!(grouping_key("c1", Some(&container)), "sb1", "{what}");
            // The sandbox's annotations on another container: not its own id.
            let e = pod_role("c1", Some(&sandbox)).unwrap_err();
            assert!(e.contains("must be its own id"), "{what}: {e}");
        }
    }

    #[test]
    fn crio_errors_name_crio_annotations() {
        let mut c = crio_container();
        c.remove(CRIO_SANDBOX_ID);
        let e = pod_role("c1", Some(&c)).unwrap_err();
        assert!(
            e.contains(
                "io.kubernetes.cri-o.ContainerType=container needs io.kubernetes.cri-o.SandboxID"
            ),
            "{e}"
        );
        let mut c = crio_container();
        c.insert(CRIO_SANDBOX_ID.into(), "../sb1".into());
        let e = pod_role("c1", Some(&c)).unwrap_err();
        assert!(
            e.starts_with("annotation io.kubernetes.cri-o.SandboxID: invalid container id"),
            "{e}"
        );
        let mut c = crio_container();
        c.insert(CRIO_CONTAINER_TYPE.into(), "infra".into());
        let e = pod_role("c1", Some(&c)).unwrap_err();
        assert!(
            e.contains("annotation io.kubernetes.cri-o.ContainerType is \"infra\""),
            "{e}"
        );
        let e = pod_role("sb1", Some(&crio_container())).unwrap_err();
        assert!(
            e.contains("io.kubernetes.cri-o.SandboxID of container sb1 names the container itself"),
            "{e}"
        );
        // Bad labels only lose the names.
        let mut c = crio_container();
        c.insert(CRIO_LABELS.into(), "not json".into());
        let i = pod_info("c1", Some(&c)).unwrap();
        assert_eq!(i.role.sandbox_id("c1"), "sb1");
        assert_eq!(i.pod_name, None);
        assert_eq!(i.container_name.as_deref(), None);
        // A sandbox id alone (podman) groups nothing.
        let alone = ann(&[(CRIO_SANDBOX_ID, "pod9")]);
        assert_eq!(pod_info("c1", Some(&alone)).unwrap().dialect, Dialect::None);
        assert_eq!(grouping_key("c1", Some(&alone)), "c1");
    }

    #[test]
    fn contradicting_dialects_are_refused() {
        // A user's pod annotation, copied by CRI-O into the spec, that names another pod's
        // sandbox: refused, never followed.
        let mut c = crio_container();
        c.insert(SANDBOX_ID.into(), "victim".into());
        let e = pod_role("c1", Some(&c)).unwrap_err();
        assert!(
            e.contains("annotations io.kubernetes.cri.sandbox-id=\"victim\" and io.kubernetes.cri-o.SandboxID=\"sb1\" contradict"),
            "{e}"
        );
        assert_eq!(grouping_key("c1", Some(&c)), "c1");
        let mut s = crio_sandbox();
        s.insert(CONTAINER_TYPE.into(), "container".into());
        let e = pod_role("sb1", Some(&s)).unwrap_err();
        assert!(
            e.contains("io.kubernetes.cri.container-type=\"container\" and io.kubernetes.cri-o.ContainerType=\"sandbox\""),
            "{e}"
        );
        // Agreeing annotations of both dialects are fine; CRI-O's names win.
        let mut c = crio_container();
        c.insert(CONTAINER_TYPE.into(), "container".into());
        c.insert(SANDBOX_ID.into(), "sb1".into());
        let i = pod_info("c1", Some(&c)).unwrap();
        assert_eq!(i.dialect, Dialect::CriO);
        assert_eq!(i.role.sandbox_id("c1"), "sb1");
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
