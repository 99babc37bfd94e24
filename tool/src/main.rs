//! `kata-rs`: the kata-rs host tool (see the crate's README.md).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use kata_rs_tool::{check, env, guest, install, layout, metrics, overhead, probe, serve};

#[derive(Parser, Debug)]
#[command(
    name = "kata-rs",
    version,
    about = "kata-rs host tool: check a node, report its environment, install and uninstall kata-rs, serve its metrics"
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
    /// Per-sandbox figures of the host side (VMM, virtiofsd, shim; the sandbox's host
    /// cgroup) in Prometheus text format: served over HTTP at /metrics, or printed once.
    Metrics {
        /// The address to serve on (keep it local, or firewall it: the figures name sandboxes).
        #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR:PORT")]
        listen: String,
        /// Print one scrape to stdout and exit instead of serving.
        #[arg(long)]
        once: bool,
        /// A tree that stands for the node's `/` (the configuration and state directory are
        /// read there).
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// The shim's state directory. Default: the configuration's runtime.state_dir.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// procfs (the node's: run with the host's PID namespace).
        #[arg(long, default_value = "/proc", value_name = "DIR")]
        proc: PathBuf,
        /// The cgroup v2 root.
        #[arg(long, default_value = "/sys/fs/cgroup", value_name = "DIR")]
        cgroup_root: PathBuf,
        /// containerd's task state directory, where the guest-side figures' shims are found
        /// (a node path, under --root). Default: /run/containerd/io.containerd.runtime.v2.task.
        #[arg(long, value_name = "DIR")]
        containerd_tasks: Option<PathBuf>,
        /// No guest-side figures (no Task.Stats calls to the shims).
        #[arg(long)]
        host_only: bool,
    },
    /// Measure a running, idle sandbox's host overhead (PSS of its VMM, virtiofsd and shim;
    /// their CPU while idle) and print a RuntimeClass with it plus a margin.
    Overhead {
        /// The sandbox (default: the only one running).
        #[arg(long, value_name = "ID")]
        sandbox: Option<String>,
        /// Sampling time for the idle CPU, seconds.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Added to both figures, percent.
        #[arg(long, default_value_t = 25)]
        margin_percent: u32,
        /// The node label the RuntimeClass schedules onto.
        #[arg(long, default_value = "katacontainers.io/kata-runtime")]
        label: String,
        /// A tree that stands for the node's `/`.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// The shim's state directory. Default: the configuration's runtime.state_dir.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// The shim's state directory: `state_dir`, else the configuration's under `root`.
fn state_dir_of(root: &std::path::Path, state_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match state_dir {
        Some(d) => d,
        None => {
            let c = probe::load_config(root)
                .map_err(|e| anyhow::anyhow!("the configuration: {e} (or pass --state-dir)"))?;
            layout::rooted(root, &c.file.runtime.state_dir)
        }
    })
}

/// `kata-rs overhead`.
fn run_overhead(
    sandbox: Option<String>,
    secs: u64,
    margin_percent: u32,
    label: &str,
    state_dir: PathBuf,
) -> anyhow::Result<()> {
    let src = metrics::Sources {
        state_dir,
        proc: "/proc".into(),
        cgroup_root: "/sys/fs/cgroup".into(),
        containerd_tasks: None,
    };
    let pick = |s: metrics::Scrape| -> anyhow::Result<metrics::SandboxStats> {
        let ids: Vec<&str> = s.sandboxes.iter().map(|x| x.id.as_str()).collect();
        let id = match (&sandbox, ids.as_slice()) {
            (Some(id), _) => id.clone(),
            (None, [one]) => one.to_string(),
            (None, []) => anyhow::bail!("no sandbox under {}", src.state_dir.display()),
            (None, many) => anyhow::bail!(
                "several sandboxes ({}): pick one with --sandbox",
                many.join(", ")
            ),
        };
        s.sandboxes
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| anyhow::anyhow!("no sandbox {id} under {}", src.state_dir.display()))
    };
    let before = pick(metrics::collect(&src))?;
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(secs.max(1)));
    let after = pick(metrics::collect(&src))?;
    let m = overhead::measure(&before, &after, t0.elapsed().as_secs_f64())
        .map_err(|e| anyhow::anyhow!(e))?;
    print!(
        "{}",
        overhead::runtimeclass(
            &m,
            margin_percent,
            label,
            &overhead::utc(std::time::SystemTime::now())
        )
    );
    Ok(())
}

/// `kata-rs metrics`.
fn run_metrics(
    listen: &str,
    once: bool,
    root: &std::path::Path,
    state_dir: Option<PathBuf>,
    proc: PathBuf,
    cgroup_root: PathBuf,
    containerd_tasks: Option<PathBuf>,
) -> anyhow::Result<()> {
    let state_dir = state_dir_of(root, state_dir)?;
    let src = metrics::Sources {
        state_dir,
        proc,
        cgroup_root,
        containerd_tasks,
    };
    let scrape = || {
        let (text, errors) = metrics::scrape_text(&src);
        for e in errors {
            eprintln!("kata-rs metrics: {e}");
        }
        text
    };
    if once {
        print!("{}", scrape());
        return Ok(());
    }
    let l = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    eprintln!(
        "kata-rs metrics: serving http://{}/metrics (sandboxes under {})",
        l.local_addr()?,
        src.state_dir.display()
    );
    serve::serve(l, &scrape)
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
        Cmd::Metrics {
            listen,
            once,
            root,
            state_dir,
            proc,
            cgroup_root,
            containerd_tasks,
            host_only,
        } => {
            let tasks = (!host_only).then(|| {
                containerd_tasks.unwrap_or_else(|| {
                    layout::rooted(&root, std::path::Path::new(guest::CONTAINERD_TASKS))
                })
            });
            run_metrics(&listen, once, &root, state_dir, proc, cgroup_root, tasks)
        }
        Cmd::Overhead {
            sandbox,
            secs,
            margin_percent,
            label,
            root,
            state_dir,
        } => state_dir_of(&root, state_dir)
            .and_then(|d| run_overhead(sandbox, secs, margin_percent, &label, d)),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kata-rs: {e:#}");
            ExitCode::from(1)
        }
    }
}
