//! A teardown's order with a fake container: what runs, in which order, for a VM's owner and
//! for a pod container, with the guest gone, and with steps that fail.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

use super::*;

/// A fake container that logs each step and fails the steps it is told to.
struct Fake {
    owns_vm: bool,
    vm_running: bool,
    fail: Vec<&'static str>,
    exit: ExitInfo,
    log: Mutex<Vec<String>>,
}

impl Fake {
    fn new(owns_vm: bool) -> Self {
        Fake {
            owns_vm,
            vm_running: true,
            fail: Vec::new(),
            exit: ExitInfo {
                status: 137,
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            },
            log: Mutex::new(Vec::new()),
        }
    }

    fn step(&self, name: &str) -> Result<(), String> {
        self.log.lock().unwrap().push(name.to_string());
        if self.fail.contains(&name) {
            return Err(format!("{name} failed"));
        }
        Ok(())
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait]
impl Teardown for Fake {
    fn id(&self) -> &str {
        "c1"
    }
    fn owns_vm(&self) -> bool {
        self.owns_vm
    }
    fn vm_running(&self) -> bool {
        self.vm_running
    }
    async fn forget(&self) -> ExitInfo {
        let _ = self.step("forget");
        self.exit
    }
    async fn end_execs(&self) {
        let _ = self.step("end_execs");
    }
    async fn remove_from_guest(&self) -> Result<(), String> {
        self.step("remove_from_guest")
    }
    async fn close_init_io(&self) {
        let _ = self.step("close_init_io");
    }
    fn unshare_from_pod(&self) -> Result<(), String> {
        self.step("unshare_from_pod")
    }
    async fn stop_vm(&self) -> String {
        let _ = self.step("stop_vm");
        "exited with status 0".into()
    }
    fn unmount_rootfs(&self) -> Result<(), String> {
        self.step("unmount_rootfs")
    }
    fn remove_sandbox_files(&self) -> Result<(), String> {
        self.step("remove_sandbox_files")
    }
    async fn publish_delete(&self, exit: ExitInfo) {
        let _ = self.step(&format!("publish_delete {}", exit.status));
    }
}

#[tokio::test]
async fn the_vm_owner_stops_its_vm_before_its_files_go_and_announces_the_delete_last() {
    let f = Fake::new(true);
    let done = teardown_steps(&f, true).await;
    assert_eq!(
        f.log(),
        [
            "forget",
            "end_execs",
            "remove_from_guest",
            "close_init_io",
            "stop_vm",
            "unmount_rootfs",
            "remove_sandbox_files",
            "publish_delete 137",
        ]
    );
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(done.exit.status, 137);
}

#[tokio::test]
async fn a_pod_container_leaves_the_pods_share_and_never_touches_the_vm() {
    let f = Fake::new(false);
    let done = teardown_steps(&f, true).await;
    assert_eq!(
        f.log(),
        [
            "forget",
            "end_execs",
            "remove_from_guest",
            "close_init_io",
            "unshare_from_pod",
            "unmount_rootfs",
            "publish_delete 137",
        ]
    );
    assert!(done.errors.is_empty(), "{:?}", done.errors);
}

#[tokio::test]
async fn a_guest_that_is_gone_is_not_asked_to_remove_the_container() {
    let mut f = Fake::new(true);
    f.vm_running = false;
    teardown_steps(&f, true).await;
    assert!(
        !f.log().contains(&"remove_from_guest".to_string()),
        "{:?}",
        f.log()
    );
    assert!(
        f.log().contains(&"stop_vm".to_string()),
        "the VM is still reaped"
    );
}

#[tokio::test]
async fn failed_steps_are_reported_and_the_later_steps_still_run() {
    let mut f = Fake::new(false);
    f.fail = vec!["remove_from_guest", "unshare_from_pod", "unmount_rootfs"];
    let done = teardown_steps(&f, true).await;
    // A guest that refuses RemoveContainer is only logged: the VM's own state is not the
    // host's to clean; the host's cleanup failures are the Delete's error.
    assert_eq!(
        done.errors,
        ["unshare_from_pod failed", "unmount_rootfs failed"]
    );
    assert_eq!(f.log().last().unwrap(), "publish_delete 137");
    assert_eq!(f.log().len(), 7, "{:?}", f.log());
}

#[tokio::test]
async fn the_vm_owners_files_are_removed_even_when_its_rootfs_does_not_unmount() {
    let mut f = Fake::new(true);
    f.fail = vec!["unmount_rootfs", "remove_sandbox_files"];
    let done = teardown_steps(&f, true).await;
    assert_eq!(
        done.errors,
        ["unmount_rootfs failed", "remove_sandbox_files failed"]
    );
    assert!(f.log().contains(&"remove_sandbox_files".to_string()));
}

#[tokio::test]
async fn an_abandoned_create_is_undone_without_a_delete_event() {
    let f = Fake::new(true);
    let done = teardown_steps(&f, false).await;
    assert!(
        !f.log().iter().any(|s| s.starts_with("publish_delete")),
        "containerd never heard of it: {:?}",
        f.log()
    );
    assert_eq!(f.log().last().unwrap(), "remove_sandbox_files");
    assert_eq!(done.exit.status, 137);
}
