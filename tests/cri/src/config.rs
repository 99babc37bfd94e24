//! The pod's and its containers' CRI configuration: namespaces, sysctls, images, scripts.

use std::collections::HashMap;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, DnsConfig, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};

use crate::args::Args;

/// The namespaces of a `hostNetwork: true` pod, as the kubelet sends them for the pod and
/// again for each of its containers: the node's network, a PID namespace per container
/// (no shareProcessNamespace), the pod's IPC namespace.
/// With `--pod-net` the pod has its own network namespace (CNI) instead.
pub fn namespaces(a: &Args) -> NamespaceOption {
    NamespaceOption {
        network: if a.pod_net.is_some() {
            NamespaceMode::Pod as i32
        } else {
            NamespaceMode::Node as i32
        },
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Whether the walk-through runs the conformance steps (tests/cri/src/conformance.rs): the
/// host-network pod of tests/scripts/cri.sh, not the pod-network one nor the churn.
pub fn conformance(a: &Args) -> bool {
    a.pod_net.is_none() && a.churn.is_none()
}

/// The pod-network pods' sysctl (a network one: they have a network namespace of their own).
pub const POD_NET_SYSCTL: (&str, &str) = ("net.ipv4.ip_local_port_range", "20000 40000");

pub fn pod_config(a: &Args) -> PodSandboxConfig {
    let mut labels = HashMap::new();
    labels.insert("kata-rs-test".to_string(), "cri".to_string());
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("cri-{}", a.handler),
            uid: format!("kata-rs-cri-{}-{}", a.handler, std::process::id()),
            namespace: "kata-rs-test".into(),
            attempt: 0,
        }),
        log_directory: a.log_dir.clone(),
        // No resolv.conf needed from the node (the emulated node has none).
        dns_config: Some(DnsConfig {
            servers: vec!["127.0.0.1".into()],
            ..Default::default()
        }),
        labels,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: a.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(a)),
                ..Default::default()
            }),
            sysctls: if conformance(a) {
                crate::conformance::sysctls()
            } else if a.pod_net.is_some() {
                HashMap::from([(POD_NET_SYSCTL.0.into(), POD_NET_SYSCTL.1.into())])
            } else {
                HashMap::new()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(a: &Args, name: &str, script: String) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: match (&a.image2, name) {
                (Some(i), "client") => i.clone(),
                _ => a.image.clone(),
            },
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script],
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(a)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
