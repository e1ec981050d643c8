//! What an archive is allowed to make the restoring machine do. An archive is input from
//! whoever could write to the bucket, so its manifest is checked as a whole before anything is
//! read (paths, links, modes, exports), and every tar entry is matched against its manifest
//! entry before its bytes are used. `verify --deep` and `restore` share these rules.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;

use crate::manifest::{Entry, EntryKind, Manifest};

/// The top directories an archive's entries live under.
pub(crate) const ROOTS: [&str; 3] = ["files", "tables", "queries"];

/// setuid, setgid and sticky: restored only with `--preserve-special-bits`.
pub(crate) const SPECIAL_BITS: u32 = 0o7000;

/// A `schema.json` is read whole before it is used; sunset writes a few KiB.
pub(crate) const MAX_SCHEMA_BYTES: u64 = 1 << 20;

/// Symlinks followed while resolving one link target, as the kernel's own limit.
const MAX_LINK_HOPS: usize = 40;

/// The manifest's entries by normalised path (no trailing `/`), after every rule passed.
#[derive(Debug)]
pub(crate) struct Listing<'a> {
    pub(crate) entries: BTreeMap<String, &'a Entry>,
}

/// Checks the whole manifest. Returns the first problem as text (the caller picks the error).
pub(crate) fn check_manifest(
    manifest: &Manifest,
    allow_special_bits: bool,
) -> Result<Listing<'_>, String> {
    let mut entries = BTreeMap::new();
    for entry in &manifest.entries {
        let path = normalise(&entry.path)?;
        if entries.insert(path.clone(), entry).is_some() {
            return Err(format!("the manifest lists `{path}` twice"));
        }
        match entry.kind {
            EntryKind::File if entry.sha256.is_none() => {
                return Err(format!("the manifest gives `{path}` no SHA-256"));
            }
            EntryKind::Symlink if entry.link_target.as_deref().is_none_or(str::is_empty) => {
                return Err(format!("the manifest gives symlink `{path}` no target"));
            }
            _ => {}
        }
        if entry.mode & SPECIAL_BITS != 0 && !allow_special_bits {
            return Err(format!(
                "`{path}` has mode {:04o} (setuid, setgid or sticky); pass --preserve-special-bits to restore it with them",
                entry.mode & 0o7777
            ));
        }
    }
    let links: BTreeMap<&str, &str> = entries
        .iter()
        .filter_map(|(path, e)| Some((path.as_str(), e.link_target.as_deref()?)))
        .collect();
    for (path, entry) in &entries {
        // Nothing may be written through a link or under a file of the archive itself.
        let mut ancestor = path.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if let Some(listed) = entries.get(parent)
                && listed.kind != EntryKind::Dir
            {
                return Err(format!(
                    "`{path}` lies inside `{parent}`, which the archive lists as a {}",
                    kind_name(listed.kind)
                ));
            }
            ancestor = parent;
        }
        if let Some(target) = entry.link_target.as_deref()
            && let Err(why) = resolve_link(path, target, &links)
        {
            return Err(format!("symlink `{path}` -> `{target}` {why}"));
        }
    }
    for table in &manifest.tables {
        let schema = normalise(&table.schema_path)?;
        let listed = entries.get(&schema).ok_or_else(|| {
            format!(
                "export `{}`: its schema `{schema}` is not in the manifest",
                table.name
            )
        })?;
        if listed.kind != EntryKind::File || listed.size > MAX_SCHEMA_BYTES {
            return Err(format!(
                "export `{}`: `{schema}` is not a schema file of at most {MAX_SCHEMA_BYTES} bytes",
                table.name
            ));
        }
        if !(schema.starts_with("tables/") || schema.starts_with("queries/")) {
            return Err(format!(
                "export `{}`: `{schema}` is not under tables/ or queries/",
                table.name
            ));
        }
        for chunk in &table.chunks {
            let chunk = normalise(chunk)?;
            if entries
                .get(&chunk)
                .is_none_or(|e| e.kind != EntryKind::File)
            {
                return Err(format!(
                    "export `{}`: chunk `{chunk}` is not a file in the manifest",
                    table.name
                ));
            }
        }
    }
    Ok(Listing { entries })
}

/// A path inside the archive: relative, made of plain names, under one of [`ROOTS`].
pub(crate) fn normalise(path: &str) -> Result<String, String> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() || trimmed.starts_with('/') {
        return Err(format!("`{path}` is an absolute or empty path"));
    }
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return Err(format!(
                "`{path}` has a `{part}` component; entries are plain relative paths"
            ));
        }
    }
    let root = trimmed.split('/').next().unwrap_or_default();
    if !ROOTS.contains(&root) {
        return Err(format!("`{path}` is outside files/, tables/ and queries/"));
    }
    Ok(trimmed.to_owned())
}

/// Resolves a link target as the kernel would, following the archive's own links, and fails
/// if it leaves the restore directory (absolute, or `..` past the top) or loops.
fn resolve_link(link: &str, target: &str, links: &BTreeMap<&str, &str>) -> Result<(), String> {
    fn queue<'t>(pending: &mut VecDeque<&'t str>, text: &'t str) -> Result<(), String> {
        if text.starts_with('/') {
            return Err("points to an absolute path".into());
        }
        for part in text.split('/').rev() {
            pending.push_front(part);
        }
        Ok(())
    }
    let mut at: Vec<&str> = link.split('/').collect();
    at.pop();
    let mut pending = VecDeque::new();
    queue(&mut pending, target)?;
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return Err("points outside the restore directory".into());
                }
            }
            name => {
                at.push(name);
                if let Some(next) = links.get(at.join("/").as_str()) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err("is part of a symlink loop".into());
                    }
                    at.pop();
                    queue(&mut pending, next)?;
                }
            }
        }
    }
    Ok(())
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
    }
}

/// Matches one tar entry against the manifest and takes it off the listing: the path is listed
/// (once), the kind, size, mode, owner, mtime and link target are the listed ones. Anything else
/// (hard links, devices, FIFOs, an entry the manifest does not list) is a problem.
pub(crate) fn match_entry<'a, R: Read>(
    entry: &tar::Entry<'_, R>,
    listing: &mut Listing<'a>,
) -> Result<(String, &'a Entry), String> {
    let raw = entry.path_bytes();
    let text = std::str::from_utf8(&raw).map_err(|_| {
        format!(
            "an entry has a path that is not UTF-8: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })?;
    let path = normalise(text)?;
    let listed = listing
        .entries
        .remove(&path)
        .ok_or_else(|| format!("`{path}` is in the archive but not in the manifest (or twice)"))?;
    let header = entry.header();
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink,
        other => {
            return Err(format!(
                "`{path}` is a tar entry of type {other:?}; archives hold only files, directories and symlinks"
            ));
        }
    };
    if kind != listed.kind {
        return Err(format!(
            "`{path}` is a {} in the archive; the manifest says {}",
            kind_name(kind),
            kind_name(listed.kind)
        ));
    }
    let size = entry.size();
    if kind == EntryKind::File && size != listed.size {
        return Err(format!(
            "`{path}` is {size} bytes in the archive; the manifest says {}",
            listed.size
        ));
    }
    let claimed = (
        header.mode().unwrap_or(u32::MAX) & 0o7777,
        header.uid().unwrap_or(u64::MAX),
        header.gid().unwrap_or(u64::MAX),
        header.mtime().unwrap_or(u64::MAX),
    );
    let expected = (listed.mode & 0o7777, listed.uid, listed.gid, listed.mtime);
    if claimed != expected {
        return Err(format!(
            "`{path}` has mode {:04o}, owner {}:{} and mtime {} in the archive; the manifest says {:04o}, {}:{} and {}",
            claimed.0,
            claimed.1,
            claimed.2,
            claimed.3,
            expected.0,
            expected.1,
            expected.2,
            expected.3
        ));
    }
    if kind == EntryKind::Symlink {
        let target = entry
            .link_name_bytes()
            .map(|t| String::from_utf8_lossy(&t).into_owned());
        if target.as_deref() != listed.link_target.as_deref() {
            return Err(format!(
                "symlink `{path}` points to `{}` in the archive; the manifest says `{}`",
                target.unwrap_or_default(),
                listed.link_target.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok((path, listed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, link: Option<&str>) -> Entry {
        Entry {
            path: path.into(),
            kind,
            size: 0,
            sha256: (kind == EntryKind::File).then(|| "00".into()),
            mode: 0o644,
            mtime: 0,
            uid: 0,
            gid: 0,
            link_target: link.map(Into::into),
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            format_version: crate::manifest::FORMAT_VERSION,
            name: "t".into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            source_host: "h".into(),
            tool: "t".into(),
            archive: crate::manifest::ArchiveObject {
                object: "archive.tar.gz".into(),
                size: 0,
                sha256: String::new(),
                part_size: 0,
                parts: 0,
                gzip_level: 6,
                gzip_block_size: 0,
            },
            entries,
            tables: Vec::new(),
        }
    }

    fn problem(entries: Vec<Entry>) -> String {
        check_manifest(&manifest(entries), false).unwrap_err()
    }

    #[test]
    fn paths_must_be_plain_and_under_the_roots() {
        for bad in [
            "/etc/passwd",
            "files/../../x",
            "files/./x",
            "etc/x",
            "files//x",
            "",
        ] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
        assert_eq!(normalise("files/a b/ü/").unwrap(), "files/a b/ü");
    }

    #[test]
    fn links_may_not_leave_the_restore_directory_even_through_other_links() {
        use EntryKind::*;
        let ok = manifest(vec![
            entry("files/app/", Dir, None),
            entry("files/app/current", Symlink, Some("releases/3")),
            entry("files/app/up", Symlink, Some("../../files")),
            entry("files/app/dangling", Symlink, Some("nowhere/at/all")),
        ]);
        assert!(check_manifest(&ok, false).is_ok());
        assert!(problem(vec![entry("files/a", Symlink, Some("/etc"))]).contains("absolute"));
        assert!(problem(vec![entry("files/a", Symlink, Some("../../x"))]).contains("outside"));
        // Read as text, `files/d/e/../..` is `files`; but `e` is a link to the top, so the
        // kernel resolves it to the parent of the restore directory.
        let through = problem(vec![
            entry("files/d/e", Symlink, Some("../..")),
            entry("files/hop", Symlink, Some("d/e/../..")),
        ]);
        assert!(through.contains("outside"), "{through}");
        assert!(
            problem(vec![
                entry("files/a", Symlink, Some("b")),
                entry("files/b", Symlink, Some("a")),
            ])
            .contains("loop")
        );
    }

    #[test]
    fn nothing_is_written_through_a_link_or_under_a_file() {
        use EntryKind::*;
        let through = problem(vec![
            entry("files/link", Symlink, Some("sub")),
            entry("files/link/x", File, None),
        ]);
        assert!(through.contains("lies inside `files/link`"), "{through}");
    }

    #[test]
    fn special_bits_need_to_be_asked_for() {
        let mut setuid = entry("files/su", EntryKind::File, None);
        setuid.mode = 0o4755;
        let archive = manifest(vec![setuid]);
        assert!(
            check_manifest(&archive, false)
                .unwrap_err()
                .contains("--preserve-special-bits")
        );
        assert!(check_manifest(&archive, true).is_ok());
    }
}
