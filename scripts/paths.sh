# Build output paths shared by the shell scripts and the Makefile, spelled once here (the Rust
# side has its own, tests/src/lib.rs `vmm_binary()` and tool/src/layout.rs `STATIC_VMM`, whose
# unit tests check that they agree with this file).
# Sourced by sh and bash scripts (`. "$TOP/scripts/paths.sh"`) and included by the Makefile,
# so both must read it: only NAME=value lines (no spaces, no quotes) and ${NAME} references.
# shellcheck disable=SC2034 # (the scripts that source this file use the variables)
#
# The static (musl) target `make binaries` links kata-vmm for.
KATA_RS_STATIC_TARGET=x86_64-unknown-linux-musl
# kata-vmm, the static build: its path inside a cargo target directory (`target/`) ...
KATA_RS_VMM_IN_TARGET=${KATA_RS_STATIC_TARGET}/release/kata-vmm
# ... and from the repository's top.
KATA_RS_VMM_BIN=target/${KATA_RS_VMM_IN_TARGET}
