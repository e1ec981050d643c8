//! The attack corpus: archives crafted to make `restore` do harm. Each must exit 1 with `--to`
//! exactly as it was (a snapshot before and after), nothing written outside it, and the
//! database unchanged (a digest of every table and schema before and after).
//!
//! Longer than ~600 lines: one crafted archive per attack, each with its before/after oracle.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{World, code, snapshot, text};

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// One entry of a crafted archive. The path is written into the tar header as raw bytes, so
/// `..` and absolute paths reach the reader exactly as an attacker would write them.
#[derive(Clone)]
struct Item {
    path: String,
    kind: tar::EntryType,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    link: Option<String>,
    /// A header size other than the data's (a lying header).
    claimed_size: Option<u64>,
}

fn file(path: &str, data: &[u8]) -> Item {
    Item {
        path: path.into(),
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
        mode: 0o644,
        uid: 0,
        link: None,
        claimed_size: None,
    }
}

fn dir(path: &str) -> Item {
    Item {
        kind: tar::EntryType::Directory,
        mode: 0o755,
        ..file(path, b"")
    }
}

fn link(path: &str, kind: tar::EntryType, target: &str) -> Item {
    Item {
        kind,
        link: Some(target.into()),
        mode: 0o777,
        ..file(path, b"")
    }
}

fn header(item: &Item) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    let name = &mut header.as_gnu_mut().unwrap().name;
    name[..item.path.len()].copy_from_slice(item.path.as_bytes());
    header.set_entry_type(item.kind);
    header.set_mode(item.mode);
    header.set_uid(item.uid);
    header.set_gid(item.uid);
    header.set_mtime(1_700_000_000);
    header.set_size(item.claimed_size.unwrap_or(item.data.len() as u64));
    if let Some(target) = &item.link {
        let field = &mut header.as_gnu_mut().unwrap().linkname;
        field[..target.len()].copy_from_slice(target.as_bytes());
    }
    header.set_cksum();
    header
}

/// A tar.gz of the items, each header written by hand.
fn tar_gz(items: &[Item]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for item in items {
        gz.write_all(header(item).as_bytes()).unwrap();
        gz.write_all(&item.data).unwrap();
        let pad = (512 - item.data.len() % 512) % 512;
        gz.write_all(&vec![0; pad]).unwrap();
    }
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap()
}

fn manifest_entry(item: &Item) -> serde_json::Value {
    let kind = match item.kind {
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        _ => "file",
    };
    let mut entry = serde_json::json!({
        "path": item.path,
        "kind": kind,
        "size": item.claimed_size.unwrap_or(item.data.len() as u64),
        "mode": item.mode,
        "mtime": 1_700_000_000u64,
        "uid": item.uid,
        "gid": item.uid,
    });
    if kind == "file" {
        entry["sha256"] = sha256_hex(&item.data).into();
    }
    if let Some(target) = &item.link {
        entry["link_target"] = target.clone().into();
    }
    entry
}

/// Writes `dest/name/{archive.tar.gz,manifest.json}`: the manifest lists `listed` and matches
/// the object byte for byte, as a forger with write access to the bucket would make it.
fn forge(dest: &Path, name: &str, items: &[Item], listed: &[Item]) -> String {
    let object = tar_gz(items);
    let manifest = serde_json::json!({
        "format_version": 1,
        "name": name,
        "created_at": "2026-01-01T00:00:00Z",
        "source_host": "attacker",
        "tool": "sunset-archive 0.0.0",
        "archive": {
            "object": "archive.tar.gz",
            "size": object.len(),
            "sha256": sha256_hex(&object),
            "part_size": 1 << 20,
            "parts": 1,
            "gzip_level": 1,
            "gzip_block_size": 1 << 20,
        },
        "entries": listed.iter().map(manifest_entry).collect::<Vec<_>>(),
        "tables": [],
    });
    let at = dest.join(name);
    std::fs::create_dir_all(&at).unwrap();
    std::fs::write(at.join("archive.tar.gz"), &object).unwrap();
    std::fs::write(
        at.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    at.display().to_string()
}

/// Every schema, table and row of the database, as one comparable text.
fn database_digest(world: &World) -> String {
    let rows = world
        .runtime
        .block_on(world.db.query(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             ORDER BY 1",
            &[],
        ))
        .unwrap();
    let mut digest = String::new();
    for row in rows {
        let table: String = row.get(0);
        let (schema, name) = table.split_once('.').unwrap();
        let sql = format!(
            "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM \"{schema}\".\"{name}\" t"
        );
        let content: String = world
            .runtime
            .block_on(world.db.query_one(&sql, &[]))
            .unwrap()
            .get(0);
        digest.push_str(&format!("{table}={content}\n"));
    }
    let schemas: String = world
        .runtime
        .block_on(world.db.query_one(
            "SELECT string_agg(nspname::text, ',' ORDER BY nspname) FROM pg_namespace",
            &[],
        ))
        .unwrap()
        .get(0);
    digest + &schemas
}

/// `--to` holds one file of the user's beforehand; the restore must leave exactly that.
fn prepared_target(world: &World, name: &str) -> PathBuf {
    let to = world.path(name);
    std::fs::create_dir_all(to.join("files")).unwrap();
    std::fs::write(to.join("files/keep.txt"), "the user's own file\n").unwrap();
    to
}

fn restore_is_refused(world: &World, archive: &str, to: &Path, extra: &[&str], expect: &str) {
    let before_tree = snapshot(to);
    let before_db = database_digest(world);
    let mut args = vec!["restore", archive, "--to", to.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = world.run(&args);
    assert_eq!(code(&output), 1, "{archive}: {}", text(&output));
    assert!(
        text(&output).contains(expect),
        "{archive}: expected `{expect}` in\n{}",
        text(&output)
    );
    assert_eq!(snapshot(to), before_tree, "{archive}: --to changed");
    assert_eq!(
        database_digest(world),
        before_db,
        "{archive}: the database changed"
    );
}

#[test]
fn crafted_archives_are_refused_before_anything_is_written() {
    let world = World::new("arc-attack");
    let dest = world.path("forged");
    let outside = world.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let escape = format!("{}/pwned", outside.display());
    let big = Item {
        claimed_size: Some(100 << 30),
        ..file("files/app/huge.bin", &vec![7u8; 1 << 20])
    };
    let mut setuid = file("files/app/su", b"#!/bin/sh\nid\n");
    setuid.mode = 0o4755;
    let cases: Vec<(&str, Vec<Item>, Vec<Item>, &str)> = vec![
        (
            "dotdot",
            vec![file("files/../../outside/pwned", b"x")],
            vec![file("files/../../outside/pwned", b"x")],
            "component",
        ),
        (
            "absolute",
            vec![file(&escape, b"x")],
            vec![file(&escape, b"x")],
            "absolute",
        ),
        (
            "outside-roots",
            vec![file("etc/cron.d/pwned", b"x")],
            vec![file("etc/cron.d/pwned", b"x")],
            "outside files/",
        ),
        (
            "symlink-escape",
            vec![
                link(
                    "files/app/out",
                    tar::EntryType::Symlink,
                    &outside.display().to_string(),
                ),
                file("files/app/out/pwned", b"x"),
            ],
            vec![
                link(
                    "files/app/out",
                    tar::EntryType::Symlink,
                    &outside.display().to_string(),
                ),
                file("files/app/out/pwned", b"x"),
            ],
            "absolute path",
        ),
        (
            "symlink-dotdot",
            vec![link(
                "files/app/up",
                tar::EntryType::Symlink,
                "../../../outside",
            )],
            vec![link(
                "files/app/up",
                tar::EntryType::Symlink,
                "../../../outside",
            )],
            "outside the restore directory",
        ),
        (
            "through-own-link",
            vec![
                link("files/app/inner", tar::EntryType::Symlink, "real"),
                file("files/app/inner/x", b"x"),
            ],
            vec![
                link("files/app/inner", tar::EntryType::Symlink, "real"),
                file("files/app/inner/x", b"x"),
            ],
            "lies inside `files/app/inner`",
        ),
        (
            "setuid-root",
            vec![setuid.clone()],
            vec![setuid.clone()],
            "--preserve-special-bits",
        ),
        (
            "unlisted",
            vec![
                file("files/app/a.conf", b"a"),
                file("files/app/extra", b"hidden"),
            ],
            vec![file("files/app/a.conf", b"a")],
            "`files/app/extra` is in the archive but not in the manifest",
        ),
        (
            "hard-link",
            vec![link(
                "files/app/shadow",
                tar::EntryType::Link,
                "/etc/shadow",
            )],
            vec![file("files/app/shadow", b"")],
            "type Link",
        ),
        (
            "header-lies-about-size",
            vec![big.clone()],
            vec![file("files/app/huge.bin", &vec![7u8; 1 << 20])],
            "107374182400 bytes in the archive",
        ),
        ("claims-100GiB", vec![big.clone()], vec![big], "huge.bin"),
    ];
    for (name, items, listed, expect) in cases {
        let archive = forge(&dest, name, &items, &listed);
        let to = prepared_target(&world, &format!("to-{name}"));
        restore_is_refused(&world, &archive, &to, &[], expect);
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{name}: something was written outside --to"
        );
        // A missing --to is not left behind either.
        let fresh = world.path(&format!("fresh-{name}"));
        let output = world.run(&["restore", &archive, "--to", fresh.to_str().unwrap()]);
        assert_eq!(code(&output), 1, "{name}: {}", text(&output));
        assert!(
            !fresh.exists(),
            "{name}: a failed restore left {}",
            fresh.display()
        );
    }
    // Memory stays bounded whatever the headers claim, measured on that one restore.
    let archive = dest.join("claims-100GiB").display().to_string();
    let to = world.path("measured");
    let measured = std::process::Command::new("python3")
        .args([
            "-c",
            "import resource, subprocess, sys\n\
                     subprocess.run(sys.argv[1:], capture_output=True)\n\
                     print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
            super::BIN,
            "restore",
            &archive,
            "--to",
            to.to_str().unwrap(),
        ])
        .envs(sunset_test_support::service_env())
        .output()
        .expect("python3 runs the restore and reports its peak memory (apt-get install python3)");
    let peak_kib: u64 = String::from_utf8_lossy(&measured.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&measured.stderr)));
    assert!(
        peak_kib < 200 * 1024,
        "a restore of a 100 GiB claim peaked at {peak_kib} KiB"
    );
}

#[test]
fn special_bits_and_owners_are_restored_only_when_asked() {
    let world = World::new("arc-bits");
    let dest = world.path("forged");
    let mut setuid = file("files/app/su", b"#!/bin/sh\nid\n");
    setuid.mode = 0o4755;
    setuid.uid = 4242;
    let archive = forge(
        &dest,
        "bits",
        &[dir("files/app/"), setuid.clone()],
        &[dir("files/app/"), setuid],
    );
    let to = world.path("with-bits");
    let output = world.run(&[
        "restore",
        &archive,
        "--to",
        to.to_str().unwrap(),
        "--preserve-special-bits",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let meta = std::fs::metadata(to.join("files/app/su")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
    // Not asked for the owner: the file belongs to whoever restored it.
    let me = std::fs::metadata("/proc/self").unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        std::os::unix::fs::MetadataExt::uid(&me)
    );
    if std::os::unix::fs::MetadataExt::uid(&me) == 0 {
        let owned = world.path("with-owner");
        let output = world.run(&[
            "restore",
            &archive,
            "--to",
            owned.to_str().unwrap(),
            "--preserve-special-bits",
            "--same-owner",
        ]);
        assert_eq!(code(&output), 0, "{}", text(&output));
        let meta = std::fs::symlink_metadata(owned.join("files/app/su")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 4242);
    }
}

#[test]
fn an_existing_file_in_to_is_never_overwritten() {
    let world = World::new("arc-exists");
    let dest = world.path("forged");
    let archive = forge(
        &dest,
        "clash",
        &[
            file("files/a.txt", b"new"),
            file("files/keep.txt", b"theirs"),
        ],
        &[
            file("files/a.txt", b"new"),
            file("files/keep.txt", b"theirs"),
        ],
    );
    let to = prepared_target(&world, "to");
    restore_is_refused(&world, &archive, &to, &[], "already exists in --to");
    // A link planted in --to is not written through.
    let planted = prepared_target(&world, "planted");
    let outside = world.path("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::remove_dir_all(planted.join("files")).unwrap();
    std::os::unix::fs::symlink(&outside, planted.join("files")).unwrap();
    restore_is_refused(&world, &archive, &planted, &[], "as a symlink");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}

/// Decompresses an archive made by `create`, lets `edit` change entries' contents (headers
/// follow the new sizes), and compresses it again: the manifest is left alone.
fn rewrite(object: &[u8], edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut input = tar::Archive::new(flate2::read::MultiGzDecoder::new(object));
    let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let data = edit(&path, data);
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append(&header, data.as_slice()).unwrap();
    }
    out.into_inner().unwrap().finish().unwrap()
}

#[test]
fn tampered_contents_and_a_schema_carrying_sql_are_refused_and_nothing_runs() {
    let world = World::new("arc-tamper");
    world.sql(
        "CREATE TABLE public.victim (id int PRIMARY KEY); INSERT INTO public.victim VALUES (1), (2);
         CREATE SCHEMA legacy; CREATE TABLE legacy.readings (id bigint PRIMARY KEY, note text);
         INSERT INTO legacy.readings SELECT g, 'n' || g FROM generate_series(1, 500) g;",
    );
    let tree = world.path("conf");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("app.conf"), "listen: 8080\n").unwrap();
    std::fs::set_permissions(
        tree.join("app.conf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let local = world.path("vault");
    let created = world.run(&[
        "create",
        "--dest",
        local.to_str().unwrap(),
        "--name",
        "orig",
        "--dir",
        tree.to_str().unwrap(),
        "--table",
        "legacy.readings",
        "--part-size",
        "1MiB",
    ]);
    assert_eq!(code(&created), 0, "{}", text(&created));
    let original = std::fs::read(local.join("orig/archive.tar.gz")).unwrap();
    let manifest = std::fs::read(local.join("orig/manifest.json")).unwrap();
    let injected =
        "text); COMMIT; DROP TABLE public.victim; COMMIT; BEGIN; CREATE TABLE zz (id int";
    let poison = |path: &str, data: Vec<u8>| {
        if path.ends_with("schema.json") {
            let mut schema: serde_json::Value = serde_json::from_slice(&data).unwrap();
            schema["columns"][1]["data_type"] = injected.into();
            serde_json::to_vec_pretty(&schema).unwrap()
        } else {
            data
        }
    };
    let variants: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = {
        // 1. Content changed, same size, manifest left alone.
        let flipped = rewrite(&original, |path, data| {
            if path.ends_with("app.conf") {
                b"listen: 6666\n".to_vec()
            } else {
                data
            }
        });
        // 2. schema.json carries SQL, manifest left alone.
        let poisoned = rewrite(&original, poison);
        // 3. The same, with a manifest forged to match it exactly.
        let mut forged: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let schema_bytes = {
            let mut input =
                tar::Archive::new(flate2::read::MultiGzDecoder::new(poisoned.as_slice()));
            let mut found = Vec::new();
            for entry in input.entries().unwrap() {
                let mut entry = entry.unwrap();
                if entry.path().unwrap().ends_with("schema.json") {
                    std::io::Read::read_to_end(&mut entry, &mut found).unwrap();
                }
            }
            found
        };
        for entry in forged["entries"].as_array_mut().unwrap() {
            if entry["path"].as_str().unwrap().ends_with("schema.json") {
                entry["size"] = schema_bytes.len().into();
                entry["sha256"] = sha256_hex(&schema_bytes).into();
            }
        }
        forged["archive"]["size"] = poisoned.len().into();
        forged["archive"]["sha256"] = sha256_hex(&poisoned).into();
        vec![
            (
                "flipped",
                flipped,
                manifest.clone(),
                "differs from the manifest",
            ),
            (
                "poisoned",
                poisoned.clone(),
                manifest.clone(),
                "readings/schema.json` is ",
            ),
            (
                "forged",
                poisoned,
                serde_json::to_vec(&forged).unwrap(),
                "is not a plain type name",
            ),
        ]
    };
    for (name, object, manifest, expect) in variants {
        let at = local.join(name);
        std::fs::create_dir_all(&at).unwrap();
        std::fs::write(at.join("archive.tar.gz"), object).unwrap();
        std::fs::write(at.join("manifest.json"), manifest).unwrap();
        let to = prepared_target(&world, &format!("to-{name}"));
        restore_is_refused(
            &world,
            at.to_str().unwrap(),
            &to,
            &["--into-schema", "restored"],
            expect,
        );
        assert_eq!(world.int("SELECT count(*) FROM public.victim"), 2);
        assert_eq!(
            world.int("SELECT count(*) FROM pg_namespace WHERE nspname = 'restored'"),
            0
        );
    }
    // The untouched archive restores, so the refusals above were about the tampering.
    let to = world.path("to-orig");
    let output = world.run(&[
        "restore",
        local.join("orig").to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--into-schema",
        "restored",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_eq!(world.int("SELECT count(*) FROM restored.readings"), 500);
    assert_eq!(
        std::fs::read_to_string(to.join("files/conf/app.conf")).unwrap(),
        "listen: 8080\n"
    );
}

/// An S3 endpoint that serves a manifest, then starts the archive's body and goes silent.
fn stalling_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    if std::io::Read::read(&mut stream, &mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    request.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&request)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if line.contains("manifest.json") {
                    let body = serde_json::json!({
                        "format_version": 1, "name": "slow", "created_at": "2026-01-01T00:00:00Z",
                        "source_host": "h", "tool": "t",
                        "archive": {"object": "archive.tar.gz", "size": 10_000_000, "sha256": "00",
                                    "part_size": 1, "parts": 1, "gzip_level": 6, "gzip_block_size": 1},
                        "entries": [], "tables": []
                    })
                    .to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                } else {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n"
                    );
                    let _ = stream.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
                    let _ = stream.flush();
                    std::thread::sleep(std::time::Duration::from_secs(120));
                }
            });
        }
    });
    format!("http://{address}")
}

#[test]
fn a_stalled_download_fails_with_a_clear_error_instead_of_hanging() {
    let world = World::new("arc-stall");
    let to = world.path("to");
    let mut child = world
        .command(&[
            "restore",
            "s3://stalled-bucket/archives/slow",
            "--to",
            to.to_str().unwrap(),
        ])
        .env("AWS_ENDPOINT_URL", stalling_endpoint())
        .env("SUNSET_S3_STALL_TIMEOUT", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("restore still hangs on a stalled download after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        text(&output).contains("stalled: no data for 2s"),
        "{}",
        text(&output)
    );
    assert!(!to.exists(), "a failed restore left {}", to.display());
}

/// Another object with the very same contents (the gzip header's MTIME rewritten, so every
/// entry still decompresses to the bytes its manifest line lists) is not the archive the
/// manifest describes: the whole-object SHA-256 refuses it, and nothing is restored.
#[test]
fn an_object_that_is_not_the_listed_one_is_refused_even_when_every_entry_matches() {
    let world = World::new("arc-object");
    let tree = world.path("etc-legacy");
    crate::config_tree(&tree);
    let output = world.run(&[
        "create",
        "--dest",
        &world.dest(),
        "--name",
        "o",
        "--dir",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let mut object = world.get("archives/o/archive.tar.gz");
    assert_eq!(object[..2], [0x1f, 0x8b], "a gzip stream");
    object[4] ^= 0x01; // MTIME: covered by no CRC, changes no entry
    world.put("archives/o/archive.tar.gz", object);
    let to = prepared_target(&world, "restored-o");
    restore_is_refused(
        &world,
        &format!("{}/o", world.dest()),
        &to,
        &[],
        "the archive's SHA-256 is",
    );
}
