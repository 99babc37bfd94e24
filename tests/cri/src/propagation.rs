//! Mount propagation from the node into a container (issue 16; docs/mount-propagation.md),
//! with `--propagation-dir DIR`: DIR is a shared mount on the node (tests/scripts/cri.sh makes
//! it) holding one directory per CRI propagation mode, each with an empty `sub/`.
//! - [`mounts`]: the `client` container gets each directory at `/prop/MODE` with its mode;
//! - [`check`]: once the container runs, the node mounts a tmpfs holding `marker` on each
//!   `DIR/MODE/sub` and the container is asked which markers it sees:
//!   `propagation-MODE=seen|hidden` (runc: `private` hidden, the other two seen);
//! - [`after_pod`]: once the pod is removed, `propagation-host-kept=N`, how many of the
//!   node's tmpfs mounts are still there with their marker (all three: a runtime must never
//!   unmount the node's mounts), then they are unmounted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1::{Mount, MountPropagation};

use crate::calls::exec;
use crate::markers::marker;
use crate::Runtime;

/// The modes: the directory (and marker) name, the CRI propagation.
pub const MODES: [(&str, MountPropagation); 3] = [
    ("private", MountPropagation::PropagationPrivate),
    (
        "host-to-container",
        MountPropagation::PropagationHostToContainer,
    ),
    ("bidirectional", MountPropagation::PropagationBidirectional),
];

/// How long the container gets to see a node mount (kata: the guest's virtio-fs entries
/// are looked up again after their 1 s cache time).
const SEE_SECS: u64 = 20;
/// How long `private` must stay hidden after the others were seen (longer than that cache
/// time, so a late propagation would show).
const HIDDEN_SECS: u64 = 3;

/// The container's mounts of DIR's directories, one per mode.
pub fn mounts(dir: &str) -> Vec<Mount> {
    MODES
        .iter()
        .map(|(name, p)| Mount {
            container_path: format!("/prop/{name}"),
            host_path: format!("{dir}/{name}"),
            propagation: *p as i32,
            ..Default::default()
        })
        .collect()
}

/// `mount ARGS` on the node; the error names what failed.
fn node_mount(args: &[&str]) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .map_err(|e| format!("mount {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The markers the container sees, one word per mode (`-` for none).
async fn seen(rt: &mut Runtime, id: &str) -> Result<Vec<String>, String> {
    let probe = MODES
        .iter()
        .map(|(n, _)| format!("$(cat /prop/{n}/sub/marker 2>/dev/null || echo -)"))
        .collect::<Vec<_>>()
        .join(" ");
    let (out, err, code) = exec(
        rt,
        "propagation-probe",
        id,
        &["sh", "-c", &format!("echo {probe}")],
        30,
    )
    .await?;
    if code != 0 {
        return Err(format!("probe exit {code}: {err}"));
    }
    Ok(out.split_whitespace().map(str::to_string).collect())
}

/// The node mounts a tmpfs with a marker under each mode's directory; the container in `id`
/// is probed until the propagating modes show theirs (at most [`SEE_SECS`]), then again
/// after [`HIDDEN_SECS`]. Prints `propagation-MODE=seen|hidden` and
/// `propagation-seconds` (from the node's mounts to the container seeing them).
pub async fn check(rt: &mut Runtime, dir: &str, id: &str) {
    for (name, _) in MODES {
        let sub = format!("{dir}/{name}/sub");
        let made = node_mount(&["-t", "tmpfs", "-o", "size=64k", "tmpfs", &sub]).and_then(|()| {
            std::fs::write(format!("{sub}/marker"), name).map_err(|e| format!("{sub}: {e}"))
        });
        if let Err(e) = made {
            marker("propagation-node-mounts", "failed");
            println!("error| propagation-node-mounts: {e}");
            return;
        }
    }
    marker("propagation-node-mounts", "ok");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(SEE_SECS);
    let propagating = |s: &[String]| {
        MODES
            .iter()
            .zip(s)
            .all(|((n, p), got)| *p == MountPropagation::PropagationPrivate || got == n)
    };
    let mut last = Err("not probed".to_string());
    while Instant::now() < deadline {
        last = seen(rt, id).await;
        if last.as_deref().is_ok_and(propagating) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    marker(
        "propagation-seconds",
        format!("{:.1}", t0.elapsed().as_secs_f64()),
    );
    tokio::time::sleep(Duration::from_secs(HIDDEN_SECS)).await;
    let last = match (last, seen(rt, id).await) {
        (Ok(first), Ok(now)) => {
            // A mode counts as seen when either probe saw it.
            Ok(first
                .into_iter()
                .zip(now)
                .map(|(a, b)| if a != "-" { a } else { b })
                .collect::<Vec<_>>())
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match last {
        Ok(s) => {
            println!("propagation| container sees: {}", s.join(" "));
            for ((name, _), got) in MODES.iter().zip(s.iter()) {
                let v = if got == name { "seen" } else { "hidden" };
                marker(&format!("propagation-{name}"), v);
            }
        }
        Err(e) => {
            for (name, _) in MODES {
                marker(&format!("propagation-{name}"), "failed");
            }
            println!("error| propagation: {e}");
        }
    }
}

/// After the pod is gone: how many of the node's tmpfs mounts still hold their marker
/// (`propagation-host-kept=N`); then each is unmounted.
pub fn after_pod(dir: &str) {
    let mut kept = 0;
    for (name, _) in MODES {
        let sub = format!("{dir}/{name}/sub");
        let m = std::fs::read_to_string(format!("{sub}/marker")).unwrap_or_default();
        if m == name {
            kept += 1;
        } else {
            println!("error| propagation-host-kept: the node's tmpfs on {sub} is gone");
        }
        if is_mount_point(Path::new(&sub)) {
            if let Err(e) = node_umount(&sub) {
                println!("error| propagation-umount: {e}");
            }
        }
    }
    marker("propagation-host-kept", kept);
}

/// Whether `p` is on another file system than its parent.
fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// `umount PATH` on the node.
fn node_umount(p: &str) -> Result<(), String> {
    let out = Command::new("umount")
        .arg(p)
        .output()
        .map_err(|e| format!("umount {p}: {e}"))?;
    out.status.success().then_some(()).ok_or_else(|| {
        format!(
            "umount {p}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}
