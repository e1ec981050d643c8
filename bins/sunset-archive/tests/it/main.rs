//! `sunset-archive` as operators run it: the built binary against moto's S3 and the real
//! PostgreSQL, killed mid-upload, fed bad input, and its archives tampered with.
//!
//! Longer than ~600 lines: the harness (`World`) and one scenario per command; the attacks have
//! their own module.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sunset_test_support::harness::{code, text};
use sunset_test_support::{aws_config, connect, fresh_database, service_env, unique_name};

mod attacks;
mod metrics;
mod races;

const BIN: &str = env!("CARGO_BIN_EXE_sunset-archive");

/// One test's world: a bucket, a database, a state directory and a scratch directory.
struct World {
    runtime: tokio::runtime::Runtime,
    s3: aws_sdk_s3::Client,
    bucket: String,
    db_url: String,
    db: tokio_postgres::Client,
    state: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl World {
    fn new(prefix: &str) -> World {
        let runtime = sunset_test_support::harness::runtime();
        let (s3, db_url, db) = runtime.block_on(async {
            let config = aws_config().await;
            let s3 = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&config)
                    .force_path_style(true)
                    // moto returns a composite multipart checksum the SDK takes for a
                    // whole-object one; the tests hash what they download themselves.
                    .response_checksum_validation(
                        aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                    )
                    .build(),
            );
            let url = fresh_database(prefix).await;
            let db = connect(&url).await;
            (s3, url, db)
        });
        let bucket = unique_name(prefix);
        runtime
            .block_on(s3.create_bucket().bucket(&bucket).send())
            .expect("create bucket");
        World {
            runtime,
            s3,
            bucket,
            db_url,
            db,
            state: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn dest(&self) -> String {
        format!("s3://{}/archives", self.bucket)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .envs(service_env())
            .env("DATABASE_URL", &self.db_url)
            .env("SUNSET_STATE_DIR", self.state.path())
            .env("RUST_LOG", "warn");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sunset-archive")
    }

    /// Restores `archive` into a fresh `--to` and the schema `restored`, then compares the
    /// directory archived as `dir` with `tree`, and each `(source table, restored name)` with the
    /// table, row for row both ways.
    fn restore_matches(&self, archive: &str, dir: &str, tree: &Path, tables: &[(&str, &str)]) {
        let restored = self.path("restored");
        let restore = self.run(&[
            "restore",
            archive,
            "--to",
            restored.to_str().unwrap(),
            "--into-schema",
            "restored",
        ]);
        assert_eq!(code(&restore), 0, "{}", text(&restore));
        assert_eq!(
            snapshot(&restored.join("files").join(dir)),
            snapshot(tree),
            "the restored files are the sources"
        );
        for (source, name) in tables {
            assert_eq!(
                self.int(&format!(
                    "SELECT count(*) FROM ((SELECT * FROM {source} EXCEPT ALL SELECT * FROM restored.{name})
                     UNION ALL (SELECT * FROM restored.{name} EXCEPT ALL SELECT * FROM {source})) d"
                )),
                0,
                "the restored rows of {source} are the table's"
            );
        }
    }

    fn sql(&self, sql: &str) {
        self.runtime
            .block_on(self.db.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    fn int(&self, sql: &str) -> i64 {
        self.runtime
            .block_on(self.db.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0)
    }

    fn keys(&self) -> Vec<String> {
        let listed = self
            .runtime
            .block_on(self.s3.list_objects_v2().bucket(&self.bucket).send())
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    fn open_uploads(&self) -> usize {
        self.runtime
            .block_on(self.s3.list_multipart_uploads().bucket(&self.bucket).send())
            .unwrap()
            .uploads()
            .len()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let object = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            object.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// HeadObject and the tags of a key of this world's bucket.
    fn object_meta(
        &self,
        key: &str,
    ) -> (
        aws_sdk_s3::operation::head_object::HeadObjectOutput,
        Vec<(String, String)>,
    ) {
        self.object_meta_in(&self.bucket, key)
    }

    fn object_meta_in(
        &self,
        bucket: &str,
        key: &str,
    ) -> (
        aws_sdk_s3::operation::head_object::HeadObjectOutput,
        Vec<(String, String)>,
    ) {
        self.runtime.block_on(async {
            let head = self
                .s3
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("HeadObject {key}: {e:?}"));
            let tags = self
                .s3
                .get_object_tagging()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect();
            (head, tags)
        })
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.runtime
            .block_on(
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(bytes.into())
                    .send(),
            )
            .unwrap();
    }
}

/// A tree with what archives get wrong: modes, a symlink (and a dangling one), an empty
/// directory, unicode and spaces in names, an empty file and a file of a few MiB.
fn config_tree(root: &Path) {
    std::fs::create_dir_all(root.join("conf.d/empty")).unwrap();
    std::fs::create_dir_all(root.join("données/sous dossier")).unwrap();
    std::fs::write(
        root.join("collector.yaml"),
        "interval: 10s\nsecret_ref: vault://x\n",
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("collector.yaml"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("données/sous dossier/résumé ✓.txt"), "ünïcödé\n").unwrap();
    std::fs::write(root.join("conf.d/empty.conf"), "").unwrap();
    let blob: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("conf.d/blob.bin"), blob).unwrap();
    std::os::unix::fs::symlink("collector.yaml", root.join("current.yaml")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("dangling")).unwrap();
}

/// One entry of [`snapshot`]: relative path, kind, mode, mtime, owner (uid, gid), content hash or
/// link target.
type SnapshotEntry = (String, String, u32, i64, (u32, u32), String);

/// Every entry under root, sorted: what "the tree came back as it was" compares.
fn snapshot(root: &Path) -> Vec<SnapshotEntry> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let (kind, content) = if meta.file_type().is_symlink() {
                (
                    "link",
                    std::fs::read_link(&path).unwrap().display().to_string(),
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                ("dir", String::new())
            } else {
                (
                    "file",
                    format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap())),
                )
            };
            let mtime = if kind == "link" { 0 } else { meta.mtime() };
            out.push((
                rel,
                kind.to_owned(),
                meta.mode() & 0o7777,
                mtime,
                (meta.uid(), meta.gid()),
                content,
            ));
        }
    }
    out.sort();
    out
}

const TABLE: &str = "
CREATE SCHEMA legacy;
CREATE TABLE legacy.samples (
    id bigint PRIMARY KEY, note text, payload bytea, attrs jsonb, taken_at timestamptz, day date,
    ratio numeric(12, 4), tags text[]
);
INSERT INTO legacy.samples
SELECT g,
       CASE WHEN g % 7 = 0 THEN NULL WHEN g % 7 = 1 THEN '' WHEN g % 7 = 2 THEN E'two\\nlines, \"quoted\"'
            WHEN g % 7 = 3 THEN 'NULL' WHEN g % 7 = 4 THEN E'tab\\there \\\\ backslash' ELSE 'plain ' || g END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text) || '00ff', 'hex') END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x\"y')) END,
       timestamptz '2020-01-01 00:00:00+00' + g * interval '37 minutes 13.123456 seconds',
       date '2001-01-01' + (g % 9000),
       g / 7.0,
       ARRAY['a,b', 'c\"d', NULL]
FROM generate_series(1, 30000) g;
";

#[test]
fn a_tree_and_tables_round_trip_through_s3_byte_for_byte_and_row_for_row() {
    let world = World::new("arc-roundtrip");
    let tree = world.path("legacy-collector");
    config_tree(&tree);
    world.sql(TABLE);
    let output = world.run(&[
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "round-trip",
        "--dir",
        tree.to_str().unwrap(),
        "--table",
        "legacy.samples",
        "--query",
        "recent=SELECT id, note FROM legacy.samples WHERE id > 29990 ORDER BY id",
        "--part-size",
        "5MiB",
        "--json",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let done: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(done["tables"][0]["rows"], 30000, "{done}");
    assert_eq!(done["tables"][1]["rows"], 10, "{done}");
    let archive = format!("{}/round-trip", world.dest());
    assert!(
        world
            .keys()
            .contains(&"archives/round-trip/manifest.json".to_owned())
    );

    // The manifest's SHA-256 is the object's.
    let object = world.get("archives/round-trip/archive.tar.gz");
    let manifest: serde_json::Value =
        serde_json::from_slice(&world.get("archives/round-trip/manifest.json")).unwrap();
    assert_eq!(
        manifest["archive"]["sha256"],
        format!("{:x}", Sha256::digest(&object))
    );
    assert_eq!(manifest["archive"]["size"], object.len());

    let verify = world.run(&["verify", &archive, "--deep"]);
    assert_eq!(code(&verify), 0, "{}", text(&verify));

    // Files, modes, mtimes, owners, symlinks and empty directories, and every row, NULLs and all.
    world.restore_matches(
        &archive,
        "legacy-collector",
        &tree,
        &[("legacy.samples", "samples")],
    );
    assert_eq!(world.int("SELECT count(*) FROM restored.samples"), 30000);
    assert_eq!(world.int("SELECT count(*) FROM restored.recent"), 10);

    // The same name again is refused, and nothing is written.
    let before = world.keys();
    let again = world.run(&[
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "round-trip",
        "--dir",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(code(&again), 2, "{}", text(&again));
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    assert_eq!(world.keys(), before);
    assert_eq!(world.open_uploads(), 0);

    let list = world.run(&["list", &world.dest()]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("round-trip"),
        "{}",
        text(&list)
    );
}

#[test]
fn verify_deep_finds_a_flipped_byte_and_a_missing_entry() {
    let world = World::new("arc-verify");
    let tree = world.path("etc-legacy");
    config_tree(&tree);
    world.sql(
        "CREATE TABLE samples AS SELECT g AS id, g * 2 AS value FROM generate_series(1, 500) g",
    );
    let output = world.run(&[
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "v",
        "--dir",
        tree.to_str().unwrap(),
        "--table",
        "public.samples",
        "--part-size",
        "5MiB",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let archive = format!("{}/v", world.dest());
    let object = world.get("archives/v/archive.tar.gz");
    let manifest = world.get("archives/v/manifest.json");

    // One byte rewritten in the middle of the object.
    let mut corrupted = object.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x01;
    world.put("archives/v/archive.tar.gz", corrupted);
    let verify = world.run(&["verify", &archive, "--deep"]);
    assert_eq!(code(&verify), 1, "{}", text(&verify));
    assert!(text(&verify).contains("SHA-256"), "{}", text(&verify));

    // The object intact, but the manifest lists an entry the archive does not hold.
    world.put("archives/v/archive.tar.gz", object);
    let mut listed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut extra = listed["entries"][1].clone();
    extra["path"] = serde_json::json!("files/etc-legacy/was-there.conf");
    listed["entries"].as_array_mut().unwrap().push(extra);
    world.put(
        "archives/v/manifest.json",
        serde_json::to_vec(&listed).unwrap(),
    );
    let verify = world.run(&["verify", &archive, "--deep"]);
    assert_eq!(code(&verify), 1, "{}", text(&verify));
    assert!(
        text(&verify).contains(
            "`files/etc-legacy/was-there.conf` is in the manifest but missing from the archive"
        ),
        "{}",
        text(&verify)
    );
    // Without --deep only the object is checked, and it is intact.
    assert_eq!(code(&world.run(&["verify", &archive])), 0);

    // Forged manifests over the intact object (its whole-object SHA-256 still right): an
    // entry's hash, then a table's row count, is wrong; only --deep can tell, and it does.
    let deep_verify_under = |forged: &serde_json::Value| {
        world.put(
            "archives/v/manifest.json",
            serde_json::to_vec(forged).unwrap(),
        );
        assert_eq!(
            code(&world.run(&["verify", &archive])),
            0,
            "the object is intact"
        );
        world.run(&["verify", &archive, "--deep"])
    };
    let mut forged: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let entry = forged["entries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["kind"] == "file")
        .expect("a file entry");
    let path = entry["path"].as_str().unwrap().to_owned();
    entry["sha256"] = serde_json::json!("0".repeat(64));
    let verify = deep_verify_under(&forged);
    assert_eq!(code(&verify), 1, "{}", text(&verify));
    assert!(
        text(&verify).contains(&path),
        "names `{path}`: {}",
        text(&verify)
    );

    let mut forged: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let rows = forged["tables"][0]["rows"]
        .as_u64()
        .expect("a table's row count");
    forged["tables"][0]["rows"] = serde_json::json!(rows + 1);
    let verify = deep_verify_under(&forged);
    assert_eq!(code(&verify), 1, "{}", text(&verify));
    assert!(
        text(&verify).contains(&rows.to_string())
            && text(&verify).contains(&(rows + 1).to_string()),
        "says both counts: {}",
        text(&verify)
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_error_and_uploads_nothing() {
    let world = World::new("arc-bad");
    let tree = world.path("conf");
    config_tree(&tree);
    world.sql("CREATE TABLE present (id int)");
    let fifo = world.path("fifo-dir");
    std::fs::create_dir_all(&fifo).unwrap();
    let made = Command::new("mkfifo")
        .arg(fifo.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let done = world.run(&[
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "taken",
        "--dir",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(code(&done), 0, "{}", text(&done));
    let keys_before = world.keys();
    let dest = world.dest();
    let tree = tree.to_str().unwrap();
    let missing = world.path("no-such-dir");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--dest", &dest, "--dir", missing.to_str().unwrap()],
            "no-such-dir",
        ),
        (
            vec!["--dest", &dest, "--dir", fifo.to_str().unwrap()],
            "is a FIFO",
        ),
        (
            vec!["--dest", &dest, "--dir", tree, "--table", "public.absent"],
            "--table `public.absent`: no such table",
        ),
        (
            vec!["--dest", &dest, "--query", "broken=SELEKT 1"],
            "--query `broken`",
        ),
        (
            vec!["--dest", &dest, "--query", "semi=SELECT 1;"],
            "--query `semi`: remove the trailing `;`",
        ),
        (
            vec![
                "--dest",
                &dest,
                "--query",
                "commented=SELECT 1 -- the last line",
            ],
            "--query `commented` cannot be exported",
        ),
        (
            vec!["--dest", &dest, "--query", "two=SELECT 1; SELECT 2"],
            "--query `two`",
        ),
        (
            vec![
                "--dest",
                &dest,
                "--query",
                "escape=SELECT 1) TO STDOUT; DROP TABLE present; --",
            ],
            "--query `escape`",
        ),
        (
            vec!["--dest", "s3://Not_A_Bucket/x", "--dir", tree],
            "bucket name `Not_A_Bucket`",
        ),
        (
            vec!["--dest", "s3://no-such-bucket-sunset/x", "--dir", tree],
            "bucket `no-such-bucket-sunset` does not exist",
        ),
        (
            vec!["--dest", &dest, "--dir", tree, "--part-size", "1MiB"],
            "at least 5MiB",
        ),
        (
            vec!["--dest", &dest, "--dir", tree, "--part-size", "12 parsecs"],
            "unknown unit",
        ),
        (
            vec!["--dest", &dest, "--dir", tree, "--name", "taken"],
            "already exists",
        ),
        (
            vec!["--dest", &dest, "--dir", tree, "--name", "a/b"],
            "archive name `a/b`",
        ),
        (vec!["--dest", &dest], "nothing to archive"),
        (
            vec!["--dest", &dest, "--dir", tree, "--level", "12"],
            "--level 12",
        ),
        (
            vec!["--dest", &dest, "--dir", tree, "--tag", "novalue"],
            "expected key=value",
        ),
        (
            vec!["--dest", &dest, "--dir", tree, "--tag", "why=a&b"],
            "`&` is not allowed in a tag",
        ),
    ];
    for (args, needle) in cases {
        let mut full = vec!["create"];
        full.extend(&args);
        let output = world.run(&full);
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(needle),
            "{args:?} should say {needle:?}: {}",
            text(&output)
        );
        assert_eq!(world.keys(), keys_before, "{args:?} uploaded something");
        assert_eq!(world.open_uploads(), 0, "{args:?} left an upload open");
    }
    for (args, needle) in [
        (vec!["verify", "s3://bucket-only"], "names a bucket"),
        (
            vec!["restore", "gs://x/y", "--to", "/tmp/x"],
            "not a destination",
        ),
        (vec!["cleanup", &dest, "--older-than", "soon"], "soon"),
    ] {
        let output = world.run(&args);
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(needle),
            "{args:?}: {}",
            text(&output)
        );
    }
}

#[test]
fn an_unreadable_file_is_refused_before_anything_is_uploaded() {
    let world = World::new("arc-unreadable");
    let tree = world.path("conf");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.conf"), "readable by all").unwrap();
    let secret = tree.join("private.key");
    std::fs::write(&secret, "key").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads everything: run as `nobody` then, with a scratch tree it can traverse.
    for dir in [world.scratch.path(), world.state.path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut unprivileged = sunset_test_support::unprivileged(Path::new(BIN))
        .unwrap_or_else(|why| panic!("cannot check an unreadable file here: {why}"));
    let command = &mut unprivileged.command;
    let output = command
        .args([
            "create",
            "--dest",
            &world.dest(),
            "--dir",
            tree.to_str().unwrap(),
        ])
        .envs(service_env())
        .env("SUNSET_STATE_DIR", world.state.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        text(&output).contains("private.key` is not readable"),
        "{}",
        text(&output)
    );
    assert!(world.keys().is_empty());
    assert_eq!(world.open_uploads(), 0);
}

/// How many parts the checkpoint of the (one) archive in `state` records as acknowledged.
fn acknowledged_parts(state: &Path) -> usize {
    std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.json")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["state"]["parts"].as_object().map_or(0, |p| p.len()))
        .max()
        .unwrap_or(0)
}

/// `count` files `segment-N.bin` of `size` bytes each under `dir`, seeded from `seed`.
fn segments(dir: &Path, count: u64, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for n in 0..count {
        std::fs::write(
            dir.join(format!("segment-{n}.bin")),
            half_compressible(size, n + seed),
        )
        .unwrap();
    }
}

/// Deterministic bytes that compress about 2:1, fast to make.
fn half_compressible(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        out.extend_from_slice(&bytes[..4]);
        out.extend_from_slice(b"abcd");
    }
    out.truncate(len);
    out
}

#[test]
fn sigkilled_five_times_mid_upload_the_resumed_archive_is_exact_and_no_upload_is_left_open() {
    let world = World::new("arc-chaos");
    let tree = world.path("bulk");
    segments(&tree, 4, 100 << 20, 1);
    let secret = "pg-secret-do-not-print";
    // The same server with a password in the URL (trust authentication ignores it).
    let authority = world
        .db_url
        .split("://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let db_url = match authority.split_once('@') {
        Some((user, _)) if !user.contains(':') => {
            world.db_url.replacen('@', &format!(":{secret}@"), 1)
        }
        Some(_) => panic!("DATABASE_URL already has a password"),
        None => world
            .db_url
            .replacen("://", &format!("://postgres:{secret}@"), 1),
    };
    world.sql("CREATE TABLE events AS SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 200000) g");
    let args = [
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "bulk",
        "--dir",
        tree.to_str().unwrap(),
        "--table",
        "public.events",
        "--part-size",
        "8MiB",
        "--concurrency",
        "2",
    ];
    let mut kills = 0;
    let mut last_parts = 0;
    while kills < 5 {
        let log = world.path(&format!("run-{kills}.log"));
        let mut child = world
            .command(&args)
            .env("DATABASE_URL", &db_url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Kill once this run has added a couple of parts of its own: mid-upload, not at start.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the run ended ({status}) before kill {}: {}",
                    kills + 1,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let parts = acknowledged_parts(world.state.path());
            if parts >= last_parts + 2 {
                last_parts = parts;
                break;
            }
            assert!(Instant::now() < deadline, "no progress after kill {kills}");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let checkpoint: String = std::fs::read_dir(world.state.path())
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        assert!(
            !checkpoint.contains(secret),
            "the checkpoint holds no credential"
        );
    }
    assert_eq!(
        world.open_uploads(),
        1,
        "the killed run's upload waits to be resumed"
    );
    let output = world
        .command(&args)
        .env("DATABASE_URL", &db_url)
        .args(["--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output));
    let out = text(&output);
    assert!(!out.contains(secret), "no credential in the output: {out}");
    let done: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(
        done["parts_reused"].as_u64().unwrap() >= 10,
        "the resumed run kept the uploaded parts: {done}"
    );

    let object = world.get("archives/bulk/archive.tar.gz");
    assert!(
        object.len() > 200 << 20,
        "at least 200 MiB: {}",
        object.len()
    );
    let manifest_bytes = world.get("archives/bulk/manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(
        manifest["archive"]["sha256"],
        format!("{:x}", Sha256::digest(&object))
    );
    assert_eq!(manifest["tables"][0]["rows"], 200000);
    assert_eq!(world.open_uploads(), 0, "no multipart upload is left open");
    let manifest_text = String::from_utf8_lossy(&manifest_bytes);
    for needle in [secret, "testing"] {
        assert!(
            !manifest_text.contains(needle),
            "the manifest holds no credential ({needle})"
        );
    }
    let verify = world.run(&["verify", &format!("{}/bulk", world.dest()), "--deep"]);
    assert_eq!(code(&verify), 0, "{}", text(&verify));

    // The resumed archive restores to exactly the sources: the bytes and the rows read back.
    world.restore_matches(
        &format!("{}/bulk", world.dest()),
        "bulk",
        &tree,
        &[("public.events", "events")],
    );
}

#[test]
fn cleanup_aborts_abandoned_uploads_and_a_local_destination_works_the_same() {
    let world = World::new("arc-cleanup");
    let start = |key: &str| -> String {
        world
            .runtime
            .block_on(
                world
                    .s3
                    .create_multipart_upload()
                    .bucket(&world.bucket)
                    .key(key)
                    .send(),
            )
            .unwrap()
            .upload_id()
            .unwrap()
            .to_owned()
    };
    start("archives/abandoned/archive.tar.gz");
    // Not sunset's, or not under `archives/` as a directory: never touched.
    let foreign = [
        "archives-2026/other/archive.tar.gz",
        "archives/someone-elses.bin",
        "archives/nested/deeper/archive.tar.gz",
    ];
    for key in foreign {
        start(key);
    }
    // A `create` running now holds its run lock: its upload is left alone.
    start("archives/busy/archive.tar.gz");
    let lock = sunset_checkpoint::FileStore::in_dir(
        world.state.path(),
        &format!("archive {}/busy", world.dest()),
    )
    .lock()
    .unwrap();
    assert_eq!(world.open_uploads(), 5);
    // moto reports every upload as initiated on 2010-11-10, so only the abort side of the age
    // filter can be shown against it.
    let old = world.run(&["cleanup", &world.dest(), "--older-than", "1s"]);
    assert_eq!(code(&old), 0, "{}", text(&old));
    assert!(
        text(&old).contains("skipped archives/busy/archive.tar.gz"),
        "{}",
        text(&old)
    );
    let left: Vec<String> = world
        .runtime
        .block_on(
            world
                .s3
                .list_multipart_uploads()
                .bucket(&world.bucket)
                .send(),
        )
        .unwrap()
        .uploads()
        .iter()
        .map(|u| u.key().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = foreign.iter().map(|k| (*k).to_owned()).collect();
    expected.push("archives/busy/archive.tar.gz".into());
    expected.sort();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(left_sorted, expected, "{}", text(&old));
    drop(lock);
    let after = world.run(&["cleanup", &world.dest(), "--older-than", "1s"]);
    assert_eq!(code(&after), 0, "{}", text(&after));
    assert_eq!(world.open_uploads(), 3, "{}", text(&after));

    let tree = world.path("conf");
    config_tree(&tree);
    let local = world.path("vault");
    let output = world.run(&[
        "create",
        "--dest",
        local.to_str().unwrap(),
        "--name",
        "l1",
        "--dir",
        tree.to_str().unwrap(),
        "--part-size",
        "1MiB",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let verify = world.run(&["verify", local.join("l1").to_str().unwrap(), "--deep"]);
    assert_eq!(code(&verify), 0, "{}", text(&verify));
    let restored = world.path("restored");
    let restore = world.run(&[
        "restore",
        local.join("l1").to_str().unwrap(),
        "--to",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(code(&restore), 0, "{}", text(&restore));
    assert_eq!(snapshot(&restored.join("files/conf")), snapshot(&tree));
}

#[test]
fn storage_class_kms_encryption_and_tags_reach_the_object() {
    let world = World::new("arc-options");
    let tree = world.path("conf");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.conf"), "x = 1\n").unwrap();
    let output = world.run(&[
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "opts",
        "--dir",
        tree.to_str().unwrap(),
        "--storage-class",
        "STANDARD_IA",
        "--sse-kms-key-id",
        "alias/legacy-archive",
        "--tag",
        "team=ops",
        "--tag",
        "why=legacy metrics: 2026/11",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let key = "archives/opts/archive.tar.gz";
    let (head, tags) = world.runtime.block_on(async {
        let head = world
            .s3
            .head_object()
            .bucket(&world.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let tags = world
            .s3
            .get_object_tagging()
            .bucket(&world.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        (head, tags)
    });
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    assert_eq!(head.ssekms_key_id(), Some("alias/legacy-archive"));
    let tags: Vec<(String, String)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    let expected_tags = [
        ("team".to_owned(), "ops".to_owned()),
        ("why".to_owned(), "legacy metrics: 2026/11".to_owned()),
    ];
    assert_eq!(tags, expected_tags);
    // The manifest carries the same encryption and tags (a bucket that demands SSE-KMS takes
    // it), in the default storage class.
    let (head, tags) = world.object_meta("archives/opts/manifest.json");
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("aws:kms")
    );
    assert_eq!(head.ssekms_key_id(), Some("alias/legacy-archive"));
    assert_eq!(head.storage_class(), None);
    assert_eq!(tags, expected_tags);
}

#[test]
fn sse_kms_tags_and_object_lock_retention_reach_the_manifest_too() {
    let world = World::new("arc-locked");
    let bucket = format!("{}-lock", world.bucket);
    // A bucket policy that denies PutObject without `x-amz-server-side-encryption: aws:kms`
    // cannot be used here: moto evaluates a statement with a Condition as a plain Deny. So the
    // policy's condition is checked on what S3 reports for every object written.
    world.runtime.block_on(async {
        world
            .s3
            .create_bucket()
            .bucket(&bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .unwrap();
    });
    let tree = world.path("conf");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.conf"), "x = 1\n").unwrap();
    let output = world.run(&[
        "create",
        "--dest",
        &format!("s3://{bucket}/vault"),
        "--name",
        "kept",
        "--dir",
        tree.to_str().unwrap(),
        "--sse-kms-key-id",
        "alias/vault",
        "--retain-until",
        "2031-01-01",
        "--tag",
        "keep=yes",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    for object in ["archive.tar.gz", "manifest.json"] {
        let key = format!("vault/kept/{object}");
        let (head, tags) = world.object_meta_in(&bucket, &key);
        assert_eq!(
            head.server_side_encryption().map(|e| e.as_str()),
            Some("aws:kms"),
            "{key} breaks the bucket policy"
        );
        assert_eq!(head.ssekms_key_id(), Some("alias/vault"), "{key}");
        assert_eq!(tags, [("keep".to_owned(), "yes".to_owned())], "{key}");
        // So a retained archive cannot lose its manifest. (moto drops the retention of objects
        // made by multipart upload, so only the manifest's can be read back.)
        if object == "archive.tar.gz" {
            continue;
        }
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("COMPLIANCE"),
            "{key}"
        );
        assert_eq!(
            head.object_lock_retain_until_date().map(|d| d.secs()),
            Some(1_924_992_000),
            "{key}"
        );
    }
}

#[test]
fn a_resume_after_the_sources_changed_aborts_the_old_upload_and_archives_the_new_bytes() {
    let world = World::new("arc-changed");
    let tree = world.path("bulk");
    std::fs::create_dir_all(&tree).unwrap();
    for n in 0..3u64 {
        std::fs::write(
            tree.join(format!("part-{n}.bin")),
            half_compressible(40 << 20, n + 7),
        )
        .unwrap();
    }
    let args = [
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "changed",
        "--dir",
        tree.to_str().unwrap(),
        "--part-size",
        "5MiB",
        "--concurrency",
        "1",
    ];
    let mut child = world
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        let parts = acknowledged_parts(world.state.path()) >= 2;
        if parts {
            break;
        }
        assert!(Instant::now() < deadline, "no part was acknowledged");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The first file changes (same size): the first parts of the rebuilt stream differ.
    let changed = half_compressible(40 << 20, 99);
    std::fs::write(tree.join("part-0.bin"), &changed).unwrap();
    let output = world.command(&args).arg("--json").output().unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(
        text(&output).contains("the interrupted upload was aborted"),
        "{}",
        text(&output)
    );
    assert_eq!(world.open_uploads(), 0, "the old upload is not left behind");
    let archive = format!("{}/changed", world.dest());
    let verify = world.run(&["verify", &archive, "--deep"]);
    assert_eq!(code(&verify), 0, "{}", text(&verify));
    let restored = world.path("restored");
    let restore = world.run(&["restore", &archive, "--to", restored.to_str().unwrap()]);
    assert_eq!(code(&restore), 0, "{}", text(&restore));
    assert!(
        std::fs::read(restored.join("files/bulk/part-0.bin")).unwrap() == changed,
        "the new bytes were archived"
    );
}

#[test]
fn a_local_destination_sigkilled_mid_write_resumes_to_the_exact_archive() {
    let world = World::new("arc-local-chaos");
    let tree = world.path("bulk");
    std::fs::create_dir_all(&tree).unwrap();
    for n in 0..3u64 {
        std::fs::write(
            tree.join(format!("segment-{n}.bin")),
            half_compressible(40 << 20, n + 7),
        )
        .unwrap();
    }
    let dest = world.path("local-archives");
    std::fs::create_dir_all(&dest).unwrap();
    let args = [
        "create",
        "--dest",
        dest.to_str().unwrap(),
        "--name",
        "bulk",
        "--dir",
        tree.to_str().unwrap(),
        "--part-size",
        "5MiB",
        "--concurrency",
        "3",
    ];
    let mut last_parts = 0;
    for kill in 0..3 {
        let mut child = world
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before kill {}",
                kill + 1
            );
            let parts = acknowledged_parts(world.state.path());
            if parts >= last_parts + 2 {
                last_parts = parts;
                break;
            }
            assert!(Instant::now() < deadline, "no progress after kill {kill}");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !dest.join("bulk/manifest.json").exists(),
            "no manifest before the archive is whole"
        );
    }
    let output = world.command(&args).args(["--json"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output));
    let object = std::fs::read(dest.join("bulk/archive.tar.gz")).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("bulk/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["archive"]["sha256"],
        format!("{:x}", Sha256::digest(&object))
    );
    let verify = world.run(&["verify", &format!("{}/bulk", dest.display()), "--deep"]);
    assert_eq!(code(&verify), 0, "{}", text(&verify));
}

#[test]
fn a_closed_stdout_is_not_a_failure() {
    let world = World::new("arc-pipe");
    let dest = world.path("archives");
    std::fs::create_dir_all(&dest).unwrap();
    let out = world.run(&[
        "create",
        "--dest",
        dest.to_str().unwrap(),
        "--name",
        "one",
        "--dir",
        world.path("archives").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let (exit, stderr) = sunset_test_support::run_with_closed_stdout(&mut world.command(&[
        "list",
        dest.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(exit, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn retention_without_object_lock_and_unknown_storage_classes_are_bad_input_before_any_upload() {
    let world = World::new("arc-lockless");
    let tree = world.path("conf");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.conf"), "x").unwrap();
    for (extra, needle) in [
        (
            ["--retain-until", "2031-01-01"],
            "--retain-until needs a bucket with object lock enabled",
        ),
        (
            ["--storage-class", "GLACIER_RI"],
            "unknown storage class `GLACIER_RI` (did you mean `GLACIER_IR`?)",
        ),
    ] {
        let dest = world.dest();
        let mut args = vec!["create", "--dest", &dest, "--dir", tree.to_str().unwrap()];
        args.extend(extra);
        let out = world.run(&args);
        assert_eq!(code(&out), 2, "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{}",
            text(&out)
        );
        assert!(world.keys().is_empty());
        assert_eq!(world.open_uploads(), 0);
    }
}

#[test]
fn help_of_every_command_is_pinned() {
    expect_test::expect_file!["snapshots/help.txt"].assert_eq(&sunset_test_support::help_text(BIN));
}
