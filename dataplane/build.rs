//! Compiles the kernel-side XDP programs (`programs/xdp/*.bpf.c`) into `OUT_DIR/<stem>.bpf.o`,
//! where the crate embeds them with `include_bytes_aligned!`.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const MISSING_CLANG: &str = "clang-19 not found: install it with 'apt-get install clang-19' \
                             (needed to build programs/xdp/*.bpf.c)";

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Cargo prints `error: <message>` for this and stops the build.
            println!("cargo::error={message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let src_dir = manifest.join("../programs/xdp");
    let src_dir = src_dir.canonicalize().map_err(|e| format!("find {}: {e}", src_dir.display()))?;
    println!("cargo::rerun-if-env-changed=BPF_CLANG");
    // A new file in the directory must trigger a rebuild too, not only edits.
    println!("cargo::rerun-if-changed={}", src_dir.display());

    let mut sources = Vec::new();
    let entries = fs::read_dir(&src_dir).map_err(|e| format!("read {}: {e}", src_dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("read {}: {e}", src_dir.display()))?.path();
        let Some(name) = path.file_name().and_then(OsStr::to_str) else { continue };
        if name.ends_with(".h") {
            println!("cargo::rerun-if-changed={}", path.display());
        } else if let Some(stem) = name.strip_suffix(".bpf.c") {
            println!("cargo::rerun-if-changed={}", path.display());
            sources.push((stem.to_owned(), path));
        }
    }
    sources.sort();

    let clang = find_clang()?;
    let target = bpf_target()?;
    let include = multiarch_include()?;
    for (stem, source) in &sources {
        compile(&clang, target, &include, source, &out_dir.join(format!("{stem}.bpf.o")))?;
    }
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("environment variable {name} is not set (run through cargo)"))
}

/// `BPF_CLANG` if set (it must work), else the first of clang-19, clang that runs.
fn find_clang() -> Result<String, String> {
    if let Ok(clang) = env::var("BPF_CLANG") {
        return if runs(&clang) { Ok(clang) } else { Err(format!("BPF_CLANG={clang} cannot be run")) };
    }
    ["clang-19", "clang"]
        .into_iter()
        .find(|clang| runs(clang))
        .map(str::to_owned)
        .ok_or_else(|| MISSING_CLANG.to_owned())
}

fn runs(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|out| out.status.success())
}

/// The BPF byte order must match the target the loader runs on, not the build host.
fn bpf_target() -> Result<&'static str, String> {
    match env_var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "little" => Ok("bpfel"),
        "big" => Ok("bpfeb"),
        other => Err(format!("unsupported target endianness {other}")),
    }
}

/// Debian's multiarch include dir holding `asm/` for the target (needed by `linux/*.h`).
fn multiarch_include() -> Result<PathBuf, String> {
    let arch = env_var("CARGO_CFG_TARGET_ARCH")?;
    let triple = match arch.as_str() {
        "x86" => "i386-linux-gnu".to_owned(),
        "arm" => "arm-linux-gnueabihf".to_owned(),
        "powerpc64" if env_var("CARGO_CFG_TARGET_ENDIAN")? == "little" => "powerpc64le-linux-gnu".to_owned(),
        other => format!("{other}-linux-gnu"),
    };
    Ok(Path::new("/usr/include").join(triple))
}

fn compile(clang: &str, target: &str, include: &Path, source: &Path, object: &Path) -> Result<(), String> {
    let output = Command::new(clang)
        .args(["-O2", "-g", "-Wall", "-target", target])
        .arg(format!("-I{}", include.display()))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output()
        .map_err(|e| format!("run {clang}: {e}"))?;
    let diagnostics = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // Cargo shows a failed build script's stderr: the compiler's own words.
        eprint!("{diagnostics}");
        return Err(format!(
            "compile {} with {clang} failed (its errors are under --- stderr below)",
            source.display()
        ));
    }
    for line in diagnostics.lines().filter(|line| line.contains("warning:")) {
        println!("cargo::warning={line}");
    }
    Ok(())
}
