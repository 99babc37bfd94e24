//! Create's order and rollback with fakes of the host, the VM and the agent: every step
//! that can fail is made to fail once, and what was undone (and in which order) is
//! asserted.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use super::*;
use crate::agent::AgentError;

/// What the fakes did, in order.
type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, what: &str) {
    log.lock().unwrap().push(what.to_string());
}

/// A step of the fake host: logged, and failing if it is the one to fail.
fn step(log: &Log, fail_at: Option<&str>, name: &str) -> ShimResult<()> {
    note(log, name);
    if fail_at == Some(name) {
        return Err(ShimError::Failed(format!("{name} failed")));
    }
    Ok(())
}

fn undo(log: &Log, name: &str) -> Undo {
    let log = log.clone();
    let name = name.to_string();
    Undo::new(name.clone(), async move {
        note(&log, &format!("undo {name}"));
        Ok(())
    })
}

/// How the fake agent answers CreateContainer.
#[derive(Clone, Copy)]
enum AgentAnswer {
    Ok,
    Refuses,
    Silent,
}

/// The arguments of the last CreateContainer.
#[derive(Debug, Clone, PartialEq)]
struct CreateCall {
    id: String,
    rootfs: String,
    stdin: bool,
    terminal: bool,
    sandbox_id: String,
}

struct FakeAgent {
    log: Log,
    answer: AgentAnswer,
    call: Mutex<Option<CreateCall>>,
}

#[async_trait]
impl AgentClient for FakeAgent {
    async fn create_container(
        &self,
        id: &str,
        _spec: Vec<u8>,
        rootfs_path: &str,
        stdin: bool,
        terminal: bool,
        sandbox_id: &str,
    ) -> Result<(), AgentError> {
        note(&self.log, "create_container");
        *self.call.lock().unwrap() = Some(CreateCall {
            id: id.into(),
            rootfs: rootfs_path.into(),
            stdin,
            terminal,
            sandbox_id: sandbox_id.into(),
        });
        match self.answer {
            AgentAnswer::Ok => Ok(()),
            AgentAnswer::Refuses => Err(AgentError::Status {
                method: "CreateContainer",
                code: ttrpc::Code::NOT_FOUND,
                message: "executable file not found".into(),
            }),
            AgentAnswer::Silent => Err(AgentError::Timeout {
                method: "CreateContainer",
                after: Duration::from_secs(30),
            }),
        }
    }

    async fn remove_container(&self, _id: &str) -> Result<(), AgentError> {
        note(&self.log, "undo remove_container");
        Ok(())
    }
}

struct FakeVm {
    log: Log,
    agent: FakeAgent,
}

#[async_trait]
impl Vm for FakeVm {
    type Agent = FakeAgent;
    fn pid(&self) -> u32 {
        4242
    }
    fn agent(&self) -> &FakeAgent {
        &self.agent
    }
    async fn kill(&self) -> String {
        note(&self.log, "undo kill_vm");
        "killed by signal 9".into()
    }
    async fn why_lost(&self) -> String {
        "; the VM ended: VMM killed by signal 9".into()
    }
}

struct FakeHost {
    log: Log,
    fail_at: Option<&'static str>,
    /// containerd passed rootfs mounts (else the spec's directory is used).
    mounts: bool,
    /// The spec names a network namespace.
    network: bool,
    /// `[cgroup] sandbox_cgroup_only`.
    cgroup: bool,
    answer: AgentAnswer,
}

impl FakeHost {
    fn new(fail_at: Option<&'static str>) -> Self {
        FakeHost {
            log: Log::default(),
            fail_at,
            mounts: true,
            network: true,
            cgroup: true,
            answer: AgentAnswer::Ok,
        }
    }

    fn vm(&self) -> Arc<FakeVm> {
        Arc::new(FakeVm {
            log: self.log.clone(),
            agent: FakeAgent {
                log: self.log.clone(),
                answer: self.answer,
                call: Mutex::new(None),
            },
        })
    }

    fn step(&self, name: &str) -> ShimResult<()> {
        step(&self.log, self.fail_at, name)
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait]
impl CreateHost for FakeHost {
    type Vm = FakeVm;
    type Net = ();
    type Cgroup = ();

    fn rootfs(&self) -> ShimResult<Rootfs> {
        self.step("rootfs")?;
        Ok(if self.mounts {
            Rootfs::MountPoint(PathBuf::from("/b/rootfs"))
        } else {
            Rootfs::Spec(PathBuf::from("/b/root"))
        })
    }
    async fn mount_rootfs(&self, _target: &Path) -> ShimResult<()> {
        self.step("mount_rootfs")
    }
    fn unmount_rootfs(&self, _target: &Path) -> Undo {
        undo(&self.log, "unmount_rootfs")
    }
    fn make_state_dirs(&self) -> ShimResult<()> {
        self.step("state_dirs")
    }
    fn remove_state_dirs(&self) -> Undo {
        undo(&self.log, "state_dirs")
    }
    fn share_in_new_sandbox(&self, _rootfs: &Path) -> ShimResult<()> {
        self.step("share")
    }
    fn share_in_pod(&self, _rootfs: &Path) -> ShimResult<()> {
        self.step("share_in_pod")
    }
    fn unshare_from_pod(&self) -> Undo {
        undo(&self.log, "share_in_pod")
    }
    async fn setup_network(&self) -> ShimResult<Option<()>> {
        if !self.network {
            return Ok(None);
        }
        self.step("network").map(Some)
    }
    async fn teardown_network(&self, _net: ()) -> Result<(), String> {
        note(&self.log, "undo network");
        Ok(())
    }
    fn enter_cgroup(&self) -> ShimResult<Option<()>> {
        if !self.cgroup {
            return Ok(None);
        }
        self.step("cgroup").map(Some)
    }
    fn leave_cgroup(&self, _cgroup: &()) -> Undo {
        undo(&self.log, "cgroup")
    }
    async fn boot(&self, _net: Option<()>, _cgroup: Option<()>) -> ShimResult<Arc<FakeVm>> {
        self.step("boot")?;
        Ok(self.vm())
    }
}

fn container(role: PodRole) -> GuestContainer {
    GuestContainer {
        id: "c1".into(),
        spec: br#"{"ociVersion":"1.0.2"}"#.to_vec(),
        stdin: true,
        terminal: false,
        role,
    }
}

/// Runs a new-VM Create on `host`; on failure runs the rollback, as `do_create` does.
/// Returns the error, if any.
async fn new_vm(host: &FakeHost, role: PodRole) -> Option<String> {
    let mut rb = Rollback::new();
    match create_with_new_vm(host, container(role), &mut rb).await {
        Ok(_) => {
            rb.disarm();
            None
        }
        Err(e) => {
            assert!(rb.run().await.is_empty());
            Some(e.to_string())
        }
    }
}

const NEW_VM_STEPS: [&str; 8] = [
    "rootfs",
    "mount_rootfs",
    "state_dirs",
    "share",
    "network",
    "cgroup",
    "boot",
    "create_container",
];

#[tokio::test]
async fn new_vm_steps_run_in_order_and_nothing_is_undone_on_success() {
    let host = FakeHost::new(None);
    assert_eq!(new_vm(&host, PodRole::Single).await, None);
    assert_eq!(host.log(), NEW_VM_STEPS);
}

#[tokio::test]
async fn each_failure_of_a_new_vm_create_undoes_what_was_done_newest_first() {
    // The failing step, and what must be undone after it (in this order).
    let cases: [(&str, &[&str]); 8] = [
        ("rootfs", &[]),
        // A partial mount is unmounted too.
        ("mount_rootfs", &["undo unmount_rootfs"]),
        ("state_dirs", &["undo unmount_rootfs"]),
        ("share", &["undo state_dirs", "undo unmount_rootfs"]),
        ("network", &["undo state_dirs", "undo unmount_rootfs"]),
        (
            "cgroup",
            &["undo network", "undo state_dirs", "undo unmount_rootfs"],
        ),
        // The VM's start removes the network itself when it fails.
        (
            "boot",
            &["undo cgroup", "undo state_dirs", "undo unmount_rootfs"],
        ),
        (
            "create_container",
            &[
                "undo kill_vm",
                "undo cgroup",
                "undo state_dirs",
                "undo unmount_rootfs",
            ],
        ),
    ];
    for (fail_at, undone) in cases {
        let mut host = FakeHost::new(Some(fail_at));
        if fail_at == "create_container" {
            host.answer = AgentAnswer::Refuses;
        }
        let err = new_vm(&host, PodRole::Single)
            .await
            .unwrap_or_else(|| panic!("Create must fail at {fail_at}"));
        let n = NEW_VM_STEPS.iter().position(|s| *s == fail_at).unwrap() + 1;
        let mut want: Vec<&str> = NEW_VM_STEPS[..n].to_vec();
        want.extend_from_slice(undone);
        assert_eq!(host.log(), want, "failure at {fail_at}: {err}");
    }
}

#[tokio::test]
async fn optional_steps_that_did_not_run_are_not_undone() {
    // The spec's own rootfs directory, no network namespace, no host cgroup.
    let mut host = FakeHost::new(Some("create_container"));
    host.mounts = false;
    host.network = false;
    host.cgroup = false;
    host.answer = AgentAnswer::Refuses;
    new_vm(&host, PodRole::Single).await.unwrap();
    assert_eq!(
        host.log(),
        [
            "rootfs",
            "state_dirs",
            "share",
            "boot",
            "create_container",
            "undo kill_vm",
            "undo state_dirs"
        ]
    );
}

#[tokio::test]
async fn create_container_names_the_sandbox_only_for_a_pod() {
    for (role, sandbox_field) in [(PodRole::Single, ""), (PodRole::Sandbox, "c1")] {
        let host = FakeHost::new(None);
        let mut rb = Rollback::new();
        let created = create_with_new_vm(&host, container(role), &mut rb)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        rb.disarm();
        assert_eq!(created.mounted, Some(PathBuf::from("/b/rootfs")));
        assert_eq!(
            created.vm.agent.call.lock().unwrap().clone(),
            Some(CreateCall {
                id: "c1".into(),
                rootfs: kata_rs_protocol::guest::guest_rootfs("c1"),
                stdin: true,
                terminal: false,
                sandbox_id: sandbox_field.into(),
            })
        );
    }
}

#[tokio::test]
async fn a_refused_create_quotes_the_agent_and_a_silent_guest_says_what_became_of_the_vm() {
    let mut host = FakeHost::new(None);
    host.answer = AgentAnswer::Refuses;
    assert_eq!(
        new_vm(&host, PodRole::Single).await.unwrap(),
        "the agent could not create the container: executable file not found"
    );
    host.answer = AgentAnswer::Silent;
    assert_eq!(
        new_vm(&host, PodRole::Single).await.unwrap(),
        "the agent could not create the container: agent CreateContainer did not answer within 30.0s; the VM ended: VMM killed by signal 9"
    );
}

/// Runs a pod container's Create on `host` in a running VM; the rollback as `do_create`.
async fn in_pod(host: &FakeHost) -> Result<Created<FakeVm>, String> {
    let vm = host.vm();
    let mut rb = Rollback::new();
    let role = PodRole::Container {
        sandbox_id: "pod1".into(),
    };
    match create_in_pod(host, vm, "pod1", container(role), &mut rb).await {
        Ok(c) => {
            rb.disarm();
            Ok(c)
        }
        Err(e) => {
            assert!(rb.run().await.is_empty());
            Err(e.to_string())
        }
    }
}

#[tokio::test]
async fn a_pod_container_joins_the_running_vm_and_each_failure_is_undone() {
    let host = FakeHost::new(None);
    let created = in_pod(&host).await.unwrap();
    assert_eq!(
        host.log(),
        ["rootfs", "mount_rootfs", "share_in_pod", "create_container"]
    );
    let call = created.vm.agent.call.lock().unwrap().clone().unwrap();
    assert_eq!(call.sandbox_id, "pod1");

    let cases: [(&str, &[&str]); 4] = [
        ("rootfs", &["rootfs"]),
        (
            "mount_rootfs",
            &["rootfs", "mount_rootfs", "undo unmount_rootfs"],
        ),
        (
            "share_in_pod",
            &[
                "rootfs",
                "mount_rootfs",
                "share_in_pod",
                "undo unmount_rootfs",
            ],
        ),
        (
            "create_container",
            &[
                "rootfs",
                "mount_rootfs",
                "share_in_pod",
                "create_container",
                "undo remove_container",
                "undo share_in_pod",
                "undo unmount_rootfs",
            ],
        ),
    ];
    for (fail_at, want) in cases {
        let mut host = FakeHost::new(Some(fail_at));
        if fail_at == "create_container" {
            host.answer = AgentAnswer::Refuses;
        }
        let err = in_pod(&host).await.err().expect("Create must fail");
        assert_eq!(host.log(), want, "failure at {fail_at}: {err}");
        // The pod's VM is never killed by a pod container's failed Create.
        assert!(!host.log().iter().any(|s| s == "undo kill_vm"));
    }
}
