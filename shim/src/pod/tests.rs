//! Unit tests of `pod.rs`.

use super::*;

fn ann(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec_without(types: &[&str]) -> oci_spec::runtime::Spec {
    let all = ["pid", "ipc", "uts", "mount", "network"];
    let ns: Vec<String> = all
        .iter()
        .filter(|t| !types.contains(t))
        .map(|t| format!("{{\"type\":\"{t}\"}}"))
        .collect();
    let json = format!(
        "{{\"ociVersion\":\"1.0.2\",\"linux\":{{\"namespaces\":[{}]}}}}",
        ns.join(",")
    );
    serde_json::from_str(&json).unwrap()
}

#[test]
fn host_pid_and_ipc_pods_are_refused_host_network_is_not() {
    assert!(refuse_host_namespaces(&spec_without(&[])).is_ok());
    assert!(refuse_host_namespaces(&spec_without(&["network"])).is_ok());
    let e = refuse_host_namespaces(&spec_without(&["pid"])).unwrap_err();
    assert!(e.contains("hostPID") && !e.contains("hostIPC"), "{e}");
    let e = refuse_host_namespaces(&spec_without(&["ipc", "network"])).unwrap_err();
    assert!(e.contains("hostIPC") && !e.contains("hostPID"), "{e}");
    let e = refuse_host_namespaces(&spec_without(&["pid", "ipc"])).unwrap_err();
    assert!(e.contains("hostPID") && e.contains("hostIPC"), "{e}");
    // No linux section at all: nothing of the pod's own namespaces.
    let bare: oci_spec::runtime::Spec = serde_json::from_str("{\"ociVersion\":\"1.0.2\"}").unwrap();
    assert!(refuse_host_namespaces(&bare).is_err());
}

#[test]
fn roles_from_cri_annotations() {
    assert_eq!(pod_role("c1", None).unwrap(), PodRole::Single);
    assert_eq!(
        pod_role("c1", Some(&ann(&[("x", "y")]))).unwrap(),
        PodRole::Single
    );
    let sb = ann(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "pod1")]);
    assert_eq!(pod_role("pod1", Some(&sb)).unwrap(), PodRole::Sandbox);
    assert_eq!(
        pod_role("pod1", Some(&ann(&[(CONTAINER_TYPE, "sandbox")]))).unwrap(),
        PodRole::Sandbox
    );
    let e = pod_role("other", Some(&sb)).unwrap_err();
    assert!(e.contains("must be its own id"), "{e}");
    let c = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "pod1")]);
    assert_eq!(
        pod_role("c1", Some(&c)).unwrap(),
        PodRole::Container {
            sandbox_id: "pod1".into()
        }
    );
    assert_eq!(pod_role("c1", Some(&c)).unwrap().sandbox_id("c1"), "pod1");
    assert_eq!(PodRole::Sandbox.sandbox_id("pod1"), "pod1");
    assert_eq!(PodRole::Single.request_sandbox_id("c1"), "");
    assert_eq!(PodRole::Sandbox.request_sandbox_id("pod1"), "pod1");
    let member = PodRole::Container {
        sandbox_id: "pod1".into(),
    };
    assert_eq!(member.request_sandbox_id("c1"), "pod1");
    let e = pod_role("pod1", Some(&c)).unwrap_err();
    assert!(e.contains("names the container itself"), "{e}");
    let e = pod_role("c1", Some(&ann(&[(CONTAINER_TYPE, "container")]))).unwrap_err();
    assert!(e.contains("needs io.kubernetes.cri.sandbox-id"), "{e}");
    let bad = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "../x")]);
    assert!(pod_role("c1", Some(&bad))
        .unwrap_err()
        .contains("invalid container id"));
    let e = pod_role("c1", Some(&ann(&[(CONTAINER_TYPE, "vm\n")]))).unwrap_err();
    assert!(e.contains("expected \"sandbox\" or \"container\""), "{e}");
    assert!(!e.contains('\n'));
}

/// The annotations CRI-O (server/sandbox_run_linux.go) puts on a pod's sandbox (infra)
/// container, with the kubelet's pod labels it copies in: pod `web` in namespace
/// `shop`, sandbox id `sb1` (CRI-O's ids are 64 hex digits; short here).
fn crio_sandbox() -> HashMap<String, String> {
    ann(&[
        (
            "io.kubernetes.cri-o.Annotations",
            r#"{"kubernetes.io/config.source":"api"}"#,
        ),
        (
            "io.kubernetes.cri-o.CgroupParent",
            "kubepods-besteffort-pod1234.slice",
        ),
        ("io.kubernetes.cri-o.ContainerID", "sb1"),
        (
            "io.kubernetes.cri-o.ContainerName",
            "k8s_POD_web_shop_1234_0",
        ),
        ("io.kubernetes.cri-o.ContainerType", "sandbox"),
        (
            "io.kubernetes.cri-o.Created",
            "2026-12-04T04:00:00.000000000Z",
        ),
        ("io.kubernetes.cri-o.HostName", "web"),
        ("io.kubernetes.cri-o.HostNetwork", "false"),
        (
            "io.kubernetes.cri-o.HostnamePath",
            "/run/containers/storage/overlay-containers/sb1/userdata/hostname",
        ),
        ("io.kubernetes.cri-o.Image", "registry.k8s.io/pause:3.9"),
        ("io.kubernetes.cri-o.KubeName", "web"),
        (
            "io.kubernetes.cri-o.Labels",
            r#"{"io.kubernetes.container.name":"POD","io.kubernetes.pod.name":"web","io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.uid":"1234"}"#,
        ),
        (
            "io.kubernetes.cri-o.LogPath",
            "/var/log/pods/shop_web_1234/sb1.log",
        ),
        (
            "io.kubernetes.cri-o.Metadata",
            r#"{"name":"web","uid":"1234","namespace":"shop"}"#,
        ),
        (
            "io.kubernetes.cri-o.MountPoint",
            "/var/lib/containers/storage/overlay/abc/merged",
        ),
        ("io.kubernetes.cri-o.Name", "k8s_web_shop_1234_0"),
        ("io.kubernetes.cri-o.Namespace", "shop"),
        ("io.kubernetes.cri-o.NamespaceOptions", r#"{"pid":1}"#),
        ("io.kubernetes.cri-o.PortMappings", "[]"),
        ("io.kubernetes.cri-o.PrivilegedRuntime", "false"),
        (
            "io.kubernetes.cri-o.ResolvPath",
            "/run/containers/storage/overlay-containers/sb1/userdata/resolv.conf",
        ),
        ("io.kubernetes.cri-o.RuntimeHandler", "kata"),
        ("io.kubernetes.cri-o.SandboxID", "sb1"),
        ("io.kubernetes.cri-o.SeccompProfilePath", ""),
        (
            "io.kubernetes.cri-o.ShmPath",
            "/run/containers/storage/overlay-containers/sb1/userdata/shm",
        ),
        ("io.container.manager", "cri-o"),
        ("io.kubernetes.container.name", "POD"),
        ("io.kubernetes.pod.name", "web"),
        ("io.kubernetes.pod.namespace", "shop"),
        ("io.kubernetes.pod.uid", "1234"),
        ("kubernetes.io/config.source", "api"),
    ])
}

/// The annotations CRI-O (server/container_create_linux.go) puts on container `app`
/// (id `c1`) of that pod.
fn crio_container() -> HashMap<String, String> {
    ann(&[
        (
            "io.kubernetes.cri-o.Annotations",
            r#"{"io.kubernetes.container.hash":"5e1b","io.kubernetes.container.restartCount":"0"}"#,
        ),
        ("io.kubernetes.cri-o.ContainerID", "c1"),
        ("io.kubernetes.cri-o.ContainerType", "container"),
        (
            "io.kubernetes.cri-o.Created",
            "2026-12-04T04:00:01.000000000Z",
        ),
        ("io.kubernetes.cri-o.IP.0", "10.88.0.7"),
        (
            "io.kubernetes.cri-o.Image",
            "docker.io/library/busybox:latest",
        ),
        (
            "io.kubernetes.cri-o.ImageName",
            "docker.io/library/busybox:latest",
        ),
        (
            "io.kubernetes.cri-o.ImageRef",
            "docker.io/library/busybox@sha256:1b2c",
        ),
        (
            "io.kubernetes.cri-o.Labels",
            r#"{"io.kubernetes.container.name":"app","io.kubernetes.pod.name":"web","io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.uid":"1234"}"#,
        ),
        (
            "io.kubernetes.cri-o.LogPath",
            "/var/log/pods/shop_web_1234/app/0.log",
        ),
        ("io.kubernetes.cri-o.Metadata", r#"{"name":"app"}"#),
        (
            "io.kubernetes.cri-o.MountPoint",
            "/var/lib/containers/storage/overlay/def/merged",
        ),
        ("io.kubernetes.cri-o.Name", "k8s_app_web_shop_1234_0"),
        (
            "io.kubernetes.cri-o.ResolvPath",
            "/run/containers/storage/overlay-containers/sb1/userdata/resolv.conf",
        ),
        ("io.kubernetes.cri-o.SandboxID", "sb1"),
        ("io.kubernetes.cri-o.SandboxName", "k8s_POD_web_shop_1234_0"),
        ("io.kubernetes.cri-o.SeccompProfilePath", "RuntimeDefault"),
        ("io.kubernetes.cri-o.Stdin", "false"),
        ("io.kubernetes.cri-o.StdinOnce", "false"),
        ("io.kubernetes.cri-o.TTY", "false"),
        ("io.kubernetes.cri-o.Volumes", "[]"),
        ("io.container.manager", "cri-o"),
        ("io.kubernetes.container.hash", "5e1b"),
        ("io.kubernetes.container.restartCount", "0"),
    ])
}

/// containerd 1.7's CRI annotations on the same pod's sandbox and container.
fn containerd_sandbox() -> HashMap<String, String> {
    ann(&[
        (CONTAINER_TYPE, "sandbox"),
        (SANDBOX_ID, "sb1"),
        (SANDBOX_NAME, "web"),
        (SANDBOX_NAMESPACE, "shop"),
        ("io.kubernetes.cri.sandbox-uid", "1234"),
        (
            "io.kubernetes.cri.sandbox-log-directory",
            "/var/log/pods/shop_web_1234",
        ),
        ("io.kubernetes.cri.image-name", "registry.k8s.io/pause:3.9"),
        ("io.kubernetes.cri.sandbox-cpu-period", "100000"),
        ("io.kubernetes.cri.sandbox-cpu-quota", "0"),
        ("io.kubernetes.cri.sandbox-cpu-shares", "2"),
        ("io.kubernetes.cri.sandbox-memory", "0"),
    ])
}

fn containerd_container() -> HashMap<String, String> {
    ann(&[
        (CONTAINER_TYPE, "container"),
        (SANDBOX_ID, "sb1"),
        (SANDBOX_NAME, "web"),
        (SANDBOX_NAMESPACE, "shop"),
        ("io.kubernetes.cri.sandbox-uid", "1234"),
        (CONTAINER_NAME, "app"),
        (
            "io.kubernetes.cri.image-name",
            "docker.io/library/busybox:latest",
        ),
    ])
}

#[test]
fn crio_and_containerd_pods_map_alike() {
    for (what, sandbox, container, dialect) in [
        ("CRI-O", crio_sandbox(), crio_container(), Dialect::CriO),
        (
            "containerd",
            containerd_sandbox(),
            containerd_container(),
            Dialect::Containerd,
        ),
    ] {
        let sb = pod_info("sb1", Some(&sandbox)).unwrap();
        assert_eq!(
            sb,
            PodInfo {
                role: PodRole::Sandbox,
                dialect,
                pod_name: Some("web".into()),
                pod_namespace: Some("shop".into()),
                container_name: match dialect {
                    Dialect::CriO => Some("POD".into()),
                    _ => None,
                },
            },
            "{what} sandbox"
        );
        let c = pod_info("c1", Some(&container)).unwrap();
        assert_eq!(
            c,
            PodInfo {
                role: PodRole::Container {
                    sandbox_id: "sb1".into()
                },
                dialect,
                pod_name: Some("web".into()),
                pod_namespace: Some("shop".into()),
                container_name: Some("app".into()),
            },
            "{what} container"
        );
        // One pod, one VM: both reach the sandbox's shim.
        assert_eq!(grouping_key("sb1", Some(&sandbox)), "sb1", "{what}");
        assert_eq!(grouping_key("c1", Some(&container)), "sb1", "{what}");
        // The sandbox's annotations on another container: not its own id.
        let e = pod_role("c1", Some(&sandbox)).unwrap_err();
        assert!(e.contains("must be its own id"), "{what}: {e}");
    }
}

#[test]
fn crio_errors_name_crio_annotations() {
    let mut c = crio_container();
    c.remove(CRIO_SANDBOX_ID);
    let e = pod_role("c1", Some(&c)).unwrap_err();
    assert!(
        e.contains(
            "io.kubernetes.cri-o.ContainerType=container needs io.kubernetes.cri-o.SandboxID"
        ),
        "{e}"
    );
    let mut c = crio_container();
    c.insert(CRIO_SANDBOX_ID.into(), "../sb1".into());
    let e = pod_role("c1", Some(&c)).unwrap_err();
    assert!(
        e.starts_with("annotation io.kubernetes.cri-o.SandboxID: invalid container id"),
        "{e}"
    );
    let mut c = crio_container();
    c.insert(CRIO_CONTAINER_TYPE.into(), "infra".into());
    let e = pod_role("c1", Some(&c)).unwrap_err();
    assert!(
        e.contains("annotation io.kubernetes.cri-o.ContainerType is \"infra\""),
        "{e}"
    );
    let e = pod_role("sb1", Some(&crio_container())).unwrap_err();
    assert!(
        e.contains("io.kubernetes.cri-o.SandboxID of container sb1 names the container itself"),
        "{e}"
    );
    // Bad labels only lose the names.
    let mut c = crio_container();
    c.insert(CRIO_LABELS.into(), "not json".into());
    let i = pod_info("c1", Some(&c)).unwrap();
    assert_eq!(i.role.sandbox_id("c1"), "sb1");
    assert_eq!(i.pod_name, None);
    assert_eq!(i.container_name.as_deref(), None);
    // A sandbox id alone (podman) groups nothing.
    let alone = ann(&[(CRIO_SANDBOX_ID, "pod9")]);
    assert_eq!(pod_info("c1", Some(&alone)).unwrap().dialect, Dialect::None);
    assert_eq!(grouping_key("c1", Some(&alone)), "c1");
}

#[test]
fn contradicting_dialects_are_refused() {
    // A user's pod annotation, copied by CRI-O into the spec, that names another pod's
    // sandbox: refused, never followed.
    let mut c = crio_container();
    c.insert(SANDBOX_ID.into(), "victim".into());
    let e = pod_role("c1", Some(&c)).unwrap_err();
    assert!(
            e.contains("annotations io.kubernetes.cri.sandbox-id=\"victim\" and io.kubernetes.cri-o.SandboxID=\"sb1\" contradict"),
            "{e}"
        );
    assert_eq!(grouping_key("c1", Some(&c)), "c1");
    let mut s = crio_sandbox();
    s.insert(CONTAINER_TYPE.into(), "container".into());
    let e = pod_role("sb1", Some(&s)).unwrap_err();
    assert!(
            e.contains("io.kubernetes.cri.container-type=\"container\" and io.kubernetes.cri-o.ContainerType=\"sandbox\""),
            "{e}"
        );
    // Agreeing annotations of both dialects are fine; CRI-O's names win.
    let mut c = crio_container();
    c.insert(CONTAINER_TYPE.into(), "container".into());
    c.insert(SANDBOX_ID.into(), "sb1".into());
    let i = pod_info("c1", Some(&c)).unwrap();
    assert_eq!(i.dialect, Dialect::CriO);
    assert_eq!(i.role.sandbox_id("c1"), "sb1");
}

#[test]
fn grouping_key_is_the_sandbox_id() {
    let c = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "pod1")]);
    assert_eq!(grouping_key("c1", Some(&c)), "pod1");
    let sb = ann(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "pod1")]);
    assert_eq!(grouping_key("pod1", Some(&sb)), "pod1");
    assert_eq!(grouping_key("c1", None), "c1");
    let bad = ann(&[(CONTAINER_TYPE, "container")]);
    assert_eq!(grouping_key("c1", Some(&bad)), "c1");
}

#[test]
fn annotations_from_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bundle_annotations(dir.path()), None);
    std::fs::write(
        dir.path().join("config.json"),
        br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"p"}}"#,
    )
    .unwrap();
    let a = bundle_annotations(dir.path()).unwrap();
    assert_eq!(a.get(SANDBOX_ID).map(String::as_str), Some("p"));
    std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
    assert_eq!(bundle_annotations(dir.path()), None);
    std::fs::write(dir.path().join("config.json"), b"not json").unwrap();
    assert_eq!(bundle_annotations(dir.path()), None);
}
