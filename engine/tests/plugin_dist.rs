//! The committed WASM components in `plugins/dist/` are built from the current sources.
//!
//! Tests load those components instead of compiling guests (CI may have no wasm target), so they
//! must not drift from `sdk/` and `plugins/`: `scripts/build-plugins.sh` records the hash of the
//! sources it built from, and this test recomputes it with the same rule.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file a component is built from (the rule in `scripts/build-plugins.sh`).
fn sources(repo: &Path) -> Vec<String> {
    fn walk(repo: &Path, rel: &str, out: &mut Vec<String>) {
        let path = repo.join(rel);
        if path.is_file() {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            let wanted = name.ends_with(".rs")
                || name.ends_with(".wit")
                || name == "Cargo.toml"
                || name == "Cargo.lock";
            if wanted && !rel.contains("/target/") && !rel.starts_with("plugins/dist/") {
                out.push(rel.to_owned());
            }
            return;
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().into_string().expect("UTF-8 file name");
            walk(repo, &format!("{rel}/{name}"), out);
        }
    }
    let mut out = Vec::new();
    for root in ["sdk/Cargo.toml", "sdk/src", "sdk/wit", "plugins"] {
        walk(repo, root, &mut out);
    }
    out.sort();
    out
}

fn sources_hash(repo: &Path) -> String {
    let mut listing = String::new();
    for rel in sources(repo) {
        let bytes = std::fs::read(repo.join(&rel)).expect("readable source");
        listing.push_str(&format!(
            "{}  {rel}\n",
            hex::encode(openssl::sha::sha256(&bytes))
        ));
    }
    // `sha256sum` prints the hash of its input followed by "  -".
    hex::encode(openssl::sha::sha256(listing.as_bytes()))
}

#[test]
fn committed_components_are_built_from_the_current_sources() {
    let repo = repo();
    let files = sources(&repo);
    assert!(
        files.iter().any(|f| f == "sdk/wit/since_v0.1.0/policy.wit")
            && files
                .iter()
                .any(|f| f == "plugins/auto-assign-rules/src/lib.rs"),
        "the source rule found too little: {files:?}"
    );
    let recorded = std::fs::read_to_string(repo.join("plugins/dist/SOURCES.sha256"))
        .expect("plugins/dist/SOURCES.sha256 (run scripts/build-plugins.sh)");
    assert_eq!(
        recorded.trim(),
        sources_hash(&repo),
        "plugins/dist/ is stale: the SDK or plugin sources changed since it was built; run \
         scripts/build-plugins.sh and commit plugins/dist/"
    );
    for component in ["auto-assign-rules", "test-guest", "test-escape"] {
        let path = repo.join(format!("plugins/dist/{component}.wasm"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            &bytes[..8],
            b"\0asm\x0d\0\x01\0",
            "{component} is a component"
        );
    }
}
