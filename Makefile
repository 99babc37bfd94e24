# kata-rs: top-level entry points. On a fresh Debian 12 machine: `make demo`, `make test`.
# Everything VM-related runs on a node with working KVM (tests/node-run: natively when the
# host's KVM works, else in an emulated QEMU TCG node VM); see tests/README.md.
SHELL := /bin/bash
CARGO ?= cargo
# KATA_RS_STATIC_TARGET (the static musl target kata-vmm is linked for) and KATA_RS_VMM_BIN
# (where that build lands): the paths the shell scripts use too.
include scripts/paths.sh

.PHONY: all deps kernel image binaries virtiofsd test-image build demo test lint unit integration clean-cache help bench fuzz

all: build

help:
	@echo "make deps        install Debian packages + the musl rust target (scripts/install-deps.sh)"
	@echo "make kernel      guest kernel -> target/guest/vmlinux (kernel-config/build.sh, cached)"
	@echo "make image       guest image -> target/guest/initrd.img (guest-image/build.sh)"
	@echo "make binaries    target/release/{containerd-shim-kata-v2,kata-agent-ctl,kata-rs}, $(KATA_RS_VMM_BIN)"
	@echo "make virtiofsd   target/release/virtiofsd (scripts/build-virtiofsd.sh, cached)"
	@echo "make demo        build everything, run a container in a kata-rs microVM on the node"
	@echo "make test        build, fmt + clippy, unit tests, integration tests on the node"
	@echo "make fuzz        the fuzz targets, FUZZ_SECS (default 60) each, a fresh seed (docs/security.md)"

deps:
	bash scripts/install-deps.sh

kernel:
	bash kernel-config/build.sh

image:
	@test -f guest-image/build.sh || { echo "make image: guest-image/build.sh does not exist yet" >&2; exit 1; }
	bash guest-image/build.sh

# kata-vmm is linked statically (musl, as the agent): on every sandbox's critical path, its
# start is 20-25 ms shorter on the emulated node than with glibc's dynamic loader.
binaries:
	$(CARGO) build --release -p kata-rs-shim -p kata-rs-cri -p kata-rs-tool
	$(CARGO) build --release -p kata-rs-vmm --bin kata-vmm --target $(KATA_RS_STATIC_TARGET)

virtiofsd:
	bash scripts/build-virtiofsd.sh

test-image:
	bash tests/image/build.sh

build: kernel image binaries virtiofsd test-image

demo: deps build
	tests/node-run tests/scripts/demo.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The `#[ignore = "needs ..."]` unit tests (root, namespaces, a tap, /dev/kvm, the guest
# kernel) run in scripts/unit-privileged.sh, which fails if what they need is missing.
unit:
	$(CARGO) test --workspace --exclude kata-rs-tests --no-fail-fast
	$(CARGO) test -p kata-rs-tests --lib
	CARGO=$(CARGO) bash scripts/unit-privileged.sh

# One test binary after the other, one node at a time (each node is a VM or a containerd);
# --no-fail-fast: every part reports, not only the first failing one. No backtraces: an
# assertion's message (the node's output) says what failed; a backtrace only pushes it away.
integration:
	RUST_BACKTRACE=0 $(CARGO) test -p kata-rs-tests --test '*' --no-fail-fast -- --test-threads=1 --nocapture

# The fuzz targets (docs/security.md, "Fuzzing"): `make unit` runs each for 1 s; this runs each
# for FUZZ_SECS seconds with a fresh seed (KATA_RS_FUZZ_SEED=N repeats a run). A failing input
# is saved under target/fuzz-failures/ with the command that replays it.
FUZZ_SECS ?= 60
fuzz:
	KATA_RS_FUZZ_SECS=$(FUZZ_SECS) KATA_RS_FUZZ_SEED=$${KATA_RS_FUZZ_SEED:-$$(date +%s%N)} \
	  $(CARGO) test -p kata-rs-vmm -p kata-rs-agent --lib -- fuzz:: --nocapture

test: deps build lint unit integration
	@echo "make test: all passed"

clean-cache:
	rm -rf "$${KATA_RS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/kata-rs}/node" target/tests

# Benchmarks on the node (VMM boot vs QEMU microvm, ctr run and CRI pod start/churn kata vs
# runc, density, io); not a test: noisy. Writes target/bench/summary.{json,png}. Expects
# `make build` done. BENCH_N=4 runs per variant (default), BENCH_SECTIONS, BENCH_CRI_N,
# BENCH_DENSITY_CAP: see benches/README.md.
bench:
	bash benches/run.sh
