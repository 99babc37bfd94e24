//! The OCI spec turned into a validated, serialisable plan for the container init
//! ([`InitConfig`]), the namespaces to create and the cgroup settings. Pure code: no system
//! calls, so every rule here is unit-tested. One module per concern: [`mounts`] (with
//! [`mount_options`]), [`namespaces`], [`cgroup`], [`process`], [`seccomp`], and the
//! fields refused by name ([`unsupported`]); this module puts them together ([`plan`]).

pub mod cgroup;
pub mod mount_options;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod seccomp;
pub mod unsupported;

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

pub use cgroup::{plan_cgroup, shares_to_weight};
pub use mount_options::{parse_options, ParsedOptions};
pub use mounts::{check_bind_sources, default_mounts, plan_mounts};
pub use mounts::{MountKind, MountPlan};
pub use namespaces::{plan_namespaces, Namespaces, PodRole};
pub use process::{plan_process, ProcessConfig};
pub use seccomp::plan_seccomp;
pub use unsupported::check_unsupported;

/// Checks a container, sandbox or exec id under the rule the shim checks too
/// ([`kata_rs_protocol::id`], containerd's): it names a cgroup directory and share paths,
/// so it must be a single safe path component.
pub fn validate_id(id: &str) -> Result<()> {
    kata_rs_protocol::id::validate_id(id).map_err(AgentError::invalid)
}

/// Everything the container init needs, sent to it as JSON over the sync socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Guest path of the container root file system.
    pub rootfs: PathBuf,
    /// Remount the root read-only after pivot_root (spec.root.readonly).
    pub readonly_root: bool,
    /// Mounts in order; a tmpfs on /dev gets the standard device nodes.
    pub mounts: Vec<MountPlan>,
    /// Hostname to set (needs a UTS namespace).
    pub hostname: Option<String>,
    /// Unshare a cgroup namespace once in the container cgroup.
    pub cgroup_ns: bool,
    /// Paths made inaccessible (spec.linux.maskedPaths).
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only (spec.linux.readonlyPaths).
    pub readonly_paths: Vec<PathBuf>,
    /// Namespaces to join first thing, as (type name, `/proc/<pid>/ns/<type>`): a pod
    /// container's UTS/IPC namespaces of its sandbox container (filled in by the agent at
    /// create time; the plan leaves it empty).
    #[serde(default)]
    pub join: Vec<(String, PathBuf)>,
    /// The container's directory in the sandbox share (`<share>/<id>`): every bind-mount
    /// source lies in it (see [`check_bind_sources`]) and is resolved inside it, so a
    /// symlink there cannot name a guest path (filled in by the agent at create time).
    #[serde(default)]
    pub sources_dir: PathBuf,
    /// Device nodes to create (spec.linux.devices), after the mounts, as runc does.
    #[serde(default)]
    pub devices: Vec<crate::devices::DeviceNode>,
    /// linux.sysctl as checked by [`crate::sysctl::plan`]: written after pivot_root, before
    /// the read-only paths.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// The process to run.
    #[serde(flatten)]
    pub process: ProcessConfig,
}

/// The validated plan for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the init does.
    pub init: InitConfig,
    /// Namespaces to create.
    pub namespaces: Namespaces,
    /// cgroup v2 interface files to write: (file name, value).
    pub cgroup_writes: Vec<(String, String)>,
    /// The cgroup device program (spec.linux.resources.devices + runc's defaults),
    /// attached to the container's cgroup before the workload runs.
    pub device_program: Vec<crate::devices::BpfInsn>,
}

/// Parses the OCI spec JSON.
pub fn parse_spec(json: &[u8]) -> Result<Spec> {
    if json.is_empty() {
        return Err(AgentError::invalid("oci_spec is empty"));
    }
    serde_json::from_slice(json).map_err(|e| AgentError::invalid(format!("invalid OCI spec: {e}")))
}

/// Checks that `p` is absolute and has no `..`; returns it normalised.
pub(crate) fn clean_abs(what: &str, p: &Path) -> Result<PathBuf> {
    if !p.is_absolute() {
        return Err(AgentError::invalid(format!(
            "{what} {p:?} must be an absolute path"
        )));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(AgentError::invalid(format!(
                    "{what} {p:?} must not contain '..'"
                )))
            }
        }
    }
    Ok(out)
}

/// Validates the spec and builds the plan for a container whose root is `rootfs`.
pub fn plan(spec: &Spec, rootfs: &Path, role: PodRole) -> Result<Plan> {
    check_unsupported(spec)?;
    let rootfs = clean_abs("rootfs_path", rootfs)?;
    if rootfs == Path::new("/") {
        return Err(AgentError::invalid("rootfs_path must not be \"/\""));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| AgentError::invalid("spec has no process"))?;
    let seccomp = plan_seccomp(spec)?;
    let process = plan_process(process, seccomp)?;
    let namespaces = plan_namespaces(spec, role)?;
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if hostname.is_some() && !namespaces.uts && !namespaces.join_uts {
        return Err(AgentError::invalid(
            "spec sets a hostname but has no uts namespace in spec.linux.namespaces",
        ));
    }
    let mounts = plan_mounts(spec.mounts().as_deref().unwrap_or(&[]))?;
    let linux = spec.linux().as_ref();
    let paths = |v: Option<&Vec<String>>, what: &str| -> Result<Vec<PathBuf>> {
        v.map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|p| clean_abs(what, Path::new(p)))
            .collect()
    };
    let masked_paths = paths(linux.and_then(|l| l.masked_paths().as_ref()), "masked path")?;
    let readonly_paths = paths(
        linux.and_then(|l| l.readonly_paths().as_ref()),
        "readonly path",
    )?;
    let cgroup_writes = plan_cgroup(linux.and_then(|l| l.resources().as_ref()))?;
    let device_program = crate::devices::plan(
        linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_deref()),
    )?;
    let devices =
        crate::devices::plan_nodes(linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]))?;
    let sysctls = crate::sysctl::plan(spec, &namespaces)?;
    let init = InitConfig {
        sysctls,
        rootfs,
        readonly_root: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        mounts,
        hostname,
        cgroup_ns: namespaces.cgroup,
        masked_paths,
        readonly_paths,
        join: Vec::new(),
        sources_dir: PathBuf::new(),
        devices,
        process,
    };
    Ok(Plan {
        init,
        namespaces,
        cgroup_writes,
        device_program,
    })
}

/// The spec the plan tests start from, and its parser.
#[cfg(test)]
pub(crate) mod test_spec {
    use oci_spec::runtime::Spec;

    /// Parses a spec that must be valid.
    pub(crate) fn spec(json: &str) -> Spec {
        super::parse_spec(json.as_bytes()).expect("valid spec")
    }

    /// A minimal spec: sh in new pid, mount, uts and ipc namespaces, hostname "box".
    pub(crate) const BASIC: &str = r#"{
        "ociVersion": "1.0.2",
        "process": {"args": ["sh", "-c", "echo hi"], "cwd": "/", "env": ["PATH=/bin"],
                    "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "hostname": "box",
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                 {"type": "ipc"}, {"type": "network"}]}
    }"#;
}

#[cfg(test)]
mod tests {
    use super::test_spec::{spec, BASIC};
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.3").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id(".hidden").is_err());
        assert!(validate_id(&"x".repeat(129)).is_err());
        // The rule is the shim's (containerd's): no `+`, at most 76, alphanumeric ends.
        assert!(validate_id(&"x".repeat(76)).is_ok());
        assert!(validate_id(&"x".repeat(77)).is_err());
        assert!(validate_id("a+b").is_err());
        assert!(validate_id("a-").is_err());
    }

    #[test]
    fn basic_plan() {
        let p = plan(
            &spec(BASIC),
            Path::new("/run/kata-rs/containers/c1/rootfs"),
            PodRole::Single,
        )
        .unwrap();
        assert_eq!(
            p.namespaces,
            Namespaces {
                pid: true,
                uts: true,
                ipc: true,
                cgroup: false,
                ..Default::default()
            }
        );
        assert_eq!(
            p.namespaces.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC
        );
        assert_eq!(p.init.process.args, ["sh", "-c", "echo hi"]);
        assert_eq!(p.init.hostname.as_deref(), Some("box"));
        assert_eq!(p.init.mounts, default_mounts());
        assert!(p.cgroup_writes.is_empty());
        // The init config survives the trip over the sync socket.
        let json = serde_json::to_string(&p.init).unwrap();
        assert_eq!(serde_json::from_str::<InitConfig>(&json).unwrap(), p.init);
    }

    #[test]
    fn rejects_bad_process() {
        let s = BASIC.replace(r#"["sh", "-c", "echo hi"]"#, "[]");
        let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(e.message.contains("process.args is empty"));
        let s = BASIC.replace(r#""cwd": "/""#, r#""cwd": "rel""#);
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single).is_err());
        let s = BASIC.replace(r#""cwd": "/""#, r#""cwd": "/", "terminal": true"#);
        assert!(
            plan(&spec(&s), Path::new("/r"), PodRole::Single)
                .unwrap()
                .init
                .process
                .terminal
        );
        let s = BASIC.replace(r#""cwd": "/""#, r#""cwd": "/", "oomScoreAdj": 1001"#);
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single)
            .unwrap_err()
            .message
            .contains("oomScoreAdj"));
        let s = BASIC.replace(r#"{"type": "uts"},"#, "");
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single)
            .unwrap_err()
            .message
            .contains("hostname"));
        assert!(plan(&spec(BASIC), Path::new("/"), PodRole::Single).is_err());
        assert!(plan(&spec(BASIC), Path::new("/a/../b"), PodRole::Single).is_err());
        assert!(parse_spec(b"").is_err());
        assert!(parse_spec(b"{").is_err());
    }

    #[test]
    fn devices_are_planned_or_refused() {
        // containerd's default: deny all, then runc's defaults; nodes to create.
        let s = BASIC.replace(
            r#""namespaces""#,
            r#""resources": {"devices": [{"allow": false, "access": "rwm"}]},
               "devices": [{"path": "/dev/ttyS0", "type": "c", "major": 4, "minor": 64}],
               "namespaces""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        assert_eq!(p.device_program, crate::devices::plan(None).unwrap());
        assert_eq!(p.init.devices.len(), 1);
        assert_eq!(p.init.devices[0].path, Path::new("/dev/ttyS0"));
        let json = serde_json::to_string(&p.init).unwrap();
        assert_eq!(serde_json::from_str::<InitConfig>(&json).unwrap(), p.init);
        // No rules at all: the same program (runc starts from deny-all too).
        let p = plan(&spec(BASIC), Path::new("/r"), PodRole::Single).unwrap();
        assert_eq!(p.device_program, crate::devices::plan(None).unwrap());
        // Entries the agent cannot honour are refused, never skipped.
        for (bad, msg) in [
            (
                r#""resources": {"devices": [{"allow": true, "type": "p", "access": "r"}]}"#,
                "linux.resources.devices[0]: device type \"p\"",
            ),
            (
                r#""resources": {"devices": [{"allow": true, "type": "c"}]}"#,
                "linux.resources.devices[0]: access \"\" is invalid",
            ),
            (
                r#""devices": [{"path": "/dev/x", "type": "a", "major": 1, "minor": 1}]"#,
                "linux.devices[0] (\"/dev/x\"): type \"a\"",
            ),
        ] {
            let s = BASIC.replace(r#""namespaces""#, &format!(r#"{bad}, "namespaces""#));
            let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
            assert!(e.message.starts_with(msg), "{e}");
        }
        let s = BASIC.replace(
            r#""namespaces""#,
            r#""devices": [{"path": "/dev/x", "type": "z", "major": 1, "minor": 1}], "namespaces""#,
        );
        assert!(parse_spec(s.as_bytes())
            .unwrap_err()
            .message
            .contains("invalid OCI spec"));
    }
}
