//! Build-script helpers shared by sana's build.rs (PTX + cubins embedded in the crate, the emulation library behind
//! the emu engine) and softgpu's (the same kernels compiled for the host behind the software device, and their sm_90
//! resource usage).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// nvcc release whose PTX ISA driver 580 (CUDA 13.0) loads; newer releases emit PTX that driver rejects.
pub const NVCC_RELEASE: &str = "13.0";

/// nvcc flags of the sm_90 cubin: a register spill or local-memory use is a bug to explain (docs/design.md §4), and
/// `run_nvcc`'s -Werror turns these warnings into a failed compile.
pub const SM90_CUBIN: [&str; 4] = [
    "-arch=sm_90",
    "-cubin",
    "-Xptxas",
    "-warn-spills,-warn-lmem-usage",
];

/// nvcc flags of the portable PTX.
pub const PTX: [&str; 2] = ["-arch=compute_80", "-ptx"];

/// Every `*.cu` under `dir`, sorted, so generated files are stable.
pub fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("read kernels/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    v.sort();
    v
}

/// The file stem of a kernel source (`norm` for kernels/norm.cu).
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .expect("*.cu has a stem")
        .to_string_lossy()
        .into_owned()
}

/// Compiles `sources` for the host through kernels/emu/emu.cuh into the static library `lib_name` (linked into the
/// calling crate): one C++ translation unit per kernel file, `#include`-ing the `.cu`, since g++ does not know the
/// extension.
pub fn build_emu(sources: &[PathBuf], kernels: &Path, out: &Path, lib_name: &str) {
    let dir = out.join("emu");
    fs::create_dir_all(&dir).expect("create $OUT_DIR/emu");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .define("SANA_EMU", None)
        // One rounding per operation, as the GPU's `__fmul_rn`/`__fadd_rn` promise (GCC contracts `a·b + c` into an
        // FMA on targets that have one unless told not to).
        .flag("-ffp-contract=off")
        .include(kernels)
        .warnings(true)
        .extra_warnings(true);
    for src in sources {
        let unit = dir.join(format!("{}.cpp", stem(src)));
        fs::write(&unit, format!("#include {:?}\n", src.display().to_string()))
            .expect("write emu unit");
        build.file(unit);
    }
    build.compile(lib_name);
}

/// nvcc from env NVCC, else $CUDA_HOME/bin/nvcc, else `nvcc` on PATH.
pub fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin").join("nvcc");
        if p.is_file() {
            return Some(p);
        }
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}

/// `"13.0"` from `nvcc --version` ("Cuda compilation tools, release 13.0, V13.0.88").
pub fn nvcc_release(nvcc: &Path) -> Option<String> {
    let out = Command::new(nvcc).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = text.split("release ").nth(1)?;
    Some(rest.split(',').next()?.trim().to_string())
}

/// Compiles `src` with `target` flags (plus `extra`) to `output`; returns nvcc's stderr (ptxas' reports).
pub fn run_nvcc(
    nvcc: &Path,
    src: &Path,
    kernels: &Path,
    target: &[&str],
    extra: &[&str],
    output: &Path,
) -> Result<String, String> {
    let result = Command::new(nvcc)
        .args(target)
        .args(extra)
        // Any compiler warning is an error: CI builds with SANA_REQUIRE_NVCC=1, where a failed compile stops it.
        .args(["-std=c++17", "-O3", "-Werror", "all-warnings", "-I"])
        .arg(kernels)
        .arg(src)
        .arg("-o")
        .arg(output)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    if !result.status.success() {
        return Err(format!("{}\n{stderr}", result.status));
    }
    Ok(stderr)
}

/// A cargo warning per line (cargo shows only the first line of a multi-line one).
pub fn warn(msg: &str) {
    for line in msg.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo:warning={line}");
    }
}
