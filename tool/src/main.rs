//! `kata-rs`: the kata-rs host tool (see the crate's README.md).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use kata_rs_tool::{check, env, install};

#[derive(Parser, Debug)]
#[command(
    name = "kata-rs",
    version,
    about = "kata-rs host tool: check a node, report its environment, install and uninstall kata-rs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Can this node run kata-rs? One line per check; exit status 0 only if every required
    /// check passes (1 otherwise).
    Check {
        /// JSON instead of lines.
        #[arg(long)]
        json: bool,
        /// A tree that stands for the node's `/` (files are checked there; KVM, cgroups and
        /// devices are the running kernel's).
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
    },
    /// Versions of every part, the effective configuration and the paths (TOML, or JSON).
    Env {
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
        /// A tree that stands for the node's `/`.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
    },
    /// Put the artifacts at the install layout, write the default configuration if there is
    /// none, merge the runtime handler `kata` into containerd's config (and CRI-O's with
    /// --crio), keeping a manifest and backups for `uninstall`. Idempotent.
    Install {
        /// A tree that stands for the node's `/` (a DaemonSet passes the host's, e.g. /host).
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// Where the build outputs are (kata-vmm, containerd-shim-kata-v2, virtiofsd,
        /// vmlinux, initrd.img, and optionally kata-rs itself; target/release with ../guest
        /// works). Default: the directory of this binary.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// containerd's config, a path on the node (under --root). Default
        /// /etc/containerd/config.toml, merged when containerd is present.
        #[arg(long, value_name = "PATH")]
        containerd_config: Option<PathBuf>,
        /// Also write the CRI-O drop-in /etc/crio/crio.conf.d/50-kata-rs.conf.
        #[arg(long)]
        crio: bool,
        /// Restart containerd / CRI-O (systemctl) when their config changed.
        #[arg(long)]
        restart: bool,
    },
    /// Undo `install`: restore every file it replaced byte for byte, remove what it added.
    /// Refuses, changing nothing, when a file it wrote was changed since.
    Uninstall {
        /// A tree that stands for the node's `/`.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// Restart containerd / CRI-O (systemctl) when their config was restored.
        #[arg(long)]
        restart: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Check { json, root } => {
            let r = check::run(&root);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("report serializes")
                );
            } else {
                print!("{}", check::render_text(&r));
            }
            return if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
        Cmd::Env { json, root } => {
            let t = env::gather(&root);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&t).expect("env serializes")
                );
            } else {
                print!("{}", toml::to_string(&t).expect("env serializes"));
            }
            Ok(())
        }
        Cmd::Install {
            root,
            from,
            containerd_config,
            crio,
            restart,
        } => {
            let from = from
                .or_else(|| {
                    let exe = std::env::current_exe().ok()?;
                    exe.parent().map(PathBuf::from)
                })
                .unwrap_or_else(|| PathBuf::from("."));
            install::install(&install::InstallOptions {
                root,
                from,
                containerd_config,
                crio,
                restart,
            })
        }
        Cmd::Uninstall { root, restart } => {
            install::uninstall(&install::UninstallOptions { root, restart })
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kata-rs: {e:#}");
            ExitCode::from(1)
        }
    }
}
