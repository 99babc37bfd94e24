//! `kata-rs env`: versions of every part, the effective configuration and the paths, as
//! TOML or JSON, for bug reports. Read-only; a part that is missing or does not answer is
//! reported as such, never an error.

use std::path::Path;

use toml::{Table, Value};

use crate::{check, kvm, layout, layout::rooted, probe};

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn answer(r: Result<String, String>) -> Value {
    s(r.unwrap_or_else(|e| format!("unavailable: {e}")))
}

/// Gathers the report for the tree at `root` (host facts from the running kernel).
pub fn gather(root: &Path) -> Table {
    let cfg = probe::load_config(root);
    let c = cfg
        .as_ref()
        .cloned()
        .unwrap_or(kata_rs_shim::config::Config {
            file: Default::default(),
            source: kata_rs_shim::config::ConfigSource::Defaults,
        });
    let h = &c.file.hypervisor;
    let vmm = rooted(root, &h.path);
    let kernel = rooted(root, &h.kernel);
    let initrd = rooted(root, &h.initrd);
    let fsd = rooted(root, &c.file.shared_fs.virtiofsd);
    let shim = rooted(root, Path::new(layout::SHIM));

    let mut tool = Table::new();
    tool.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    if let Ok(p) = std::env::current_exe() {
        tool.insert("path".into(), s(p.display().to_string()));
    }

    let mut versions = Table::new();
    versions.insert(
        "vmm".into(),
        answer(probe::version_line(&vmm, &["--version"])),
    );
    versions.insert("shim".into(), answer(probe::version_line(&shim, &["-v"])));
    versions.insert(
        "virtiofsd".into(),
        answer(probe::version_line(&fsd, &["--version"])),
    );
    versions.insert(
        "guest_kernel".into(),
        answer(
            std::fs::read(&kernel)
                .map_err(|e| format!("{}: {e}", kernel.display()))
                .and_then(|d| {
                    probe::kernel_release(&d)
                        .ok_or_else(|| format!("no Linux version banner in {}", kernel.display()))
                }),
        ),
    );
    versions.insert(
        "guest_image".into(),
        answer(
            std::fs::read(&initrd)
                .map(|d| {
                    format!(
                        "sha256:{} ({} bytes)",
                        crate::fsutil::sha256_hex(&d),
                        d.len()
                    )
                })
                .map_err(|e| format!("{}: {e}", initrd.display())),
        ),
    );
    versions.insert(
        "containerd".into(),
        s(check::containerd_version(root).unwrap_or_else(|| "not found".into())),
    );
    let crio_bin = ["/usr/bin/crio", "/usr/local/bin/crio"]
        .iter()
        .map(|p| rooted(root, Path::new(p)))
        .find(|p| p.is_file());
    versions.insert(
        "crio".into(),
        match crio_bin {
            Some(p) => answer(probe::version_line(&p, &["--version"])),
            None => s("not found"),
        },
    );

    let mut host = Table::new();
    host.insert(
        "kernel".into(),
        s(std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_string())
            .unwrap_or_default()),
    );
    let mods: Vec<Value> = [
        "kvm",
        "kvm_intel",
        "kvm_amd",
        "kvm_pvm",
        "vhost_vsock",
        "tun",
    ]
    .iter()
    .filter(|m| Path::new("/sys/module").join(m).exists())
    .map(|m| s(*m))
    .collect();
    host.insert("kvm_modules".into(), Value::Array(mods));
    host.insert(
        "paravirtual_kvm".into(),
        Value::Boolean(
            kvm::paravirt_module(&kvm::Host {
                sys_module: Path::new("/sys/module"),
                cpuinfo: "",
            })
            .is_some(),
        ),
    );
    host.insert(
        "cgroup2".into(),
        s(
            probe::cgroup2_mount(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default())
                .unwrap_or_else(|| "not mounted".into()),
        ),
    );

    let mut paths = Table::new();
    paths.insert("root".into(), s(root.display().to_string()));
    for (k, p) in [
        ("config", probe::config_file(root)),
        ("vmm", vmm),
        ("shim", shim),
        ("kernel", kernel),
        ("initrd", initrd),
        ("virtiofsd", fsd),
        (
            "containerd_config",
            rooted(root, Path::new(layout::CONTAINERD_CONFIG)),
        ),
        ("crio_dropin", rooted(root, Path::new(layout::CRIO_DROPIN))),
        (
            "install_manifest",
            rooted(root, Path::new(layout::MANIFEST)),
        ),
    ] {
        paths.insert(k.into(), s(p.display().to_string()));
    }

    let mut config = Table::new();
    config.insert("source".into(), s(probe::source_text(&c)));
    match &cfg {
        Ok(loaded) => {
            let text = match &loaded.source {
                kata_rs_shim::config::ConfigSource::File(p) => std::fs::read_to_string(p).ok(),
                kata_rs_shim::config::ConfigSource::Defaults => None,
            };
            config.insert(
                "effective".into(),
                Value::Table(probe::effective_table(text.as_deref())),
            );
        }
        Err(e) => {
            config.insert("error".into(), s(e.to_string()));
        }
    }

    let mut out = Table::new();
    out.insert("tool".into(), Value::Table(tool));
    out.insert("versions".into(), Value::Table(versions));
    out.insert("host".into(), Value::Table(host));
    out.insert("paths".into(), Value::Table(paths));
    out.insert("config".into(), Value::Table(config));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_reports_everything_missing_without_failing() {
        let t = tempfile::tempdir().unwrap();
        let r = gather(t.path());
        assert!(r["versions"]["vmm"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"));
        assert_eq!(r["versions"]["containerd"].as_str(), Some("not found"));
        assert_eq!(
            r["config"]["effective"]["hypervisor"]["memory_mib"].as_integer(),
            Some(512)
        );
        // Both renderings work.
        toml::to_string(&r).unwrap();
        serde_json::to_string(&r).unwrap();
    }
}
