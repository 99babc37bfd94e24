//! containerd's configuration: the CRI runtime handler `kata` merged in (config versions 2
//! and 3) with toml_edit, so the operator's comments and formatting survive, and found again
//! by `kata-rs check`.

use toml_edit::{Array, DocumentMut, Item, Table, TableLike};

/// The CRI runtime handler name (the RuntimeClass's `handler`).
pub const HANDLER: &str = "kata";
/// The shim's runtime type (containerd finds `containerd-shim-kata-v2` on its PATH).
pub const RUNTIME_TYPE: &str = "io.containerd.kata.v2";
/// The annotations the shim reads from pods and containers.
pub const ANNOTATIONS: &str = "io.katacontainers.*";

/// The CRI plugin that holds `containerd.runtimes` in config `version`: containerd 1.x
/// (version 2) `io.containerd.grpc.v1.cri`, containerd 2.x (version 3)
/// `io.containerd.cri.v1.runtime`.
pub fn cri_plugin(version: i64) -> Option<&'static str> {
    match version {
        2 => Some("io.containerd.grpc.v1.cri"),
        3 => Some("io.containerd.cri.v1.runtime"),
        _ => None,
    }
}

/// The TOML table header of the handler in config `version`, for messages.
pub fn handler_table(version: i64) -> String {
    format!(
        "[plugins.\"{}\".containerd.runtimes.{HANDLER}]",
        cri_plugin(version).unwrap_or("?")
    )
}

/// The config's `version`; containerd reads a file without one as version 1.
fn version_of(doc: &DocumentMut) -> Result<i64, String> {
    match doc.get("version") {
        None => Ok(1),
        Some(v) => v
            .as_integer()
            .ok_or_else(|| format!("`version` is not an integer: {}", v.to_string().trim())),
    }
}

fn unsupported(version: i64) -> String {
    if version == 1 {
        "config version 1 (no `version` key) is not supported: it is containerd 1.x's oldest \
         format; convert it with `containerd config migrate` (containerd 2.x) or add \
         `version = 2` and move the CRI tables to plugins.\"io.containerd.grpc.v1.cri\""
            .to_string()
    } else {
        format!(
            "config version {version} is not supported (2: containerd 1.6/1.7, 3: containerd 2.x)"
        )
    }
}

/// The handler as found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The config version (2 or 3).
    pub version: i64,
    /// `runtime_type` of the handler, None when there is no handler table.
    pub runtime_type: Option<String>,
    /// `options.ConfigPath`, if set.
    pub config_path: Option<String>,
}

/// Parses a containerd config and looks up the handler. Errors: not TOML, unsupported
/// version, a key on the path that is not a table.
pub fn find_handler(text: &str) -> Result<HandlerInfo, String> {
    let doc: DocumentMut = text.parse().map_err(|e| one_line(&e))?;
    let version = version_of(&doc)?;
    let plugin = cri_plugin(version).ok_or_else(|| unsupported(version))?;
    let t = lookup(
        doc.as_table(),
        &["plugins", plugin, "containerd", "runtimes", HANDLER],
    );
    let runtime_type = t.and_then(|t| t.get("runtime_type")).map(|v| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string().trim().to_string())
    });
    let config_path = t
        .and_then(|t| t.get("options"))
        .and_then(Item::as_table_like)
        .and_then(|o| o.get("ConfigPath"))
        .and_then(Item::as_str)
        .map(str::to_string);
    Ok(HandlerInfo {
        version,
        runtime_type: t.map(|_| runtime_type.unwrap_or_default()),
        config_path,
    })
}

fn lookup<'a>(root: &'a dyn TableLike, path: &[&str]) -> Option<&'a dyn TableLike> {
    let mut t = root;
    for k in path {
        t = t.get(k)?.as_table_like()?;
    }
    Some(t)
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What [`merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The new config text (equal to the input when nothing had to change).
    pub text: String,
    /// The config version.
    pub version: i64,
    /// The keys set or extended, e.g. `runtime_type`; empty when nothing changed.
    pub changed: Vec<String>,
}

/// Merges the handler into a containerd config (empty or comments only: a new version 2
/// config). Sets `runtime_type`, adds [`ANNOTATIONS`] to `pod_annotations` and
/// `container_annotations`, sets `options.ConfigPath` = `shim_config`; keys already right
/// and every other key, comment and blank line are left exactly as they were. The result is
/// parsed again and must show the handler.
pub fn merge(text: &str, shim_config: &str) -> Result<Merged, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| one_line(&e))?;
    let mut changed = Vec::new();
    if doc.as_table().is_empty() {
        // containerd reads a file without keys as version 1; make it the format every
        // containerd since 1.3 reads (2.x converts it on load).
        // Comments of a key-less file are the document's trailing text: keep them above.
        let comments = doc.trailing().as_str().unwrap_or("").to_string();
        doc.set_trailing("");
        doc.insert("version", toml_edit::value(2i64));
        if let Some(mut k) = doc.as_table_mut().key_mut("version") {
            k.leaf_decor_mut().set_prefix(comments);
        }
        changed.push("version".to_string());
    }
    let version = version_of(&doc)?;
    let plugin = cri_plugin(version).ok_or_else(|| unsupported(version))?;
    let end_position = last_position(doc.as_table()) + 1;
    let mut t: &mut dyn TableLike = doc.as_table_mut();
    let mut path = String::new();
    for k in ["plugins", plugin, "containerd", "runtimes"] {
        path = if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        };
        t = child_table(t, k, true).ok_or_else(|| format!("`{path}` is not a table"))?;
    }
    if t.get(HANDLER).is_none() {
        let mut n = Table::new();
        // At the end of the file, not between the operator's tables.
        n.set_position(Some(end_position));
        n.decor_mut().set_prefix(
            "\n# kata-rs: pods with RuntimeClass handler `kata` run in their own microVM\n\
             # (added by `kata-rs install`; `kata-rs uninstall` restores this file).\n",
        );
        t.insert(HANDLER, Item::Table(n));
    }
    let h = child_table(t, HANDLER, false)
        .ok_or_else(|| format!("`{path}.{HANDLER}` is not a table"))?;
    if h.get("runtime_type").and_then(Item::as_str) != Some(RUNTIME_TYPE) {
        h.insert("runtime_type", toml_edit::value(RUNTIME_TYPE));
        changed.push("runtime_type".into());
    }
    for key in ["pod_annotations", "container_annotations"] {
        match h.get_mut(key) {
            None => {
                let mut a = Array::new();
                a.push(ANNOTATIONS);
                h.insert(key, toml_edit::value(a));
                changed.push(key.into());
            }
            Some(item) => {
                let a = item
                    .as_array_mut()
                    .ok_or_else(|| format!("`{path}.{HANDLER}.{key}` is not an array"))?;
                if !a.iter().any(|v| v.as_str() == Some(ANNOTATIONS)) {
                    a.push(ANNOTATIONS);
                    changed.push(key.into());
                }
            }
        }
    }
    if h.get("options").is_none() {
        let mut n = Table::new();
        n.set_position(Some(end_position + 1));
        h.insert("options", Item::Table(n));
    }
    let opts = child_table(h, "options", false)
        .ok_or_else(|| format!("`{path}.{HANDLER}.options` is not a table"))?;
    if opts.get("ConfigPath").and_then(Item::as_str) != Some(shim_config) {
        opts.insert("ConfigPath", toml_edit::value(shim_config));
        changed.push("options.ConfigPath".into());
    }
    let out = if changed.is_empty() {
        text.to_string()
    } else {
        doc.to_string()
    };
    // Validate what containerd will read: plain TOML, and the handler where it belongs.
    toml::from_str::<toml::Table>(&out)
        .map_err(|e| format!("the merged config does not parse: {}", one_line(&e)))?;
    let found = find_handler(&out)?;
    if found.runtime_type.as_deref() != Some(RUNTIME_TYPE) {
        return Err("the merged config does not show the handler".into());
    }
    Ok(Merged {
        text: out,
        version,
        changed,
    })
}

/// The highest document position of any table in `t` (0 when none has one).
fn last_position(t: &Table) -> isize {
    t.iter()
        .filter_map(|(_, v)| v.as_table())
        .map(|c| c.position().unwrap_or(0).max(last_position(c)))
        .max()
        .unwrap_or(0)
}

/// The child table `key` of `t`, created when missing (implicit: no header of its own when
/// `implicit`, e.g. `[plugins]` for `[plugins."x".y]`). None when `key` holds a non-table.
fn child_table<'a>(
    t: &'a mut dyn TableLike,
    key: &str,
    implicit: bool,
) -> Option<&'a mut dyn TableLike> {
    if t.get(key).is_none() {
        let mut n = Table::new();
        n.set_implicit(implicit);
        t.insert(key, Item::Table(n));
    }
    t.get_mut(key)?.as_table_like_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"# operator's containerd config
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    # CNI setup
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"   # Debian's plugins
      conf_dir = "/etc/cni/net.d"
"#;

    const V3: &str = r#"version = 3
# containerd 2.x
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    SystemdCgroup = true
"#;

    #[test]
    fn merges_into_v2_keeping_comments() {
        let m = merge(V2, "/etc/kata-rs/configuration.toml").unwrap();
        assert_eq!(m.version, 2);
        assert!(m.text.starts_with(V2), "{}", m.text);
        assert!(m
            .text
            .contains("bin_dir = \"/usr/lib/cni\"   # Debian's plugins"));
        let h = find_handler(&m.text).unwrap();
        assert_eq!(h.runtime_type.as_deref(), Some(RUNTIME_TYPE));
        assert_eq!(
            h.config_path.as_deref(),
            Some("/etc/kata-rs/configuration.toml")
        );
        assert!(m
            .text
            .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata]"));
        // Idempotent: merging the result again changes nothing.
        let again = merge(&m.text, "/etc/kata-rs/configuration.toml").unwrap();
        assert!(again.changed.is_empty());
        assert_eq!(again.text, m.text);
    }

    #[test]
    fn merges_into_v3() {
        let m = merge(V3, "/etc/kata-rs/configuration.toml").unwrap();
        assert_eq!(m.version, 3);
        assert!(m.text.starts_with(V3.trim_end()), "{}", m.text);
        let v: toml::Table = toml::from_str(&m.text).unwrap();
        let kata = &v["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["kata"];
        assert_eq!(kata["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        assert_eq!(
            v["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
                ["options"]["SystemdCgroup"]
                .as_bool(),
            Some(true)
        );
        assert!(v["plugins"].get("io.containerd.grpc.v1.cri").is_none());
    }

    #[test]
    fn existing_handler_keeps_its_other_keys() {
        let text = format!(
            "{V2}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata]\n  \
             runtime_type = \"io.containerd.kata.v2\"\n  privileged_without_host_devices = true\n  \
             pod_annotations = [\"example.com/*\"]\n"
        );
        let m = merge(&text, "/etc/kata-rs/configuration.toml").unwrap();
        assert!(!m.changed.contains(&"runtime_type".to_string()));
        assert!(m.changed.contains(&"pod_annotations".to_string()));
        let v: toml::Table = toml::from_str(&m.text).unwrap();
        let kata = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["kata"];
        assert_eq!(
            kata["privileged_without_host_devices"].as_bool(),
            Some(true)
        );
        assert_eq!(
            kata["pod_annotations"].as_array().unwrap().len(),
            2,
            "{}",
            m.text
        );
    }

    #[test]
    fn empty_config_becomes_version_2() {
        let m = merge("", "/c.toml").unwrap();
        assert_eq!(m.version, 2);
        assert!(m.text.starts_with("version = 2\n"), "{}", m.text);
        let m = merge("# only a comment\n", "/c.toml").unwrap();
        assert!(m.text.starts_with("# only a comment\n"), "{}", m.text);
        assert_eq!(find_handler(&m.text).unwrap().version, 2);
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = merge("[plugins.cri]\nx = 1\n", "/c").unwrap_err();
        assert!(e.contains("version 1"), "{e}");
        let e = merge("version = 7\n", "/c").unwrap_err();
        assert!(e.contains("version 7 is not supported"), "{e}");
        let e = merge("version = 2\nplugins = 3\n", "/c").unwrap_err();
        assert!(e.contains("`plugins` is not a table"), "{e}");
        let e = merge("version = 2\n[plugins\n", "/c").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn find_handler_reports_absence() {
        let h = find_handler(V2).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.runtime_type, None);
    }
}
