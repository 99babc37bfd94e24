//! `kata-rs-bench-report [DIR]`: reads DIR's (default `target/bench`) section JSONs, writes
//! `DIR/summary.json` and `DIR/summary.png`, prints the table. Exits 1 only when it cannot
//! write the summary or draw the chart, never because of a figure.

use std::path::PathBuf;

use kata_rs_bench_report::{chart, summarize, table, Sections};

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/bench".into()),
    );
    let sum = summarize(&Sections::load(&dir));
    let json = serde_json::to_string_pretty(&sum).expect("a JSON value serializes");
    let out = dir.join("summary.json");
    if let Err(e) = std::fs::write(&out, json + "\n") {
        eprintln!("bench-report: {}: {e}", out.display());
        std::process::exit(1);
    }
    print!("{}", table(&sum));
    let font = std::env::var_os("KATA_RS_BENCH_FONT")
        .map(PathBuf::from)
        .unwrap_or_else(|| chart::FONT.into());
    let png = dir.join("summary.png");
    match chart::load_font(&font).and_then(|()| chart::draw(&sum, &png)) {
        Ok(()) => println!("summary: {} and {}", out.display(), png.display()),
        Err(e) => {
            eprintln!("bench-report: {}: {e}", png.display());
            std::process::exit(1);
        }
    }
}
