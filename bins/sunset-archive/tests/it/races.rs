//! Two creates of one archive at once: S3's conditional writes (`If-None-Match: *` on the
//! completion of the upload and on the manifest) decide, not a check made when the run began, so
//! the later create fails and what the other wrote stays as it was.

use super::*;

use sunset_archive_engine::{ARCHIVE_OBJECT, MANIFEST_OBJECT};

/// Starts a create of `name`, waits until it has parts in S3, writes `object` of the same archive
/// as another create would, and returns the finished run with what that object then holds.
fn race(world: &World, name: &str, object: &str) -> (Output, Vec<u8>) {
    let tree = world.path(name);
    segments(&tree, 3, 16 << 20, 7);
    let state = world.path(&format!("{name}-state"));
    std::fs::create_dir_all(&state).unwrap();
    let child = world
        .command(&[
            "create",
            "--dest",
            &world.dest(),
            "--name",
            name,
            "--dir",
            tree.to_str().unwrap(),
            "--part-size",
            "5MiB",
            "--concurrency",
            "1",
        ])
        .env("SUNSET_STATE_DIR", &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged_parts(&state) == 0 {
        assert!(
            Instant::now() < deadline,
            "no part was acknowledged within 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let key = format!("archives/{name}/{object}");
    let theirs = format!("written by another create of {name}").into_bytes();
    world
        .runtime
        .block_on(
            world
                .s3
                .put_object()
                .bucket(&world.bucket)
                .key(&key)
                .body(theirs.clone().into())
                .send(),
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let now = world.runtime.block_on(async {
        let object = world
            .s3
            .get_object()
            .bucket(&world.bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        object.body.collect().await.unwrap().into_bytes().to_vec()
    });
    assert_eq!(
        now,
        theirs,
        "the other create's {object} was overwritten: {}",
        text(&output)
    );
    (output, now)
}

#[test]
fn a_create_whose_archive_object_appeared_meanwhile_overwrites_nothing() {
    let world = World::new("arc-race-data");
    let (output, _) = race(&world, "raced", ARCHIVE_OBJECT);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        text(&output).contains("CompleteMultipartUpload")
            && text(&output).contains("PreconditionFailed"),
        "{}",
        text(&output)
    );
    assert!(
        !world
            .keys()
            .contains(&format!("archives/raced/{MANIFEST_OBJECT}")),
        "no manifest for an archive that is not ours: {:?}",
        world.keys()
    );
}

#[test]
fn a_create_whose_manifest_appeared_meanwhile_overwrites_nothing() {
    let world = World::new("arc-race-manifest");
    let (output, _) = race(&world, "raced", MANIFEST_OBJECT);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        text(&output).contains("PutObject") && text(&output).contains("PreconditionFailed"),
        "{}",
        text(&output)
    );
}
