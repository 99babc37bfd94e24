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

/// The configuration file named by the runtime options, if any. Options of another type
/// (runc's, or none) name none; a malformed `runtimeoptions.v1.Options` is an error.
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, String> {
    let Some(any) = options else {
        return Ok(None);
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != RUNTIME_OPTIONS_TYPE {
        return Ok(None);
    }
    // Decoded generically: every field of the message lands in the unknown fields of an
    // empty message.
    let m = Empty::parse_from_bytes(&any.value)
        .map_err(|e| format!("invalid runtime options ({name}): {e}"))?;
    let Some(v) = m.special_fields.unknown_fields().get(2) else {
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
}
