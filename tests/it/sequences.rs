//! Every sequence under `sequences/` is an example operators copy: each must load cleanly.

use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn every_sequence_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sequences");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(!files.is_empty(), "sequences/ holds examples");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        // No environment: examples must give `${VAR:-fallback}` defaults for what they interpolate.
        if let Err(diagnostics) = sunset_plan::load_sequence(&name, &text, &|_| None) {
            panic!("{diagnostics}");
        }
    }
}
