//! `containerd-shim-kata-v2`: the binary containerd runs for runtime `io.containerd.kata.v2`.

use kata_rs_shim::{
    bootstrap::{shim_config, KataShim, RUNTIME_ID},
    server::{mode, serve, Mode},
};

// A current-thread runtime: async code runs on the main thread, which lives as long as the
// process, so the VMM's PR_SET_PDEATHSIG (tied to the forking thread) fires only when the
// shim itself dies.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match mode(&args) {
        (Mode::Version, _) => println!(
            "containerd-shim-kata-v2 {} ({RUNTIME_ID})",
            env!("CARGO_PKG_VERSION")
        ),
        (Mode::Serve, Some(flags)) => {
            if let Err(e) = serve(flags).await {
                eprintln!("{RUNTIME_ID}: {e:#}");
                tracing::error!("shim server: {e:#}");
                std::process::exit(1);
            }
        }
        _ => containerd_shim::asynchronous::run::<KataShim>(RUNTIME_ID, Some(shim_config())).await,
    }
}
