//! CreateContainer's sequence through the fake [`ContainerSys`](super::ContainerSys): the
//! calls in order, and at each failure point exactly what was done before it undone (the
//! helper killed and reaped, the cgroup removed), nothing after it attempted.

use std::io;
use std::path::Path;
use std::sync::Arc;

use ttrpc::Code;

use super::fake::FakeSys;
use super::*;
use crate::plan::test_spec::{spec, BASIC};
use crate::plan::{Plan, PodRole};

const ROOTFS: &str = "/share/c1/rootfs";
const CGROUP: &str = "/cg/kata-rs/c1";
const SPAWN: &str =
    "spawn c1 \"\" __container-init flags 0x2c020000 pidns false cgroup /cg/kata-rs/c1";

fn plan() -> Plan {
    crate::plan::plan(&spec(BASIC), Path::new(ROOTFS), PodRole::Single).unwrap()
}

async fn create_on(
    fake: &FakeSys,
    plan: Plan,
    cgroup_root: Option<&Path>,
    sandbox_pid: Option<i32>,
) -> Result<Container> {
    let sys: Arc<dyn ContainerSys> = Arc::new(fake.clone());
    create(
        &sys,
        CreateOptions {
            id: "c1",
            plan,
            stdin: false,
            cgroup_root,
            sandbox_pid,
        },
    )
    .await
}

/// The error of a create that must fail.
async fn fails(fake: &FakeSys, plan: Plan, cgroup_root: Option<&Path>) -> AgentError {
    match create_on(fake, plan, cgroup_root, None).await {
        Ok(_) => panic!("create succeeded: {:?}", fake.calls()),
        Err(e) => e,
    }
}

fn attach() -> String {
    format!("attach {} insns to {CGROUP}", plan().device_program.len())
}

#[tokio::test]
async fn create_runs_its_steps_in_order() {
    let fake = FakeSys::default();
    let c = create_on(&fake, plan(), Some(Path::new("/cg")), None)
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        [
            format!("is_dir {ROOTFS}"),
            format!("create {CGROUP} []"),
            SPAWN.to_string(),
            attach(),
        ]
    );
    assert_eq!(c.state(), State::Created);
    assert_eq!(c.pid(), 100);
    assert_eq!(c.cgroup().unwrap().path(), Path::new(CGROUP));
    // The container keeps the same system calls: its teardown undoes the create.
    c.destroy().await.unwrap();
    assert_eq!(
        fake.calls()[4..],
        ["kill 100 SIGKILL".to_string(), format!("remove {CGROUP}")]
    );
    assert!(fake.state().cgroups.is_empty());
}

#[tokio::test]
async fn each_failure_point_undoes_what_came_before() {
    let cg = Some(Path::new("/cg"));

    // The root file system is missing or not a directory: nothing was done yet.
    for (answer, text) in [
        (
            Err(io::Error::from(io::ErrorKind::NotFound)),
            "rootfs_path \"/share/c1/rootfs\": entity not found",
        ),
        (
            Ok(false),
            "rootfs_path \"/share/c1/rootfs\" is not a directory",
        ),
    ] {
        let fake = FakeSys::default();
        fake.state().rootfs = Some(answer);
        let e = fails(&fake, plan(), cg).await;
        assert_eq!((e.code, e.message.as_str()), (Code::INVALID_ARGUMENT, text));
        assert_eq!(fake.calls(), [format!("is_dir {ROOTFS}")]);
    }

    // Limits without a cgroup hierarchy: refused before anything is made.
    let fake = FakeSys::default();
    let mut p = plan();
    p.cgroup_writes = vec![("pids.max".into(), "10".into())];
    let e = fails(&fake, p, None).await;
    assert_eq!(e.code, Code::INTERNAL);
    assert!(e.message.contains("no cgroup v2 hierarchy"), "{e}");
    assert_eq!(fake.calls(), [format!("is_dir {ROOTFS}")]);

    // The cgroup cannot be made (it cleans up after itself): nothing to undo, no spawn.
    let fake = FakeSys::default();
    fake.state().fail_create_cgroup = Some(AgentError::already_exists("cgroup exists"));
    let e = fails(&fake, plan(), cg).await;
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::ALREADY_EXISTS, "cgroup exists")
    );
    assert_eq!(
        fake.calls(),
        [format!("is_dir {ROOTFS}"), format!("create {CGROUP} []")]
    );

    // The init fails to start or to set up (spawn killed and reaped it): the cgroup goes.
    let fake = FakeSys::default();
    fake.state().fail_spawn = Some(AgentError::not_found(
        "exec: \"nosuchcmd\": executable file not found in $PATH",
    ));
    let e = fails(&fake, plan(), cg).await;
    assert_eq!(e.code, Code::NOT_FOUND);
    assert_eq!(
        fake.calls(),
        [
            format!("is_dir {ROOTFS}"),
            format!("create {CGROUP} []"),
            SPAWN.to_string(),
            format!("remove {CGROUP}"),
        ]
    );
    assert!(fake.state().cgroups.is_empty());

    // The device program cannot be attached: the init is killed and reaped, then the
    // cgroup goes.
    let fake = FakeSys::default();
    fake.state().fail_attach = Some("BPF_PROG_LOAD: Operation not permitted".into());
    let e = fails(&fake, plan(), cg).await;
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            Code::INTERNAL,
            "container c1: linux.resources.devices: BPF_PROG_LOAD: Operation not permitted"
        )
    );
    assert_eq!(
        fake.calls(),
        [
            format!("is_dir {ROOTFS}"),
            format!("create {CGROUP} []"),
            SPAWN.to_string(),
            attach(),
            "abort 100".to_string(),
            format!("remove {CGROUP}"),
        ]
    );
    assert!(
        fake.exited(100),
        "the init was reaped before the cgroup went"
    );
    assert!(fake.state().cgroups.is_empty());

    // A failing removal during the rollback is logged; the caller gets the first error.
    let fake = FakeSys::default();
    fake.state().fail_spawn = Some(AgentError::internal("handshake: early EOF"));
    fake.state().fail_remove = Some(AgentError::internal("rmdir: busy"));
    let e = fails(&fake, plan(), cg).await;
    assert_eq!(e.message, "handshake: early EOF");
    assert_eq!(fake.calls().last().unwrap(), &format!("remove {CGROUP}"));

    // Without a cgroup hierarchy (and no limits) there is nothing to attach or remove.
    let fake = FakeSys::default();
    fake.state().fail_spawn = Some(AgentError::internal("clone: EPERM"));
    let e = fails(&fake, plan(), None).await;
    assert_eq!(e.message, "clone: EPERM");
    assert_eq!(
        fake.calls(),
        [
            format!("is_dir {ROOTFS}"),
            "spawn c1 \"\" __container-init flags 0x2c020000 pidns false cgroup -".to_string(),
        ]
    );
}

#[tokio::test]
async fn a_pod_member_joins_the_sandbox_or_fails_before_anything_is_made() {
    let member = |pid: bool, uts: bool| {
        let mut p = plan();
        p.namespaces.pid = false;
        p.namespaces.join_pid = pid;
        p.namespaces.join_uts = uts;
        p
    };
    // No sandbox container to join: refused before any call.
    for (p, name) in [(member(true, false), "pid"), (member(false, true), "uts")] {
        let fake = FakeSys::default();
        let e = create_on(&fake, p, Some(Path::new("/cg")), None)
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(
            e.message,
            format!("container c1: the spec joins the pod's {name} namespace but the pod has no sandbox container")
        );
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    }

    // The sandbox's pid namespace cannot be opened (it is gone): nothing made.
    let fake = FakeSys::default();
    fake.state().fail_open_ns = Some(io::Error::from(io::ErrorKind::NotFound));
    let e = create_on(&fake, member(true, true), Some(Path::new("/cg")), Some(42))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert!(
        e.message.starts_with(
            "container c1: open /proc/42/ns/pid (the pod's sandbox container is gone?)"
        ),
        "{e}"
    );
    assert_eq!(fake.calls(), ["open /proc/42/ns/pid"]);

    // Joined: the init is cloned into the sandbox's pid namespace.
    let fake = FakeSys::default();
    create_on(&fake, member(true, true), Some(Path::new("/cg")), Some(42))
        .await
        .unwrap();
    assert_eq!(fake.calls()[0], "open /proc/42/ns/pid");
    assert!(
        fake.calls()[3].contains("flags 0xc020000 pidns true"),
        "{:?}",
        fake.calls()
    );
}
