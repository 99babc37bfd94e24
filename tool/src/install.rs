//! `kata-rs install` and `kata-rs uninstall`.
//!
//! Install plans every change first (artifacts found, containerd's config merged and parsed
//! again, nothing in the way) and refuses before writing anything when a step cannot be
//! done. Then it saves a backup of every file it is about to replace, writes the manifest
//! (what each path held before and holds after), and writes the files, each atomically.
//! A second run with the same inputs finds every file as wanted and writes nothing.
//!
//! Uninstall checks the whole tree against the manifest first and refuses (changing
//! nothing) when a file kata-rs wrote was changed since or a backup is gone; otherwise it
//! puts back every replaced file byte for byte (mode and owner too), removes the files it
//! added and the directories it created, and its own state.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{
    containerd, crio,
    fsutil::{self, Current, FileState},
    layout::{self, rooted},
};

/// The default shim configuration written when there is none.
pub const DEFAULT_CONFIGURATION: &str = include_str!("../../shim/configuration.toml.example");
/// The RuntimeClass install prints.
pub const RUNTIMECLASS: &str = include_str!("../../deploy/runtimeclass.yaml");

/// Format version of [`Manifest`].
pub const MANIFEST_FORMAT: u32 = 1;

/// What `kata-rs install` did, kept at [`layout::MANIFEST`] under the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Every file install wrote, in the order it first wrote them.
    pub files: Vec<Entry>,
    /// Directories install created (node paths), top-down.
    pub created_dirs: Vec<String>,
}

/// One file install wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Node path, e.g. `/usr/local/bin/kata-vmm`.
    pub path: String,
    /// What it is, for messages.
    pub what: String,
    /// The file that was there before the first install (None: there was none).
    pub before: Option<FileState>,
    /// Node path of the copy of `before` (under [`layout::BACKUP_DIR`]).
    pub backup: Option<String>,
    /// The file as install last wrote it.
    pub after: FileState,
}

/// Options of `kata-rs install`.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The tree standing for the node's `/`.
    pub root: PathBuf,
    /// Where the build outputs are.
    pub from: PathBuf,
    /// containerd's config (node path); None: the default, merged only when containerd is
    /// there (its config or binary).
    pub containerd_config: Option<PathBuf>,
    /// Write the CRI-O drop-in.
    pub crio: bool,
    /// Restart containerd / CRI-O when their config changed.
    pub restart: bool,
}

/// A file that is there: its state and content.
type Existing = (FileState, Vec<u8>);

/// A file install wants.
struct Want {
    path: String,
    what: String,
    data: Vec<u8>,
    mode: u32,
    note: String,
}

fn read_manifest(root: &Path) -> Result<Option<Manifest>> {
    let p = rooted(root, Path::new(layout::MANIFEST));
    let text = match fs::read_to_string(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.with_context(|| format!("cannot read the install manifest {}", p.display()))?,
    };
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("the install manifest {} is damaged", p.display()))?;
    if m.format != MANIFEST_FORMAT {
        bail!(
            "the install manifest {} has format {} (this kata-rs reads {MANIFEST_FORMAT})",
            p.display(),
            m.format
        );
    }
    Ok(Some(m))
}

fn manifest_json(m: &Manifest) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(m).expect("manifest serializes");
    s.push('\n');
    s.into_bytes()
}

/// Whether containerd looks installed in the tree (its config or its binary).
pub fn containerd_present(root: &Path) -> bool {
    rooted(root, Path::new(layout::CONTAINERD_CONFIG)).exists()
        || [
            "/usr/bin/containerd",
            "/usr/local/bin/containerd",
            "/bin/containerd",
        ]
        .iter()
        .any(|p| rooted(root, Path::new(p)).exists())
}

/// Whether CRI-O looks installed in the tree.
pub fn crio_present(root: &Path) -> bool {
    ["/usr/bin/crio", "/usr/local/bin/crio", "/etc/crio"]
        .iter()
        .any(|p| rooted(root, Path::new(p)).exists())
}

/// Runs `kata-rs install`; prints what it did. Errors are refusals (nothing written) unless
/// they say otherwise.
pub fn install(o: &InstallOptions) -> Result<()> {
    let root = o
        .root
        .canonicalize()
        .with_context(|| format!("root {} does not exist", o.root.display()))?;
    if !root.is_dir() {
        bail!("root {} is not a directory", root.display());
    }
    let old = read_manifest(&root).context("refusing to install")?;

    // ---- plan
    let mut wants = Vec::new();
    let mut missing = Vec::new();
    for a in layout::ARTIFACTS {
        match layout::find_source(&o.from, &a) {
            Some(src) => wants.push(Want {
                path: a.dest.into(),
                what: a.what.into(),
                data: fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?,
                mode: a.mode,
                note: format!("from {}", src.display()),
            }),
            None => missing.push(format!(
                "{} ({})",
                a.what,
                a.sources
                    .iter()
                    .map(|s| o.from.join(s).display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        }
    }
    if !missing.is_empty() {
        bail!(
            "refusing to install: build outputs not found in {} (--from): {}",
            o.from.display(),
            missing.join("; ")
        );
    }
    match layout::find_source(&o.from, &layout::TOOL_ARTIFACT) {
        Some(src) => wants.push(Want {
            path: layout::TOOL.into(),
            what: layout::TOOL_ARTIFACT.what.into(),
            data: fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?,
            mode: layout::TOOL_ARTIFACT.mode,
            note: format!("from {}", src.display()),
        }),
        None => println!(
            "kata-rs tool: not in {} (--from), so not installed as {}",
            o.from.display(),
            layout::TOOL
        ),
    }
    let config_path = rooted(&root, Path::new(layout::CONFIG));
    if !config_path.exists() {
        wants.push(Want {
            path: layout::CONFIG.into(),
            what: "configuration".into(),
            data: DEFAULT_CONFIGURATION.as_bytes().to_vec(),
            mode: 0o644,
            note: "the default (shim/configuration.toml.example)".into(),
        });
    } else if let Err(e) = kata_rs_shim::config::Config::load_file(&config_path, "kata-rs install")
    {
        println!("warning: the existing configuration is kept as it is, but: {e}");
    }
    let cd_node = o
        .containerd_config
        .clone()
        .unwrap_or_else(|| PathBuf::from(layout::CONTAINERD_CONFIG));
    let cd_path = rooted(&root, &cd_node);
    let mut containerd_changed = false;
    if o.containerd_config.is_some() || containerd_present(&root) {
        let (text, mode) = match fsutil::current(&cd_path)? {
            Current::Absent => (String::new(), 0o644),
            Current::File(s, d) => (
                String::from_utf8(d).map_err(|_| {
                    anyhow::anyhow!(
                        "refusing to install: containerd config {} is not UTF-8 text",
                        cd_path.display()
                    )
                })?,
                s.mode,
            ),
            Current::Other(what) => bail!(
                "refusing to install: containerd config {} is {what}; point --containerd-config \
                 at the file itself",
                cd_path.display()
            ),
        };
        let m = containerd::merge(&text, layout::CONFIG).map_err(|e| {
            anyhow::anyhow!(
                "refusing to install: cannot merge the handler into containerd config {}: {e}",
                cd_path.display()
            )
        })?;
        if !m.changed.is_empty() {
            containerd_changed = true;
        }
        wants.push(Want {
            path: cd_node.to_string_lossy().into_owned(),
            what: "containerd config".into(),
            data: m.text.into_bytes(),
            mode,
            note: format!(
                "handler `{}` {} (config version {})",
                containerd::HANDLER,
                containerd::handler_table(m.version),
                m.version
            ),
        });
    } else {
        println!(
            "containerd: not found under {} (no {} and no containerd binary): skipped",
            root.display(),
            layout::CONTAINERD_CONFIG
        );
    }
    if o.crio {
        wants.push(Want {
            path: layout::CRIO_DROPIN.into(),
            what: "CRI-O drop-in".into(),
            data: crio::dropin().into_bytes(),
            mode: 0o644,
            note: "[crio.runtime.runtimes.kata]".into(),
        });
    }

    // ---- compare with the tree
    let mut manifest = old.clone().unwrap_or(Manifest {
        format: MANIFEST_FORMAT,
        ..Default::default()
    });
    let mut writes: Vec<(Want, Option<Existing>)> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let add_dirs = |dir: &Path, dirs: &mut Vec<PathBuf>| -> Result<()> {
        for d in fsutil::missing_dirs(&root, dir).context("refusing to install")? {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        Ok(())
    };
    for w in wants {
        let p = rooted(&root, Path::new(&w.path));
        let cur = fsutil::current(&p)?;
        let unchanged = match &cur {
            Current::File(s, d) => *d == w.data && s.mode == w.mode,
            Current::Absent => false,
            Current::Other(what) => bail!(
                "refusing to install: {} is {what}, not a file kata-rs can replace",
                p.display()
            ),
        };
        if unchanged {
            println!("unchanged  {} ({})", w.path, w.what);
            continue;
        }
        add_dirs(p.parent().expect("rooted path has a parent"), &mut dirs)?;
        let before = match cur {
            Current::File(s, d) => Some((s, d)),
            _ => None,
        };
        if before.is_some() && !manifest.files.iter().any(|e| e.path == w.path) {
            let b = rooted(
                &root,
                &Path::new(layout::BACKUP_DIR).join(w.path.trim_start_matches('/')),
            );
            add_dirs(b.parent().expect("backup has a parent"), &mut dirs)?;
        }
        writes.push((w, before));
    }
    if writes.is_empty() {
        println!(
            "kata-rs install: nothing to change under {}",
            root.display()
        );
        print_runtimeclass();
        return Ok(());
    }
    add_dirs(&rooted(&root, Path::new(layout::STATE_DIR)), &mut dirs)?;

    // ---- apply: directories, backups, manifest, files
    for d in &dirs {
        fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
        manifest.created_dirs.push(node_path(&root, d));
    }
    let mut plan = Vec::new();
    for (w, before) in writes {
        let (uid, gid) = before
            .as_ref()
            .map_or_else(fsutil::own_ids, |b| (b.0.uid, b.0.gid));
        let after = FileState {
            sha256: fsutil::sha256_hex(&w.data),
            size: w.data.len() as u64,
            mode: w.mode,
            uid,
            gid,
        };
        let owner = before.as_ref().map(|b| (b.0.uid, b.0.gid));
        match manifest.files.iter_mut().find(|e| e.path == w.path) {
            Some(e) => e.after = after,
            None => {
                let backup = match &before {
                    Some((_, data)) => {
                        let node = format!("{}{}", layout::BACKUP_DIR, w.path);
                        let b = rooted(&root, Path::new(&node));
                        fsutil::write_atomic(&b, data, 0o600, None)?;
                        Some(node)
                    }
                    None => None,
                };
                manifest.files.push(Entry {
                    path: w.path.clone(),
                    what: w.what.clone(),
                    before: before.as_ref().map(|b| b.0.clone()),
                    backup,
                    after,
                });
            }
        }
        plan.push((w, owner, before.is_some()));
    }
    fsutil::write_atomic(
        &rooted(&root, Path::new(layout::MANIFEST)),
        &manifest_json(&manifest),
        0o600,
        None,
    )?;
    for (w, owner, replaced) in &plan {
        let p = rooted(&root, Path::new(&w.path));
        fsutil::write_atomic(&p, &w.data, w.mode, *owner)?;
        println!(
            "{}  {} ({}: {})",
            if *replaced { "updated  " } else { "installed" },
            w.path,
            w.what,
            w.note
        );
    }
    println!(
        "kata-rs install: {} file(s) written under {}; manifest {}",
        plan.len(),
        root.display(),
        layout::MANIFEST
    );
    let crio_changed = plan.iter().any(|(w, _, _)| w.path == layout::CRIO_DROPIN);
    if o.restart {
        restart(&root, containerd_changed, crio_changed)?;
    } else if containerd_changed || crio_changed {
        println!("restart containerd (or CRI-O) to load the handler, or run again with --restart");
    }
    print_runtimeclass();
    Ok(())
}

fn print_runtimeclass() {
    println!("--- RuntimeClass (kubectl apply -f -):");
    print!("{RUNTIMECLASS}");
}

fn node_path(root: &Path, p: &Path) -> String {
    format!("/{}", p.strip_prefix(root).unwrap_or(p).display())
}

/// Restarts the services whose config changed: `systemctl restart` on the node itself, or
/// in `chroot ROOT` for another root (the host mounted into a DaemonSet's container).
fn restart(root: &Path, containerd: bool, crio: bool) -> Result<()> {
    for (changed, unit) in [(containerd, "containerd"), (crio, "crio")] {
        if !changed {
            continue;
        }
        let mut cmd = if layout::is_real_root(root) {
            Command::new("systemctl")
        } else {
            let mut c = Command::new("chroot");
            c.arg(root).arg("systemctl");
            c
        };
        cmd.args(["restart", unit]);
        let st = cmd
            .status()
            .with_context(|| format!("cannot run {cmd:?} (the files are written)"))?;
        if !st.success() {
            bail!("{cmd:?} failed ({st}); the files are written");
        }
        println!("restarted {unit}");
    }
    Ok(())
}

/// Options of `kata-rs uninstall`.
#[derive(Debug, Clone)]
pub struct UninstallOptions {
    /// The tree standing for the node's `/`.
    pub root: PathBuf,
    /// Restart containerd / CRI-O when their config was restored.
    pub restart: bool,
}

/// Runs `kata-rs uninstall`; prints what it did. Every refusal happens before any change.
pub fn uninstall(o: &UninstallOptions) -> Result<()> {
    let root = o
        .root
        .canonicalize()
        .with_context(|| format!("root {} does not exist", o.root.display()))?;
    let manifest = read_manifest(&root)
        .context("refusing to uninstall")?
        .with_context(|| {
            format!(
                "refusing to uninstall: no install manifest at {}: nothing was installed there \
                 by `kata-rs install`, so there is nothing it can restore (remove files by hand)",
                rooted(&root, Path::new(layout::MANIFEST)).display()
            )
        })?;

    // ---- verify everything first
    let mut problems = Vec::new();
    let mut backups = Vec::new();
    for e in &manifest.files {
        let p = rooted(&root, Path::new(&e.path));
        match fsutil::current(&p)? {
            Current::Absent => {}
            Current::File(s, _) if s.sha256 == e.after.sha256 && s.mode == e.after.mode => {}
            Current::File(s, _) if s.sha256 == e.after.sha256 => problems.push(format!(
                "{} ({}) changed mode since install ({:o}, installed {:o})",
                e.path, e.what, s.mode, e.after.mode
            )),
            Current::File(..) => problems.push(format!(
                "{} ({}) was changed since `kata-rs install` wrote it; restoring the original \
                 would lose that change",
                e.path, e.what
            )),
            Current::Other(what) => problems.push(format!("{} ({}) is now {what}", e.path, e.what)),
        }
        if let (Some(before), Some(b)) = (&e.before, &e.backup) {
            let bp = rooted(&root, Path::new(b));
            match fsutil::current(&bp)? {
                Current::File(s, d) if s.sha256 == before.sha256 => backups.push(Some(d)),
                Current::File(..) => {
                    problems.push(format!("the backup {b} of {} was changed", e.path));
                    backups.push(None);
                }
                _ => {
                    problems.push(format!("the backup {b} of {} is missing", e.path));
                    backups.push(None);
                }
            }
        } else {
            backups.push(None);
        }
    }
    if !problems.is_empty() {
        bail!(
            "refusing to uninstall (nothing was changed): {}. Put those files back as \
             `kata-rs install` left them (or restore the originals by hand from {} and remove {})",
            problems.join("; "),
            layout::BACKUP_DIR,
            layout::MANIFEST
        );
    }

    // ---- restore
    let mut restored_cd = false;
    let mut restored_crio = false;
    for (e, backup) in manifest.files.iter().zip(backups).rev() {
        let p = rooted(&root, Path::new(&e.path));
        match (&e.before, backup) {
            (Some(before), Some(data)) => {
                fsutil::write_atomic(&p, &data, before.mode, Some((before.uid, before.gid)))?;
                println!("restored  {} ({})", e.path, e.what);
            }
            _ => {
                match fs::remove_file(&p) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err).with_context(|| format!("cannot remove {}", p.display()))
                    }
                    _ => {}
                }
                println!("removed   {} ({})", e.path, e.what);
            }
        }
        restored_cd |= e.what == "containerd config";
        restored_crio |= e.path == layout::CRIO_DROPIN;
    }
    for e in &manifest.files {
        if let Some(b) = &e.backup {
            let _ = fs::remove_file(rooted(&root, Path::new(b)));
        }
    }
    let _ = fs::remove_file(rooted(&root, Path::new(layout::MANIFEST)));
    let mut kept = BTreeSet::new();
    for d in manifest.created_dirs.iter().rev() {
        let p = rooted(&root, Path::new(d));
        match fs::remove_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                kept.insert(d.clone());
            }
        }
    }
    for d in &kept {
        println!("kept      {d} (it holds files kata-rs did not install)");
    }
    println!(
        "kata-rs uninstall: {} file(s) restored or removed under {}",
        manifest.files.len(),
        root.display()
    );
    if o.restart {
        restart(&root, restored_cd, restored_crio)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configuration_parses_with_the_shim() {
        let c = kata_rs_shim::config::Config::parse(
            DEFAULT_CONFIGURATION,
            kata_rs_shim::config::ConfigSource::Defaults,
        )
        .unwrap();
        assert_eq!(c.file, kata_rs_shim::config::ConfigFile::default());
    }

    #[test]
    fn runtimeclass_names_the_handler() {
        assert!(RUNTIMECLASS.contains(&format!("handler: {}", containerd::HANDLER)));
    }

    #[test]
    fn manifest_round_trips() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            files: vec![Entry {
                path: "/a".into(),
                what: "x".into(),
                before: None,
                backup: None,
                after: FileState {
                    sha256: "00".into(),
                    size: 1,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            }],
            created_dirs: vec!["/d".into()],
        };
        let back: Manifest = serde_json::from_slice(&manifest_json(&m)).unwrap();
        assert_eq!(back, m);
    }
}
