//! Repository hygiene checks that run as ordinary tests: rules a reviewer would otherwise have to
//! remember (every module says why it exists; no test is skipped or expected to panic).

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::workspace_root;

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    rust_files(&path, found);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    fn workspace_sources() -> Vec<(String, String)> {
        let root = workspace_root();
        let mut files = Vec::new();
        for dir in ["bins", "crates", "tests", "xtask"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 10, "tidy found the sources");
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                (
                    path.strip_prefix(&root).unwrap().display().to_string(),
                    text,
                )
            })
            .collect()
    }

    #[test]
    fn every_module_starts_with_a_doc_comment() {
        let missing: Vec<String> = workspace_sources()
            .into_iter()
            .filter(|(_, text)| !text.starts_with("//!"))
            .map(|(path, _)| path)
            .collect();
        assert!(
            missing.is_empty(),
            "these files do not start with a `//!` comment saying why they exist: {missing:?}"
        );
    }

    #[test]
    fn no_test_is_skipped_or_expected_to_panic() {
        let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
        let offenders: Vec<String> = workspace_sources()
            .into_iter()
            .filter(|(_, text)| banned.iter().any(|b| text.contains(b)))
            .map(|(path, _)| path)
            .collect();
        assert!(
            offenders.is_empty(),
            "tests that need a service must fail without it, not be skipped: {offenders:?}"
        );
    }
}
