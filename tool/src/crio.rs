//! CRI-O: the drop-in that makes `kata` a VM runtime handler (`runtime_type = "vm"`: CRI-O
//! drives the shim through the containerd shim v2 API), and its check.

use crate::layout;

/// Where CRI-O keeps the runtime's state for the handler.
pub const RUNTIME_ROOT: &str = "/run/kata-rs/crio";

/// The drop-in's text (`/etc/crio/crio.conf.d/50-kata-rs.conf`).
pub fn dropin() -> String {
    format!(
        "# kata-rs: pods with RuntimeClass handler `kata` run in their own microVM.\n\
         # Written by `kata-rs install --crio`; `kata-rs uninstall` removes it.\n\
         [crio.runtime.runtimes.kata]\n\
         runtime_path = \"{shim}\"\n\
         runtime_type = \"vm\"\n\
         runtime_root = \"{RUNTIME_ROOT}\"\n\
         runtime_config_path = \"{config}\"\n\
         privileged_without_host_devices = true\n",
        shim = layout::SHIM,
        config = layout::CONFIG,
    )
}

/// Checks a drop-in's text: the handler with `runtime_type = "vm"` and `runtime_path` the
/// installed shim. Ok: a one-line summary.
pub fn check_dropin(text: &str) -> Result<String, String> {
    let v: toml::Table = toml::from_str(text).map_err(|e| {
        e.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    })?;
    let h = v
        .get("crio")
        .and_then(|c| c.get("runtime"))
        .and_then(|r| r.get("runtimes"))
        .and_then(|r| r.get("kata"))
        .ok_or("no [crio.runtime.runtimes.kata] table")?;
    let get = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if get("runtime_type") != "vm" {
        return Err(format!(
            "runtime_type is {:?}, not \"vm\"",
            get("runtime_type")
        ));
    }
    if get("runtime_path") != layout::SHIM {
        return Err(format!(
            "runtime_path is {:?}, not {}",
            get("runtime_path"),
            layout::SHIM
        ));
    }
    Ok(format!(
        "handler kata: runtime_type \"vm\", runtime_path {}",
        layout::SHIM
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropin_parses_and_checks() {
        let d = dropin();
        assert!(check_dropin(&d).is_ok(), "{d}");
        let v: toml::Table = toml::from_str(&d).unwrap();
        let h = &v["crio"]["runtime"]["runtimes"]["kata"];
        assert_eq!(h["privileged_without_host_devices"].as_bool(), Some(true));
        assert_eq!(h["runtime_root"].as_str(), Some(RUNTIME_ROOT));
        let e = check_dropin(&d.replace("\"vm\"", "\"oci\"")).unwrap_err();
        assert!(e.contains("not \"vm\""), "{e}");
        assert!(check_dropin("[crio]\n").is_err());
    }
}
