//! Generates the protobuf messages and the async ttrpc client/server for protos/agent.proto
//! (feature `api`, on by default).

fn main() {
    #[cfg(feature = "api")]
    generate();
}

#[cfg(feature = "api")]
fn generate() {
    use std::{env, fs, path::PathBuf};

    use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=protos/agent.proto");
    Codegen::new()
        .out_dir(&out)
        .inputs(["protos/agent.proto"])
        .include("protos")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("ttrpc code generation for protos/agent.proto");
    // include!() cannot take inner attributes (#![...]); the lib.rs wrappers carry them.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = out.join(name);
        let text = fs::read_to_string(&path).expect("generated file");
        let cleaned: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("#!["))
            .map(|l| match l.strip_prefix("//!") {
                Some(rest) => format!("//{rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        fs::write(&path, cleaned).expect("rewrite generated file");
    }
}
