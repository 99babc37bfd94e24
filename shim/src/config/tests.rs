//! Unit tests of `config.rs`.

use super::*;

fn src() -> ConfigSource {
    ConfigSource::File(PathBuf::from("/etc/kata-rs/test.toml"))
}

#[test]
fn empty_file_gives_defaults() {
    let c = Config::parse("", src()).unwrap();
    assert_eq!(c.file, ConfigFile::default());
    assert_eq!(c.file.agent.dial_timeout_secs, 30);
    assert_eq!(
        c.file.hypervisor.path,
        PathBuf::from("/usr/local/bin/kata-vmm")
    );
}

#[test]
fn example_file_parses() {
    let text = include_str!("../../configuration.toml.example");
    let c = Config::parse(text, src()).unwrap();
    assert_eq!(
        c.file.hypervisor.kernel,
        PathBuf::from("/usr/local/share/kata-rs/vmlinux")
    );
}

#[test]
fn values_are_read() {
    let c = Config::parse(
            "[hypervisor]\nvcpus = 2\nmemory_mib = 1024\nkernel_params = \"quiet\"\n[agent]\ndial_timeout_secs = 5\n[runtime]\ndebug = true\n",
            src(),
        )
        .unwrap();
    assert_eq!(c.file.hypervisor.vcpus, 2);
    assert_eq!(c.file.hypervisor.memory_mib, 1024);
    assert_eq!(c.file.hypervisor.kernel_params, "quiet");
    assert_eq!(c.dial_timeout(), Duration::from_secs(5));
    assert_eq!(c.file.agent.request_timeout_secs, 30);
    assert!(c.file.runtime.debug);
}

#[test]
fn console_log_bounds_and_place() {
    let d = ConfigFile::default().runtime;
    // Off the host's /run tmpfs (memory), bounded in size and rate by default.
    assert_eq!(d.console_log_dir, PathBuf::from("/var/log/kata-rs/console"));
    assert_eq!((d.console_log_max_kib, d.console_log_rate_kib), (1024, 64));
    let c = Config::parse(
        "[runtime]\nconsole_log_max_kib = 64\nconsole_log_rate_kib = 0\n",
        src(),
    )
    .unwrap();
    assert_eq!(c.file.runtime.console_log_max_kib, 64);
    assert_eq!(c.file.runtime.console_log_rate_kib, 0);
}

#[test]
fn unknown_key_is_named() {
    let e = Config::parse("[hypervisor]\nvcpu = 2\n", src())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/kata-rs/test.toml"), "{e}");
    assert!(e.contains("vcpu"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = Config::parse("[hypervisr]\n", src())
        .unwrap_err()
        .to_string();
    assert!(e.contains("hypervisr"), "{e}");
}

#[test]
fn wrong_type_and_syntax_are_errors() {
    let e = Config::parse("[hypervisor]\nvcpus = \"two\"\n", src())
        .unwrap_err()
        .to_string();
    assert!(e.contains("vcpus"), "{e}");
    assert!(Config::parse("[hypervisor\n", src()).is_err());
}

#[test]
fn missing_explicit_file_is_an_error() {
    let e = Config::load_file(Path::new("/nonexistent/kata.toml"), FROM_ENV)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/kata.toml"), "{e}");
    assert!(e.contains(CONFIG_ENV), "{e}");
    let e = Config::load_file(Path::new("/nonexistent/kata.toml"), FROM_CONFIG_PATH)
        .unwrap_err()
        .to_string();
    assert!(e.contains("runtime option ConfigPath"), "{e}");
    assert!(!e.contains(CONFIG_ENV), "{e}");
}

#[test]
fn missing_default_file_gives_defaults() {
    let c = Config::load_default(Path::new("/nonexistent/kata.toml")).unwrap();
    assert_eq!(c.source, ConfigSource::Defaults);
    assert_eq!(c.file, ConfigFile::default());
}

fn with_files(dir: &Path) -> String {
    let vmm = dir.join("kata-vmm");
    std::fs::write(&vmm, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("vmlinux"), "k").unwrap();
    std::fs::write(dir.join("initrd.img"), "i").unwrap();
    std::fs::copy(&vmm, dir.join("virtiofsd")).unwrap();
    format!(
            "[shared_fs]\nvirtiofsd = \"{d}/virtiofsd\"\n[hypervisor]\npath = \"{d}/kata-vmm\"\nkernel = \"{d}/vmlinux\"\ninitrd = \"{d}/initrd.img\"\n",
            d = dir.display()
        )
}

#[test]
fn jail_ids_are_per_vm_and_in_range() {
    let h = HypervisorConfig::default();
    assert_eq!(h.jail_id(crate::vmm::CID_MIN), Some(0x8000_0000));
    assert_eq!(h.jail_id(1234), Some(0x8000_0000 + 234));
    let top = h.jail_id(crate::vmm::CID_MAX).unwrap();
    assert!(top < u32::MAX, "never the invalid id -1");
    assert_ne!(h.jail_id(1001), h.jail_id(1002));
    let off = HypervisorConfig {
        jail_id_base: 0,
        ..Default::default()
    };
    assert_eq!(off.jail_id(1234), None);
}

#[test]
fn validate_refuses_a_jail_id_base_that_reaches_minus_one() {
    let dir = tempfile::tempdir().unwrap();
    let max_ok = u32::MAX - 1 - (crate::vmm::CID_MAX - crate::vmm::CID_MIN);
    let text = format!("{}jail_id_base = {max_ok}\n", with_files(dir.path()));
    Config::parse(&text, src()).unwrap().validate().unwrap();
    let text = format!("{}jail_id_base = {}\n", with_files(dir.path()), max_ok + 1);
    let e = Config::parse(&text, src())
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("hypervisor.jail_id_base"), "{e}");
    assert!(e.contains(&format!("at most {max_ok}")), "{e}");
}

#[test]
fn validate_names_a_missing_virtiofsd() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_files(dir.path());
    std::fs::remove_file(dir.path().join("virtiofsd")).unwrap();
    let e = Config::parse(&text, src())
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("virtio-fs server"), "{e}");
    assert!(e.contains("shared_fs.virtiofsd"), "{e}");
}

#[test]
fn validate_refuses_a_bad_cgroup_parent() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["kata-rs", "/a/../b", "/.."] {
        let text = format!("{}\n[cgroup]\nparent = {bad:?}\n", with_files(dir.path()));
        let e = Config::parse(&text, src())
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup.parent"), "{bad}: {e}");
    }
    let text = format!(
        "{}\n[cgroup]\nparent = \"/pods/kata\"\nsandbox_cgroup_only = false\n",
        with_files(dir.path())
    );
    let c = Config::parse(&text, src()).unwrap();
    c.validate().unwrap();
    assert!(!c.file.cgroup.sandbox_cgroup_only);
    assert!(ConfigFile::default().cgroup.sandbox_cgroup_only);
}

#[test]
fn validate_accepts_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::parse(&with_files(dir.path()), src()).unwrap();
    c.validate().unwrap();
}

#[test]
fn validate_names_missing_kernel_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_files(dir.path());
    std::fs::remove_file(dir.path().join("vmlinux")).unwrap();
    let e = Config::parse(&text, src())
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "guest kernel {}/vmlinux not found (hypervisor.kernel in /etc/kata-rs/test.toml)",
            dir.path().display()
        )
    );
}

#[test]
fn validate_defaults_say_where_they_came_from() {
    let c = Config {
        file: ConfigFile::default(),
        source: ConfigSource::Defaults,
    };
    if std::path::Path::new("/usr/local/bin/kata-vmm").exists() {
        return;
    }
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with(
            "VMM /usr/local/bin/kata-vmm not found (hypervisor.path in the built-in defaults"
        ),
        "{e}"
    );
}

#[test]
fn validate_rejects_non_executable_vmm_and_bad_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_files(dir.path());
    let mut c = Config::parse(&text, src()).unwrap();
    c.file.hypervisor.vcpus = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("hypervisor.vcpus"));
    c.file.hypervisor.vcpus = 1;
    c.file.agent.dial_timeout_secs = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("agent.dial_timeout_secs"));
    c.file.agent.dial_timeout_secs = 1;
    c.file.hypervisor.memory_mib = 1;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("hypervisor.memory_mib"));
    c.file.hypervisor.memory_mib = 256;
    for (key, f) in [
        (
            "hypervisor.max_vcpus",
            (|c: &mut Config| c.file.hypervisor.max_vcpus = 65) as fn(&mut Config),
        ),
        ("hypervisor.max_memory_mib", |c| {
            c.file.hypervisor.max_memory_mib = 10
        }),
        ("shared_fs.cache", |c| {
            c.file.shared_fs.cache = "sometimes".into()
        }),
        ("shared_fs.start_timeout_secs", |c| {
            c.file.shared_fs.start_timeout_secs = 0
        }),
        ("runtime.console_log_max_kib", |c| {
            c.file.runtime.console_log_max_kib = 15
        }),
        ("runtime.console_log_max_kib", |c| {
            c.file.runtime.console_log_max_kib = 65537
        }),
        ("runtime.console_log_rate_kib", |c| {
            c.file.runtime.console_log_rate_kib = 1024 * 1024 + 1
        }),
    ] {
        let mut bad = c.clone();
        f(&mut bad);
        assert!(
            bad.validate().unwrap_err().to_string().contains(key),
            "{key}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("kata-vmm"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("is not executable"));
}

#[test]
fn factory_is_off_by_default_and_read() {
    let c = Config::parse("", src()).unwrap();
    assert!(!c.file.factory.template);
    assert_eq!(
        c.file.factory.template_dir,
        PathBuf::from("/var/lib/kata-rs/templates")
    );
    let c = Config::parse(
        "[factory]\ntemplate = true\ntemplate_dir = \"/srv/tpl\"\n",
        src(),
    )
    .unwrap();
    assert!(c.file.factory.template);
    assert_eq!(c.file.factory.template_dir, PathBuf::from("/srv/tpl"));
    assert_eq!(c.file.factory.restore_memory, RestoreMemory::Map);
    let c = Config::parse("[factory]\nrestore_memory = \"copy\"\n", src()).unwrap();
    assert_eq!(c.file.factory.restore_memory, RestoreMemory::Copy);
    let e = Config::parse("[factory]\nrestore_memory = \"share\"\n", src())
        .unwrap_err()
        .to_string();
    assert!(e.contains("restore_memory") && e.contains("copy"), "{e}");
    let e = Config::parse("[factory]\ntemplates = true\n", src())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `templates`"), "{e}");
    assert!(e.contains("template_dir"), "the known keys are listed: {e}");
    let e = Config::parse("[factory]\ntemplate = \"yes\"\n", src())
        .unwrap_err()
        .to_string();
    assert!(e.contains("template"), "{e}");
}

#[test]
fn validate_refuses_a_bad_template_dir() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("/{}", "t".repeat(MAX_TEMPLATE_DIR_LEN));
    for bad in ["templates", "/a/../b", long.as_str()] {
        let text = format!(
            "{}\n[factory]\ntemplate = true\ntemplate_dir = {bad:?}\n",
            with_files(dir.path())
        );
        let e = Config::parse(&text, src())
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("factory.template_dir"), "{bad}: {e}");
        assert!(e.contains("test.toml"), "{bad}: {e}");
    }
    let text = format!(
        "{}\n[factory]\ntemplate = true\ntemplate_dir = \"/srv/kata/tpl\"\n",
        with_files(dir.path())
    );
    Config::parse(&text, src()).unwrap().validate().unwrap();
}
