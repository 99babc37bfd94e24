//! The container's mounts: OCI mount options parsed into MS_* flags, the spec's mounts
//! merged over the defaults every container gets, and the rule that bind sources come only
//! from the container's directory in the sandbox share.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::clean_abs;
use super::mount_options::parse_options;
use crate::error::{AgentError, Result};

/// How one mount is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A new file system instance of the given type (proc, tmpfs, sysfs...).
    Fs(String),
    /// A bind mount of a guest path (recursive when `rbind`).
    Bind {
        /// MS_REC: also bind the mounts below the source.
        recursive: bool,
    },
}

/// One planned mount, destination relative to the container root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// File system type or bind.
    pub kind: MountKind,
    /// Source: device name for file systems, guest path for binds.
    pub source: String,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// MS_* flags (without MS_BIND/MS_REC, which `kind` carries).
    pub flags: u64,
    /// File-system-specific options (`mode=755,size=65536k`).
    pub data: String,
}

impl MountPlan {
    fn fs(fstype: &str, source: &str, dest: &str, options: &[&str]) -> Self {
        let opts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        let parsed = parse_options(&opts);
        MountPlan {
            kind: MountKind::Fs(fstype.to_string()),
            source: source.to_string(),
            destination: PathBuf::from(dest),
            flags: parsed.flags,
            data: parsed.data,
        }
    }
}

/// Checks that every bind mount's source lies in `dir` (the container's directory in the
/// sandbox share, `<share>/<id>/`): the files reach the guest only through the share.
/// Sources are clean absolute paths (the plan refuses `..`), so this is a component-wise
/// prefix test; the init then resolves each source inside `dir`.
pub fn check_bind_sources(mounts: &[MountPlan], dir: &Path) -> Result<()> {
    for m in mounts {
        if let MountKind::Bind { .. } = m.kind {
            let src = Path::new(&m.source);
            if src == dir || !src.starts_with(dir) {
                return Err(AgentError::invalid(format!(
                    "bind mount at {:?}: source {:?} is not in the sandbox share ({}/)",
                    m.destination,
                    m.source,
                    dir.display()
                )));
            }
        }
    }
    Ok(())
}

/// The mounts every container gets unless the spec mounts something at the same place.
pub fn default_mounts() -> Vec<MountPlan> {
    vec![
        MountPlan::fs("proc", "proc", "/proc", &["nosuid", "noexec", "nodev"]),
        MountPlan::fs(
            "tmpfs",
            "tmpfs",
            "/dev",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountPlan::fs(
            "devpts",
            "devpts",
            "/dev/pts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        MountPlan::fs(
            "tmpfs",
            "shm",
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        MountPlan::fs(
            "mqueue",
            "mqueue",
            "/dev/mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        MountPlan::fs(
            "sysfs",
            "sysfs",
            "/sys",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

/// Merges the spec's mounts over the defaults: a spec mount at a default's destination
/// replaces it in place, others are appended in spec order.
pub fn plan_mounts(spec_mounts: &[oci_spec::runtime::Mount]) -> Result<Vec<MountPlan>> {
    let mut plan = default_mounts();
    for m in spec_mounts {
        let dest = clean_abs("mount destination", m.destination())?;
        if dest == Path::new("/") {
            return Err(AgentError::invalid("a mount on \"/\" is not supported"));
        }
        let opts = m.options().clone().unwrap_or_default();
        let parsed = parse_options(&opts);
        let typ = m.typ().clone().unwrap_or_default();
        let mut source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = if parsed.bind.is_some() || typ == "bind" {
            if source.is_empty() {
                return Err(AgentError::invalid(format!(
                    "bind mount at {dest:?} has no source"
                )));
            }
            source = clean_abs("bind mount source", Path::new(&source))?
                .to_string_lossy()
                .into_owned();
            MountKind::Bind {
                recursive: parsed.bind.unwrap_or(false),
            }
        } else {
            match typ.as_str() {
                "" | "none" => {
                    return Err(AgentError::invalid(format!(
                        "mount at {dest:?} has no type and is not a bind mount"
                    )))
                }
                // Only cgroup v2 exists in the guest.
                "cgroup" | "cgroup2" => MountKind::Fs("cgroup2".into()),
                t => MountKind::Fs(t.to_string()),
            }
        };
        let source = if source.is_empty() {
            typ.clone()
        } else {
            source
        };
        let mp = MountPlan {
            kind,
            source,
            destination: dest,
            flags: parsed.flags,
            data: parsed.data,
        };
        if let Some(slot) = plan.iter_mut().find(|p| p.destination == mp.destination) {
            *slot = mp;
        } else {
            plan.push(mp);
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_spec::{spec, BASIC};
    use crate::plan::{plan, PodRole};
    use std::path::Path;

    #[test]
    fn mounts_merge_over_defaults() {
        let s = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
                {"destination": "/data", "type": "bind", "source": "/run/data", "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "source": "/run/hosts", "options": ["bind"]}
            ], "hostname""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        let m = &p.init.mounts;
        assert_eq!(m.len(), default_mounts().len() + 3);
        assert_eq!(m[1].destination, Path::new("/dev"));
        assert_eq!(m[1].data, "mode=700");
        let cg = m
            .iter()
            .find(|m| m.destination == Path::new("/sys/fs/cgroup"))
            .unwrap();
        assert_eq!(cg.kind, MountKind::Fs("cgroup2".into()));
        assert_eq!(cg.flags, libc::MS_RDONLY);
        let data = m
            .iter()
            .find(|m| m.destination == Path::new("/data"))
            .unwrap();
        assert_eq!(data.kind, MountKind::Bind { recursive: true });
        assert_eq!(data.source, "/run/data");
        let hosts = m.last().unwrap();
        assert_eq!(hosts.kind, MountKind::Bind { recursive: false });

        let bad = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [{"destination": "/x/../../etc", "type": "tmpfs"}], "hostname""#,
        );
        assert!(plan(&spec(&bad), Path::new("/r"), PodRole::Single).is_err());
        let bad = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [{"destination": "/x", "options": ["bind"]}], "hostname""#,
        );
        assert!(plan(&spec(&bad), Path::new("/r"), PodRole::Single)
            .unwrap_err()
            .message
            .contains("no source"));
    }

    #[test]
    fn bind_sources_must_lie_in_the_share() {
        let s = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
                {"destination": "/data", "type": "bind", "source": "/run/kata-rs/shared/c1/mounts/1"},
                {"destination": "/etc/hosts", "source": "//run/kata-rs/shared/c1/./mounts/2", "options": ["rbind"]}
            ], "hostname""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        let dir = Path::new("/run/kata-rs/shared/c1");
        check_bind_sources(&p.init.mounts, dir).unwrap();
        assert_eq!(
            p.init.mounts.last().unwrap().source,
            "/run/kata-rs/shared/c1/mounts/2"
        );
        for src in [
            "/run/kata-rs/shared/c2/mounts/1",
            "/run/kata-rs/shared/c1",
            "/run/kata-rs/shared/c10/mounts/1",
            "/etc",
            "/run/kata-rs/containers/c1/mounts/1",
        ] {
            let s = BASIC.replace(
                r#""hostname""#,
                &format!(
                    r#""mounts": [{{"destination": "/x", "type": "bind", "source": "{src}"}}], "hostname""#
                ),
            );
            let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
            let e = check_bind_sources(&p.init.mounts, dir).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
            assert!(
                e.message
                    .contains("not in the sandbox share (/run/kata-rs/shared/c1/)"),
                "{e}"
            );
        }
        // `..` never gets that far.
        let s = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [{"destination": "/x", "type": "bind", "source": "/run/kata-rs/shared/c1/../c2"}], "hostname""#,
        );
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single).is_err());
    }

    fn mounts(json: &str) -> Vec<oci_spec::runtime::Mount> {
        serde_json::from_str(json).expect("valid mounts")
    }

    #[test]
    fn defaults_are_the_standard_container_file_systems() {
        let d = default_mounts();
        let dests: Vec<_> = d.iter().map(|m| m.destination.to_str().unwrap()).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        assert_eq!(d[1].kind, MountKind::Fs("tmpfs".into()));
        assert_eq!(d[1].data, "mode=755,size=65536k");
        assert_eq!(d[1].flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(d[5].flags & libc::MS_RDONLY, libc::MS_RDONLY);
        // No spec mounts: exactly the defaults.
        assert_eq!(plan_mounts(&[]).unwrap(), d);
    }

    #[test]
    fn spec_mounts_are_normalised_and_checked() {
        let p = plan_mounts(&mounts(
            r#"[{"destination": "//data/./x", "type": "tmpfs"},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["rw"]}]"#,
        ))
        .unwrap();
        // Replacing /sys keeps its place; the new one is appended.
        assert_eq!(p.len(), default_mounts().len() + 1);
        assert_eq!(p[5].destination, Path::new("/sys"));
        assert_eq!(p[5].flags, 0, "rw clears the default's ro");
        let last = p.last().unwrap();
        assert_eq!(last.destination, Path::new("/data/x"));
        // A file system without a source gets its type as source, as mount(8) shows.
        assert_eq!(last.source, "tmpfs");
        for (bad, msg) in [
            (
                r#"[{"destination": "/", "type": "tmpfs"}]"#,
                "a mount on \"/\"",
            ),
            (
                r#"[{"destination": "data", "type": "tmpfs"}]"#,
                "must be an absolute path",
            ),
            (
                r#"[{"destination": "/x", "type": "none"}]"#,
                "has no type and is not a bind",
            ),
            (
                r#"[{"destination": "/x"}]"#,
                "has no type and is not a bind",
            ),
            (
                r#"[{"destination": "/x", "type": "bind", "source": "rel/dir"}]"#,
                "bind mount source \"rel/dir\" must be an absolute path",
            ),
        ] {
            let e = plan_mounts(&mounts(bad)).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT, "{bad}");
            assert!(e.message.contains(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn only_binds_are_held_to_the_share() {
        let dir = Path::new("/run/kata-rs/shared/c1");
        let p = plan_mounts(&mounts(
            r#"[{"destination": "/x", "type": "tmpfs", "source": "/etc"}]"#,
        ))
        .unwrap();
        check_bind_sources(&p, dir).unwrap();
        let p = plan_mounts(&mounts(
            r#"[{"destination": "/x", "type": "tmpfs", "source": "/etc", "options": ["bind"]}]"#,
        ))
        .unwrap();
        assert!(matches!(
            p.last().unwrap().kind,
            MountKind::Bind { recursive: false }
        ));
        assert!(check_bind_sources(&p, dir).is_err());
    }
}
