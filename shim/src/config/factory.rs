//! `[factory]`: VM templates (docs/templates.md). Off by default.

use std::path::{Component, PathBuf};

use serde::Deserialize;

/// `[factory]`: start sandboxes from a saved VM (a template) instead of booting them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FactoryConfig {
    /// Start sandboxes from a template of their VM configuration: the first sandbox of a
    /// configuration boots cold and a template is made beside it; later ones restore it
    /// (`kata-vmm --restore`). A template that fails is removed and the sandbox boots cold.
    pub template: bool,
    /// Where templates live: one directory per configuration key (0700, root's).
    pub template_dir: PathBuf,
    /// How a sandbox restored from a template gets its guest RAM (`kata-vmm
    /// --restore-memory`).
    pub restore_memory: RestoreMemory,
}

/// `factory.restore_memory`: how a restore gets guest RAM.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMemory {
    /// The template's memory file copied into memfds virtiofsd maps directly: no page
    /// sharing between sandboxes, nothing between the guest and virtiofsd (file-heavy pods).
    Copy,
    /// The template's memory file mapped copy-on-write: sandboxes of one template share its
    /// unchanged pages; kata-vmm forwards virtio-fs through its bounce area. The default:
    /// what templates are for (memory and start time).
    #[default]
    Map,
}

impl RestoreMemory {
    /// The `--restore-memory` value.
    pub fn as_arg(self) -> &'static str {
        match self {
            RestoreMemory::Copy => "copy",
            RestoreMemory::Map => "map",
        }
    }
}

/// Default [`FactoryConfig::template_dir`].
pub const DEFAULT_TEMPLATE_DIR: &str = "/var/lib/kata-rs/templates";

impl Default for FactoryConfig {
    fn default() -> Self {
        Self {
            template: false,
            template_dir: PathBuf::from(DEFAULT_TEMPLATE_DIR),
            restore_memory: RestoreMemory::default(),
        }
    }
}

impl FactoryConfig {
    /// What is wrong with the section, if anything: `template_dir` must be an absolute path
    /// without `..` and short enough for the sockets of a template VM made under it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let d = &self.template_dir;
        if !d.is_absolute()
            || d.components()
                .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err((
                "factory.template_dir",
                format!(
                    "template directory {} is not an absolute path without `..`",
                    d.display()
                ),
            ));
        }
        // A template VM's vsock and control sockets live two levels below it, and a Unix
        // socket path has at most 107 bytes.
        if d.as_os_str().len() > MAX_TEMPLATE_DIR_LEN {
            return Err((
                "factory.template_dir",
                format!(
                    "template directory {} is longer than {MAX_TEMPLATE_DIR_LEN} bytes (the \
                     template VM's sockets live below it)",
                    d.display()
                ),
            ));
        }
        Ok(())
    }
}

/// Longest [`FactoryConfig::template_dir`] accepted.
pub const MAX_TEMPLATE_DIR_LEN: usize = 48;
