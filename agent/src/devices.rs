//! Device access inside the guest: `linux.resources.devices` compiled to a cgroup v2 eBPF
//! device program (`BPF_PROG_TYPE_CGROUP_DEVICE`, pure code, unit-tested), loaded and
//! attached to the container's cgroup ([`attach`], the only system calls here), and the
//! `linux.devices` nodes the init creates ([`DeviceNode`]).
//!
//! Semantics are runc's (libcontainer `specconv` + the cgroup v1 devices emulator +
//! `devicefilter`):
//! - the spec's rules are applied in order to a filter that starts as deny-all, then runc's
//!   default rules are appended ([`runc_defaults`]: `mknod` of any char/block device, the
//!   standard nodes null/zero/full/random/urandom/tty, `/dev/pts/*` and `/dev/ptmx`), so a
//!   spec cannot take those away, exactly as with runc;
//! - a rule of type `a` (or none) resets the filter to allow-all / deny-all; any other rule
//!   adds an exception to the current default (or removes permissions from one); removing
//!   permissions that a partially matching wildcard exception grants is refused, as runc
//!   does ("cannot punch hole in existing wildcard rule");
//! - the program checks each exception (type, requested access a subset of the exception's,
//!   major and minor unless wildcards) and returns the exception's verdict, else the default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// `BPF_DEVCG_ACC_MKNOD`.
pub const ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// `BPF_DEVCG_DEV_BLOCK`.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
pub const DEV_CHAR: u32 = 2;

/// A wildcard major or minor.
const ANY: i64 = -1;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Offset (jumps: relative to the next instruction; loads: memory offset).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl BpfInsn {
    /// The kernel's 8-byte encoding (x86_64 is little-endian: `dst` in the low nibble).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | (self.src << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    /// The inverse of [`BpfInsn::encode`].
    pub fn decode(b: [u8; 8]) -> Self {
        BpfInsn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off).
pub const LDX_W: u8 = 0x61;
/// BPF_ALU | BPF_AND | BPF_K (32-bit).
pub const AND32_K: u8 = 0x54;
/// BPF_ALU | BPF_RSH | BPF_K (32-bit).
pub const RSH32_K: u8 = 0x74;
/// BPF_ALU | BPF_MOV | BPF_X (32-bit).
pub const MOV32_X: u8 = 0xbc;
/// BPF_ALU | BPF_MOV | BPF_K (32-bit).
pub const MOV32_K: u8 = 0xb4;
/// BPF_JMP | BPF_JNE | BPF_K.
pub const JNE_K: u8 = 0x55;
/// BPF_JMP | BPF_JNE | BPF_X.
pub const JNE_X: u8 = 0x5d;
/// BPF_JMP | BPF_EXIT.
pub const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// Device type of a cgroup rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `b`.
    Block,
    /// `c`.
    Char,
}

impl Kind {
    fn bpf(self) -> u32 {
        match self {
            Kind::Block => DEV_BLOCK,
            Kind::Char => DEV_CHAR,
        }
    }
}

/// One device cgroup rule (`linux.resources.devices[i]`, validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// None = `a`: every device (resets the filter).
    pub kind: Option<Kind>,
    /// Major number, -1 = any.
    pub major: i64,
    /// Minor number, -1 = any.
    pub minor: i64,
    /// `ACC_*` bits.
    pub access: u32,
    /// Allow or deny.
    pub allow: bool,
}

/// runc's `specconv.AllowedDevices`, appended after the spec's rules.
pub fn runc_defaults() -> Vec<Rule> {
    let c = |major, minor, access| Rule {
        kind: Some(Kind::Char),
        major,
        minor,
        access,
        allow: true,
    };
    vec![
        c(ANY, ANY, ACC_MKNOD),
        Rule {
            kind: Some(Kind::Block),
            ..c(ANY, ANY, ACC_MKNOD)
        },
        c(1, 3, ACC_ALL),     // /dev/null
        c(1, 8, ACC_ALL),     // /dev/random
        c(1, 7, ACC_ALL),     // /dev/full
        c(5, 0, ACC_ALL),     // /dev/tty
        c(1, 5, ACC_ALL),     // /dev/zero
        c(1, 9, ACC_ALL),     // /dev/urandom
        c(136, ANY, ACC_ALL), // /dev/pts/*
        c(5, 2, ACC_ALL),     // /dev/ptmx
    ]
}

/// Parses an access string (`r`, `w`, `m` in any order; empty is refused, as runc does).
fn parse_access(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let mut a = 0;
    for c in s.chars() {
        a |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return None,
        };
    }
    Some(a)
}

/// Checks a major/minor: absent or -1 = any; otherwise 0..=u32::MAX.
fn number(what: &str, v: Option<i64>) -> Result<i64> {
    match v {
        None | Some(ANY) => Ok(ANY),
        Some(n) if (0..=u32::MAX as i64).contains(&n) => Ok(n),
        Some(n) => Err(AgentError::invalid(format!(
            "{what} {n} is out of range (-1 for any, or 0..{})",
            u32::MAX
        ))),
    }
}

/// Validates `linux.resources.devices`; errors name the entry.
pub fn rules_from_spec(list: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>> {
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            let what = format!("linux.resources.devices[{i}]");
            let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
                LinuxDeviceType::A => None,
                LinuxDeviceType::B => Some(Kind::Block),
                LinuxDeviceType::C => Some(Kind::Char),
                t @ (LinuxDeviceType::U | LinuxDeviceType::P) => {
                    return Err(AgentError::invalid(format!(
                        "{what}: device type {:?} cannot be used in a device cgroup rule \
                         (only \"a\", \"b\" and \"c\")",
                        t.as_str()
                    )))
                }
            };
            let access_s = d.access().as_deref().unwrap_or("");
            let access = parse_access(access_s).ok_or_else(|| {
                AgentError::invalid(format!(
                    "{what}: access {access_s:?} is invalid (one or more of \"r\", \"w\", \"m\")"
                ))
            })?;
            Ok(Rule {
                kind,
                major: number(&format!("{what}: major"), d.major())?,
                minor: number(&format!("{what}: minor"), d.minor())?,
                access,
                allow: d.allow(),
            })
        })
        .collect()
}

/// An exception's match part, ordered as runc orders them (major, minor, type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Meta {
    major: i64,
    minor: i64,
    kind: Kind,
}

/// The emulated device cgroup: a default verdict and exceptions with their permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default_allow: bool,
    exceptions: BTreeMap<Meta, u32>,
}

impl Default for Filter {
    fn default() -> Self {
        Self::new()
    }
}

impl Filter {
    /// Deny-all, no exceptions (where runc starts).
    pub fn new() -> Self {
        Filter {
            default_allow: false,
            exceptions: BTreeMap::new(),
        }
    }

    /// The filter for the spec's rules followed by [`runc_defaults`].
    pub fn from_spec(list: &[LinuxDeviceCgroup]) -> Result<Self> {
        let mut f = Filter::new();
        for r in rules_from_spec(list)?.iter().chain(runc_defaults().iter()) {
            f.apply(r)?;
        }
        Ok(f)
    }

    /// Whether everything is allowed (a privileged container).
    pub fn allows_all(&self) -> bool {
        self.default_allow && self.exceptions.is_empty()
    }

    /// Applies one rule, as a cgroup v1 `devices.allow`/`devices.deny` write would.
    pub fn apply(&mut self, r: &Rule) -> Result<()> {
        let Some(kind) = r.kind else {
            *self = Filter {
                default_allow: r.allow,
                exceptions: BTreeMap::new(),
            };
            return Ok(());
        };
        let meta = Meta {
            major: r.major,
            minor: r.minor,
            kind,
        };
        if r.allow == self.default_allow {
            self.remove(meta, r.access)
        } else {
            *self.exceptions.entry(meta).or_insert(0) |= r.access;
            Ok(())
        }
    }

    fn remove(&mut self, meta: Meta, access: u32) -> Result<()> {
        for partial in [
            Meta { major: ANY, ..meta },
            Meta { minor: ANY, ..meta },
            Meta {
                major: ANY,
                minor: ANY,
                ..meta
            },
        ] {
            if partial == meta {
                continue;
            }
            let held = self.exceptions.get(&partial).copied().unwrap_or(0);
            if held & access != 0 {
                return Err(AgentError::invalid(format!(
                    "linux.resources.devices: the rule {} cannot punch a hole in the \
                     wildcard rule {} before it (refused, as runc does)",
                    show(meta, access, self.default_allow),
                    show(partial, held, !self.default_allow)
                )));
            }
        }
        if let Some(p) = self.exceptions.get_mut(&meta) {
            *p &= !access;
            if *p == 0 {
                self.exceptions.remove(&meta);
            }
        }
        Ok(())
    }

    /// The verdict for one device access (what the program computes).
    pub fn allows(&self, typ: u32, major: u32, minor: u32, access: u32) -> bool {
        for (m, perms) in &self.exceptions {
            let hit = m.kind.bpf() == typ
                && access & perms == access
                && (m.major == ANY || m.major == major as i64)
                && (m.minor == ANY || m.minor == minor as i64);
            if hit {
                return !self.default_allow;
            }
        }
        self.default_allow
    }

    /// The `BPF_PROG_TYPE_CGROUP_DEVICE` program: returns 1 to allow, 0 to deny.
    pub fn program(&self) -> Vec<BpfInsn> {
        // struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32 major;
        // u32 minor; } at r1. r2 = type, r3 = access, r4 = major, r5 = minor.
        let mut p = vec![
            insn(LDX_W, 2, 1, 0, 0),
            insn(AND32_K, 2, 0, 0, 0xffff),
            insn(LDX_W, 3, 1, 0, 0),
            insn(RSH32_K, 3, 0, 0, 16),
            insn(LDX_W, 4, 1, 4, 0),
            insn(LDX_W, 5, 1, 8, 0),
        ];
        let verdict = |allow: bool| [insn(MOV32_K, 0, 0, 0, allow as i32), insn(EXIT, 0, 0, 0, 0)];
        const NEXT: i16 = i16::MAX; // placeholder: jump to the next block
        for (m, perms) in &self.exceptions {
            let mut block = vec![insn(JNE_K, 2, 0, NEXT, m.kind.bpf() as i32)];
            if *perms != ACC_ALL {
                // The requested access must be a subset of the exception's.
                block.push(insn(MOV32_X, 1, 3, 0, 0));
                block.push(insn(AND32_K, 1, 0, 0, *perms as i32));
                block.push(insn(JNE_X, 1, 3, NEXT, 0));
            }
            if m.major != ANY {
                block.push(insn(JNE_K, 4, 0, NEXT, m.major as u32 as i32));
            }
            if m.minor != ANY {
                block.push(insn(JNE_K, 5, 0, NEXT, m.minor as u32 as i32));
            }
            block.extend(verdict(!self.default_allow));
            let len = block.len();
            for (i, ins) in block.iter_mut().enumerate() {
                if ins.off == NEXT && ins.code != LDX_W {
                    ins.off = (len - i - 1) as i16;
                }
            }
            p.extend(block);
        }
        p.extend(verdict(self.default_allow));
        p
    }
}

fn show(m: Meta, access: u32, allow: bool) -> String {
    let n = |v: i64| {
        if v == ANY {
            "*".to_string()
        } else {
            v.to_string()
        }
    };
    let k = match m.kind {
        Kind::Block => 'b',
        Kind::Char => 'c',
    };
    let mut a = String::new();
    for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
        if access & bit != 0 {
            a.push(c);
        }
    }
    let verb = if allow { "allow" } else { "deny" };
    format!("\"{verb} {k} {}:{} {a}\"", n(m.major), n(m.minor))
}

/// The device program for `linux.resources.devices` (None = no rules: runc's defaults on
/// a deny-all filter).
pub fn plan(list: Option<&[LinuxDeviceCgroup]>) -> Result<Vec<BpfInsn>> {
    Ok(Filter::from_spec(list.unwrap_or(&[]))?.program())
}

/// A device node from `linux.devices`, created by the container init (mknod inside the
/// container's root, then chown), as runc does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Absolute path inside the container.
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub file_type: u32,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits (default 0666).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Validates `linux.devices`; errors name the entry.
pub fn plan_nodes(list: &[LinuxDevice]) -> Result<Vec<DeviceNode>> {
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            let what = format!("linux.devices[{i}] ({:?})", d.path());
            let path = d.path();
            if !path.is_absolute()
                || path == Path::new("/")
                || path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(AgentError::invalid(format!(
                    "{what}: the path must be absolute, not \"/\", without '..'"
                )));
            }
            let file_type = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
                LinuxDeviceType::B => libc::S_IFBLK,
                LinuxDeviceType::P => libc::S_IFIFO,
                LinuxDeviceType::A => {
                    return Err(AgentError::invalid(format!(
                    "{what}: type \"a\" is not a device node type (\"c\", \"u\", \"b\" or \"p\")"
                )))
                }
            };
            let num = |n: i64, which: &str| -> Result<u64> {
                u32::try_from(n).map(u64::from).map_err(|_| {
                    AgentError::invalid(format!("{what}: {which} {n} is out of range"))
                })
            };
            Ok(DeviceNode {
                path: path.clone(),
                file_type,
                major: num(d.major(), "major")?,
                minor: num(d.minor(), "minor")?,
                mode: d.file_mode().unwrap_or(0o666) & !libc::S_IFMT,
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            })
        })
        .collect()
}

/// `bpf(2)` commands and constants used here (`linux/bpf.h`).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) prefix of `union bpf_attr` of exactly
    // the size passed; the kernel zero-extends it and reads only the pointers it holds,
    // which point at buffers alive for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `prog` and attaches it to the cgroup directory `cgroup` (BPF_F_ALLOW_MULTI, as
/// runc). The attachment keeps the program alive until the cgroup is removed.
pub fn attach(prog: &[BpfInsn], cgroup: &Path) -> std::result::Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let code: Vec<u8> = prog.iter().flat_map(|i| i.encode()).collect();
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"kata_rs_devcg");
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: code.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            // The kernel refuses a log buffer without a size (EINVAL): none at all then.
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name: name,
            ..Default::default()
        };
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let fd = match load(&mut []) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, for the error message.
            let mut log = vec![0u8; 64 * 1024];
            if let Ok(fd) = load(&mut log) {
                // SAFETY: a descriptor BPF_PROG_LOAD just gave us and nothing else owns.
                drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            return Err(format!(
                "load the device cgroup eBPF program ({} instructions): {e}; verifier: {}",
                prog.len(),
                String::from_utf8_lossy(&log[..end]).trim()
            ));
        }
    };
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir = std::fs::File::open(cgroup).map_err(|e| format!("open cgroup {cgroup:?}: {e}"))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| format!("attach the device cgroup eBPF program to {cgroup:?}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
