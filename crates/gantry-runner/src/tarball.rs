//! Tar archives of file trees, for what an agent moves over HTTP: the commit's files,
//! artifacts and caches.
//!
//! Unpacking trusts nothing in the archive: an entry whose path is absolute or has a `..`
//! component is refused, as is a symlink whose target leaves the root or a hard link to a
//! path outside it; devices, FIFOs and other special files are skipped. Writes go through
//! [`tar::Entry::unpack_in`], which also refuses to write through a symlink that leads out
//! of the root; after unpacking, every symlink is resolved once more and one that resolves
//! outside the root is removed and reported.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Writes the relative paths `files` below `root` as a tar archive (symlinks as symlinks).
pub fn pack<W: Write>(root: &Path, files: &[PathBuf], out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    for rel in files {
        let from = root.join(rel);
        b.append_path_with_name(&from, rel)
            .with_context(|| format!("adding {} to the archive", from.display()))?;
    }
    Ok(b.into_inner()?)
}

/// Unpacks a tar archive into `dest` (created if missing); returns the relative paths of
/// the files and symlinks it wrote, sorted.
pub fn unpack<R: Read>(input: R, dest: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut archive = tar::Archive::new(input);
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    let mut written = Vec::new();
    let mut links = Vec::new();
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let raw = entry.path().context("an entry's path")?.into_owned();
        let Some(rel) = safe_relative(&raw) else {
            bail!("the archive has an unsafe path: {}", raw.display());
        };
        if rel.as_os_str().is_empty() {
            continue; // `./`
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .context("a symlink's target")?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !symlink_stays_inside(&rel, &target) {
                    bail!(
                        "the archive has a symlink leaving the directory: {} -> {}",
                        rel.display(),
                        target.display()
                    );
                }
                links.push(rel.clone());
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("a hard link's target")?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if safe_relative(&target).is_none_or(|t| t.as_os_str().is_empty()) {
                    bail!(
                        "the archive has a hard link to outside the directory: {} -> {}",
                        rel.display(),
                        target.display()
                    );
                }
            }
            _ => continue, // devices, FIFOs, …: never in artifacts, caches or sources
        }
        let ok = entry
            .unpack_in(dest)
            .with_context(|| format!("unpacking {}", rel.display()))?;
        if !ok {
            bail!("the archive has an unsafe path: {}", raw.display());
        }
        if kind != tar::EntryType::Directory {
            written.push(rel);
        }
    }
    // Symlinks that are fine one by one may chain out of the root: resolve them for real.
    let root = dest.canonicalize()?;
    for rel in &links {
        let p = dest.join(rel);
        if let Ok(resolved) = p.canonicalize()
            && !resolved.starts_with(&root)
        {
            let _ = std::fs::remove_file(&p);
            bail!(
                "the archive has a symlink leaving the directory: {}",
                rel.display()
            );
        }
    }
    written.sort();
    written.dedup();
    Ok(written)
}

/// `p` without `.` components, if it is relative and has no `..`.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a symlink at `link` (relative to the root) pointing to `target` stays below the
/// root, reading the target lexically from the link's directory.
fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() || target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw tar with one entry, written by hand so that paths the `tar` crate's builder
    /// refuses (`..`, absolute) can be tested.
    fn raw_entry(out: &mut Vec<u8>, path: &str, kind: u8, link: &str, data: &[u8]) {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        let size = format!("{:011o}", data.len());
        h[124..135].copy_from_slice(size.as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn archive(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, k, l, d) in entries {
            raw_entry(&mut out, p, *k, l, d);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn round_trip_keeps_files_modes_and_symlinks() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/f.txt"), "hello").unwrap();
        std::fs::write(src.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            src.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("a/b/f.txt", src.path().join("link")).unwrap();
        let files = crate::fsutil::list_files(src.path());
        let tar = pack(src.path(), &files, Vec::new()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let got = unpack(&tar[..], dst.path()).unwrap();
        assert_eq!(got, files);
        assert_eq!(
            std::fs::read_to_string(dst.path().join("link")).unwrap(),
            "hello"
        );
        let mode = std::fs::metadata(dst.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }

    #[test]
    fn refuses_paths_and_links_leaving_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        let cases: Vec<Vec<u8>> = vec![
            archive(&[("../escape", b'0', "", b"x")]),
            archive(&[("a/../../escape", b'0', "", b"x")]),
            archive(&[(victim.to_str().unwrap(), b'0', "", b"x")]),
            archive(&[("l", b'2', outside.path().to_str().unwrap(), b"")]),
            archive(&[("l", b'2', "../..", b"")]),
            archive(&[("d/l", b'2', "../../x", b"")]),
            archive(&[("h", b'1', "../x", b"")]),
            archive(&[("h", b'1', "/etc/passwd", b"")]),
        ];
        for (i, tar) in cases.iter().enumerate() {
            let dst = tempfile::tempdir().unwrap();
            let root = dst.path().join("root");
            assert!(unpack(&tar[..], &root).is_err(), "case {i} was accepted");
            assert!(!victim.exists(), "case {i} wrote outside");
            assert!(
                !dst.path().join("escape").exists(),
                "case {i} wrote outside"
            );
        }
    }

    #[test]
    fn symlink_chains_that_leave_are_removed() {
        // `up -> sub/..` is the root itself; `out -> up/..` looks inside, but leaves.
        let tar = archive(&[
            ("sub/", b'5', "", b""),
            ("up", b'2', "sub/..", b""),
            ("out", b'2', "up/..", b""),
        ]);
        let dst = tempfile::tempdir().unwrap();
        let root = dst.path().join("root");
        assert!(unpack(&tar[..], &root).is_err());
        assert!(root.join("out").symlink_metadata().is_err());
    }

    #[test]
    fn writing_through_a_symlink_to_outside_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dst.path().join("l")).unwrap();
        let tar = archive(&[("l/pwned", b'0', "", b"x")]);
        assert!(unpack(&tar[..], dst.path()).is_err());
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn inner_symlinks_and_special_entries() {
        let tar = archive(&[
            ("d/f", b'0', "", b"data"),
            ("d/l", b'2', "f", b""),
            ("top", b'2', "d/../d/f", b""),
            ("fifo", b'6', "", b""),
        ]);
        let dst = tempfile::tempdir().unwrap();
        let got = unpack(&tar[..], dst.path()).unwrap();
        assert_eq!(
            got,
            vec![
                PathBuf::from("d/f"),
                PathBuf::from("d/l"),
                PathBuf::from("top")
            ]
        );
        assert_eq!(std::fs::read(dst.path().join("top")).unwrap(), b"data");
        assert!(dst.path().join("fifo").symlink_metadata().is_err());
    }
}
