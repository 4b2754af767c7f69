//! Link-time policy for the library: find libtorch at run time without LD_LIBRARY_PATH
//! (RUNPATH, so LD_LIBRARY_PATH still wins) and keep libtorch_cuda.so as a real dependency,
//! because `--as-needed` would drop it and CUDA would silently be unavailable.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        return;
    };
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state");
    }
    println!("cargo:rustc-env=MC_LIBTORCH_LIB={}", lib.display());
}
