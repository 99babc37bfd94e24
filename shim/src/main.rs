//! `containerd-shim-kata-v2`: the binary containerd runs for runtime `io.containerd.kata.v2`.

use kata_rs_shim::service::{shim_config, KataShim, RUNTIME_ID};

// A current-thread runtime: async code runs on the main thread, which lives as long as the
// process, so the VMM's PR_SET_PDEATHSIG (tied to the forking thread) fires only when the
// shim itself dies.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    containerd_shim::asynchronous::run::<KataShim>(RUNTIME_ID, Some(shim_config())).await;
}
