//! Small read-only probes shared by `check` and `env`: versions of binaries, the guest
//! kernel's release, cgroup v2, the effective configuration.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kata_rs_shim::config::{Config, ConfigError, ConfigSource};

use crate::layout::{self, rooted};

/// How long a `--version` may take.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `path args...` and returns the first non-empty line of its stdout (or stderr).
pub fn version_line(path: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t0.elapsed() > VERSION_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} {} did not answer within {} s",
                    path.display(),
                    args.join(" "),
                    VERSION_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match (out.status.success(), line) {
        (true, Some(l)) => Ok(l.to_string()),
        (true, None) => Err(format!(
            "{} {} printed nothing",
            path.display(),
            args.join(" ")
        )),
        (false, l) => Err(format!(
            "{} {} failed ({}){}",
            path.display(),
            args.join(" "),
            out.status,
            l.map(|l| format!(": {l}")).unwrap_or_default()
        )),
    }
}

/// The version number in a `--version` line: the first word that starts with a digit.
pub fn version_number(line: &str) -> Option<&str> {
    line.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
}

/// The kernel release in a vmlinux's banner (`Linux version 6.1.192-kata-rs ...`).
pub fn kernel_release(data: &[u8]) -> Option<String> {
    let pat = b"Linux version ";
    let i = data.windows(pat.len()).position(|w| w == pat)?;
    let rest = &data[i + pat.len()..];
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    let r = std::str::from_utf8(&rest[..end]).ok()?;
    (!r.is_empty() && r.len() < 80).then(|| r.to_string())
}

/// A cgroup2 mount point from `/proc/self/mounts` text; the unified one (`/sys/fs/cgroup`)
/// first.
pub fn cgroup2_mount(mounts: &str) -> Option<String> {
    let pts: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| f[1])
        })
        .collect();
    pts.iter()
        .find(|p| **p == "/sys/fs/cgroup")
        .or(pts.first())
        .map(|p| p.to_string())
}

/// The effective configuration: the file (or `$KATA_RS_CONFIG` when `root` is `/`) or the
/// built-in defaults.
pub fn load_config(root: &Path) -> Result<Config, ConfigError> {
    if layout::is_real_root(root) {
        Config::load()
    } else {
        Config::load_default(&rooted(root, Path::new(layout::CONFIG)))
    }
}

/// The configuration file that [`load_config`] reads (it may not exist).
pub fn config_file(root: &Path) -> PathBuf {
    match std::env::var_os(kata_rs_shim::config::CONFIG_ENV) {
        Some(p) if !p.is_empty() && layout::is_real_root(root) => PathBuf::from(p),
        _ => rooted(root, Path::new(layout::CONFIG)),
    }
}

/// `c` with every path it names moved under `root` (for checks on a tree that stands for
/// `/`).
pub fn rebase(c: &Config, root: &Path) -> Config {
    let mut c = c.clone();
    let h = &mut c.file.hypervisor;
    for p in [&mut h.path, &mut h.kernel, &mut h.initrd] {
        *p = rooted(root, p);
    }
    c.file.shared_fs.virtiofsd = rooted(root, &c.file.shared_fs.virtiofsd);
    c
}

/// Describes where a configuration came from.
pub fn source_text(c: &Config) -> String {
    match &c.source {
        ConfigSource::File(p) => p.display().to_string(),
        ConfigSource::Defaults => "built-in defaults (no configuration file)".into(),
    }
}

/// The effective configuration as a TOML table: the defaults
/// (shim/configuration.toml.example, which equals the shim's built-in defaults — a unit
/// test holds that) with the file's values over them. Only meaningful for a file that
/// [`Config::parse`] accepted.
pub fn effective_table(file_text: Option<&str>) -> toml::Table {
    let mut base: toml::Table =
        toml::from_str(crate::install::DEFAULT_CONFIGURATION).expect("the example parses");
    if let Some(text) = file_text {
        if let Ok(over) = toml::from_str::<toml::Table>(text) {
            for (section, v) in over {
                match (base.get_mut(&section), v) {
                    (Some(toml::Value::Table(b)), toml::Value::Table(o)) => b.extend(o),
                    (_, v) => {
                        base.insert(section, v);
                    }
                }
            }
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_from_banner() {
        let mut data = vec![0u8; 100];
        data.extend_from_slice(b"Linux version 6.1.192-kata-rs (root@x) #1 SMP\0");
        assert_eq!(kernel_release(&data).as_deref(), Some("6.1.192-kata-rs"));
        assert_eq!(kernel_release(b"nothing"), None);
    }

    #[test]
    fn cgroup2_found_unified_or_hybrid() {
        let hybrid =
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(hybrid).as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mount(unified).as_deref(), Some("/sys/fs/cgroup"));
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn versions_parsed_and_run() {
        assert_eq!(version_number("kata-vmm 0.1.0"), Some("0.1.0"));
        assert_eq!(
            version_number("containerd github.com/containerd/containerd 1.6.20~ds1 x"),
            Some("1.6.20~ds1")
        );
        assert_eq!(
            version_line(Path::new("/bin/sh"), &["-c", "echo; echo hello 1.2"]).unwrap(),
            "hello 1.2"
        );
        let e = version_line(Path::new("/bin/sh"), &["-c", "echo bad >&2; exit 3"]).unwrap_err();
        assert!(e.contains("bad"), "{e}");
        assert!(version_line(Path::new("/nonexistent"), &[]).is_err());
    }

    #[test]
    fn effective_table_overlays_the_file() {
        let t = effective_table(Some("[hypervisor]\nmemory_mib = 1024\n"));
        assert_eq!(t["hypervisor"]["memory_mib"].as_integer(), Some(1024));
        assert_eq!(t["hypervisor"]["vcpus"].as_integer(), Some(1));
        assert_eq!(t["agent"]["dial_timeout_secs"].as_integer(), Some(30));
    }
}
