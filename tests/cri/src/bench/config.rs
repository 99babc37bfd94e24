//! The bench pods' CRI configuration: host network, one sleeping busybox container.

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, DnsConfig, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};

use crate::args::Args;

/// A `hostNetwork: true` pod's namespaces, as the kubelet sends them.
pub fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

pub fn pod_config(a: &Args, handler: &str, round: u32) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("bench-{handler}-{round}"),
            uid: format!("kata-rs-bench-{handler}-{}-{round}", std::process::id()),
            namespace: "kata-rs-bench".into(),
            attempt: 0,
        }),
        log_directory: a.log_dir.clone(),
        dns_config: Some(DnsConfig {
            servers: vec!["127.0.0.1".into()],
            ..Default::default()
        }),
        labels: [("kata-rs-bench".to_string(), "cri".to_string())].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: a.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(a: &Args) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000000".into()],
        log_path: "sleeper/0.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
