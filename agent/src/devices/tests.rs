//! Unit tests of `devices.rs`.

use super::*;

/// A small eBPF interpreter for the instructions [`Filter::program`] emits.
fn run(p: &[BpfInsn], typ: u32, major: u32, minor: u32, access: u32) -> u64 {
    let ctx: [u32; 3] = [(access << 16) | typ, major, minor];
    let mut r = [0u64; 11];
    r[1] = 0xdead_0000; // "pointer" to ctx
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let i = p[pc];
        pc += 1;
        let (d, s) = (i.dst as usize, i.src as usize);
        match i.code {
            LDX_W => {
                assert_eq!(r[s], 0xdead_0000, "load through a non-ctx register");
                assert!(
                    i.off >= 0 && i.off % 4 == 0 && i.off < 12,
                    "ctx offset {}",
                    i.off
                );
                r[d] = ctx[i.off as usize / 4] as u64;
            }
            AND32_K => r[d] = (r[d] as u32 & i.imm as u32) as u64,
            RSH32_K => r[d] = ((r[d] as u32) >> i.imm) as u64,
            MOV32_X => r[d] = r[s] as u32 as u64,
            MOV32_K => r[d] = i.imm as u32 as u64,
            JNE_K | JNE_X => {
                let v = if i.code == JNE_K {
                    i.imm as i64 as u64
                } else {
                    r[s]
                };
                if r[d] != v {
                    assert!(i.off >= 0, "backward jump");
                    pc += i.off as usize;
                }
            }
            EXIT => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
        assert!(pc < p.len(), "ran off the end");
    }
    panic!("no exit");
}

fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
    serde_json::from_str(json).unwrap()
}

/// Every (type, major, minor, access) the tests probe.
fn probes() -> Vec<(u32, u32, u32, u32)> {
    let mut v = Vec::new();
    for typ in [DEV_BLOCK, DEV_CHAR] {
        for (ma, mi) in [
            (1, 3),
            (1, 11),
            (4, 64),
            (5, 2),
            (136, 7),
            (8, 0),
            (10, 200),
        ] {
            for acc in 1..=7 {
                v.push((typ, ma, mi, acc));
            }
        }
    }
    v
}

fn agree(f: &Filter) {
    let p = f.program();
    for (t, ma, mi, a) in probes() {
        assert_eq!(
            run(&p, t, ma, mi, a) == 1,
            f.allows(t, ma, mi, a),
            "{t} {ma}:{mi} access {a}"
        );
    }
}

/// The filter of `spec` decides every probe as [`last_match`] does over the spec's
/// rules followed by runc's defaults.
fn agrees_with_last_match(f: &Filter, spec: &[LinuxDeviceCgroup]) {
    let all: Vec<Rule> = rules_from_spec(spec)
        .unwrap()
        .into_iter()
        .chain(runc_defaults())
        .collect();
    for (t, ma, mi, a) in probes() {
        assert_eq!(
            f.allows(t, ma, mi, a),
            last_match(&all, t, ma, mi, a),
            "{t} {ma}:{mi} {a}"
        );
    }
}

/// The order-dependent reference: the last rule matching (type, major, minor) decides,
/// an allow rule if it grants every requested access bit, a deny rule if it denies any
/// of them (for rule sets without partial wildcards to punch and without one device's
/// permissions split over several allow rules, where runc's emulator and this agree).
fn last_match(list: &[Rule], t: u32, ma: u32, mi: u32, a: u32) -> bool {
    let mut verdict = false;
    for r in list {
        let hit = match r.kind {
            None => true,
            Some(k) => {
                k.bpf() == t
                    && (r.major == ANY || r.major == ma as i64)
                    && (r.minor == ANY || r.minor == mi as i64)
                    && if r.allow {
                        a & r.access == a
                    } else {
                        a & r.access != 0
                    }
            }
        };
        if hit {
            verdict = r.allow;
        }
    }
    verdict
}

#[test]
fn containerd_default_denies_all_but_runc_defaults() {
    let spec = rules(r#"[{"allow": false, "access": "rwm"}]"#);
    let f = Filter::from_spec(&spec).unwrap();
    assert!(!f.allows_all());
    let p = f.program();
    // mknod of anything, open of only the standard nodes.
    assert_eq!(run(&p, DEV_CHAR, 4, 64, ACC_MKNOD), 1);
    assert_eq!(run(&p, DEV_BLOCK, 8, 0, ACC_MKNOD), 1);
    assert_eq!(run(&p, DEV_CHAR, 4, 64, ACC_READ | ACC_WRITE), 0);
    assert_eq!(run(&p, DEV_CHAR, 4, 64, ACC_WRITE), 0);
    assert_eq!(run(&p, DEV_BLOCK, 8, 0, ACC_READ), 0);
    assert_eq!(run(&p, DEV_CHAR, 1, 11, ACC_WRITE), 0);
    assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE), 1);
    assert_eq!(run(&p, DEV_CHAR, 136, 7, ACC_READ), 1);
    assert_eq!(run(&p, DEV_CHAR, 5, 2, ACC_READ | ACC_WRITE), 1);
    assert_eq!(run(&p, DEV_BLOCK, 1, 3, ACC_READ), 0);
    agree(&f);
    agrees_with_last_match(&f, &spec);
}

#[test]
fn no_rules_is_deny_all_plus_defaults() {
    assert_eq!(
        plan(None).unwrap(),
        Filter::from_spec(&rules(r#"[{"allow": false, "access": "rwm"}]"#))
            .unwrap()
            .program()
    );
}

#[test]
fn privileged_allows_everything() {
    let f = Filter::from_spec(&rules(r#"[{"allow": true, "access": "rwm"}]"#)).unwrap();
    assert!(f.allows_all());
    let p = f.program();
    assert_eq!(p.len(), 6 + 2);
    for (t, ma, mi, a) in probes() {
        assert_eq!(run(&p, t, ma, mi, a), 1);
    }
}

#[test]
fn rules_in_order_last_match_wins() {
    // A CRI container given /dev/kmsg read-only, then one explicit deny of /dev/ttyS0.
    let spec = rules(
        r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"},
                {"allow": true, "type": "c", "major": 4, "minor": 64, "access": "rw"},
                {"allow": false, "type": "c", "major": 4, "minor": 64, "access": "w"},
                {"allow": true, "type": "b", "major": 8, "access": "rwm"}]"#,
    );
    let f = Filter::from_spec(&spec).unwrap();
    let p = f.program();
    assert_eq!(run(&p, DEV_CHAR, 1, 11, ACC_READ), 1);
    assert_eq!(run(&p, DEV_CHAR, 1, 11, ACC_READ | ACC_WRITE), 0);
    assert_eq!(run(&p, DEV_CHAR, 4, 64, ACC_READ), 1);
    assert_eq!(run(&p, DEV_CHAR, 4, 64, ACC_WRITE), 0);
    assert_eq!(run(&p, DEV_BLOCK, 8, 0, ACC_READ | ACC_WRITE), 1);
    assert_eq!(run(&p, DEV_BLOCK, 8, 17, ACC_READ), 1);
    assert_eq!(run(&p, DEV_BLOCK, 9, 0, ACC_READ), 0);
    agree(&f);
    agrees_with_last_match(&f, &spec);
    // An allow-all later in the list wins over everything before it; a deny-all
    // after it leaves only runc's defaults.
    let f = Filter::from_spec(&rules(
        r#"[{"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 10, "minor": 200, "access": "rw"}]"#,
    ))
    .unwrap();
    let p = f.program();
    assert_eq!(run(&p, DEV_CHAR, 10, 200, ACC_READ), 0);
    assert_eq!(run(&p, DEV_CHAR, 10, 200, ACC_MKNOD), 1);
    assert_eq!(run(&p, DEV_CHAR, 4, 64, ACC_READ | ACC_WRITE), 1);
    agree(&f);
}

#[test]
fn known_program_encoding() {
    // Allow-list with one exception "c 4:64 r" (besides the defaults): check the
    // block of that exception instruction by instruction, and encode/decode.
    let f = Filter::from_spec(&rules(
        r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 4, "minor": 64, "access": "r"}]"#,
    ))
    .unwrap();
    let p = f.program();
    let prelude = [
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    assert_eq!(p[..6], prelude);
    // Exceptions sorted by (major, minor, type): c *:* m, b *:* m come first.
    assert_eq!(
        p[6..12],
        [
            insn(JNE_K, 2, 0, 5, DEV_BLOCK as i32),
            insn(MOV32_X, 1, 3, 0, 0),
            insn(AND32_K, 1, 0, 0, ACC_MKNOD as i32),
            insn(JNE_X, 1, 3, 2, 0),
            insn(MOV32_K, 0, 0, 0, 1),
            insn(EXIT, 0, 0, 0, 0),
        ]
    );
    let at = p
        .windows(5)
        .position(|w| w[0].code == JNE_K && w[4] == insn(JNE_K, 4, 0, 3, 4))
        .expect("the c 4:64 r block");
    assert_eq!(
        p[at..at + 8],
        [
            insn(JNE_K, 2, 0, 7, DEV_CHAR as i32),
            insn(MOV32_X, 1, 3, 0, 0),
            insn(AND32_K, 1, 0, 0, ACC_READ as i32),
            insn(JNE_X, 1, 3, 4, 0),
            insn(JNE_K, 4, 0, 3, 4),
            insn(JNE_K, 5, 0, 2, 64),
            insn(MOV32_K, 0, 0, 0, 1),
            insn(EXIT, 0, 0, 0, 0),
        ][..]
    );
    assert_eq!(
        p[p.len() - 2..],
        [insn(MOV32_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]
    );
    for i in &p {
        assert_eq!(BpfInsn::decode(i.encode()), *i);
    }
    assert_eq!(
        insn(JNE_X, 1, 3, 4, 0).encode(),
        [0x5d, 0x31, 4, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        insn(MOV32_K, 0, 0, 0, 1).encode(),
        [0xb4, 0, 0, 0, 1, 0, 0, 0]
    );
    agree(&f);
}

#[test]
fn refusals_name_the_entry() {
    let e = Filter::from_spec(&rules(r#"[{"allow": true, "type": "p", "access": "rwm"}]"#))
        .unwrap_err();
    assert!(e.message.contains("linux.resources.devices[0]"), "{e}");
    assert!(e.message.contains("\"p\""), "{e}");
    let e =
        Filter::from_spec(&rules(r#"[{"allow": true, "type": "c", "access": ""}]"#)).unwrap_err();
    assert!(e.message.contains("access \"\" is invalid"), "{e}");
    let e = Filter::from_spec(&rules(
        r#"[{"allow": false}, {"allow": true, "type": "c", "access": "rx"}]"#,
    ))
    .unwrap_err();
    assert!(e.message.contains("linux.resources.devices[0]"), "{e}");
    let e = Filter::from_spec(&rules(
        r#"[{"allow": true, "type": "c", "major": -5, "access": "r"}]"#,
    ))
    .unwrap_err();
    assert!(e.message.contains("major -5"), "{e}");
    // Unknown types never get past the parser.
    assert!(serde_json::from_str::<Vec<LinuxDeviceCgroup>>(
        r#"[{"allow": true, "type": "x", "access": "r"}]"#
    )
    .is_err());
    // Punching a hole in a wildcard exception is refused, as runc does.
    let e = Filter::from_spec(&rules(
        r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 4, "access": "rw"},
                {"allow": false, "type": "c", "major": 4, "minor": 64, "access": "w"}]"#,
    ))
    .unwrap_err();
    assert!(e.message.contains("cannot punch a hole"), "{e}");
    assert!(e.message.contains("\"deny c 4:64 w\""), "{e}");
    assert!(e.message.contains("\"allow c 4:* rw\""), "{e}");
}

#[test]
fn device_nodes() {
    let list: Vec<LinuxDevice> = serde_json::from_str(
        r#"[{"path": "/dev/ttyS0", "type": "c", "major": 4, "minor": 64},
                {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 8624,
                 "uid": 1, "gid": 6},
                {"path": "/dev/net/tun", "type": "u", "major": 10, "minor": 200, "fileMode": 384},
                {"path": "/dev/fifo", "type": "p", "major": 0, "minor": 0}]"#,
    )
    .unwrap();
    let n = plan_nodes(&list).unwrap();
    assert_eq!(n[0].file_type, libc::S_IFCHR);
    assert_eq!((n[0].major, n[0].minor, n[0].mode), (4, 64, 0o666));
    assert_eq!(n[1].file_type, libc::S_IFBLK);
    assert_eq!((n[1].mode, n[1].uid, n[1].gid), (0o660, 1, 6));
    assert_eq!((n[2].file_type, n[2].mode), (libc::S_IFCHR, 0o600));
    assert_eq!(n[3].file_type, libc::S_IFIFO);
    for bad in [
        r#"[{"path": "/dev/x", "type": "a", "major": 1, "minor": 1}]"#,
        r#"[{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]"#,
        r#"[{"path": "/dev/../x", "type": "c", "major": 1, "minor": 1}]"#,
        r#"[{"path": "/dev/x", "type": "c", "major": -1, "minor": 1}]"#,
    ] {
        let list: Vec<LinuxDevice> = serde_json::from_str(bad).unwrap();
        let e = plan_nodes(&list).unwrap_err();
        assert!(e.message.starts_with("linux.devices[0]"), "{e}");
    }
    assert!(serde_json::from_str::<Vec<LinuxDevice>>(
        r#"[{"path": "/dev/x", "type": "q", "major": 1, "minor": 1}]"#
    )
    .is_err());
}
