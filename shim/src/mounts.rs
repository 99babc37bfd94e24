//! Host bind mounts of a container spec, for the guest: each bind mount's host source is
//! bind-mounted into the sandbox's share (`crate::share`, exported through virtio-fs), and
//! the spec the agent gets names the source's guest path in the share
//! (`kata_rs_protocol::guest::guest_mount_source`). Nothing is copied: the container sees
//! the host directory or file live, and writes land on the host at once.
//!
//! CRI's bind of the pod sandbox's `/dev/shm` becomes a tmpfs in the guest, as in Kata.

use std::{os::unix::fs::FileTypeExt, path::Path};

use kata_rs_protocol::guest::guest_mount_source;
use serde_json::Value;

use crate::share::{Propagation, SharedBind};

/// Size of the tmpfs that replaces CRI's sandbox `/dev/shm` bind (Kata's default, 64 MiB).
pub const SHM_SIZE: &str = "size=65536k";

fn is_bind(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("bind")
        || m.get("options").and_then(Value::as_array).is_some_and(|o| {
            o.iter()
                .any(|o| matches!(o.as_str(), Some("bind") | Some("rbind")))
        })
}

/// Options of a bind that mean nothing for a tmpfs.
fn bind_only_option(o: &str) -> bool {
    matches!(
        o,
        "bind"
            | "rbind"
            | "private"
            | "rprivate"
            | "shared"
            | "rshared"
            | "slave"
            | "rslave"
            | "unbindable"
            | "runbindable"
    )
}

/// Whether a mount's options make it read-only (`ro`, or runc's recursive `rro`).
fn is_readonly(m: &Value) -> bool {
    m.get("options").and_then(Value::as_array).is_some_and(|o| {
        o.iter()
            .any(|o| matches!(o.as_str(), Some("ro") | Some("rro")))
    })
}

/// The host-to-container propagation a bind's options ask for: the last propagation option
/// wins, as runc applies them in order; none means runc's default (the container's root is
/// `rslave`, so a bind receives host mounts). `shared`/`rshared` propagate host to container
/// only: a mount made in the guest cannot reach the host (docs/mount-propagation.md).
fn propagation(m: &Value) -> Propagation {
    let Some(options) = m.get("options").and_then(Value::as_array) else {
        return Propagation::default();
    };
    options
        .iter()
        .rev()
        .filter_map(Value::as_str)
        .find_map(|o| match o {
            "private" | "rprivate" => Some(Propagation::Private),
            "slave" | "rslave" | "shared" | "rshared" => Some(Propagation::Slave),
            _ => None,
        })
        .unwrap_or_default()
}

/// Rewrites the bind mounts of container `id`'s spec for the guest: a bind at `/dev/shm`
/// becomes a tmpfs; every other bind gets the guest path of its source in the share, and
/// is returned as a [`SharedBind`] for the share. The host source must exist and be a
/// regular file or a directory (symlinks to one are resolved); sockets, FIFOs and devices
/// are refused, naming the mount. Specs without bind mounts come back unchanged.
pub fn prepare(spec: Vec<u8>, id: &str) -> Result<(Vec<u8>, Vec<SharedBind>), String> {
    let mut v: Value =
        serde_json::from_slice(&spec).map_err(|e| format!("invalid OCI spec: {e}"))?;
    let Some(mounts) = v.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok((spec, Vec::new()));
    };
    let mut copies = Vec::new();
    let mut changed = false;
    for (index, m) in mounts.iter_mut().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let destination = m
            .get("destination")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if Path::new(&destination) == Path::new("/dev/shm") {
            let Some(obj) = m.as_object_mut() else {
                continue;
            };
            // CRI's sandbox shm (a tmpfs on the host): a tmpfs of the container in the guest.
            let mut opts: Vec<Value> = obj
                .get("options")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter(|o| o.as_str().is_some_and(|s| !bind_only_option(s)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for extra in ["nosuid", "nodev", "noexec", "mode=1777", SHM_SIZE] {
                if !opts.iter().any(|o| o.as_str() == Some(extra)) {
                    opts.push(Value::String(extra.into()));
                }
            }
            obj.insert("type".into(), Value::String("tmpfs".into()));
            obj.insert("source".into(), Value::String("shm".into()));
            obj.insert("options".into(), Value::Array(opts));
            changed = true;
            continue;
        }
        let spec_source = m
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let label = format!("bind mount {destination} (host source {spec_source:?})");
        if spec_source.is_empty() || !Path::new(&spec_source).is_absolute() {
            return Err(format!("{label}: the source must be an absolute host path"));
        }
        let source = std::fs::canonicalize(&spec_source).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("{label}: the source {spec_source} does not exist on the host")
            } else {
                format!("{label}: {e}")
            }
        })?;
        let md = std::fs::metadata(&source).map_err(|e| format!("{label}: {e}"))?;
        let ft = md.file_type();
        if !(ft.is_file() || ft.is_dir()) {
            let kind = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else {
                "not a regular file or directory"
            };
            return Err(format!(
                "{label}: the source is {kind}; kata-rs shares bind-mount sources with the VM through virtio-fs, which carries only regular files and directories"
            ));
        }
        let readonly = is_readonly(m);
        let propagation = propagation(m);
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        obj.insert(
            "source".into(),
            Value::String(guest_mount_source(id, index)),
        );
        copies.push(SharedBind {
            index,
            source,
            destination,
            readonly,
            propagation,
        });
        changed = true;
    }
    if !changed {
        return Ok((spec, copies));
    }
    let out = serde_json::to_vec(&v).map_err(|e| format!("re-encode the OCI spec: {e}"))?;
    Ok((out, copies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mounts_of(spec: &[u8]) -> Vec<Value> {
        let v: Value = serde_json::from_slice(spec).unwrap();
        v["mounts"].as_array().unwrap().clone()
    }

    #[test]
    fn binds_are_rewritten_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        std::fs::write(&f, "x").unwrap();
        let d = dir.path().join("data");
        std::fs::create_dir(&d).unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": f, "options": ["rbind", "ro"]},
                {"destination": "/data", "source": d, "options": ["bind"]},
                {"destination": "/dev/shm", "type": "bind", "source": "/run/x/shm", "options": ["rbind", "ro", "nosuid"]}
            ]
        });
        let (out, copies) = prepare(serde_json::to_vec(&spec).unwrap(), "c1").unwrap();
        let m = mounts_of(&out);
        assert_eq!(m[0], spec["mounts"][0]);
        assert_eq!(m[1]["source"], "/run/kata-rs/shared/c1/mounts/1");
        assert_eq!(m[1]["options"], serde_json::json!(["rbind", "ro"]));
        assert_eq!(m[2]["source"], "/run/kata-rs/shared/c1/mounts/2");
        assert_eq!(m[3]["type"], "tmpfs");
        assert_eq!(m[3]["source"], "shm");
        assert_eq!(
            m[3]["options"],
            serde_json::json!(["ro", "nosuid", "nodev", "noexec", "mode=1777", SHM_SIZE])
        );
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0].index, 1);
        assert_eq!(copies[0].source, f.canonicalize().unwrap());
        assert!(copies[0].readonly);
        assert_eq!(copies[1].index, 2);
        assert!(!copies[1].readonly);
        assert_eq!(copies[1].destination, "/data");
    }

    #[test]
    fn propagation_options_pick_private_or_slave() {
        let m = |o: &[&str]| serde_json::json!({"destination": "/d", "options": o});
        assert_eq!(
            propagation(&m(&["rbind", "rprivate"])),
            Propagation::Private
        );
        assert_eq!(propagation(&m(&["rbind", "private"])), Propagation::Private);
        for o in ["rslave", "slave", "rshared", "shared"] {
            assert_eq!(propagation(&m(&["rbind", o])), Propagation::Slave, "{o}");
        }
        // runc's default (the root is rslave) and the last option wins.
        assert_eq!(propagation(&m(&["rbind", "ro"])), Propagation::Slave);
        assert_eq!(
            propagation(&serde_json::json!({"destination": "/d"})),
            Propagation::Slave
        );
        assert_eq!(
            propagation(&m(&["rslave", "rprivate"])),
            Propagation::Private
        );
        assert_eq!(
            propagation(&m(&["rprivate", "rshared"])),
            Propagation::Slave
        );
    }

    #[test]
    fn spec_without_binds_is_unchanged() {
        let spec = br#"{"ociVersion":"1.0.2",  "mounts":[{"destination":"/proc","type":"proc"}]}"#;
        let (out, copies) = prepare(spec.to_vec(), "c").unwrap();
        assert_eq!(out, spec.to_vec());
        assert!(copies.is_empty());
        let spec = br#"{"ociVersion":"1.0.2"}"#;
        assert_eq!(prepare(spec.to_vec(), "c").unwrap().0, spec.to_vec());
    }

    #[test]
    fn missing_relative_and_special_sources_fail_naming_the_mount() {
        let spec = |src: &str| {
            serde_json::to_vec(&serde_json::json!({
                "mounts": [{"destination": "/x", "type": "bind", "source": src}]
            }))
            .unwrap()
        };
        let e = prepare(spec("/nonexistent/kata-rs-src"), "c").unwrap_err();
        assert!(e.contains("bind mount /x"), "{e}");
        assert!(
            e.contains("/nonexistent/kata-rs-src does not exist on the host"),
            "{e}"
        );
        let e = prepare(spec("rel/path"), "c").unwrap_err();
        assert!(e.contains("absolute host path"), "{e}");
        let e = prepare(spec("/dev/null"), "c").unwrap_err();
        assert!(e.contains("a device node") && e.contains("/x"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = prepare(spec(sock.to_str().unwrap()), "c").unwrap_err();
        assert!(e.contains("a socket"), "{e}");
        // A symlink to a file is resolved as mount(2) would.
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let (_, c) = prepare(spec(l.to_str().unwrap()), "c").unwrap();
        assert_eq!(c[0].source, f.canonicalize().unwrap());
    }
}
