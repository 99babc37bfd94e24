//! Fuzz targets for what the shim (or whoever reaches the agent's socket) and an OCI spec
//! can feed the agent, run by `cargo test` through the `kata-rs-fuzz` driver (see
//! docs/security.md, "Fuzzing"): each for `KATA_RS_FUZZ_SECS` seconds (1 by default).
//!
//! - `requests`: arbitrary bytes, or protobuf-shaped messages with plausible field values,
//!   handed to the real ttrpc method handlers (decode, then the service) of an agent with no
//!   containers, so nothing acts: CreateContainer runs its side-effect-free checks
//!   ([`crate::service::Agent::plan_create`]) instead, ExecProcess and UpdateContainer payloads
//!   also go through their planning. Every handler must answer (no panic, no hang), and
//!   every request but Check and Shutdown must be an error status (there is nothing to act
//!   on; network and clock RPCs refuse outside the guest's PID 1).
//! - `oci_spec`: OCI spec JSON, a valid spec mutated structurally (keys and values from the
//!   spec's vocabulary) or raw bytes, through `parse_spec` and `plan` in each pod role. An
//!   error must be INVALID_ARGUMENT or UNIMPLEMENTED; a plan must keep its promises (paths
//!   absolute without `..`, a command to run, the init config surviving its JSON trip).

use std::path::{Component, Path};
use std::sync::Arc;

use kata_rs_fuzz::{fuzz, Result, Unstructured};
use kata_rs_protocol::agent::CreateContainerRequest;
use protobuf::Message;
use serde_json::{json, Map, Value};

use crate::plan;
use crate::service::{Agent, Service};

/// Object keys of the OCI runtime spec (and of the agent's requests' JSON parts).
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "ociVersion", "process", "args", "cwd", "env", "user", "uid", "gid", "umask",
    "additionalGids", "capabilities", "bounding", "effective", "permitted", "inheritable",
    "ambient", "rlimits", "type", "hard", "soft", "terminal", "noNewPrivileges", "oomScoreAdj",
    "root", "path", "readonly", "hostname", "mounts", "destination", "source", "options",
    "linux", "namespaces", "resources", "memory", "limit", "swap", "reservation", "cpu",
    "shares", "quota", "period", "cpus", "pids", "devices", "allow", "access", "major", "minor",
    "seccomp", "defaultAction", "defaultErrnoRet", "architectures", "syscalls", "names",
    "action", "errnoRet", "index", "value", "valueTwo", "op", "maskedPaths", "readonlyPaths",
    "cgroupsPath", "hooks", "prestart", "createRuntime", "poststop", "annotations", "sysctl",
    "fileMode", "flags", "listenerPath", "uidMappings",
];

/// String values that mean something somewhere in a spec.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "", "/", "..", "/..", "/proc", "/dev", "/dev/null", "/sys", "/run/x", "rootfs", "bind",
    "rbind", "ro", "rw", "nosuid", "noexec", "private", "rshared", "tmpfs", "proc", "cgroup",
    "cgroup2", "none", "sh", "PATH=/bin", "pid", "mount", "uts", "ipc", "network", "user",
    "cgroup", "time", "wormhole", "c", "b", "u", "p", "rwm", "r", "CAP_SYS_ADMIN", "CAP_CHOWN",
    "CAP_NOPE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_BOGUS", "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_NOTIFY", "SCMP_ACT_LOG", "SCMP_CMP_EQ",
    "SCMP_CMP_MASKED_EQ", "SCMP_ARCH_X86_64", "read", "openat", "no_such_syscall", "1.0.2",
    "../../etc/passwd", "a\u{0}b", "\u{202e}x", "x,y=z", "size=1k",
];

#[rustfmt::skip]
const NUMBERS: &[i64] = &[
    0, 1, -1, 2, 5, 100, 1000, 1001, -1000, -1001, 4096, 1 << 31, 1 << 32, i64::MAX, i64::MIN,
];

fn scalar(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=7)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(*u.choose(NUMBERS)?),
        3 => json!(u64::MAX - u.int_in_range(0..=1)?),
        4 => json!(u.arbitrary::<f64>()?),
        5 => json!(u.arbitrary::<String>()?),
        _ => json!(*u.choose(WORDS)?),
    })
}

/// A JSON value shaped like spec fragments: objects with spec keys, arrays, scalars.
fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    if depth == 0 {
        return scalar(u);
    }
    Ok(match u.int_in_range(0..=4)? {
        0 => {
            let mut m = Map::new();
            for _ in 0..u.int_in_range(0..=4)? {
                m.insert(u.choose(KEYS)?.to_string(), value(u, depth - 1)?);
            }
            Value::Object(m)
        }
        1 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => scalar(u)?,
    })
}

/// The base every structured spec is mutated from: valid, with most sections present.
fn base_spec() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sh", "-c", "true"], "cwd": "/", "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0, "additionalGids": [1]},
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true, "oomScoreAdj": 0
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "box",
        "mounts": [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
            {"destination": "/data", "type": "bind", "source": "/share/c1/mounts/0", "options": ["rbind", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}],
            "resources": {
                "memory": {"limit": 1 << 28},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000},
                "pids": {"limit": 100},
                "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
            },
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                              "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_MASKED_EQ", "valueTwo": 3}]}]
            },
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]
        }
    })
}

/// Replaces, removes or adds something at a random place in `v` (at most `depth` down).
fn mutate(u: &mut Unstructured, v: &mut Value, depth: u32) -> Result {
    if depth > 0 && u.ratio(4, 5)? {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let i = u.choose_index(m.len())?;
                return mutate(u, m.values_mut().nth(i).unwrap(), depth - 1);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = u.choose_index(a.len())?;
                return mutate(u, &mut a[i], depth - 1);
            }
            _ => {}
        }
    }
    match (v, u.int_in_range(0..=3)?) {
        (Value::Object(m), 0) if !m.is_empty() => {
            let k = m.keys().nth(u.choose_index(m.len())?).cloned();
            if let Some(k) = k {
                m.remove(&k);
            }
        }
        (Value::Object(m), 1) => {
            m.insert(u.choose(KEYS)?.to_string(), value(u, 2)?);
        }
        (Value::Array(a), 1) => a.push(value(u, 2)?),
        // Mostly a value of the same type: the spec still parses and planning is reached.
        (Value::String(x), 2 | 3) => *x = u.choose(WORDS)?.to_string(),
        (Value::Number(x), 2 | 3) => *x = (*u.choose(NUMBERS)?).into(),
        (Value::Bool(x), 2 | 3) => *x = !*x,
        (c, _) => *c = value(u, 2)?,
    }
    Ok(())
}

/// Spec JSON: mostly the base spec mutated, sometimes raw bytes.
fn spec_json(u: &mut Unstructured) -> Result<Vec<u8>> {
    if u.ratio(1, 8)? {
        return Ok(u.arbitrary::<&[u8]>()?.to_vec());
    }
    let mut v = base_spec();
    for _ in 0..u.int_in_range(1..=4)? {
        mutate(u, &mut v, 6)?;
    }
    Ok(serde_json::to_vec(&v).unwrap())
}

fn clean_abs(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| c == Component::ParentDir)
}

/// What a plan promises, and "errors are errors".
fn check_plan(r: crate::error::Result<plan::Plan>, rootfs: &Path) {
    use ttrpc::Code;
    let p = match r {
        Ok(p) => p,
        Err(e) => {
            assert!(
                matches!(e.code, Code::INVALID_ARGUMENT | Code::UNIMPLEMENTED),
                "planning failed with {:?}: {}",
                e.code,
                e.message
            );
            return;
        }
    };
    let init = &p.init;
    assert_eq!(init.rootfs, rootfs);
    assert!(!init.process.args.is_empty() && !init.process.args[0].is_empty());
    assert!(clean_abs(&init.process.cwd), "{:?}", init.process.cwd);
    for m in &init.mounts {
        assert!(
            clean_abs(&m.destination) && m.destination != Path::new("/"),
            "{m:?}"
        );
        if let plan::MountKind::Bind { .. } = m.kind {
            assert!(clean_abs(Path::new(&m.source)), "{m:?}");
        }
    }
    for path in init.masked_paths.iter().chain(&init.readonly_paths) {
        assert!(clean_abs(path), "{path:?}");
    }
    // The init receives its config as JSON over the sync socket.
    let json = serde_json::to_string(init).expect("the init config serialises");
    let back: plan::InitConfig = serde_json::from_str(&json).expect("and parses back");
    assert_eq!(&back, init);
}

#[test]
fn oci_spec() {
    let rootfs = Path::new("/run/kata-rs/shared/c1/rootfs");
    let (mut parsed, mut planned) = (0, 0);
    let stats = fuzz("oci_spec", &[], |u| {
        let json = spec_json(u)?;
        let Ok(s) = plan::parse_spec(&json) else {
            return Ok(());
        };
        parsed += 1;
        for role in [
            plan::PodRole::Single,
            plan::PodRole::Sandbox,
            plan::PodRole::Member,
        ] {
            let r = plan::plan(&s, rootfs, role);
            if let Ok(p) = &r {
                planned += 1;
                let _ = plan::check_bind_sources(&p.init.mounts, Path::new("/share/c1"));
            }
            check_plan(r, rootfs);
        }
        Ok(())
    });
    eprintln!(
        "fuzz oci_spec: {parsed} of {} inputs parsed, {planned} plans (3 roles each)",
        stats.inputs
    );
}

/// Protobuf wire format: `(field << 3) | wire type` tags and values, fields 1..=8 with the
/// types the agent's requests use (varints, strings/bytes, nested messages), values from
/// ids, paths, spec JSON and raw bytes. The decoder sees mostly well-formed messages.
fn proto(u: &mut Unstructured, share: &Path, depth: u32) -> Result<Vec<u8>> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let field: u64 = u.int_in_range(1..=8)?;
        if u.ratio(1, 3)? {
            varint(&mut out, field << 3);
            varint(
                &mut out,
                *u.choose(&[0, 1, 9, 15, 1 << 31, u64::MAX, 253_402_300_800])?,
            );
            continue;
        }
        let bytes: Vec<u8> = match u.int_in_range(0..=5)? {
            0 => u
                .choose(&["c1", "sb", "", ".x", "a/b", "e1"])?
                .as_bytes()
                .to_vec(),
            1 => share
                .join("c1/rootfs")
                .as_os_str()
                .as_encoded_bytes()
                .to_vec(),
            2 => spec_json(u)?,
            3 if depth > 0 => proto(u, share, depth - 1)?,
            4 => serde_json::to_vec(&value(u, 3)?).unwrap(),
            _ => u.arbitrary::<&[u8]>()?.to_vec(),
        };
        varint(&mut out, (field << 3) | 2);
        varint(&mut out, bytes.len() as u64);
        out.extend(bytes);
    }
    Ok(out)
}

#[test]
fn requests() {
    use kata_rs_protocol::agent::{ExecProcessRequest, UpdateContainerRequest};
    use ttrpc::r#async::TtrpcContext;

    assert_ne!(
        std::process::id(),
        1,
        "never as the guest's init: RPCs would act"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let share = tempfile::tempdir().unwrap();
    let share_dir = share.path().to_path_buf();
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let agent = Arc::new(Agent::new(
        crate::reaper::Reaper::new(),
        None,
        crate::share::Share::Ready {
            dir: share_dir.clone(),
        },
        tx,
    ));
    let services =
        kata_rs_protocol::agent_ttrpc::create_agent_service(Arc::new(Service(agent.clone())));
    let methods = &services.values().next().unwrap().methods;
    // GetOomEvent waits for an OOM kill by design (and there is no container to have one);
    // CreateContainer would create: its checks run through plan_create below.
    let mut names: Vec<&String> = methods
        .keys()
        .filter(|n| !["GetOomEvent", "CreateContainer"].contains(&n.as_str()))
        .collect();
    names.sort();
    let mut planned = 0;
    fuzz("requests", &[], |u| {
        let payload = if u.ratio(3, 4)? {
            proto(u, &share_dir, 2)?
        } else {
            u.arbitrary::<&[u8]>()?.to_vec()
        };
        // CreateContainer (index names.len()) a quarter of the time: it checks the most.
        let i = match u.ratio(1, 4)? {
            true => names.len(),
            false => u.choose_index(names.len())?,
        };
        let Some(name) = names.get(i) else {
            // CreateContainer: decode (or build a plausible request: an id, a spec whose
            // bind sources are in the share), then every check it makes before acting.
            let req = match u.ratio(1, 2)? {
                true => {
                    let mut r = CreateContainerRequest::new();
                    r.container_id = u.choose(&["c1", "sb", "c1/..", ""])?.to_string();
                    r.sandbox_id = u.choose(&["", "c1", "sb"])?.to_string();
                    let json = String::from_utf8_lossy(&spec_json(u)?)
                        .replace("/share/", &format!("{}/", share_dir.display()));
                    r.oci_spec = json.into_bytes();
                    Ok(r)
                }
                false => CreateContainerRequest::parse_from_bytes(&payload),
            };
            if let Ok(mut req) = req {
                if u.ratio(3, 4)? {
                    req.rootfs_path = share_dir
                        .join(format!("{}/rootfs", req.container_id))
                        .to_string_lossy()
                        .into_owned();
                }
                if let Ok((plan, _)) = agent.plan_create(&req) {
                    assert_eq!(plan.init.rootfs.as_os_str(), req.rootfs_path.as_str());
                    planned += 1;
                }
            }
            return Ok(());
        };
        match name.as_str() {
            "ExecProcess" => {
                if let Ok(req) = ExecProcessRequest::parse_from_bytes(&payload) {
                    if let Ok(p) = serde_json::from_slice(&req.oci_process) {
                        let _ = plan::plan_process(&p, None);
                    }
                }
            }
            "UpdateContainer" => {
                if let Ok(req) = UpdateContainerRequest::parse_from_bytes(&payload) {
                    if let Ok(r) = serde_json::from_slice(&req.linux_resources) {
                        let _ = plan::plan_cgroup(Some(&r));
                    }
                }
            }
            _ => {}
        }
        let mut req = ttrpc::Request::new();
        req.payload = payload;
        let ctx = TtrpcContext {
            mh: Default::default(),
            metadata: Default::default(),
            timeout_nano: 0,
            connection_data: Default::default(),
        };
        let handler = &methods[name.as_str()];
        let r = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), handler.handler(ctx, req))
                .await
                .unwrap_or_else(|_| panic!("{name} did not answer in 5 s"))
        });
        if let Ok(resp) = r {
            let ok = resp
                .status
                .as_ref()
                .is_none_or(|s| s.code() == ttrpc::Code::OK);
            let may_succeed = ["Check", "Shutdown"].contains(&name.as_str());
            assert!(
                !ok || may_succeed,
                "{name} succeeded with no container: {resp:?}"
            );
        }
        Ok(())
    });
    eprintln!("fuzz requests: {planned} CreateContainer requests passed every check");
}
