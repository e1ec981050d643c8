//! The services `cargo xtask services up` provides are real: PostgreSQL answers queries, and
//! aws-sdk-s3 and aws-sdk-ec2 calls work against the emulator at `AWS_ENDPOINT_URL`.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sunset_test_support::{aws_config, connect, database_url, unique_name};

#[tokio::test]
async fn postgres_answers_queries() {
    let client = connect(&database_url()).await;
    let row = client
        .query_one(
            "SELECT 1::int4, current_setting('server_version_num')::int4",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, i32>(1) >= 120_000, "PostgreSQL 12 or newer");
}

#[tokio::test]
async fn s3_calls_work_against_the_emulator_including_multipart() {
    let config = aws_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = unique_name("sunset-it");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    s3.put_object()
        .bucket(&bucket)
        .key("hello.txt")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key("hello.txt")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(body.into_bytes().as_ref(), b"hello");

    // Multipart with ListParts: the calls the archiver's resume depends on.
    let upload = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("big.bin")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().expect("an upload id");
    let part_size = 5 * 1024 * 1024;
    let mut completed = Vec::new();
    for number in 1..=2 {
        let data = vec![u8::try_from(number).unwrap(); part_size];
        let part = s3
            .upload_part()
            .bucket(&bucket)
            .key("big.bin")
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
    }
    let parts = s3
        .list_parts()
        .bucket(&bucket)
        .key("big.bin")
        .upload_id(upload_id)
        .send()
        .await
        .expect("ListParts");
    let numbers: Vec<i32> = parts
        .parts()
        .iter()
        .filter_map(|p| p.part_number())
        .collect();
    assert_eq!(numbers, [1, 2]);
    s3.complete_multipart_upload()
        .bucket(&bucket)
        .key("big.bin")
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.content_length(),
        Some(2 * i64::try_from(part_size).unwrap())
    );
    let open = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(open.uploads().is_empty(), "no multipart upload left open");
}

#[tokio::test]
async fn ec2_calls_work_against_the_emulator() {
    let config = aws_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let name = unique_name("sunset-it-volume");
    let volume = ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Volume)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("Name")
                        .value(&name)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("CreateVolume");
    let found = ec2
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values(&name)
                .build(),
        )
        .send()
        .await
        .expect("DescribeVolumes");
    let ids: Vec<&str> = found
        .volumes()
        .iter()
        .filter_map(|v| v.volume_id())
        .collect();
    assert_eq!(ids, [volume.volume_id().unwrap()]);
}
