//! Compiles kumo's own CRI `runtime.v1` .proto with protox (pure Rust), so a fresh machine needs
//! nothing but cargo. Only the client side: kumo talks to containerd, it does not serve CRI.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/api.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
