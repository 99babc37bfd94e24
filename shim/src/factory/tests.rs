//! Unit tests of the template factory: keys, the start decision and its fallback, the
//! template directory (atomic publication, what `find` refuses, stale keys, locks), and a
//! failed template VM leaving nothing behind.

use std::cell::RefCell;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::config::{ConfigFile, ConfigSource, HypervisorConfig};
use crate::util::random_bytes;

/// A hypervisor section whose kernel, guest image and VMM are files in `dir`.
fn hypervisor(dir: &Path) -> HypervisorConfig {
    let mut h = HypervisorConfig::default();
    for (f, body) in [
        ("vmlinux", "kernel"),
        ("initrd", "image"),
        ("kata-vmm", "#!/bin/sh\n"),
    ] {
        let p = dir.join(f);
        if !p.exists() {
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    h.kernel = dir.join("vmlinux");
    h.initrd = dir.join("initrd");
    h.path = dir.join("kata-vmm");
    h.memory_mib = 256;
    h.vcpus = 1;
    h
}

fn config(dir: &Path, template: bool) -> Config {
    let mut f = ConfigFile {
        hypervisor: hypervisor(dir),
        ..ConfigFile::default()
    };
    f.hypervisor.jail_id_base = 0;
    f.factory.template = template;
    f.factory.template_dir = dir.join("templates");
    f.agent.dial_timeout_secs = 2;
    Config {
        file: f,
        source: ConfigSource::Defaults,
    }
}

fn key(h: &HypervisorConfig) -> TemplateKey {
    TemplateKey::of(h, PLACEHOLDER_SLOTS).unwrap()
}

/// A complete template of `k` under `root`, as `publish` leaves it.
fn fake_template(root: &Path, k: &TemplateKey) -> PathBuf {
    store::ensure_root(root).unwrap();
    let snap = root.join(format!("snap-{}", k.name));
    std::fs::create_dir(&snap).unwrap();
    std::fs::write(snap.join(STATE_FILE), b"KATAVMSS...").unwrap();
    std::fs::write(snap.join(MEMORY_FILE), vec![0u8; 4096]).unwrap();
    std::fs::write(snap.join(CID_FILE), "4242\n").unwrap();
    store::publish(root, k, &snap).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn the_key_changes_with_kernel_image_vmm_memory_vcpus_and_params() {
    let dir = tempfile::tempdir().unwrap();
    let h = hypervisor(dir.path());
    let k = key(&h);
    assert_eq!(key(&h), k, "the same configuration, the same key");
    assert!(k.name.ends_with("-256m-1c"), "{k}");
    assert_eq!(TemplateKey::boot_of(&k.name), Some(k.boot.as_str()));

    let mut m = h.clone();
    m.memory_mib = 512;
    let km = key(&m);
    assert_ne!(km.name, k.name);
    assert_eq!(km.boot, k.boot, "another size of the same boot identity");
    let mut c = h.clone();
    c.vcpus = 2;
    assert_ne!(key(&c).name, k.name);
    let mut p = h.clone();
    p.kernel_params = "quiet".into();
    assert_ne!(key(&p).boot, k.boot);
    assert_ne!(
        TemplateKey::of(&h, 0).unwrap().boot,
        k.boot,
        "the placeholder slots are part of the VM"
    );
    // A new kernel, guest image or kata-vmm (replaced: a new inode; or rewritten).
    for f in ["vmlinux", "initrd", "kata-vmm"] {
        let before = key(&h);
        let path = dir.path().join(f);
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, "a new build").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let after = key(&h);
        assert_ne!(after.boot, before.boot, "{f} replaced");
    }
    let before = key(&h);
    std::fs::write(dir.path().join("initrd"), "a longer new image").unwrap();
    assert_ne!(key(&h).boot, before.boot, "initrd rewritten in place");

    let mut missing = h.clone();
    missing.kernel = dir.path().join("nope");
    let e = TemplateKey::of(&missing, 4).unwrap_err();
    assert!(e.contains("kernel") && e.contains("nope"), "{e}");

    for bad in [
        "",
        "x",
        ".lock-abc",
        "0123456789abcdef-256m",
        "0123456789ABCDEF-1m-1c",
        "0123456789abcdef-m-1c",
    ] {
        assert_eq!(TemplateKey::boot_of(bad), None, "{bad}");
    }
}

/// What the fakes of `start_sandbox` saw.
#[derive(Default, Debug, PartialEq)]
struct Seen {
    restored: Vec<PathBuf>,
    cold: usize,
    make: Vec<String>,
}

async fn start(
    c: &Config,
    restore_ok: bool,
    cold_ok: bool,
) -> (Result<&'static str, String>, Seen) {
    let seen = RefCell::new(Seen::default());
    let r = start_sandbox(
        c,
        "sb1",
        |dir| {
            seen.borrow_mut().restored.push(dir);
            async move {
                if restore_ok {
                    Ok("restored")
                } else {
                    Err(
                        "the restored VMM exited with status 1 before its agent answered: \
                         kata-vmm: error: snapshot truncated"
                            .to_string(),
                    )
                }
            }
        },
        || {
            seen.borrow_mut().cold += 1;
            async move {
                if cold_ok {
                    Ok("cold")
                } else {
                    Err("boot failed".to_string())
                }
            }
        },
        |_, k| seen.borrow_mut().make.push(k.name),
    )
    .await;
    (r, seen.into_inner())
}

#[tokio::test(flavor = "current_thread")]
async fn templates_off_boot_cold_and_make_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), false);
    fake_template(&c.file.factory.template_dir, &key(&c.file.hypervisor));
    let (r, seen) = start(&c, true, true).await;
    assert_eq!(r, Ok("cold"));
    assert_eq!(
        seen,
        Seen {
            cold: 1,
            ..Seen::default()
        }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn no_template_boots_cold_then_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), true);
    let k = key(&c.file.hypervisor);
    let (r, seen) = start(&c, true, true).await;
    assert_eq!(r, Ok("cold"));
    assert_eq!(seen.cold, 1);
    assert!(seen.restored.is_empty());
    assert_eq!(seen.make, vec![k.name.clone()]);
    // A failed cold boot is the sandbox's error, and no template is asked for.
    let (r, seen) = start(&c, true, false).await;
    assert_eq!(r, Err("boot failed".to_string()));
    assert!(seen.make.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_template_is_restored_without_a_cold_boot() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), true);
    let k = key(&c.file.hypervisor);
    let t = fake_template(&c.file.factory.template_dir, &k);
    let (r, seen) = start(&c, true, true).await;
    assert_eq!(r, Ok("restored"));
    assert_eq!(seen.restored, vec![t.clone()]);
    assert_eq!(seen.cold, 0);
    assert!(seen.make.is_empty());
    assert!(t.is_dir(), "the template stays");
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_restore_removes_the_template_and_boots_cold() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), true);
    let root = c.file.factory.template_dir.clone();
    let k = key(&c.file.hypervisor);
    let t = fake_template(&root, &k);
    let (r, seen) = start(&c, false, true).await;
    assert_eq!(r, Ok("cold"), "the sandbox still starts");
    assert_eq!(seen.restored, vec![t.clone()]);
    assert_eq!(seen.cold, 1);
    assert_eq!(
        seen.make,
        vec![k.name.clone()],
        "a new template is asked for"
    );
    assert!(!t.exists(), "the failed template is removed");
    assert!(names(&root).is_empty(), "nothing left: {:?}", names(&root));
}

#[tokio::test(flavor = "current_thread")]
async fn an_unusable_template_is_removed_and_never_restored() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), true);
    let root = c.file.factory.template_dir.clone();
    let k = key(&c.file.hypervisor);
    store::ensure_root(&root).unwrap();
    // A symlink where the template should be (to a directory that must survive).
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join(STATE_FILE), "x").unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join(&k.name)).unwrap();
    let (r, seen) = start(&c, true, true).await;
    assert_eq!(r, Ok("cold"));
    assert!(seen.restored.is_empty());
    assert!(!root.join(&k.name).exists());
    assert!(
        elsewhere.join(STATE_FILE).exists(),
        "the link's target is kept"
    );
}

#[test]
fn find_refuses_what_is_not_a_whole_private_template() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let k = key(&hypervisor(dir.path()));
    assert_eq!(find(&root, &k), Ok(None));
    let t = fake_template(&root, &k);
    assert_eq!(find(&root, &k), Ok(Some(t.clone())));
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(find(&root, &k).unwrap_err().contains("private"));
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(t.join(STATE_FILE), b"").unwrap();
    assert!(find(&root, &k).unwrap_err().contains("state"));
    std::fs::remove_file(t.join(STATE_FILE)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", t.join(STATE_FILE)).unwrap();
    assert!(find(&root, &k).unwrap_err().contains("state"));
    std::fs::remove_file(t.join(STATE_FILE)).unwrap();
    assert!(find(&root, &k).unwrap_err().contains("state"));
    std::fs::write(t.join(STATE_FILE), b"s").unwrap();
    assert!(find(&root, &k).is_ok());
    // The template VM's CID: what a restore keeps; anything else is refused.
    for bad in ["", "12", "abc", "99999999999"] {
        std::fs::write(t.join(CID_FILE), bad).unwrap();
        assert!(
            read_cid(&t).unwrap_err().contains("not a vsock CID"),
            "{bad}"
        );
    }
    std::fs::write(t.join(CID_FILE), "1000\n").unwrap();
    assert_eq!(read_cid(&t), Ok(1000));
}

#[test]
fn publish_is_one_rename_of_a_checked_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    store::ensure_root(&root).unwrap();
    let k = key(&hypervisor(dir.path()));
    // A snapshot without its state file is refused and nothing appears under the key.
    let snap = root.join("snap");
    std::fs::create_dir(&snap).unwrap();
    std::fs::write(snap.join(MEMORY_FILE), b"m").unwrap();
    std::fs::write(snap.join(CID_FILE), b"4242").unwrap();
    let e = store::publish(&root, &k, &snap).unwrap_err().to_string();
    assert!(e.contains("no state file"), "{e}");
    assert!(!root.join(&k.name).exists());
    // A symlink in it is refused too.
    std::os::unix::fs::symlink("/etc/hostname", snap.join(STATE_FILE)).unwrap();
    let e = store::publish(&root, &k, &snap).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    assert!(!root.join(&k.name).exists());
    std::fs::remove_file(snap.join(STATE_FILE)).unwrap();
    std::fs::write(snap.join(STATE_FILE), b"s").unwrap();
    std::fs::set_permissions(
        snap.join(STATE_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let t = store::publish(&root, &k, &snap).unwrap();
    assert_eq!(t, root.join(&k.name));
    assert!(!snap.exists(), "moved, not copied");
    assert_eq!(std::fs::metadata(&t).unwrap().mode() & 0o777, 0o700);
    assert_eq!(read_cid(&t), Ok(4242));
    for f in [STATE_FILE, MEMORY_FILE, CID_FILE] {
        let m = std::fs::metadata(t.join(f)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600, "{f}");
        assert_eq!(m.uid(), nix::unistd::geteuid().as_raw(), "{f}");
    }
    assert_eq!(std::fs::read(t.join(STATE_FILE)).unwrap(), b"s");
    // A second publication of the same key does not replace the first.
    let snap2 = root.join("snap2");
    std::fs::create_dir(&snap2).unwrap();
    std::fs::write(snap2.join(STATE_FILE), b"2").unwrap();
    std::fs::write(snap2.join(MEMORY_FILE), b"2").unwrap();
    std::fs::write(snap2.join(CID_FILE), b"4242").unwrap();
    assert!(store::publish(&root, &k, &snap2).is_err());
    assert_eq!(std::fs::read(t.join(STATE_FILE)).unwrap(), b"s");
}

#[test]
fn stale_keys_go_and_same_boot_sizes_stay_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let h = hypervisor(dir.path());
    let old_boot = {
        let mut o = h.clone();
        o.kernel_params = "old".into();
        o
    };
    let old = key(&old_boot);
    fake_template(&root, &old);
    std::fs::create_dir(root.join(format!(".work-{}", old.name))).unwrap();
    drop(store::try_lock(&root, &old.name).unwrap());
    std::fs::create_dir(root.join(".dead-x-1-2")).unwrap();
    std::fs::write(root.join("unrelated"), "kept").unwrap();
    // Templates of other sizes of the current boot identity (oldest first).
    let mut sizes = Vec::new();
    for mem in [128, 384, 512, 640] {
        let mut s = h.clone();
        s.memory_mib = mem;
        let k = key(&s);
        fake_template(&root, &k);
        std::thread::sleep(std::time::Duration::from_millis(20));
        sizes.push(k);
    }
    let current = key(&h);
    fake_template(&root, &current);
    let removed = remove_stale(&root, &current);
    assert!(removed.contains(&old.name), "{removed:?}");
    assert!(
        removed.contains(&format!(".work-{}", old.name)),
        "{removed:?}"
    );
    let left = names(&root);
    assert!(!left.iter().any(|n| n.contains(&old.name)), "{left:?}");
    assert!(!left.iter().any(|n| n.starts_with(".dead-")), "{left:?}");
    assert!(left.contains(&"unrelated".to_string()));
    // The cap: the current one and the 3 newest of the other sizes.
    assert!(!left.contains(&sizes[0].name), "the oldest goes: {left:?}");
    for k in &sizes[1..] {
        assert!(left.contains(&k.name), "{k} stays: {left:?}");
    }
    assert!(left.contains(&current.name));

    // A stale key whose lock another holds (being made) is left alone.
    let old2 = key(&old_boot);
    fake_template(&root, &old2);
    let held = store::try_lock(&root, &old2.name).unwrap().unwrap();
    remove_stale(&root, &current);
    assert!(root.join(&old2.name).exists());
    drop(held);
    remove_stale(&root, &current);
    assert!(!root.join(&old2.name).exists());
}

#[test]
fn one_maker_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = store::try_lock(dir.path(), "k").unwrap();
    assert!(a.is_some());
    assert!(store::try_lock(dir.path(), "k").unwrap().is_none(), "held");
    assert!(store::try_lock(dir.path(), "other").unwrap().is_some());
    drop(a);
    assert!(
        store::try_lock(dir.path(), "k").unwrap().is_some(),
        "released"
    );
    // Never through a symlink.
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join(".lock-l")).unwrap();
    assert!(store::try_lock(dir.path(), "l").is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_template_vm_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), true);
    let vmm = dir.path().join("failing-vmm");
    std::fs::write(
        &vmm,
        "#!/bin/sh\necho 'kata-vmm: error: --placeholder-slots: boom' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.file.hypervisor.path = vmm;
    let k = key(&c.file.hypervisor);
    let root = c.file.factory.template_dir.clone();
    let e = make(&c, &k, None).await.unwrap_err();
    assert!(e.contains("before its agent answered"), "{e}");
    assert!(e.contains("boom"), "the VMM's error line is quoted: {e}");
    assert_eq!(names(&root), vec![format!(".lock-{}", k.name)]);
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o700);

    // A VMM whose agent never answers is killed at the deadline; nothing is left either.
    let slow = dir.path().join("silent-vmm");
    std::fs::write(&slow, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.file.hypervisor.path = slow;
    let k = key(&c.file.hypervisor);
    let t0 = std::time::Instant::now();
    let e = make(&c, &k, None).await.unwrap_err();
    assert!(e.contains("did not answer"), "{e}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        names(&root).iter().all(|n| n.starts_with(".lock-")),
        "{:?}",
        names(&root)
    );

    // Another shim making the key: skipped at once.
    let _held = store::try_lock(&root, &k.name).unwrap().unwrap();
    assert_eq!(
        make(&c, &k, None).await,
        Ok(Made::Skipped("another shim is making it"))
    );
}

#[test]
fn entropy_is_fresh_each_time() {
    let a = random_bytes(ENTROPY_BYTES).unwrap();
    let b = random_bytes(ENTROPY_BYTES).unwrap();
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
}
