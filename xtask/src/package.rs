//! `cargo xtask package`: what a user of crates.io would get.
//!
//! `cargo package --workspace` packs every publishable crate (the manifests as crates.io
//! serves them: path-only dev-dependencies dropped, files outside the crate left out);
//! the `.crate` files are unpacked into a workspace of their own whose `[patch.crates-io]`
//! points each crate at its unpacked sibling; then every test, example and doc test of
//! those unpacked sources is built and run with `--all-features` (the tests that need the
//! servers stay `#[ignore]`d here: `cargo xtask test` runs them from the repository).
//! A file a test reads from outside its crate, or a dev-dependency that cannot be
//! published, fails this check.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Packs, unpacks and tests the publishable crates.
pub(crate) fn run() -> Result<(), String> {
    let root = crate::workspace_root();
    let target = root.join("target");
    let target_arg = target.to_string_lossy().into_owned();
    let packed = target.join("package");
    // Only this run's `.crate` files: an older version's would be tested too.
    if packed.exists() {
        std::fs::remove_dir_all(&packed).map_err(|e| format!("{}: {e}", packed.display()))?;
    }
    let mut args = vec![
        "package",
        "--workspace",
        "--no-verify",
        "--allow-dirty",
        "--target-dir",
        &target_arg,
    ];
    let unpublished = unpublished_members()?;
    for name in &unpublished {
        args.extend(["--exclude", name]);
    }
    crate::cargo(&args, &[])?;
    let crates = packed_crates(&packed)?;
    if crates.is_empty() {
        return Err("cargo package wrote no .crate file".into());
    }
    let dir = target.join("packaged");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut members = Vec::new();
    for file in &crates {
        unpack(file, &dir)?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{}: no file name", file.display()))?;
        members.push(stem);
    }
    std::fs::write(dir.join("Cargo.toml"), manifest(&members))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // The repository's lock file keeps the dependency versions those tested in the
    // repository (and their builds in `target/` reusable).
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))
        .map_err(|e| format!("Cargo.lock: {e}"))?;
    let manifest_path = dir.join("Cargo.toml").to_string_lossy().into_owned();
    // Every target, then the doc tests (`--all-targets` leaves them out).
    for targets in ["--all-targets", "--doc"] {
        crate::cargo(
            &[
                "test",
                "--manifest-path",
                &manifest_path,
                "--workspace",
                "--all-features",
                targets,
                "--target-dir",
                &target_arg,
            ],
            &[],
        )?;
    }
    eprintln!(
        "xtask: package: {} crates packed, unpacked and tested from their packaged sources: {}",
        members.len(),
        members.join(", ")
    );
    Ok(())
}

/// The workspace members marked `publish = false` (tools and examples of this
/// repository), from `cargo metadata`.
fn unpublished_members() -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(crate::workspace_root())
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    Ok(unpublished_in(&metadata))
}

/// The packages of `cargo metadata`'s output that may not be published anywhere
/// (`"publish": []`).
fn unpublished_in(metadata: &serde_json::Value) -> Vec<String> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["publish"].as_array().is_some_and(Vec::is_empty))
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// The `.crate` files in `dir`, sorted by name.
fn packed_crates(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "crate"))
        .collect();
    files.sort();
    Ok(files)
}

/// Unpacks a `.crate` (a gzipped tar) into `dir`.
fn unpack(file: &Path, dir: &Path) -> Result<(), String> {
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(file)
        .arg("-C")
        .arg(dir)
        .status()
        .map_err(|e| format!("could not run tar: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("tar -xzf {} failed ({status})", file.display()))
    }
}

/// The manifest of the workspace of unpacked crates: each `<name>-<version>` directory a
/// member, and every dependency on one of them patched to it.
fn manifest(members: &[String]) -> String {
    let mut out = String::from("[workspace]\nresolver = \"3\"\nmembers = [\n");
    for member in members {
        out.push_str(&format!("    \"{member}\",\n"));
    }
    out.push_str("]\n\n[patch.crates-io]\n");
    for member in members {
        // `<name>-<version>`: the version holds no `-` (no pre-release here).
        let name = member
            .rsplit_once('-')
            .map_or(member.as_str(), |(name, _)| name);
        out.push_str(&format!("{name} = {{ path = \"{member}\" }}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_packages_that_refuse_every_registry_are_left_out() {
        let metadata = serde_json::json!({"packages": [
            {"name": "echocache", "publish": null},
            {"name": "xtask", "publish": []},
            {"name": "internal", "publish": ["my-registry"]},
        ]});
        assert_eq!(unpublished_in(&metadata), ["xtask"]);
    }

    #[test]
    fn the_manifest_patches_every_member_to_its_directory() {
        let v = "0.1.0";
        let members = [format!("echocache-core-{v}"), format!("echocache-{v}")];
        let text = manifest(&members);
        assert!(
            text.contains(&format!("    \"echocache-core-{v}\",\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "echocache-core = {{ path = \"echocache-core-{v}\" }}"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("echocache = {{ path = \"echocache-{v}\" }}")),
            "{text}"
        );
    }
}
