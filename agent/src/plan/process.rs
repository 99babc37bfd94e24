//! The process part of the plan (container init or exec) from an OCI `process` object:
//! args, env, cwd, user, rlimits, capabilities, oomScoreAdj, terminal.

use std::path::PathBuf;

use oci_spec::runtime::PosixRlimitType;
use serde::{Deserialize, Serialize};

use super::clean_abs;
use crate::caps::CapSets;
use crate::error::{AgentError, Result};
use crate::seccomp::Insn;

/// The process part of the plan (container init or exec), from an OCI `process` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    /// Command line; `args[0]` is resolved in PATH.
    pub args: Vec<String>,
    /// Environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask, if set.
    pub umask: Option<u32>,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privileges: bool,
    /// (resource, soft, hard) for setrlimit.
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Capability sets; None = the kernel's rules for the uid (root keeps all).
    pub caps: Option<CapSets>,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// The process runs on a pseudo terminal (stdio = the pty slave, made the controlling
    /// terminal after setsid).
    pub terminal: bool,
    /// Seccomp program (from linux.seccomp), installed last before exec.
    pub seccomp: Option<Vec<Insn>>,
}

// RLIMIT_* are u32 on glibc and i32 on musl: the cast is needed on one of them.
#[allow(clippy::unnecessary_cast)]
fn rlimit_resource(t: PosixRlimitType) -> u32 {
    use PosixRlimitType as R;
    (match t {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as u32
}

/// Validates an OCI `process` object (container init or exec) and plans it; `seccomp` is
/// the container's compiled profile, which exec processes get too (as with runc).
pub fn plan_process(
    process: &oci_spec::runtime::Process,
    seccomp: Option<Vec<Insn>>,
) -> Result<ProcessConfig> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(AgentError::invalid("process.args is empty: nothing to run"));
    }
    let cwd = clean_abs("process.cwd", process.cwd())?;
    let user = process.user();
    let rlimits = process
        .rlimits()
        .as_ref()
        .map(|v| {
            v.iter()
                .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
                .collect()
        })
        .unwrap_or_default();
    let caps = process
        .capabilities()
        .as_ref()
        .map(crate::caps::plan)
        .transpose()?;
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(AgentError::invalid(format!(
                "process.oomScoreAdj {adj} is out of range (-1000..1000)"
            )));
        }
    }
    Ok(ProcessConfig {
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        rlimits,
        caps,
        oom_score_adj: process.oom_score_adj(),
        terminal: process.terminal().unwrap_or(false),
        seccomp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_spec::{spec, BASIC};
    use crate::plan::{plan, PodRole};
    use std::path::Path;

    #[test]
    fn process_semantics() {
        let s = BASIC
            .replace(
                r#""user": {"uid": 0, "gid": 0}"#,
                r#""user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63},
               "noNewPrivileges": true, "oomScoreAdj": 500,
               "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
               "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]}"#,
            )
            .replace(
                r#""namespaces""#,
                r#""seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}, "namespaces""#,
            );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single)
            .unwrap()
            .init
            .process;
        assert_eq!((p.uid, p.gid), (1000, 1000));
        assert_eq!(p.additional_gids, [10, 20]);
        assert_eq!(p.umask, Some(63));
        assert!(p.no_new_privileges);
        assert_eq!(p.oom_score_adj, Some(500));
        assert_eq!(
            p.rlimits,
            [(rlimit_resource(PosixRlimitType::RlimitNofile), 100, 200)]
        );
        let caps = p.caps.unwrap();
        assert_eq!(caps.bounding, 1 | (1 << 5));
        assert_eq!(caps.effective, 1 << 5);
        assert_eq!(caps.permitted, 0);
        assert!(p.seccomp.is_some_and(|prog| prog.len() > 4));
    }

    fn process(json: &str) -> oci_spec::runtime::Process {
        serde_json::from_str(json).expect("valid process")
    }

    #[test]
    fn defaults_and_checks() {
        let p = plan_process(
            &process(r#"{"args": ["top"], "cwd": "/a/./b/", "user": {"uid": 5, "gid": 6}}"#),
            None,
        )
        .unwrap();
        assert_eq!(p.cwd, Path::new("/a/b"));
        assert_eq!((p.uid, p.gid), (5, 6));
        assert!(p.env.is_empty() && p.additional_gids.is_empty() && p.rlimits.is_empty());
        assert_eq!((p.caps, p.umask, p.oom_score_adj), (None, None, None));
        assert!(!p.terminal && !p.no_new_privileges && p.seccomp.is_none());
        // The container's seccomp program is passed through (exec processes get it too).
        let insn = crate::seccomp::Insn {
            code: 6,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        };
        let prog = vec![insn; 3];
        let p = plan_process(
            &process(r#"{"args": ["top"], "cwd": "/", "user": {"uid": 0, "gid": 0}}"#),
            Some(prog.clone()),
        )
        .unwrap();
        assert_eq!(p.seccomp, Some(prog));
        for (bad, msg) in [
            (r#""args": [""], "cwd": "/""#, "process.args is empty"),
            (r#""cwd": "/""#, "process.args is empty"),
            (
                r#""args": ["x"], "cwd": "/a/../b""#,
                "must not contain '..'",
            ),
            (
                r#""args": ["x"], "cwd": "/", "oomScoreAdj": -1001"#,
                "oomScoreAdj -1001",
            ),
        ] {
            let json = format!(r#"{{{bad}, "user": {{"uid": 0, "gid": 0}}}}"#);
            let e = plan_process(&process(&json), None).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT, "{bad}");
            assert!(e.message.contains(msg), "{bad}: {e}");
        }
        for adj in [-1000, 1000] {
            let json = format!(
                r#"{{"args": ["x"], "cwd": "/", "oomScoreAdj": {adj}, "user": {{"uid": 0, "gid": 0}}}}"#
            );
            assert_eq!(
                plan_process(&process(&json), None).unwrap().oom_score_adj,
                Some(adj)
            );
        }
    }

    #[test]
    #[allow(clippy::unnecessary_cast)] // RLIMIT_* are u32 on glibc, i32 on musl
    fn rlimit_types_are_the_kernel_numbers() {
        use PosixRlimitType as R;
        assert_eq!(rlimit_resource(R::RlimitCpu), libc::RLIMIT_CPU as u32);
        assert_eq!(rlimit_resource(R::RlimitNofile), libc::RLIMIT_NOFILE as u32);
        assert_eq!(rlimit_resource(R::RlimitNproc), libc::RLIMIT_NPROC as u32);
        assert_eq!(rlimit_resource(R::RlimitRttime), libc::RLIMIT_RTTIME as u32);
        assert_eq!(rlimit_resource(R::RlimitCore), 4);
    }
}
