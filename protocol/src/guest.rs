//! The guest contract: the agent's ready line, the pod role a request carries, and, for
//! files, where the sandbox's shared file system (virtio-fs) lives
//! and where each container's root file system and bind-mount sources appear in it.
//!
//! The shim exports one directory per sandbox through virtio-fs with tag [`SHARE_TAG`];
//! the kernel command line carries `kata_rs.share=<tag>` ([`SHARE_CMDLINE_PARAM`]) and the
//! agent mounts that tag at [`GUEST_SHARE_DIR`] before it reports ready. Inside the share,
//! container `<id>` has `<id>/rootfs` (the root file system containerd prepared) and
//! `<id>/mounts/<n>` (the source of the spec's `n`-th bind mount).

/// The line the agent prints on its console once it serves the API: the VMM's boot is
/// over, and tests and benches wait for it.
pub const READY_LINE: &str = "kata-rs-agent: ready";

/// Where a container stands in its pod, as `CreateContainerRequest` carries it: by its
/// `sandbox_id` field ([`PodRole::of`], [`PodRole::request_sandbox_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodRole {
    /// Not part of a pod (empty `sandbox_id`): a namespace `path` in the spec is refused.
    Single,
    /// The pod's sandbox (pause) container (`sandbox_id` = its own id): a `network` path
    /// is the guest's network.
    Sandbox,
    /// A container of a pod (`sandbox_id` = the sandbox container's id): `pid`/`ipc`/`uts`
    /// paths join the sandbox container's namespaces of that type, `network` is the guest's.
    Member,
}

impl PodRole {
    /// The role of container `id` given the request's `sandbox_id`.
    pub fn of(id: &str, sandbox_id: &str) -> Self {
        if sandbox_id.is_empty() {
            PodRole::Single
        } else if sandbox_id == id {
            PodRole::Sandbox
        } else {
            PodRole::Member
        }
    }

    /// The request's `sandbox_id` that gives container `id` this role; `sandbox_id` is the
    /// pod's sandbox container (used only for [`PodRole::Member`]).
    pub fn request_sandbox_id<'a>(self, id: &'a str, sandbox_id: &'a str) -> &'a str {
        match self {
            PodRole::Single => "",
            PodRole::Sandbox => id,
            PodRole::Member => sandbox_id,
        }
    }
}

/// virtio-fs tag of the sandbox's share.
pub const SHARE_TAG: &str = "kata-rs";

/// Kernel command line parameter naming the virtio-fs tag the agent mounts.
pub const SHARE_CMDLINE_PARAM: &str = "kata_rs.share";

/// Where the agent mounts the share in the guest.
pub const GUEST_SHARE_DIR: &str = "/run/kata-rs/shared";

/// Name of the root file system's directory in a container's directory of the share.
pub const ROOTFS_DIR: &str = "rootfs";

/// Name of the bind-mount sources' directory in a container's directory of the share.
pub const MOUNTS_DIR: &str = "mounts";

/// Path of container `id`'s directory relative to the share root.
pub fn container_rel(id: &str) -> String {
    id.to_string()
}

/// Path of container `id`'s root file system relative to the share root.
pub fn rootfs_rel(id: &str) -> String {
    format!("{id}/{ROOTFS_DIR}")
}

/// Path of container `id`'s bind-mount sources directory relative to the share root.
pub fn mounts_rel(id: &str) -> String {
    format!("{id}/{MOUNTS_DIR}")
}

/// Path of the source of container `id`'s `index`-th spec mount relative to the share root.
pub fn mount_rel(id: &str, index: usize) -> String {
    format!("{}/{index}", mounts_rel(id))
}

/// Guest path of container `id`'s root file system.
pub fn guest_rootfs(id: &str) -> String {
    format!("{GUEST_SHARE_DIR}/{}", rootfs_rel(id))
}

/// Guest path of the source of container `id`'s `index`-th spec mount.
pub fn guest_mount_source(id: &str, index: usize) -> String {
    format!("{GUEST_SHARE_DIR}/{}", mount_rel(id, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_lie_under_the_share() {
        assert_eq!(guest_rootfs("c1"), "/run/kata-rs/shared/c1/rootfs");
        assert_eq!(
            guest_mount_source("c1", 3),
            "/run/kata-rs/shared/c1/mounts/3"
        );
        assert_eq!(container_rel("c1"), "c1");
        assert_eq!(rootfs_rel("c1"), format!("c1/{ROOTFS_DIR}"));
        assert_eq!(mounts_rel("c1"), "c1/mounts");
        assert_eq!(mount_rel("c1", 0), "c1/mounts/0");
    }

    #[test]
    fn pod_role_travels_in_sandbox_id() {
        assert_eq!(PodRole::of("c1", ""), PodRole::Single);
        assert_eq!(PodRole::of("c1", "c1"), PodRole::Sandbox);
        assert_eq!(PodRole::of("c1", "pod"), PodRole::Member);
        for role in [PodRole::Single, PodRole::Sandbox, PodRole::Member] {
            let field = role.request_sandbox_id("c1", "pod");
            assert_eq!(PodRole::of("c1", field), role);
        }
    }
}
