//! The container's namespaces from `spec.linux.namespaces`: which are created at clone
//! time, which are joined from the pod's sandbox container, and which are refused.

use std::collections::HashSet;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{AgentError, Result};

/// Namespaces the container gets, beyond the mount namespace it always gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// New PID namespace (the workload is its PID 1).
    pub pid: bool,
    /// New UTS namespace (own hostname).
    pub uts: bool,
    /// New IPC namespace.
    pub ipc: bool,
    /// New cgroup namespace (created by the init once it sits in its cgroup).
    pub cgroup: bool,
    /// Join the pod sandbox container's PID namespace (at clone time).
    pub join_pid: bool,
    /// Join the pod sandbox container's UTS namespace (the init does, first thing).
    pub join_uts: bool,
    /// Join the pod sandbox container's IPC namespace (the init does, first thing).
    pub join_ipc: bool,
}

/// How a container relates to a pod: the rule travels in CreateContainerRequest.sandbox_id
/// and is the shim's too.
pub use kata_rs_protocol::guest::PodRole;

impl Namespaces {
    /// clone(2) flags for the namespaces created at clone time (mount always; cgroup is
    /// unshared later by the init, after the agent moved it into its cgroup).
    pub fn clone_flags(&self) -> libc::c_int {
        let mut f = libc::CLONE_NEWNS;
        if self.pid {
            f |= libc::CLONE_NEWPID;
        }
        if self.uts {
            f |= libc::CLONE_NEWUTS;
        }
        if self.ipc {
            f |= libc::CLONE_NEWIPC;
        }
        f
    }
}

/// Reads spec.linux.namespaces; rejects what the agent does not support. A namespace with
/// a `path` (a host path, e.g. CRI's `/proc/<pause pid>/ns/ipc`, meaningless in the guest)
/// means, in a pod, the pod sandbox container's namespace of that type ([`PodRole`]).
pub fn plan_namespaces(spec: &Spec, role: PodRole) -> Result<Namespaces> {
    let mut ns = Namespaces::default();
    let mut seen = HashSet::new();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in &list {
        let typ = n.typ();
        if !seen.insert(typ) {
            return Err(AgentError::invalid(format!(
                "namespace {typ} is listed twice in spec.linux.namespaces"
            )));
        }
        if let Some(path) = n.path() {
            match (role, typ) {
                (PodRole::Single, _) => {
                    return Err(AgentError::unimplemented(format!(
                        "joining an existing {typ} namespace ({path:?}) is not supported yet \
                         outside a pod (the CRI annotations io.kubernetes.cri.container-type \
                         and io.kubernetes.cri.sandbox-id make a container part of one)"
                    )))
                }
                // The VM is the pod's network sandbox: the guest's network namespace.
                (_, LinuxNamespaceType::Network) => {}
                (PodRole::Member, LinuxNamespaceType::Pid) => ns.join_pid = true,
                (PodRole::Member, LinuxNamespaceType::Uts) => ns.join_uts = true,
                (PodRole::Member, LinuxNamespaceType::Ipc) => ns.join_ipc = true,
                (
                    PodRole::Sandbox,
                    LinuxNamespaceType::Pid | LinuxNamespaceType::Uts | LinuxNamespaceType::Ipc,
                ) => {
                    return Err(AgentError::invalid(format!(
                        "the pod's sandbox container cannot join a {typ} namespace ({path:?}): \
                         its namespaces are the ones the pod's containers join"
                    )))
                }
                _ => {
                    return Err(AgentError::unimplemented(format!(
                        "joining an existing {typ} namespace ({path:?}) is not supported yet \
                         (a pod's containers share its network, ipc, uts and pid namespaces)"
                    )))
                }
            }
            continue;
        }
        match typ {
            LinuxNamespaceType::Mount => {}
            LinuxNamespaceType::Pid => ns.pid = true,
            LinuxNamespaceType::Uts => ns.uts = true,
            LinuxNamespaceType::Ipc => ns.ipc = true,
            LinuxNamespaceType::Cgroup => ns.cgroup = true,
            // The VM is the pod's network namespace: containers share the guest's.
            LinuxNamespaceType::Network => {}
            LinuxNamespaceType::User => {
                return Err(AgentError::unimplemented(
                    "user namespaces are not supported yet (spec.linux.namespaces has \"user\")",
                ))
            }
            LinuxNamespaceType::Time => {
                return Err(AgentError::unimplemented(
                    "time namespaces are not supported yet (spec.linux.namespaces has \"time\")",
                ))
            }
        }
    }
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_spec::{spec, BASIC};
    use crate::plan::{parse_spec, plan};
    use std::path::Path;

    #[test]
    fn rejects_unsupported_namespaces() {
        let s = BASIC.replace(r#"{"type": "network"}"#, r#"{"type": "user"}"#);
        let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        assert!(e.message.contains("user namespaces"), "{}", e.message);

        let s = BASIC.replace(r#"{"type": "network"}"#, r#"{"type": "bogus"}"#);
        let e = parse_spec(s.as_bytes()).unwrap_err();
        assert!(e.message.contains("invalid OCI spec"), "{}", e.message);
        assert!(e.message.contains("bogus"), "{}", e.message);

        let s = BASIC.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/proc/1/ns/net"}"#,
        );
        let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(e.message.contains("not supported yet"), "{}", e.message);

        let s = BASIC.replace(r#"{"type": "network"}"#, r#"{"type": "pid"}"#);
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single).is_err());
    }

    #[test]
    fn pod_namespaces_map_onto_the_sandbox_container() {
        // A CRI pod container: host paths of the pause container's namespaces.
        let member = BASIC
            .replace(
                r#"{"type": "network"}"#,
                r#"{"type": "network", "path": "/proc/42/ns/net"}"#,
            )
            .replace(
                r#"{"type": "uts"}"#,
                r#"{"type": "uts", "path": "/proc/42/ns/uts"}"#,
            )
            .replace(
                r#"{"type": "ipc"}"#,
                r#"{"type": "ipc", "path": "/proc/42/ns/ipc"}"#,
            );
        let p = plan(&spec(&member), Path::new("/r"), PodRole::Member).unwrap();
        assert_eq!(
            p.namespaces,
            Namespaces {
                pid: true,
                join_uts: true,
                join_ipc: true,
                ..Default::default()
            }
        );
        // Only a new pid (and always mount) namespace at clone time; the hostname may be
        // set in the joined UTS namespace, as runc does.
        assert_eq!(
            p.namespaces.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWPID
        );
        assert_eq!(p.init.hostname.as_deref(), Some("box"));
        // Sharing the pod's PID namespace (shareProcessNamespace).
        let shared = member.replace(
            r#"{"type": "pid"}"#,
            r#"{"type": "pid", "path": "/proc/42/ns/pid"}"#,
        );
        let n = plan(&spec(&shared), Path::new("/r"), PodRole::Member)
            .unwrap()
            .namespaces;
        assert!(n.join_pid && !n.pid);
        assert_eq!(n.clone_flags(), libc::CLONE_NEWNS);
        // The same spec outside a pod is refused, as before.
        let e = plan(&spec(&member), Path::new("/r"), PodRole::Single).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        // The sandbox container: its network path is the guest's; it cannot join itself.
        let sandbox = BASIC.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/var/run/netns/cni-1"}"#,
        );
        let n = plan(&spec(&sandbox), Path::new("/r"), PodRole::Sandbox)
            .unwrap()
            .namespaces;
        assert!(n.pid && n.uts && n.ipc && !n.join_uts);
        let e = plan(&spec(&member), Path::new("/r"), PodRole::Sandbox).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains("sandbox container cannot join"), "{e}");
        // Joining a mount namespace stays unsupported.
        let mnt = BASIC.replace(
            r#"{"type": "mount"}"#,
            r#"{"type": "mount", "path": "/proc/42/ns/mnt"}"#,
        );
        let e = plan(&spec(&mnt), Path::new("/r"), PodRole::Member).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        assert_eq!(PodRole::of("c1", ""), PodRole::Single);
        assert_eq!(PodRole::of("c1", "c1"), PodRole::Sandbox);
        assert_eq!(PodRole::of("c1", "pod"), PodRole::Member);
    }

    fn with_namespaces(list: &str) -> Spec {
        spec(&format!(
            r#"{{"ociVersion": "1.0.2", "process": {{"args": ["sh"], "cwd": "/",
                "user": {{"uid": 0, "gid": 0}}}}, "root": {{"path": "rootfs"}},
                "linux": {{"namespaces": {list}}}}}"#
        ))
    }

    #[test]
    fn created_namespaces_and_clone_flags() {
        let n = plan_namespaces(&with_namespaces("[]"), PodRole::Single).unwrap();
        assert_eq!(n, Namespaces::default());
        assert_eq!(
            n.clone_flags(),
            libc::CLONE_NEWNS,
            "a mount namespace always"
        );
        let n = plan_namespaces(
            &with_namespaces(r#"[{"type": "cgroup"}, {"type": "uts"}]"#),
            PodRole::Single,
        )
        .unwrap();
        assert!(n.cgroup && n.uts && !n.pid && !n.ipc);
        // The cgroup namespace is unshared by the init later, never at clone time.
        assert_eq!(n.clone_flags(), libc::CLONE_NEWNS | libc::CLONE_NEWUTS);
        let n = plan_namespaces(
            &with_namespaces(r#"[{"type": "ipc"}, {"type": "network"}]"#),
            PodRole::Sandbox,
        )
        .unwrap();
        assert_eq!(n.clone_flags(), libc::CLONE_NEWNS | libc::CLONE_NEWIPC);
    }

    #[test]
    fn refusals_name_the_namespace() {
        let e = plan_namespaces(
            &with_namespaces(r#"[{"type": "uts"}, {"type": "uts"}]"#),
            PodRole::Single,
        )
        .unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains("namespace uts is listed twice"), "{e}");
        let e = plan_namespaces(&with_namespaces(r#"[{"type": "time"}]"#), PodRole::Single)
            .unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        assert!(e.message.contains("time namespaces"), "{e}");
        for role in [PodRole::Sandbox, PodRole::Member] {
            let e = plan_namespaces(
                &with_namespaces(r#"[{"type": "cgroup", "path": "/proc/42/ns/cgroup"}]"#),
                role,
            )
            .unwrap_err();
            assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED, "{role:?}");
            assert!(
                e.message.contains("joining an existing cgroup namespace"),
                "{e}"
            );
        }
        // A pod member's network path is the guest's network: nothing to join.
        let n = plan_namespaces(
            &with_namespaces(r#"[{"type": "network", "path": "/proc/42/ns/net"}]"#),
            PodRole::Member,
        )
        .unwrap();
        assert_eq!(n, Namespaces::default());
    }
}
