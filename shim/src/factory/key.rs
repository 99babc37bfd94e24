//! A template's key: what makes a VM configuration, hashed. Two sandboxes with the same key
//! can start from the same template.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::HypervisorConfig;

/// Bumped when a template made by an older shim must not be used (what the template VM is
/// booted with, or what the shim does after a restore, changed).
const KEY_VERSION: &str = "kata-rs-template-3";

/// A template's key, e.g. `3fa2c19d0b7e4a11-256m-1c`: the hash of the boot identity (kernel,
/// guest image, kata-vmm, kernel parameters, placeholder slots), then memory and vCPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateKey {
    /// 16 hex digits: the hash of what the VM boots (not its size).
    pub boot: String,
    /// The whole key: the template's directory name.
    pub name: String,
}

impl std::fmt::Display for TemplateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl TemplateKey {
    /// The key of the VMs `h` describes, with `slots` placeholder slots: the kernel's, the
    /// guest image's and kata-vmm's identities (path, size, modification time, device and
    /// inode: a replaced file makes a new key), `kernel_params`, memory and vCPUs. An
    /// error names the file that cannot be read.
    pub fn of(h: &HypervisorConfig, slots: u8) -> Result<TemplateKey, String> {
        let mut d = Sha256::new();
        d.update(KEY_VERSION.as_bytes());
        for (what, p) in [
            ("kernel", &h.kernel),
            ("initrd", &h.initrd),
            ("vmm", &h.path),
        ] {
            d.update(format!("\n{what}=").as_bytes());
            d.update(file_identity(p).map_err(|e| format!("{what} {}: {e}", p.display()))?);
        }
        d.update(b"\ncmdline=");
        d.update(h.kernel_params.trim().as_bytes());
        d.update(format!("\nslots={slots}").as_bytes());
        let hash = d.finalize();
        let boot: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let name = format!("{boot}-{}m-{}c", h.memory_mib, h.vcpus);
        Ok(TemplateKey { boot, name })
    }

    /// The boot hash of a directory name that is a key (`None` for anything else).
    pub fn boot_of(name: &str) -> Option<&str> {
        let (boot, rest) = name.split_once('-')?;
        let (mem, vcpus) = rest.split_once('-')?;
        let digits = |s: &str, suffix: char| {
            s.strip_suffix(suffix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        (boot.len() == 16
            && boot.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && digits(mem, 'm')
            && digits(vcpus, 'c'))
        .then_some(boot)
    }
}

/// What identifies a file's content without reading it: its path, size, modification time
/// (ns), device and inode. A file replaced (new inode) or rewritten (size, mtime) changes it.
fn file_identity(path: &Path) -> std::io::Result<Vec<u8>> {
    let m = std::fs::metadata(path)?;
    Ok(format!(
        "{}\0{}\0{}.{:09}\0{}\0{}",
        path.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.dev(),
        m.ino()
    )
    .into_bytes())
}
