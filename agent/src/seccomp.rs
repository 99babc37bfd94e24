//! OCI seccomp profiles (`linux.seccomp`) compiled to a classic BPF program (pure, tested)
//! and installed in the container process just before it execs. x86_64 only (the guest).
//!
//! Program: check the architecture (anything but x86_64 is killed; x32 syscall numbers
//! get the default action), then one block per rule in profile order (first match wins;
//! the conditions of one rule are ANDed, 64-bit comparisons on both halves), then the
//! default action. Syscall names the kernel headers do not know are skipped, as runc does.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};
use crate::syscalls_x86_64::SYSCALLS;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// A fail jump placeholder, patched once the block's length is known.
const FAIL: u8 = 0xff;

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The number of a syscall name on x86_64.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    use LinuxSeccompAction as A;
    Ok(match a {
        A::ScmpActAllow => RET_ALLOW,
        A::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        A::ScmpActKill | A::ScmpActKillThread => RET_KILL_THREAD,
        A::ScmpActKillProcess => RET_KILL_PROCESS,
        A::ScmpActTrap => RET_TRAP,
        A::ScmpActTrace => RET_TRACE | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        A::ScmpActLog => RET_LOG,
        A::ScmpActNotify => {
            return Err(AgentError::unimplemented(
                "linux.seccomp: SCMP_ACT_NOTIFY (seccomp user notification) is not supported",
            ))
        }
    })
}

/// Code for one argument condition: falls through when it holds, jumps to FAIL otherwise.
fn condition(a: &LinuxSeccompArg) -> Result<Vec<Insn>> {
    use LinuxSeccompOperator as O;
    if a.index() > 5 {
        return Err(AgentError::invalid(format!(
            "linux.seccomp: argument index {} is out of range (0-5)",
            a.index()
        )));
    }
    let lo_off = OFF_ARGS + 8 * a.index() as u32;
    let hi_off = lo_off + 4;
    let (v, v2) = (a.value(), a.value_two().unwrap_or(0));
    let (vhi, vlo) = ((v >> 32) as u32, v as u32);
    let ld = |off| stmt(LD_W_ABS, off);
    Ok(match a.op() {
        O::ScmpCmpEq => vec![
            ld(hi_off),
            jump(JEQ_K, vhi, 0, FAIL),
            ld(lo_off),
            jump(JEQ_K, vlo, 0, FAIL),
        ],
        O::ScmpCmpNe => vec![
            ld(hi_off),
            jump(JEQ_K, vhi, 0, 2),
            ld(lo_off),
            jump(JEQ_K, vlo, FAIL, 0),
        ],
        // libseccomp/OCI: value is the mask, valueTwo the expected result.
        O::ScmpCmpMaskedEq => vec![
            ld(hi_off),
            stmt(AND_K, vhi),
            jump(JEQ_K, (v2 >> 32) as u32, 0, FAIL),
            ld(lo_off),
            stmt(AND_K, vlo),
            jump(JEQ_K, v2 as u32, 0, FAIL),
        ],
        O::ScmpCmpGt | O::ScmpCmpGe => {
            let last = if a.op() == O::ScmpCmpGt { JGT_K } else { JGE_K };
            vec![
                ld(hi_off),
                jump(JGT_K, vhi, 3, 0),
                jump(JEQ_K, vhi, 0, FAIL),
                ld(lo_off),
                jump(last, vlo, 0, FAIL),
            ]
        }
        O::ScmpCmpLt | O::ScmpCmpLe => {
            // arg < v is !(arg >= v); arg <= v is !(arg > v).
            let last = if a.op() == O::ScmpCmpLt { JGE_K } else { JGT_K };
            vec![
                ld(hi_off),
                jump(JGT_K, vhi, FAIL, 0),
                jump(JEQ_K, vhi, 0, 2),
                ld(lo_off),
                jump(last, vlo, FAIL, 0),
            ]
        }
    })
}

/// Compiles a profile. Errors name the offending part of `linux.seccomp`.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<Insn>> {
    if let Some(arches) = s.architectures() {
        use oci_spec::runtime::Arch;
        let native = arches
            .iter()
            .any(|a| matches!(a, Arch::ScmpArchX86_64 | Arch::ScmpArchNative));
        if !arches.is_empty() && !native {
            return Err(AgentError::invalid(
                "linux.seccomp.architectures does not include SCMP_ARCH_X86_64 (the guest's)",
            ));
        }
    }
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, default),
    ];
    for rule in s.syscalls().as_deref().unwrap_or(&[]) {
        let ret = action(rule.action(), rule.errno_ret())?;
        let mut conds = Vec::new();
        for a in rule.args().as_deref().unwrap_or(&[]) {
            conds.push(condition(a)?);
        }
        for name in rule.names() {
            let Some(nr) = syscall_number(name) else {
                tracing::debug!("seccomp: unknown syscall {name:?} skipped");
                continue;
            };
            if conds.is_empty() {
                p.push(jump(JEQ_K, nr, 0, 1));
                p.push(stmt(RET_K, ret));
                continue;
            }
            // jeq nr; conditions; ret; reload nr (the FAIL target).
            let body: Vec<Insn> = conds.iter().flatten().copied().collect();
            let skip = body.len() + 2;
            if skip > 255 {
                return Err(AgentError::invalid(format!(
                    "linux.seccomp: the rule for {name:?} has too many conditions"
                )));
            }
            p.push(jump(JEQ_K, nr, 0, skip as u8));
            let fail_at = body.len() + 1; // index of the reload within body+ret+reload
            for (i, mut ins) in body.into_iter().enumerate() {
                let to_fail = (fail_at - (i + 1)) as u8;
                if ins.jt == FAIL {
                    ins.jt = to_fail;
                }
                if ins.jf == FAIL {
                    ins.jf = to_fail;
                }
                p.push(ins);
            }
            p.push(stmt(RET_K, ret));
            p.push(stmt(LD_W_ABS, OFF_NR));
        }
    }
    p.push(stmt(RET_K, default));
    if p.len() > 4096 {
        return Err(AgentError::invalid(format!(
            "linux.seccomp compiles to {} BPF instructions, the kernel allows 4096",
            p.len()
        )));
    }
    Ok(p)
}

/// Installs the program in the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn install(prog: &[Insn]) -> std::result::Result<(), String> {
    let filter: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_SECCOMP reads the sock_fprog and its filter array, both alive here.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "install seccomp filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name of our table has seccompiler's number (its table is generated from the
    /// kernel's headers and maintained with the crate; it is not public, so each name goes
    /// through its JSON compiler and the number is read back from the program).
    #[test]
    fn table_is_seccompilers() {
        use seccompiler::{compile_from_json, TargetArch};
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        for &(name, nr) in SYSCALLS {
            let json = format!(
                r#"{{"f": {{"mismatch_action": "allow", "match_action": "trap",
                          "filter": [{{"syscall": "{name}"}}]}}}}"#
            );
            let progs = compile_from_json(json.as_bytes(), TargetArch::x86_64)
                .unwrap_or_else(|e| panic!("{name}: seccompiler does not know it: {e}"));
            let compared: Vec<u32> = progs["f"]
                .iter()
                .filter(|i| i.code == JEQ_K && i.k != AUDIT_ARCH_X86_64)
                .map(|i| i.k)
                .collect();
            assert_eq!(compared, [nr], "{name}");
        }
        assert_eq!(syscall_number("mseal"), Some(462));
        assert_eq!(syscall_number("fchmodat2"), Some(452));
    }

    /// A tiny classic-BPF interpreter for the instructions `compile` emits.
    fn run(p: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                AND_K => acc &= i.k,
                RET_K => return i.k,
                JEQ_K | JGT_K | JGE_K => {
                    let t = match i.code {
                        JEQ_K => acc == i.k,
                        JGT_K => acc > i.k,
                        _ => acc >= i.k,
                    };
                    pc += if t { i.jt } else { i.jf } as usize;
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    const X: u32 = AUDIT_ARCH_X86_64;

    #[test]
    fn deny_mkdir() {
        let p = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat", "nosuchcall"],
                              "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
        ))
        .unwrap();
        assert_eq!(run(&p, X, 83, [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&p, X, 258, [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&p, X, 0, [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, 0x4000_0003, 83, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&p, X, 83 | X32_SYSCALL_BIT, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn allow_list_with_args() {
        let p = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                "syscalls": [
                  {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                  {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                  {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                  {"names": ["write"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 2, "value": 4294967296, "op": "SCMP_CMP_LT"},
                            {"index": 0, "value": 2, "op": "SCMP_CMP_NE"}]},
                  {"names": ["dup"], "action": "SCMP_ACT_KILL_PROCESS",
                   "args": [{"index": 0, "value": 100, "op": "SCMP_CMP_GE"}]},
                  {"names": ["close"], "action": "SCMP_ACT_LOG",
                   "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_LE"}]},
                  {"names": ["lseek"], "action": "SCMP_ACT_TRAP",
                   "args": [{"index": 1, "value": 4294967296, "op": "SCMP_CMP_GT"}]}
                ]}"#,
        ))
        .unwrap();
        let enosys = RET_ERRNO | 38;
        assert_eq!(run(&p, X, 0, [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, X, 135, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, X, 135, [9, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 135, [8 | (1 << 32), 0, 0, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 56, [0x11, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, X, 56, [0x1000_0000, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 1, [1, 0, 10, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, X, 1, [2, 0, 10, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 1, [1, 0, 1 << 32, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 1, [1, 0, (1 << 32) - 1, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, X, 32, [100, 0, 0, 0, 0, 0]), RET_KILL_PROCESS);
        assert_eq!(run(&p, X, 32, [99, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 32, [1 << 33, 0, 0, 0, 0, 0]), RET_KILL_PROCESS);
        assert_eq!(run(&p, X, 3, [3, 0, 0, 0, 0, 0]), RET_LOG);
        assert_eq!(run(&p, X, 3, [4, 0, 0, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 8, [0, 1 << 32, 0, 0, 0, 0]), enosys);
        assert_eq!(run(&p, X, 8, [0, (1 << 32) + 1, 0, 0, 0, 0]), RET_TRAP);
        assert_eq!(run(&p, X, 8, [0, 1 << 33, 0, 0, 0, 0]), RET_TRAP);
        assert_eq!(run(&p, X, 999, [0; 6]), enosys);
    }

    #[test]
    fn rejects() {
        let e = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}"#,
        ))
        .unwrap_err();
        assert!(e.message.contains("X86_64"));
        let e = compile(&profile(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#)).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        assert_eq!(syscall_number("mkdir"), Some(83));
    }
}
