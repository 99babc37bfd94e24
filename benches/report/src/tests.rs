use super::*;
use serde_json::json;

fn sample() -> Sections {
    let p = |s: &str| serde_json::from_str(s).unwrap();
    Sections {
        vmm: p(include_str!("../testdata/vmm.json")),
        containers: p(include_str!("../testdata/containers.json")),
        cri: p(include_str!("../testdata/cri.json")),
        io: p(include_str!("../testdata/io.json")),
        template: p(include_str!("../testdata/template.json")),
    }
}

#[test]
fn flat_keys_from_the_sections() {
    let s = summarize(&sample());
    assert_eq!(s["ratio_ctr_run"], json!(2.179));
    assert_eq!(s["ratio_pod_start"], json!(2.75));
    assert_eq!(s["ratio_pod_churn"], json!(2.5));
    assert_eq!(s["ratio_boot"], json!(0.743));
    assert_eq!(s["ratio_vmm_cpu"], json!(0.2));
    assert_eq!(s["vmm_cpu_ms_qemu"], json!(600));
    assert_eq!(s["host_overhead_kib"], json!(13568));
    assert_eq!(s["host_overhead_virtiofsd_kib"], json!(2100));
    assert_eq!(s["guest_used_kib"], json!(60416));
    assert_eq!(s["ratio_io_read"], json!(0.05));
    assert_eq!(s["ratio_io_untar"], json!(0.025));
    assert_eq!(s["profile"].as_array().unwrap().len(), 6);
    assert_eq!(s["profile_total_ms"], json!(22000));
    assert_eq!(s["node"], json!("emulated"));
    assert_eq!(s["git"], json!("abc1234"));
    let missing: Vec<&str> = s["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(s["ratio_iperf3"], json!(0.25));
    assert_eq!(s["density_pods_per_gib_kata"], json!(13.11));
    assert_eq!(s["density_kib_per_pod_runc"], json!(20000));
}

#[test]
fn missing_sections_are_null_not_guessed() {
    let s = summarize(&Sections::default());
    for (k, _) in KEYS {
        assert!(s[*k].is_null(), "{k}");
    }
    assert_eq!(s["missing"].as_array().unwrap().len(), KEYS.len());
    assert_eq!(s["profile"], json!([]));
    assert!(table(&s).contains("| -"));
}

#[test]
fn host_overhead_falls_back_to_the_io_pod() {
    let mut x = sample();
    x.containers = json!({"start_ms_kata": 1, "start_ms_runc": 0});
    let s = summarize(&x);
    assert_eq!(s["host_overhead_kib"], json!(14000));
    assert_eq!(s["host_overhead_runc_kib"], json!(15000));
    assert!(s["ratio_ctr_run"].is_null(), "a zero baseline is no ratio");
}

#[test]
fn table_names_every_key() {
    let t = table(&summarize(&sample()));
    for (k, _) in KEYS {
        assert!(t.contains(k), "{k}");
    }
    assert!(t.contains("VM boot to agent ready 14000"));
}

#[test]
fn chart_draws_a_png() {
    let font = std::path::Path::new(chart::FONT);
    assert!(
        font.exists(),
        "no {}: install Debian's fonts-dejavu-core (make deps does)",
        chart::FONT
    );
    chart::load_font(font).unwrap();
    let dir = std::env::temp_dir().join(format!("kata-rs-bench-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("summary.png");
    chart::draw(&summarize(&sample()), &png).unwrap();
    let b = std::fs::read(&png).unwrap();
    assert!(b.starts_with(b"\x89PNG"), "not a PNG");
    assert!(b.len() > 5000, "{} bytes", b.len());
    chart::draw(&summarize(&Sections::default()), &png).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runtimeclass_from_host_overhead_and_guest_used() {
    let s = summarize(&sample());
    let y = runtimeclass(&s).unwrap();
    // (13568 + 60416) KiB = 72.25 MiB, + 25 % = 90.3 -> 91Mi
    assert!(y.contains("memory: \"91Mi\""), "{y}");
    assert!(
        y.contains(&format!("cpu: \"{RUNTIMECLASS_CPU_MILLIS}m\"")),
        "{y}"
    );
    assert!(
        y.contains(RUNTIMECLASS_COMMAND),
        "the command is named beside the values"
    );
    assert!(
        y.contains("host_overhead_kib 13568") && y.contains("guest_used_kib 60416"),
        "{y}"
    );
    assert!(
        y.contains("handler: kata\n") && y.contains("katacontainers.io/kata-runtime: \"true\"")
    );
    assert!(
        runtimeclass(&summarize(&Sections::default())).is_none(),
        "nothing estimated"
    );
}

#[test]
fn template_ratios_from_the_medians_and_means() {
    let s = summarize(&sample());
    assert_eq!(s["ratio_template_start"], json!(0.125));
    assert_eq!(s["template_start_ms_cold"], json!(4000));
    assert_eq!(s["template_start_ms_map"], json!(500));
    assert_eq!(s["ratio_template_start_copy"], json!(0.25));
    assert_eq!(s["ratio_template_memory"], json!(0.5));
    assert_eq!(s["ratio_template_memory_copy"], json!(1.05));
    assert_eq!(s["template_pss_kib_copy"], json!(54600));
    assert_eq!(s["ratio_template_sandbox_start"], json!(0.2));
    assert_eq!(s["template_sandbox_start_ms"], json!(600));
    assert_eq!(s["ratio_template_sandbox_memory"], json!(0.4));
    assert_eq!(s["template_sandbox_pss_kib_cold"], json!(100000));
    assert_eq!(s["ratio_template_ctr_run"], json!(0.5));
    assert_eq!(s["template_ctr_run_ms"], json!(6000));
    let t = table(&s);
    assert!(
        t.contains("| ratio_template_memory        |        0.5 |"),
        "{t}"
    );
}

#[test]
fn template_sandbox_ratio_only_when_every_run_used_the_template() {
    let mut x = sample();
    x.template["ctr"]["from_template"] = json!(1);
    let s = summarize(&x);
    assert!(s["ratio_template_sandbox_start"].is_null());
    assert!(s["missing"]
        .as_array()
        .unwrap()
        .contains(&json!("ratio_template_sandbox_start")));
    assert!(s["ratio_template_ctr_run"].is_null());
    // the times are still shown, the VMM-level ratios unaffected
    assert_eq!(s["template_sandbox_start_ms"], json!(600));
    assert_eq!(s["template_ctr_run_ms"], json!(6000));
    assert_eq!(s["ratio_template_start"], json!(0.125));
    x.template["ctr"] = Value::Null;
    let s = summarize(&x);
    assert!(s["ratio_template_sandbox_start"].is_null());
    assert_eq!(s["ratio_template_memory"], json!(0.5));
}

#[test]
fn template_section_missing_leaves_its_keys_null() {
    let mut x = sample();
    x.template = Value::Null;
    let s = summarize(&x);
    let missing = s["missing"].as_array().unwrap();
    for k in [
        "ratio_template_start",
        "ratio_template_memory",
        "template_pss_kib_map",
    ] {
        assert!(s[k].is_null(), "{k}");
        assert!(missing.contains(&json!(k)), "{k}");
    }
    assert!(!missing.contains(&json!("ratio_boot")));
}
