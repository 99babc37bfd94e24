//! `linux.seccomp`, compiled to the classic BPF program the init installs
//! ([`crate::seccomp`] is the compiler).

use oci_spec::runtime::Spec;

use crate::error::Result;
use crate::seccomp::Insn;

/// Compiles `linux.seccomp`, if any.
pub fn plan_seccomp(spec: &Spec) -> Result<Option<Vec<Insn>>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_spec::{spec, BASIC};

    #[test]
    fn compiled_only_when_the_spec_has_a_profile() {
        assert_eq!(plan_seccomp(&spec(BASIC)).unwrap(), None);
        let profile = r#""seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}, "namespaces""#;
        let s = spec(&BASIC.replace(r#""namespaces""#, profile));
        let prog = plan_seccomp(&s).unwrap().expect("a program");
        let want = crate::seccomp::compile(s.linux().as_ref().unwrap().seccomp().as_ref().unwrap());
        assert_eq!(prog, want.unwrap());
        let notify = profile.replace("SCMP_ACT_ERRNO", "SCMP_ACT_NOTIFY");
        let e = plan_seccomp(&spec(&BASIC.replace(r#""namespaces""#, &notify))).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED, "{e}");
    }
}
