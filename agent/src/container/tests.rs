//! The container model's rules, through the fake [`ContainerSys`](super::ContainerSys).

use super::fake::FakeSys;
use super::*;
use std::io::Read;
use ttrpc::Code;

fn seccomp() -> Option<Vec<crate::seccomp::Insn>> {
    let ret_allow = crate::seccomp::Insn {
        code: 6,
        jt: 0,
        jf: 0,
        k: 0x7fff_0000,
    };
    Some(vec![ret_allow])
}

/// A created container c1 on the fake (its cgroup at /cg/c1 when `cgroup`), and the
/// init's end of the sync socket.
fn created(fake: &FakeSys, cgroup: bool) -> (Container, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let sys: Arc<dyn ContainerSys> = Arc::new(fake.clone());
    let init = Process::new("c1", "", fake.started(), Arc::clone(&sys));
    let cg = cgroup.then(|| Cgroup::at("/cg/c1"));
    (Container::new("c1", init, cg, ours, seccomp(), sys), theirs)
}

async fn running(fake: &FakeSys, cgroup: bool) -> Container {
    let (c, _) = created(fake, cgroup);
    c.start().await.unwrap();
    c
}

fn process() -> ProcessConfig {
    serde_json::from_str(
        r#"{"args": ["sh"], "env": [], "cwd": "/", "uid": 0, "gid": 0,
            "additional_gids": [], "rlimits": [], "terminal": false,
            "no_new_privileges": false}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn created_running_stopped() {
    let fake = FakeSys::default();
    let (c, _init) = created(&fake, false);
    assert_eq!(c.state(), State::Created);
    assert_eq!(c.pid(), 100);
    assert_eq!(c.start().await.unwrap(), 100);
    assert_eq!(fake.calls(), ["release c1"]);
    assert_eq!(c.state(), State::Running);
    let e = c.start().await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert_eq!(e.message, "container c1 is not in created state (Running)");
    fake.exit(100, 0);
    assert_eq!(c.state(), State::Stopped);
    assert_eq!(c.init.exit_info().unwrap().status, 0);
}

#[tokio::test]
async fn start_fails_when_the_init_is_gone_or_its_exec_fails() {
    let fake = FakeSys::default();
    let (c, _init) = created(&fake, false);
    fake.exit(100, 1);
    let e = c.start().await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert_eq!(e.message, "container c1: init process exited before start");
    assert!(
        fake.calls().is_empty(),
        "never released: {:?}",
        fake.calls()
    );
    assert_eq!(c.state(), State::Stopped);

    let fake = FakeSys::default();
    let (c, _init) = created(&fake, false);
    fake.state().fail_release = Some(AgentError::invalid("container c1: exec failed"));
    let e = c.start().await.unwrap_err();
    assert_eq!(e.code, Code::INVALID_ARGUMENT);
    assert_eq!(e.message, "container c1: exec failed");
    // Not running, and the init was released once: it cannot be started again.
    assert_eq!(c.state(), State::Created);
    let e = c.start().await.unwrap_err();
    assert_eq!(e.message, "container c1 is not in created state (Created)");
    assert_eq!(fake.calls(), ["release c1"]);
}

#[tokio::test]
async fn processes_by_exec_id() {
    let fake = FakeSys::default();
    let c = running(&fake, false).await;
    assert!(Arc::ptr_eq(&c.process("").unwrap(), &c.init));
    let e = c.process("e1").err().unwrap();
    assert_eq!(e.code, Code::NOT_FOUND);
    assert_eq!(e.message, r#"container c1: exec process "e1" not found"#);
    assert_eq!(c.exec("e1", process(), true).await.unwrap(), 101);
    let p = c.process("e1").unwrap();
    assert_eq!((p.pid, p.exec_id.as_str()), (101, "e1"));
    assert_eq!(p.container_id, "c1");
}

#[tokio::test]
async fn exec_ids_are_unique_while_their_process_runs() {
    let fake = FakeSys::default();
    let (c, _init) = created(&fake, true);
    let e = c.exec("e1", process(), false).await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert_eq!(
        e.message,
        "container c1 is not running (Created): cannot exec"
    );
    c.start().await.unwrap();
    assert_eq!(c.exec("e1", process(), false).await.unwrap(), 101);
    // The helper joins the init (pid 100) and the cgroup, with the container's seccomp.
    assert_eq!(fake.calls()[1], "exec c1 e1 in 100 cgroup true");
    assert_eq!(fake.state().execs[0].1.seccomp, seccomp());
    let e = c.exec("e1", process(), false).await.unwrap_err();
    assert_eq!(e.code, Code::ALREADY_EXISTS);
    assert_eq!(e.message, r#"container c1: exec id "e1" is already in use"#);
    // Reusable once that process exited: the id names the new one.
    fake.exit(101, 0);
    assert_eq!(c.exec("e1", process(), false).await.unwrap(), 102);
    assert_eq!(c.process("e1").unwrap().pid, 102);
    // A failed exec leaves nothing registered and the id free.
    fake.state().fail_exec = Some(AgentError::invalid("exec: \"x\": not found"));
    let e = c.exec("e2", process(), false).await.unwrap_err();
    assert_eq!(e.message, "exec: \"x\": not found");
    assert_eq!(c.process("e2").err().unwrap().code, Code::NOT_FOUND);
    assert_eq!(c.exec("e2", process(), false).await.unwrap(), 103);
    fake.exit(100, 0);
    let e = c.exec("e3", process(), false).await.unwrap_err();
    assert_eq!(
        e.message,
        "container c1 is not running (Stopped): cannot exec"
    );
}

#[tokio::test]
async fn an_exec_id_being_set_up_is_taken() {
    let fake = FakeSys::default();
    let c = Arc::new(running(&fake, false).await);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    fake.state().exec_gate = Some(Arc::clone(&gate));
    let first = tokio::spawn({
        let c = Arc::clone(&c);
        async move { c.exec("e1", process(), false).await }
    });
    while fake.state().execs.is_empty() {
        tokio::task::yield_now().await;
    }
    let e = c.exec("e1", process(), false).await.unwrap_err();
    assert_eq!(e.code, Code::ALREADY_EXISTS);
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), 101);
    assert_eq!(
        fake.state().execs.len(),
        1,
        "the second never reached the system"
    );
}

#[tokio::test]
async fn pause_and_resume() {
    let fake = FakeSys::default();
    let (c, _init) = created(&fake, true);
    let e = c.set_frozen(true).await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert_eq!(e.message, "container c1 is not running (Created)");
    c.start().await.unwrap();
    c.set_frozen(true).await.unwrap();
    assert!(c.paused());
    let e = c.exec("e1", process(), false).await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert_eq!(
        e.message,
        "container c1 is paused: cannot exec in a paused container"
    );
    c.set_frozen(false).await.unwrap();
    assert!(!c.paused());
    assert_eq!(
        fake.calls(),
        ["release c1", "freeze /cg/c1 true", "freeze /cg/c1 false"]
    );
    c.exec("e1", process(), false).await.unwrap();
    // Without a cgroup v2 hierarchy there is nothing to freeze.
    let fake = FakeSys::default();
    let c = running(&fake, false).await;
    let e = c.set_frozen(true).await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
    assert_eq!(
        e.message,
        "container c1: the guest has no cgroup v2 hierarchy"
    );
    assert!(!c.paused());
}

#[tokio::test]
async fn destroy_thaws_kills_everything_and_removes_the_cgroup() {
    let fake = FakeSys::default();
    let c = running(&fake, true).await;
    c.exec("e1", process(), true).await.unwrap();
    c.exec("e2", process(), true).await.unwrap();
    fake.exit(102, 0);
    c.set_frozen(true).await.unwrap();
    c.destroy().await.unwrap();
    let calls = fake.calls();
    assert_eq!(
        calls[4..],
        [
            "freeze /cg/c1 false",
            "kill 100 SIGKILL",
            "kill 101 SIGKILL",
            "remove /cg/c1",
        ]
    );
    assert_eq!(c.state(), State::Stopped);
    assert_eq!(c.init.exit_info().unwrap().status, 137);
    assert!(c.init.stdin.lock().await.is_none(), "stdin closed");
    assert!(c.process("e1").unwrap().stdin.lock().await.is_none());
    // A failed removal is reported.
    let fake = FakeSys::default();
    let c = running(&fake, true).await;
    fake.exit(100, 0);
    fake.state().fail_remove = Some(AgentError::internal("remove cgroup: busy"));
    assert_eq!(
        c.destroy().await.unwrap_err().message,
        "remove cgroup: busy"
    );
    assert_eq!(
        fake.calls(),
        ["release c1", "remove /cg/c1"],
        "no kill after exit"
    );
}

#[tokio::test]
async fn destroying_a_created_container_lets_its_init_go() {
    let fake = FakeSys::default();
    let (c, mut init) = created(&fake, false);
    c.destroy().await.unwrap();
    // The init waiting for `start` reads EOF, so it exits by itself.
    let mut rest = Vec::new();
    assert_eq!(init.read_to_end(&mut rest).unwrap(), 0);
    assert_eq!(fake.calls(), ["kill 100 SIGKILL"]);
    let e = c.start().await.unwrap_err();
    assert_eq!(e.code, Code::FAILED_PRECONDITION);
}
