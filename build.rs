//! Link-time policy for the library: find libtorch at run time without LD_LIBRARY_PATH
//! (RUNPATH, so LD_LIBRARY_PATH still wins) and keep libtorch_cuda.so as a real dependency,
//! because `--as-needed` would drop it and CUDA would silently be unavailable.
//! The shared library carries a versioned SONAME (see `soname`).
use std::path::{Path, PathBuf};

/// `libmodel_context.so.MAJOR.MINOR` while the ABI is unstable (0.x: any minor release may
/// break it), `libmodel_context.so.MAJOR` from 1.0 on. `make install` installs the library
/// under this name (plus the full version and the unversioned development link).
fn soname() -> String {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap();
    match major.as_str() {
        "0" => format!("libmodel_context.so.0.{minor}"),
        _ => format!("libmodel_context.so.{major}"),
    }
}

/// Programs linked with `-L target/<profile> -lmodel_context` record the SONAME as their
/// dependency; a `SONAME -> libmodel_context.so` link next to the built library lets them
/// run from the build tree too. OUT_DIR is `<target>/<profile>/build/<pkg>-<hash>/out`.
#[cfg(unix)]
fn link_soname_in_profile_dir(soname: &str) {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let Some(profile) = out.ancestors().nth(3) else {
        return;
    };
    let link = profile.join(soname);
    let target = Path::new("libmodel_context.so");
    if std::fs::read_link(&link).ok().as_deref() != Some(target) {
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(target, &link) {
            println!("cargo:warning=cannot link {}: {e}", link.display());
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if !matches!(os.as_str(), "macos" | "ios" | "windows") {
        let soname = soname();
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        #[cfg(unix)]
        link_soname_in_profile_dir(&soname);
    }
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
    compile_cpp(&lib);
}

/// The C++ half of the model (`src/model/*.cpp`: oneDNN's operators, the few-row products),
/// against the headers of the libtorch being linked. With OpenMP (`-fopenmp`, libtorch's own
/// libgomp linked by name) where libtorch ships one, so `at::parallel_for` shares libtorch's
/// thread pool; elsewhere the few-row kernels are off (`gemv.cpp`).
fn compile_cpp(lib: &Path) {
    let sources = ["src/model/packed.cpp", "src/model/gemv.cpp"];
    println!("cargo:rerun-if-changed=src/model/guarded.h");
    let root = lib.parent().unwrap_or(lib);
    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .files(sources)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .flag_if_supported("-w");
    for source in sources {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    if let Some(gomp) = libgomp(lib, &build) {
        build.flag("-fopenmp");
        println!("cargo:rustc-link-lib=dylib:+verbatim={gomp}");
    }
    build.compile("mc_packed");
}

/// The libgomp libtorch ships in `lib` (`libgomp.so.1` in the pip wheels, a hashed name such as
/// `libgomp-98b21ff3.so.1` in the pytorch.org archives), by file name; none with a compiler
/// other than GCC (clang's `-fopenmp` calls libomp, which libgomp does not provide).
fn libgomp(lib: &Path, build: &cc::Build) -> Option<String> {
    let compiler = build.try_get_compiler().ok()?;
    if !compiler.is_like_gnu() || compiler.is_like_clang() {
        return None;
    }
    let mut names: Vec<String> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("libgomp") && n.contains(".so"))
        .collect();
    names.sort_by_key(|n| (n != "libgomp.so.1", n.clone()));
    names.into_iter().next()
}
