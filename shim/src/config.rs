//! The shim's configuration file (TOML): where the VMM, guest kernel and guest image are,
//! the VM's size, and the timeouts for talking to the agent in the guest.
//!
//! The file is `$KATA_RS_CONFIG` when that is set (then it must exist), else
//! `/etc/kata-rs/configuration.toml`; when that default file does not exist the built-in
//! defaults apply, which are the install layout of docs/design.md.

use std::{
    fmt,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

mod factory;
pub use factory::{FactoryConfig, RestoreMemory, DEFAULT_TEMPLATE_DIR, MAX_TEMPLATE_DIR_LEN};

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "KATA_RS_CONFIG";
/// Who named the file when it came from [`CONFIG_ENV`] (error messages).
pub const FROM_ENV: &str = "named by $KATA_RS_CONFIG";
/// Who named the file when it came from the runtime options (error messages).
pub const FROM_CONFIG_PATH: &str = "named by the runtime option ConfigPath";
/// Configuration file used when `KATA_RS_CONFIG` is not set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kata-rs/configuration.toml";

/// Errors from loading or validating the configuration. Every message names the file (or
/// says that the built-in defaults were used) and the key that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly named file (`KATA_RS_CONFIG`, the runtime option `ConfigPath`) does not
    /// exist or cannot be read.
    #[error("cannot read configuration file {path} ({from}): {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Who named it.
        from: &'static str,
        /// Why it could not be read.
        err: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("invalid configuration file {path}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the key, line and column).
        msg: String,
    },
    /// A value is out of range or a file it names does not exist.
    #[error("{what} ({key} in {origin})")]
    Invalid {
        /// What is wrong, e.g. "guest kernel /x/y not found".
        what: String,
        /// The key, e.g. `hypervisor.kernel`.
        key: &'static str,
        /// Where the value came from.
        origin: ConfigSource,
    },
}

/// Where the configuration values came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Read from this file.
    File(PathBuf),
    /// Built-in defaults (the default file does not exist).
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Defaults => write!(
                f,
                "the built-in defaults; {DEFAULT_CONFIG_PATH} does not exist"
            ),
        }
    }
}

/// `[hypervisor]`: the VMM and what it boots.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HypervisorConfig {
    /// The VMM binary (kata-vmm).
    pub path: PathBuf,
    /// Guest kernel (ELF vmlinux with PVH entry).
    pub kernel: PathBuf,
    /// Guest image (newc cpio initramfs with the agent as /init).
    pub initrd: PathBuf,
    /// Number of vCPUs of each VM.
    pub vcpus: u32,
    /// Memory of each VM in MiB.
    pub memory_mib: u32,
    /// Extra kernel command line parameters (passed as `--cmdline`).
    pub kernel_params: String,
    /// How long Delete waits for the VMM to exit after the agent's Shutdown before it
    /// kills the VMM.
    pub shutdown_timeout_secs: u64,
    /// Pod annotations `io.katacontainers.config.hypervisor.<name>` allowed to override
    /// this section: `default_vcpus`, `default_memory` (MiB). Empty: none.
    pub enable_annotations: Vec<String>,
    /// Most vCPUs a pod VM gets when CRI's sandbox annotations add its containers' CPU
    /// limits to `vcpus`; 0 = the host's online CPUs.
    pub max_vcpus: u32,
    /// Most memory (MiB) a pod VM gets when CRI's sandbox annotations add its containers'
    /// memory limits to `memory_mib`; 0 = the host's memory (MemTotal).
    pub max_memory_mib: u32,
    /// The jailed VMM of each sandbox runs as uid = gid = `jail_id_base` + (its vsock CID -
    /// [`crate::vmm::CID_MIN`]): an unprivileged id of its own per VM (CIDs are unique among
    /// running VMs), so that one VM's VMM cannot signal, ptrace or read another's memory.
    /// 0 = every VMM uses kata-vmm's default (65534).
    pub jail_id_base: u32,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/usr/local/bin/kata-vmm"),
            kernel: PathBuf::from("/usr/local/share/kata-rs/vmlinux"),
            initrd: PathBuf::from("/usr/local/share/kata-rs/kata-rs-initrd.img"),
            vcpus: 1,
            memory_mib: 512,
            kernel_params: String::new(),
            shutdown_timeout_secs: 10,
            enable_annotations: Vec::new(),
            max_vcpus: 0,
            max_memory_mib: 0,
            jail_id_base: DEFAULT_JAIL_ID_BASE,
        }
    }
}

/// Default [`HypervisorConfig::jail_id_base`]: the upper half of the 32-bit id space, which
/// holds no host users (systemd keeps it for containers' id ranges).
pub const DEFAULT_JAIL_ID_BASE: u32 = 0x8000_0000;

/// Highest [`HypervisorConfig::jail_id_base`]: base + the CID range stays below the invalid
/// id `u32::MAX` (-1).
pub const MAX_JAIL_ID_BASE: u32 = u32::MAX - 1 - (crate::vmm::CID_MAX - crate::vmm::CID_MIN);

impl HypervisorConfig {
    /// The uid and gid of the jailed VMM of the VM with vsock `cid`; None for kata-vmm's
    /// default. `cid` comes from [`crate::vmm::random_cid`] (in `CID_MIN..=CID_MAX`).
    pub fn jail_id(&self, cid: u32) -> Option<u32> {
        if self.jail_id_base == 0 {
            return None;
        }
        self.jail_id_base
            .checked_add(cid.saturating_sub(crate::vmm::CID_MIN))
    }
}

/// `[agent]`: talking to the agent in the guest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// How long Create waits for the agent to answer `Check` after the VMM started.
    pub dial_timeout_secs: u64,
    /// Timeout of each agent request (all but WaitProcess and the stdout/stderr reads,
    /// which wait for the container).
    pub request_timeout_secs: u64,
    /// After the container's process exited, how long the shim waits for the rest of
    /// its stdout/stderr before it reports the exit.
    pub io_drain_timeout_secs: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            dial_timeout_secs: 30,
            request_timeout_secs: 30,
            io_drain_timeout_secs: 5,
        }
    }
}

/// `[runtime]`: the shim's own files and logging.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Per-sandbox state (the share, virtiofsd's socket, pid files) lives in
    /// `<state_dir>/<sandbox-id>/`.
    pub state_dir: PathBuf,
    /// The guest console of each VM is written to `<console_log_dir>/<sandbox-id>.log`
    /// (the directory is made 0700, each log 0600). On disk, not on the host's `/run`
    /// tmpfs (host memory).
    pub console_log_dir: PathBuf,
    /// Cap of each console log in KiB (`kata-vmm --console-log-max-kib`): the first half
    /// of the guest's output and the latest half are kept.
    pub console_log_max_kib: u64,
    /// Rate limit of each console log in KiB/s (`kata-vmm --console-log-rate-kib`); output
    /// over it is dropped (and counted in the log). 0: no rate limit.
    pub console_log_rate_kib: u64,
    /// Debug logging to containerd's shim log; also keeps console logs after the sandbox
    /// is gone (otherwise they are removed with it).
    pub debug: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/kata-rs/sandboxes"),
            console_log_dir: PathBuf::from("/var/log/kata-rs/console"),
            console_log_max_kib: 1024,
            console_log_rate_kib: 64,
            debug: false,
        }
    }
}

/// `[shared_fs]`: the virtio-fs file server that shares container root file systems and
/// volumes with the guest (one per sandbox).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SharedFsConfig {
    /// The virtiofsd binary (the Rust virtiofsd, `scripts/build-virtiofsd.sh`).
    pub virtiofsd: PathBuf,
    /// Guest caching of the share: `auto` (attributes and directory entries cached for
    /// 1 s: host changes are seen within about a second), `never` (always asks the host),
    /// or `always` (caches until the guest forgets; host changes may never be seen).
    pub cache: String,
    /// How long virtiofsd may take to answer kata-vmm's vhost-user handshake (the shim
    /// binds its socket and starts the VMM beside it: kata-vmm's `handshake-timeout=`).
    pub start_timeout_secs: u64,
}

impl Default for SharedFsConfig {
    fn default() -> Self {
        Self {
            virtiofsd: PathBuf::from("/usr/local/libexec/kata-rs/virtiofsd"),
            cache: "auto".into(),
            start_timeout_secs: 30,
        }
    }
}

/// `[cgroup]`: where a sandbox's host processes (shim, VMM, virtiofsd) are accounted.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// Put the sandbox's host processes in one host cgroup (the sandbox container's
    /// `linux.cgroupsPath`, under the pod's cgroup with CRI), like Kata's
    /// `sandbox_cgroup_only`: the pod's limits and PodOverhead then bound the VMM too.
    /// Needs cgroup v2 on the host; `false` leaves them in the shim's cgroup.
    pub sandbox_cgroup_only: bool,
    /// The parent cgroup (absolute in the v2 hierarchy) of sandboxes whose spec has no
    /// `linux.cgroupsPath`: they get `<parent>/<sandbox-id>`.
    pub parent: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            sandbox_cgroup_only: true,
            parent: "/kata-rs".into(),
        }
    }
}

/// Values of [`SharedFsConfig::cache`].
pub const SHARED_FS_CACHE_MODES: [&str; 3] = ["auto", "never", "always"];

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// `[hypervisor]`
    pub hypervisor: HypervisorConfig,
    /// `[agent]`
    pub agent: AgentConfig,
    /// `[runtime]`
    pub runtime: RuntimeConfig,
    /// `[shared_fs]`
    pub shared_fs: SharedFsConfig,
    /// `[cgroup]`
    pub cgroup: CgroupConfig,
    /// `[factory]` (VM templates)
    pub factory: FactoryConfig,
}

/// The loaded configuration and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The values.
    pub file: ConfigFile,
    /// Where they came from.
    pub source: ConfigSource,
}

impl Config {
    /// Loads the configuration: `$KATA_RS_CONFIG` if set, else the default file, else the
    /// built-in defaults. Does not validate; see [`Config::validate`].
    pub fn load() -> Result<Self, ConfigError> {
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => Self::load_file(Path::new(&p), FROM_ENV),
            _ => Self::load_default(Path::new(DEFAULT_CONFIG_PATH)),
        }
    }

    /// Loads `path` when it exists, else the built-in defaults.
    pub fn load_default(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                file: ConfigFile::default(),
                source: ConfigSource::Defaults,
            }),
            _ => Self::load_file(path, "the default configuration file"),
        }
    }

    /// Loads `path`, which must exist; `from` says who named it (for the error message).
    pub fn load_file(path: &Path, from: &'static str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_path_buf(),
            from,
            err,
        })?;
        Self::parse(&text, ConfigSource::File(path.to_path_buf()))
    }

    /// Parses TOML text; `source` is only used in error messages.
    pub fn parse(text: &str, source: ConfigSource) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: match &source {
                ConfigSource::File(p) => p.clone(),
                ConfigSource::Defaults => PathBuf::from("<defaults>"),
            },
            // The toml message spans several lines (with a source excerpt); one line
            // reads better in ctr's error output.
            msg: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })?;
        Ok(Self { file, source })
    }

    fn invalid(&self, key: &'static str, what: String) -> ConfigError {
        ConfigError::Invalid {
            what,
            key,
            origin: self.source.clone(),
        }
    }

    /// Checks values and that the VMM, kernel and guest image exist. Called at Create
    /// before anything is started.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let h = &self.file.hypervisor;
        let fs = &self.file.shared_fs;
        let files: [(&Path, &'static str, &str, bool); 4] = [
            (&h.path, "hypervisor.path", "VMM", true),
            (&h.kernel, "hypervisor.kernel", "guest kernel", false),
            (&h.initrd, "hypervisor.initrd", "guest image", false),
            (
                &fs.virtiofsd,
                "shared_fs.virtiofsd",
                "virtio-fs server",
                true,
            ),
        ];
        for (path, key, what, exec) in files {
            if !path.is_absolute() {
                return Err(self.invalid(
                    key,
                    format!("{what} path {} is not absolute", path.display()),
                ));
            }
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(self.invalid(key, format!("{what} {} not found", path.display())));
                }
                Err(e) => {
                    return Err(self.invalid(key, format!("{what} {}: {e}", path.display())));
                }
                Ok(m) if !m.is_file() => {
                    return Err(self.invalid(
                        key,
                        format!("{what} {} is not a regular file", path.display()),
                    ));
                }
                Ok(m) => {
                    use std::os::unix::fs::PermissionsExt;
                    if exec && m.permissions().mode() & 0o111 == 0 {
                        return Err(self
                            .invalid(key, format!("{what} {} is not executable", path.display())));
                    }
                }
            }
        }
        if h.max_vcpus > 64 {
            return Err(self.invalid(
                "hypervisor.max_vcpus",
                format!("max_vcpus {} is out of range 0..=64", h.max_vcpus),
            ));
        }
        if h.max_memory_mib != 0 && !(64..=1024 * 1024).contains(&h.max_memory_mib) {
            return Err(self.invalid(
                "hypervisor.max_memory_mib",
                format!(
                    "max_memory_mib {} is out of range 64..=1048576 (or 0)",
                    h.max_memory_mib
                ),
            ));
        }
        if h.jail_id_base > MAX_JAIL_ID_BASE {
            return Err(self.invalid(
                "hypervisor.jail_id_base",
                format!(
                    "jail_id_base {} is too high: base + {} (the vsock CID range) must stay below \
                     4294967295; at most {MAX_JAIL_ID_BASE} (or 0 for kata-vmm's default id)",
                    h.jail_id_base,
                    crate::vmm::CID_MAX - crate::vmm::CID_MIN,
                ),
            ));
        }
        if !(1..=64).contains(&h.vcpus) {
            return Err(self.invalid(
                "hypervisor.vcpus",
                format!("vcpus {} is out of range 1..=64", h.vcpus),
            ));
        }
        if !(64..=1024 * 1024).contains(&h.memory_mib) {
            return Err(self.invalid(
                "hypervisor.memory_mib",
                format!("memory_mib {} is out of range 64..=1048576", h.memory_mib),
            ));
        }
        if !SHARED_FS_CACHE_MODES.contains(&fs.cache.as_str()) {
            return Err(self.invalid(
                "shared_fs.cache",
                format!(
                    "cache {:?} is not one of {}",
                    fs.cache,
                    SHARED_FS_CACHE_MODES.join(", ")
                ),
            ));
        }
        if h.kernel_params.contains(['\n', '\0']) {
            return Err(self.invalid(
                "hypervisor.kernel_params",
                "kernel_params has a newline or NUL".into(),
            ));
        }
        let a = &self.file.agent;
        for (v, key) in [
            (h.shutdown_timeout_secs, "hypervisor.shutdown_timeout_secs"),
            (a.dial_timeout_secs, "agent.dial_timeout_secs"),
            (a.request_timeout_secs, "agent.request_timeout_secs"),
            (a.io_drain_timeout_secs, "agent.io_drain_timeout_secs"),
            (fs.start_timeout_secs, "shared_fs.start_timeout_secs"),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(self.invalid(key, format!("timeout {v}s is out of range 1..=3600")));
            }
        }
        let r = &self.file.runtime;
        if !(16..=65536).contains(&r.console_log_max_kib) {
            return Err(self.invalid(
                "runtime.console_log_max_kib",
                format!("{} is out of range 16..=65536", r.console_log_max_kib),
            ));
        }
        if r.console_log_rate_kib > 1024 * 1024 {
            return Err(self.invalid(
                "runtime.console_log_rate_kib",
                format!(
                    "{} is out of range 0..=1048576 (0 = no limit)",
                    r.console_log_rate_kib
                ),
            ));
        }
        for (p, key) in [
            (&r.state_dir, "runtime.state_dir"),
            (&r.console_log_dir, "runtime.console_log_dir"),
        ] {
            if !p.is_absolute() {
                return Err(self.invalid(key, format!("directory {} is not absolute", p.display())));
            }
        }
        let cg = &self.file.cgroup;
        if !cg.parent.starts_with('/')
            || Path::new(&cg.parent)
                .components()
                .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err(self.invalid(
                "cgroup.parent",
                format!(
                    "{:?} is not an absolute cgroup path without `..`",
                    cg.parent
                ),
            ));
        }
        if let Err((key, what)) = self.file.factory.check() {
            return Err(self.invalid(key, what));
        }
        Ok(())
    }

    /// `agent.dial_timeout_secs` as a duration.
    pub fn dial_timeout(&self) -> Duration {
        Duration::from_secs(self.file.agent.dial_timeout_secs)
    }

    /// `agent.request_timeout_secs` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.file.agent.request_timeout_secs)
    }

    /// `agent.io_drain_timeout_secs` as a duration.
    pub fn io_drain_timeout(&self) -> Duration {
        Duration::from_secs(self.file.agent.io_drain_timeout_secs)
    }

    /// `hypervisor.shutdown_timeout_secs` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.file.hypervisor.shutdown_timeout_secs)
    }
}

#[cfg(test)]
mod tests;
