//! What Create's sequence (`super::create_steps`) needs from the world, as small traits:
//! [`CreateHost`] (the host's side: rootfs, state directory, share, pod network, host cgroup,
//! booting a VM), [`Vm`] (a booted sandbox VM: its pid, its agent, killing it) and
//! [`AgentClient`] (the agent calls Create makes). The shim implements them with the real
//! things (`super::create_host::HostCreate`, [`Sandbox`], [`Agent`]); the unit tests of the
//! sequence with fakes that record what was done and undone.

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use async_trait::async_trait;

use crate::{
    agent::{Agent, AgentError},
    error::ShimResult,
    sandbox::Sandbox,
};

/// An undo step for Create's rollback: its name (logged, and quoted in the error if it
/// fails) and the work, which owns what it needs.
pub(super) struct Undo {
    /// What it undoes, e.g. `unmount /bundle/rootfs`.
    pub name: String,
    /// The work.
    pub step: Pin<Box<dyn Future<Output = Result<(), String>> + Send>>,
}

impl Undo {
    /// Undo step `name` doing `step`.
    pub fn new(
        name: impl Into<String>,
        step: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> Self {
        Undo {
            name: name.into(),
            step: Box::pin(step),
        }
    }
}

/// Where the container's root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rootfs {
    /// A directory of the bundle the spec names (containerd passed no mounts): used as it is.
    Spec(PathBuf),
    /// `<bundle>/rootfs`, made (empty) for containerd's mounts.
    MountPoint(PathBuf),
}

/// The agent calls a Create makes.
#[async_trait]
pub(super) trait AgentClient: Send + Sync {
    /// `CreateContainer`.
    #[allow(clippy::too_many_arguments)]
    async fn create_container(
        &self,
        id: &str,
        spec: Vec<u8>,
        rootfs_path: &str,
        stdin: bool,
        terminal: bool,
        sandbox_id: &str,
    ) -> Result<(), AgentError>;

    /// `RemoveContainer`.
    async fn remove_container(&self, id: &str) -> Result<(), AgentError>;
}

/// A booted sandbox VM with its agent.
#[async_trait]
pub(super) trait Vm: Send + Sync + 'static {
    /// Its agent client.
    type Agent: AgentClient;

    /// The VMM's pid (what containerd gets as the task's pid).
    fn pid(&self) -> u32;

    /// Its agent.
    fn agent(&self) -> &Self::Agent;

    /// Kills the VM and what it holds at once, and waits; says how the VMM ended.
    async fn kill(&self) -> String;

    /// Why the guest stopped answering, to append to an error (`; the VM ended: ...`).
    async fn why_lost(&self) -> String;
}

/// The host's side of a Create: each method is one step (a failure point); the `Undo`
/// methods give the rollback entry of the step before them. Which step comes when, and
/// when its undo is registered, is `super::create_steps`'s.
#[async_trait]
pub(super) trait CreateHost: Send + Sync {
    /// The VM [`CreateHost::boot`] starts.
    type Vm: Vm;
    /// The pod network set up for the VM.
    type Net: Send;
    /// The host cgroup the shim entered.
    type Cgroup: Send + Sync;

    /// The root file system: the spec's directory, or `<bundle>/rootfs` made for mounts.
    fn rootfs(&self) -> ShimResult<Rootfs>;
    /// Mounts containerd's rootfs mounts on `target`.
    async fn mount_rootfs(&self, target: &Path) -> ShimResult<()>;
    /// Undoes [`CreateHost::mount_rootfs`] (also a partial one).
    fn unmount_rootfs(&self, target: &Path) -> Undo;

    /// Makes the sandbox's state directory and console log directory.
    fn make_state_dirs(&self) -> ShimResult<()>;
    /// Removes the sandbox's files (the share unmounted first) and its console log.
    fn remove_state_dirs(&self) -> Undo;

    /// Makes the new sandbox's share, with the container's rootfs and binds in it.
    fn share_in_new_sandbox(&self, rootfs: &Path) -> ShimResult<()>;
    /// Adds the container's rootfs and binds to its pod's share.
    fn share_in_pod(&self, rootfs: &Path) -> ShimResult<()>;
    /// Takes the container out of its pod's share.
    fn unshare_from_pod(&self) -> Undo;

    /// The pod network (a tap in the pod's network namespace), if the spec names one.
    async fn setup_network(&self) -> ShimResult<Option<Self::Net>>;
    /// Removes a pod network that no VM took over.
    async fn teardown_network(&self, net: Self::Net) -> Result<(), String>;

    /// Moves the shim into the sandbox's host cgroup, when configured.
    fn enter_cgroup(&self) -> ShimResult<Option<Self::Cgroup>>;
    /// Leaves (and removes) that cgroup.
    fn leave_cgroup(&self, cgroup: &Self::Cgroup) -> Undo;

    /// Boots the VM (virtiofsd, the VMM, the agent answering, the guest's network). On
    /// failure it leaves nothing running and removes `net`.
    async fn boot(
        &self,
        net: Option<Self::Net>,
        cgroup: Option<Self::Cgroup>,
    ) -> ShimResult<Arc<Self::Vm>>;
}

#[async_trait]
impl AgentClient for Agent {
    async fn create_container(
        &self,
        id: &str,
        spec: Vec<u8>,
        rootfs_path: &str,
        stdin: bool,
        terminal: bool,
        sandbox_id: &str,
    ) -> Result<(), AgentError> {
        Agent::create_container(self, id, spec, rootfs_path, stdin, terminal, sandbox_id).await
    }

    async fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        Agent::remove_container(self, id).await
    }
}

#[async_trait]
impl Vm for Sandbox {
    type Agent = Agent;

    fn pid(&self) -> u32 {
        self.vmm.pid()
    }

    fn agent(&self) -> &Agent {
        &self.agent
    }

    async fn kill(&self) -> String {
        Sandbox::kill(self).await.to_string()
    }

    async fn why_lost(&self) -> String {
        Sandbox::why_lost(self).await
    }
}
