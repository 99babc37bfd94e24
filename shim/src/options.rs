//! What containerd passes besides the bundle that changes the configuration: the runtime
//! options `Any` (`ConfigPath`, as containerd's CRI plugin sends it for non-runc runtimes and
//! `ctr run --runtime-config-path` sets it), and pod annotations that override the VM size.

use std::{collections::HashMap, path::PathBuf};

use containerd_shim_protos::protobuf::{
    well_known_types::{any::Any, empty::Empty},
    Message, UnknownValueRef,
};

use crate::config::Config;

/// Type name of containerd's generic runtime options (`runtimeoptions.v1.Options`:
/// `type_url = 1`, `config_path = 2`, `config_body = 3`).
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
/// runc's options type; it carries nothing for us, and is accepted and ignored.
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// Annotations under this prefix are ours; each must be known and allowed.
pub const ANNOTATION_PREFIX: &str = "io.katacontainers.";
/// Prefix of the hypervisor annotations; the rest is the name `hypervisor.enable_annotations`
/// lists.
pub const HYPERVISOR_ANNOTATION_PREFIX: &str = "io.katacontainers.config.hypervisor.";
/// The hypervisor annotations the shim knows: vCPUs and memory (MiB) of the VM.
pub const KNOWN_HYPERVISOR_ANNOTATIONS: [&str; 2] = ["default_vcpus", "default_memory"];

/// Longest ConfigPath accepted.
const MAX_PATH: usize = 4096;

/// The configuration file named by the runtime options, if any. runc's options (or none)
/// name none. Options of any other type, a field of `runtimeoptions.v1.Options` other than
/// `TypeUrl`/`ConfigPath` (e.g. `ConfigBody`), or a malformed message are errors that say
/// what is not understood: an option silently ignored would run the pod with settings its
/// owner did not ask for.
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, String> {
    let Some(any) = options else {
        return Ok(None);
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name == RUNC_OPTIONS_TYPE || (name.is_empty() && any.value.is_empty()) {
        return Ok(None);
    }
    if name != RUNTIME_OPTIONS_TYPE {
        return Err(format!(
            "unknown runtime options type {:?}: io.containerd.kata.v2 understands \
             {RUNTIME_OPTIONS_TYPE} (ConfigPath) and ignores {RUNC_OPTIONS_TYPE}",
            crate::util::sanitize(&any.type_url, 200)
        ));
    }
    // Decoded generically: every field of the message lands in the unknown fields of an
    // empty message.
    let m = Empty::parse_from_bytes(&any.value)
        .map_err(|e| format!("invalid runtime options ({name}): {e}"))?;
    let unknown = m.special_fields.unknown_fields();
    if let Some((field, _)) = unknown.iter().find(|(f, _)| *f != 1 && *f != 2) {
        let what = if field == 3 {
            "ConfigBody (field 3) is not supported: put the configuration in a file and name \
             it with ConfigPath"
                .to_string()
        } else {
            format!("field {field} is unknown")
        };
        return Err(format!("unsupported runtime option in {name}: {what}"));
    }
    let Some(v) = unknown.get(2) else {
        return Ok(None);
    };
    let UnknownValueRef::LengthDelimited(bytes) = v else {
        return Err(format!(
            "invalid runtime options ({name}): ConfigPath is not a string"
        ));
    };
    let path = std::str::from_utf8(bytes)
        .map_err(|_| format!("invalid runtime options ({name}): ConfigPath is not UTF-8"))?;
    if path.is_empty() {
        return Ok(None);
    }
    if path.len() > MAX_PATH || path.contains('\0') || !path.starts_with('/') {
        return Err(format!(
            "runtime option ConfigPath {:?} must be an absolute path",
            crate::util::sanitize(path, 200)
        ));
    }
    Ok(Some(PathBuf::from(path)))
}

/// Applies the pod's annotations to `config`: `io.katacontainers.config.hypervisor.
/// default_vcpus` and `default_memory` (MiB) set the VM size when the configuration's
/// `hypervisor.enable_annotations` lists them. Any other annotation under
/// `io.katacontainers.` is an error that names it (nothing has been started yet, so a
/// refused Create leaves nothing behind). Values are range-checked by
/// [`Config::validate`] afterwards.
pub fn apply_annotations(
    config: &mut Config,
    annotations: &HashMap<String, String>,
) -> Result<(), String> {
    let mut keys: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for key in keys {
        let value = &annotations[key];
        let shown = crate::util::sanitize(key, 200);
        let Some(name) = key.strip_prefix(HYPERVISOR_ANNOTATION_PREFIX) else {
            return Err(format!(
                "annotation {shown} is not supported by kata-rs (known: {})",
                known_list()
            ));
        };
        if !KNOWN_HYPERVISOR_ANNOTATIONS.contains(&name) {
            return Err(format!(
                "annotation {shown} is not supported by kata-rs (known: {})",
                known_list()
            ));
        }
        if !config
            .file
            .hypervisor
            .enable_annotations
            .iter()
            .any(|a| a == name)
        {
            return Err(format!(
                "annotation {shown} is not allowed by the configuration ({}): add \"{name}\" \
                 to hypervisor.enable_annotations to allow it",
                config.source
            ));
        }
        let n: u32 = value.trim().parse().map_err(|_| {
            format!(
                "annotation {shown}: {:?} is not a number",
                crate::util::sanitize(value, 40)
            )
        })?;
        match name {
            "default_vcpus" => config.file.hypervisor.vcpus = n,
            _ => config.file.hypervisor.memory_mib = n,
        }
    }
    Ok(())
}

/// CRI's pod resources on the sandbox container (containerd >= 1.6.7,
/// `pkg/cri/annotations`): the sum of the pod's containers' limits.
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// CFS quota (µs) of the pod.
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// CFS period (µs) of the pod.
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// CPU shares of the pod (validated, not used for sizing, as in Kata).
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";

/// The pod resources CRI announced (0 = not set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxResources {
    /// Memory limit, bytes.
    pub memory: u64,
    /// CFS quota, µs (<= 0: no limit).
    pub cpu_quota: i64,
    /// CFS period, µs.
    pub cpu_period: u64,
    /// CPU shares.
    pub cpu_shares: u64,
}

impl SandboxResources {
    /// Parses CRI's sandbox annotations; absent ones are 0. A value that is not a number,
    /// a negative memory, a quota below -1, a period outside the kernel's 1000..=1000000
    /// µs, or a quota without a period is an error naming the annotation. Other
    /// `io.kubernetes.cri.*` annotations are not looked at.
    pub fn parse(annotations: &HashMap<String, String>) -> Result<Self, String> {
        fn num<T: std::str::FromStr>(
            a: &HashMap<String, String>,
            key: &str,
            what: &str,
        ) -> Result<Option<T>, String> {
            let Some(v) = a.get(key) else {
                return Ok(None);
            };
            v.trim().parse().map(Some).map_err(|_| {
                format!(
                    "annotation {key}: {:?} is not {what}",
                    crate::util::sanitize(v, 40)
                )
            })
        }
        let memory = num::<u64>(annotations, SANDBOX_MEMORY, "a byte count")?.unwrap_or(0);
        let cpu_quota = num::<i64>(annotations, SANDBOX_CPU_QUOTA, "a number of µs")?.unwrap_or(0);
        let cpu_period =
            num::<u64>(annotations, SANDBOX_CPU_PERIOD, "a number of µs")?.unwrap_or(0);
        let cpu_shares = num::<u64>(annotations, SANDBOX_CPU_SHARES, "a number")?.unwrap_or(0);
        if cpu_quota < -1 {
            return Err(format!(
                "annotation {SANDBOX_CPU_QUOTA}: {cpu_quota} is negative (-1 or 0 = no limit)"
            ));
        }
        if cpu_period != 0 && !(1000..=1_000_000).contains(&cpu_period) {
            return Err(format!(
                "annotation {SANDBOX_CPU_PERIOD}: {cpu_period} µs is out of range 1000..=1000000"
            ));
        }
        if cpu_quota > 0 && cpu_period == 0 {
            return Err(format!(
                "annotation {SANDBOX_CPU_QUOTA}: a quota of {cpu_quota} µs needs {SANDBOX_CPU_PERIOD}"
            ));
        }
        Ok(Self {
            memory,
            cpu_quota,
            cpu_period,
            cpu_shares,
        })
    }

    /// vCPUs the pod's limit needs: ceil(quota / period), 0 without a limit.
    pub fn vcpus(&self) -> u64 {
        if self.cpu_quota > 0 && self.cpu_period > 0 {
            (self.cpu_quota as u64).div_ceil(self.cpu_period)
        } else {
            0
        }
    }

    /// MiB the pod's memory limit needs (rounded up).
    pub fn memory_mib(&self) -> u64 {
        self.memory.div_ceil(1 << 20)
    }
}

/// The VM size of a pod, as Kata sizes it: the configured base plus the pod's limits,
/// capped at `max_vcpus` / `max_memory_mib` (never below the base). Returns (vcpus, MiB).
pub fn pod_vm_size(
    base_vcpus: u32,
    base_memory_mib: u32,
    res: &SandboxResources,
    max_vcpus: u32,
    max_memory_mib: u32,
) -> (u32, u32) {
    let cap = |base: u32, extra: u64, max: u32| -> u32 {
        let want = u64::from(base).saturating_add(extra);
        want.min(u64::from(max.max(base))) as u32
    };
    (
        cap(base_vcpus, res.vcpus(), max_vcpus),
        cap(base_memory_mib, res.memory_mib(), max_memory_mib),
    )
}

/// The host's online CPUs and memory (MiB), for the caps that default to them.
pub fn host_limits() -> (u32, u32) {
    // SAFETY: sysconf only reads a system value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpus = u32::try_from(cpus).unwrap_or(1).max(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| u32::try_from(kib >> 10).unwrap_or(u32::MAX))
        .unwrap_or(u32::MAX);
    (cpus, mem)
}

/// Sizes a pod's VM from CRI's sandbox annotations (on the sandbox container only: the VM
/// is sized once, at boot). CRI sets them, so no `enable_annotations` entry is needed.
/// Returns the pod's resources when any was set.
pub fn apply_sandbox_resources(
    config: &mut Config,
    annotations: &HashMap<String, String>,
    host: (u32, u32),
) -> Result<Option<SandboxResources>, String> {
    let res = SandboxResources::parse(annotations)?;
    if res.vcpus() == 0 && res.memory_mib() == 0 {
        return Ok(None);
    }
    let h = &mut config.file.hypervisor;
    let max_vcpus = if h.max_vcpus == 0 {
        host.0
    } else {
        h.max_vcpus
    };
    let max_mem = if h.max_memory_mib == 0 {
        host.1
    } else {
        h.max_memory_mib
    };
    // The configuration's own range (1..=64 vCPUs, <= 1 TiB) bounds the caps too.
    let (vcpus, mem) = pod_vm_size(
        h.vcpus,
        h.memory_mib,
        &res,
        max_vcpus.min(64),
        max_mem.min(1024 * 1024),
    );
    h.vcpus = vcpus;
    h.memory_mib = mem;
    Ok(Some(res))
}

fn known_list() -> String {
    KNOWN_HYPERVISOR_ANNOTATIONS
        .iter()
        .map(|n| format!("{HYPERVISOR_ANNOTATION_PREFIX}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSource;

    /// `runtimeoptions.v1.Options` as Go's proto encoder writes it.
    fn runtime_options(type_url: &str, config_path: &str) -> Any {
        let mut v = Vec::new();
        for (field, s) in [(1u8, type_url), (2u8, config_path)] {
            if s.is_empty() {
                continue;
            }
            v.push(field << 3 | 2);
            v.push(s.len() as u8);
            v.extend_from_slice(s.as_bytes());
        }
        Any {
            type_url: RUNTIME_OPTIONS_TYPE.into(),
            value: v,
            ..Default::default()
        }
    }

    #[test]
    fn config_path_from_runtime_options() {
        assert_eq!(config_path(None).unwrap(), None);
        let any = runtime_options("x", "/etc/kata-rs/other.toml");
        assert_eq!(
            config_path(Some(&any)).unwrap(),
            Some(PathBuf::from("/etc/kata-rs/other.toml"))
        );
        let mut prefixed = any.clone();
        prefixed.type_url = format!("type.googleapis.com/{RUNTIME_OPTIONS_TYPE}");
        assert!(config_path(Some(&prefixed)).unwrap().is_some());
        assert_eq!(config_path(Some(&runtime_options("x", ""))).unwrap(), None);
        let rel = runtime_options("", "relative.toml");
        assert!(config_path(Some(&rel))
            .unwrap_err()
            .contains("must be an absolute path"));
        let runc = Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: vec![0x08, 0x01],
            ..Default::default()
        };
        assert_eq!(config_path(Some(&runc)).unwrap(), None);
        let bad = Any {
            type_url: RUNTIME_OPTIONS_TYPE.into(),
            value: vec![0x12, 0x50, b'/'],
            ..Default::default()
        };
        assert!(config_path(Some(&bad))
            .unwrap_err()
            .contains("invalid runtime options"));
    }

    #[test]
    fn unknown_runtime_options_are_refused_clearly() {
        let other = Any {
            type_url: "io.containerd.runhcs.v1.Options".into(),
            value: vec![0x08, 0x01],
            ..Default::default()
        };
        let e = config_path(Some(&other)).unwrap_err();
        assert!(
            e.contains("unknown runtime options type") && e.contains("runhcs"),
            "{e}"
        );
        // ConfigBody (field 3, a string) beside a ConfigPath.
        let mut body = runtime_options("", "/etc/kata-rs/c.toml");
        body.value.extend_from_slice(&[3 << 3 | 2, 1, b'x']);
        let e = config_path(Some(&body)).unwrap_err();
        assert!(e.contains("ConfigBody"), "{e}");
        // An unknown varint field 9.
        let mut nine = runtime_options("", "/etc/kata-rs/c.toml");
        nine.value.extend_from_slice(&[9 << 3, 1]);
        let e = config_path(Some(&nine)).unwrap_err();
        assert!(e.contains("field 9 is unknown"), "{e}");
        // An empty Any (no options at all) names no file.
        assert_eq!(config_path(Some(&Any::default())).unwrap(), None);
    }

    fn config(allowed: &[&str]) -> Config {
        let mut c = Config::parse("", ConfigSource::File("/etc/kata-rs/c.toml".into())).unwrap();
        c.file.hypervisor.enable_annotations = allowed.iter().map(|s| s.to_string()).collect();
        c
    }

    fn ann(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn allowed_annotations_size_the_vm() {
        let mut c = config(&["default_vcpus", "default_memory"]);
        apply_annotations(
            &mut c,
            &ann(&[
                ("io.katacontainers.config.hypervisor.default_vcpus", "2"),
                ("io.katacontainers.config.hypervisor.default_memory", "1024"),
                ("io.kubernetes.cri.container-type", "sandbox"),
            ]),
        )
        .unwrap();
        assert_eq!(c.file.hypervisor.vcpus, 2);
        assert_eq!(c.file.hypervisor.memory_mib, 1024);
    }

    #[test]
    fn annotations_not_allowed_or_unknown_are_refused_clearly() {
        let mut c = config(&["default_vcpus"]);
        let e = apply_annotations(
            &mut c,
            &ann(&[("io.katacontainers.config.hypervisor.default_memory", "1024")]),
        )
        .unwrap_err();
        assert!(
            e.contains("not allowed by the configuration (/etc/kata-rs/c.toml)"),
            "{e}"
        );
        assert!(e.contains("hypervisor.enable_annotations"), "{e}");
        assert_eq!(c.file.hypervisor.memory_mib, 512, "nothing applied");

        let e = apply_annotations(
            &mut c,
            &ann(&[("io.katacontainers.config.hypervisor.kernel", "/x")]),
        )
        .unwrap_err();
        assert!(e.contains("not supported by kata-rs"), "{e}");
        let e = apply_annotations(&mut c, &ann(&[("io.katacontainers.foo", "1")])).unwrap_err();
        assert!(e.contains("io.katacontainers.foo"), "{e}");
        let e = apply_annotations(
            &mut c,
            &ann(&[("io.katacontainers.config.hypervisor.default_vcpus", "two")]),
        )
        .unwrap_err();
        assert!(e.contains("is not a number"), "{e}");
    }

    #[test]
    fn sandbox_resources_parse_and_size_the_vm() {
        let a = ann(&[
            (SANDBOX_MEMORY, "134217728"),
            (SANDBOX_CPU_QUOTA, "150000"),
            (SANDBOX_CPU_PERIOD, "100000"),
            (SANDBOX_CPU_SHARES, "1536"),
            ("io.kubernetes.cri.sandbox-log-directory", "/var/log/pods/x"),
            ("io.kubernetes.cri.something-new", "whatever"),
        ]);
        let r = SandboxResources::parse(&a).unwrap();
        assert_eq!(r.vcpus(), 2, "ceil(1.5)");
        assert_eq!(r.memory_mib(), 128);
        assert_eq!(pod_vm_size(1, 256, &r, 8, 4096), (3, 384));
        // Capped, never below the base.
        assert_eq!(pod_vm_size(1, 256, &r, 2, 300), (2, 300));
        assert_eq!(pod_vm_size(4, 512, &r, 2, 300), (4, 512));
        // A partial MiB rounds up; no limit adds nothing.
        let r = SandboxResources::parse(&ann(&[(SANDBOX_MEMORY, "1")])).unwrap();
        assert_eq!(r.memory_mib(), 1);
        for q in ["0", "-1"] {
            let r = SandboxResources::parse(&ann(&[
                (SANDBOX_CPU_QUOTA, q),
                (SANDBOX_CPU_PERIOD, "100000"),
            ]))
            .unwrap();
            assert_eq!(r.vcpus(), 0);
        }
        assert_eq!(
            SandboxResources::parse(&HashMap::new()).unwrap(),
            SandboxResources::default()
        );
    }

    #[test]
    fn garbage_sandbox_resources_are_named() {
        for (kv, want) in [
            (vec![(SANDBOX_MEMORY, "lots")], SANDBOX_MEMORY),
            (vec![(SANDBOX_MEMORY, "-5")], SANDBOX_MEMORY),
            (vec![(SANDBOX_CPU_QUOTA, "1.5")], SANDBOX_CPU_QUOTA),
            (vec![(SANDBOX_CPU_QUOTA, "-7")], SANDBOX_CPU_QUOTA),
            (
                vec![(SANDBOX_CPU_QUOTA, "100000"), (SANDBOX_CPU_PERIOD, "10")],
                SANDBOX_CPU_PERIOD,
            ),
            (vec![(SANDBOX_CPU_QUOTA, "100000")], SANDBOX_CPU_PERIOD),
            (vec![(SANDBOX_CPU_SHARES, "x")], SANDBOX_CPU_SHARES),
        ] {
            let e = SandboxResources::parse(&ann(&kv)).unwrap_err();
            assert!(e.contains(want), "{kv:?}: {e}");
        }
    }

    #[test]
    fn sandbox_resources_apply_with_caps_from_config_or_host() {
        let mut c = Config {
            file: Default::default(),
            source: ConfigSource::Defaults,
        };
        c.file.hypervisor.vcpus = 1;
        c.file.hypervisor.memory_mib = 256;
        let a = ann(&[
            (SANDBOX_MEMORY, "536870912"),
            (SANDBOX_CPU_QUOTA, "400000"),
            (SANDBOX_CPU_PERIOD, "100000"),
        ]);
        let mut d = c.clone();
        assert!(apply_sandbox_resources(&mut d, &a, (2, 600))
            .unwrap()
            .is_some());
        assert_eq!(
            (d.file.hypervisor.vcpus, d.file.hypervisor.memory_mib),
            (2, 600)
        );
        let mut d = c.clone();
        d.file.hypervisor.max_vcpus = 3;
        d.file.hypervisor.max_memory_mib = 4096;
        apply_sandbox_resources(&mut d, &a, (2, 600)).unwrap();
        assert_eq!(
            (d.file.hypervisor.vcpus, d.file.hypervisor.memory_mib),
            (3, 768)
        );
        // Nothing set: untouched.
        let mut d = c.clone();
        assert!(apply_sandbox_resources(&mut d, &HashMap::new(), (2, 600))
            .unwrap()
            .is_none());
        assert_eq!(d, c);
        let (cpus, mem) = host_limits();
        assert!(cpus >= 1 && mem >= 1);
    }
}
