//! OCI fields the agent does not implement, refused by name.

use oci_spec::runtime::Spec;

use crate::error::{AgentError, Result};

/// Refuses OCI fields the agent does not implement, naming the field: silently ignoring
/// them would run the container differently from what its spec says. Empty objects and
/// empty arrays (what containerd and CRI normally send) pass.
pub fn check_unsupported(spec: &Spec) -> Result<()> {
    if let Some(h) = spec.hooks() {
        #[allow(deprecated)] // prestart: deprecated in the spec, still refused by name
        let lists = [
            ("prestart", h.prestart()),
            ("createRuntime", h.create_runtime()),
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
            ("poststart", h.poststart()),
            ("poststop", h.poststop()),
        ];
        for (name, list) in lists {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(AgentError::unimplemented(format!(
                    "hooks.{name} is not supported by kata-rs (hooks would run inside the VM, \
                     not on the host where their binaries are)"
                )));
            }
        }
    }
    let refuse = |field: &str| {
        Err(AgentError::unimplemented(format!(
            "{field} is not supported by kata-rs (the guest agent does not implement it)"
        )))
    };
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        return refuse("domainname");
    }
    if let Some(l) = spec.linux() {
        if l.intel_rdt().is_some() {
            return refuse("linux.intelRdt");
        }
        if l.personality().is_some() {
            return refuse("linux.personality");
        }
    }
    if let Some(p) = spec.process() {
        if p.scheduler().is_some() {
            return refuse("process.scheduler");
        }
        if p.io_priority().is_some() {
            return refuse("process.ioPriority");
        }
        if p.exec_cpu_affinity().is_some() {
            return refuse("process.execCPUAffinity");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::plan::test_spec::{spec, BASIC};
    use crate::plan::{plan, PodRole};
    use std::path::Path;

    #[test]
    fn unimplemented_fields_are_refused_by_name_empty_ones_pass() {
        for name in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            let s = BASIC.replace(
                r#""hostname""#,
                &format!(r#""hooks": {{"{name}": [{{"path": "/bin/true"}}]}}, "hostname""#),
            );
            let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
            assert!(
                e.message.starts_with(&format!(
                    "hooks.{name} is not supported by kata-rs (hooks would run inside the VM"
                )),
                "{e}"
            );
        }
        for (field, json) in [
            ("domainname", r#""domainname": "example.org""#),
            (
                "process.scheduler",
                r#""process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "scheduler": {"policy": "SCHED_BATCH"}}"#,
            ),
            (
                "process.ioPriority",
                r#""process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}}"#,
            ),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
            let extra: serde_json::Value = serde_json::from_str(&format!("{{{json}}}")).unwrap();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
            assert!(
                e.message
                    .starts_with(&format!("{field} is not supported by kata-rs")),
                "{e}"
            );
        }
        let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
        v["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
        let e = plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(
            e.message.starts_with("linux.personality is not supported"),
            "{e}"
        );
        let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
        v["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
        let e = plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(
            e.message.starts_with("linux.intelRdt is not supported"),
            "{e}"
        );
        // An empty domainname is what `ctr oci spec` does not even write: it passes.
        let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
        v["domainname"] = "".into();
        plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap();
        // What containerd and CRI send without hooks: nothing, {}, or empty lists.
        for hooks in [r#"{}"#, r#"{"prestart": [], "poststop": []}"#] {
            let s = BASIC.replace(r#""hostname""#, &format!(r#""hooks": {hooks}, "hostname""#));
            plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        }
    }
}
