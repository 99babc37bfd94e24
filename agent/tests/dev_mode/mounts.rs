//! Mount destinations and sources: resolved in the container's root, only through the share.

use super::*;

/// Mount destinations resolve inside the container's root, as runc does: an image's
/// `/var/run -> /run` (absolute, as Debian has it) takes a bind at
/// `/var/run/<x>/serviceaccount` to the container's `/run/<x>/...`, and a symlink climbing
/// out with `../../..` is clamped at the container's root. The host's /run and / stay
/// untouched.
#[tokio::test]
async fn mount_destinations_resolve_in_the_root() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("links");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    std::fs::create_dir_all(rootfs.join("var/lib")).unwrap();
    std::fs::create_dir_all(rootfs.join("run")).unwrap();
    symlink("/run", rootfs.join("var/run")).unwrap();
    let escape = format!("kata-rs-escape-{}", std::process::id());
    symlink(
        format!("../../../../../../../../../../../{escape}"),
        rootfs.join("var/lib/up"),
    )
    .unwrap();
    let src = a.dir.path().join(&id).join("mounts/0");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("token"), "tok\n").unwrap();
    let file = a.dir.path().join(&id).join("mounts/1");
    std::fs::write(&file, "sec\n").unwrap();
    let sub = format!("kata-rs-test-{}", std::process::id());
    let mut spec = base_spec(&[
        "sh",
        "-c",
        &format!(
            "cat /var/run/{sub}/sa/token /run/{sub}/sa/token /var/lib/up/secret /{escape}/secret; \
             touch /run/{sub}/sa/new; echo touch=$?"
        ),
    ]);
    spec["mounts"] = serde_json::json!([
        {"destination": format!("/var/run/{sub}/sa"), "type": "bind",
         "source": src, "options": ["rbind", "ro"]},
        {"destination": "/var/lib/up/secret", "type": "bind", "source": file,
         "options": ["bind"]}]);
    let mut r = create_req(&id, &rootfs, &["true"], false);
    r.oci_spec = spec.to_string().into_bytes();
    c.create_container(ctx(), &r).await.expect("create");
    c.start_container(ctx(), &creq(&id)).await.expect("start");
    let out = String::from_utf8(read_all(c, &id, false).await).unwrap();
    let err = String::from_utf8(read_all(c, &id, true).await).unwrap();
    assert_eq!(wait(c, &id).await, 0, "stdout {out} stderr {err}");
    assert_eq!(out, "tok\ntok\nsec\nsec\ntouch=1\n", "stderr {err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(
        !Path::new("/run").join(&sub).exists(),
        "the host's /run was written"
    );
    assert!(!Path::new("/").join(&escape).exists(), "escaped the root");
    // The mount points were made inside the root; the symlinks are untouched.
    assert!(rootfs.join("run").join(&sub).join("sa").is_dir());
    assert!(rootfs.join(&escape).join("secret").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("var/run")).unwrap(),
        Path::new("/run")
    );
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id.clone();
    c.remove_container(ctx(), &rm).await.unwrap();
}

/// The root file system and bind sources come only through the share: `rootfs_path` must
/// be `<share>/<id>/rootfs` exactly, bind sources must lie under `<share>/<id>/`; the
/// errors say so and nothing is left.
#[tokio::test]
async fn rootfs_and_sources_only_from_the_share() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("share");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    let other = busybox_rootfs(a.dir.path(), &unique("other"));
    for bad in [
        other.clone(),
        a.dir.path().join(&id),
        rootfs.join("."),
        PathBuf::from("/"),
    ] {
        let req = create_req(&id, &bad, &["true"], false);
        let msg = err_msg(c.create_container(ctx(), &req).await.unwrap_err());
        assert!(
            msg.contains("must be") && msg.contains(rootfs.to_str().unwrap()),
            "{bad:?}: {msg}"
        );
    }
    std::fs::create_dir_all(a.dir.path().join(&id).join("mounts")).unwrap();
    let outside = a.dir.path().to_str().unwrap().to_string();
    for src in [
        "/etc".to_string(),
        format!("{}/bin", other.display()),
        a.dir.path().join(&id).to_string_lossy().into_owned(),
        outside,
    ] {
        let mut spec = base_spec(&["sh", "-c", "true"]);
        spec["mounts"] = serde_json::json!([{"destination": "/x", "type": "bind", "source": src}]);
        let mut r = create_req(&id, &rootfs, &["true"], false);
        r.oci_spec = spec.to_string().into_bytes();
        let msg = err_msg(c.create_container(ctx(), &r).await.unwrap_err());
        assert!(msg.contains("not in the sandbox share"), "{src}: {msg}");
    }
    // A symlink in the container's share directory cannot name a guest path.
    symlink("/etc", a.dir.path().join(&id).join("mounts/0")).unwrap();
    let mut spec = base_spec(&["sh", "-c", "true"]);
    spec["mounts"] = serde_json::json!([{"destination": "/x", "type": "bind",
        "source": a.dir.path().join(&id).join("mounts/0")}]);
    let mut r = create_req(&id, &rootfs, &["true"], false);
    r.oci_spec = spec.to_string().into_bytes();
    let msg = err_msg(c.create_container(ctx(), &r).await.unwrap_err());
    assert!(msg.contains("bind mount source"), "{msg}");
    assert!(!rootfs.join("x").exists());
    assert!(!cgroup_dir(&id).exists(), "no cgroup left behind");
    assert!(children_of(a.child.id()).is_empty(), "no process left");
}
