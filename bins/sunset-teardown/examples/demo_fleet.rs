//! Builds a legacy fleet in the AWS emulator for `cargo xtask demo` and `cargo xtask bench
//! teardown`, in the first region that has none yet (the emulator keeps terminated instances, so
//! a second demo needs a fresh region). Prints `region=REGION` on stdout.
//!
//! `demo_fleet` builds the fleet `sequences/legacy-metrics/decommission.yaml` names;
//! `demo_fleet --instances N` builds N plain instances tagged `Group=bench-fleet`.

mod fleet;

use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, TagSpecification};

const REGIONS: [&str; 12] = [
    "eu-north-1",
    "eu-south-1",
    "eu-west-3",
    "ap-south-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-2",
    "me-south-1",
    "af-south-1",
    "us-west-1",
    "eu-central-2",
    "ap-east-1",
];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let instances: Option<i32> = args
        .iter()
        .position(|a| a == "--instances")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--instances takes a number"));
    let (tag_key, tag_value) = match instances {
        Some(_) => ("Group", "bench-fleet"),
        None => ("Name", "legacy-collector-1"),
    };
    let base = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    for region in REGIONS {
        let config = base
            .to_builder()
            .region(aws_config::Region::new(region))
            .build();
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let existing = ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{tag_key}"))
                    .values(tag_value)
                    .build(),
            )
            .send()
            .await
            .expect("describe instances in the emulator");
        if !existing.reservations().is_empty() {
            continue;
        }
        match instances {
            Some(count) => {
                let tags = TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(fleet::tag("Group", "bench-fleet"))
                    .build();
                let mut left = count;
                while left > 0 {
                    let batch = left.min(500);
                    ec2.run_instances()
                        .image_id("ami-12c6146b")
                        .min_count(batch)
                        .max_count(batch)
                        .instance_type(InstanceType::T3Micro)
                        .tag_specifications(tags.clone())
                        .send()
                        .await
                        .expect("run instances");
                    left -= batch;
                }
            }
            None => {
                let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
                let route53 = aws_sdk_route53::Client::new(&config);
                fleet::build(&ec2, &elb, &route53, &fleet::Names::legacy_metrics()).await;
            }
        }
        #[allow(clippy::print_stdout, reason = "the region is this program's output")]
        {
            println!("region={region}");
        }
        return;
    }
    panic!(
        "every demo region already holds a fleet: restart the emulator (`cargo xtask services down`)"
    );
}
