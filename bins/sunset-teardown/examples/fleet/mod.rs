//! The legacy fleet of the examples, built through the SDK: shared by the tests and the demo
//! (`examples/demo_fleet.rs`), so both exercise the same world.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "the tests and the demo each use a part"
)]

use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

/// The fleet of the legacy-metrics example, under a prefix.
pub struct Fleet {
    pub collectors: Vec<String>,
    pub data_volume: String,
    pub group_id: String,
    pub lb_arn: String,
    pub zone_id: String,
    pub record: String,
    pub address: String,
    pub names: Names,
}

/// The names a fleet is built with (and a sequence refers to).
#[derive(Clone)]
pub struct Names {
    pub collectors: Vec<String>,
    pub group_tag: String,
    pub volume: String,
    pub lb: String,
    pub zone: String,
    pub record: String,
    pub security_group: String,
}

impl Names {
    pub fn prefixed(prefix: &str) -> Names {
        Names {
            collectors: vec![
                format!("{prefix}-collector-1"),
                format!("{prefix}-collector-2"),
            ],
            group_tag: format!("{prefix}-collector-instances"),
            volume: format!("{prefix}-data-vol-1"),
            // ELB names: at most 32 characters.
            lb: format!("lb-{}", &prefix[prefix.len().saturating_sub(20)..]).replace('_', "-"),
            zone: format!("{prefix}.internal").replace('_', "-"),
            record: format!("metrics.{prefix}.internal").replace('_', "-"),
            security_group: format!("{prefix}-collectors"),
        }
    }

    /// The names `sequences/legacy-metrics/decommission.yaml` uses.
    pub fn legacy_metrics() -> Names {
        Names {
            collectors: vec!["legacy-collector-1".into(), "legacy-collector-2".into()],
            group_tag: "legacy-collector-instances".into(),
            volume: "prometheus-data-vol-1".into(),
            lb: "legacy-metrics-lb".into(),
            zone: "internal".into(),
            record: "legacy-metrics.internal".into(),
            security_group: "legacy-collectors".into(),
        }
    }
}

/// Builds the legacy fleet: two collectors (Name tags and a Group tag) in a security group, a
/// data volume attached to the first, an Elastic IP on the second, a load balancer in the
/// group, and a DNS record in its own hosted zone.
pub async fn build(
    ec2: &aws_sdk_ec2::Client,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    route53: &aws_sdk_route53::Client,
    names: &Names,
) -> Fleet {
    {
        let vpc = ec2
            .describe_vpcs()
            .filters(Filter::builder().name("is-default").values("true").build())
            .send()
            .await
            .unwrap()
            .vpcs()[0]
            .vpc_id()
            .unwrap()
            .to_owned();
        let subnets: Vec<(String, String)> = ec2
            .describe_subnets()
            .filters(Filter::builder().name("vpc-id").values(&vpc).build())
            .send()
            .await
            .unwrap()
            .subnets()
            .iter()
            .map(|s| {
                (
                    s.subnet_id().unwrap().to_owned(),
                    s.availability_zone().unwrap().to_owned(),
                )
            })
            .collect();
        let group_id = ec2
            .create_security_group()
            .group_name(&names.security_group)
            .description("legacy collectors")
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_owned();
        let mut collectors = Vec::new();
        for name in &names.collectors {
            let tags = TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag("Name", name))
                .tags(tag("Group", &names.group_tag))
                .build();
            let run = ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .min_count(1)
                .max_count(1)
                .instance_type(InstanceType::T3Micro)
                .security_group_ids(&group_id)
                .subnet_id(&subnets[0].0)
                .tag_specifications(tags)
                .send()
                .await
                .unwrap();
            collectors.push(run.instances()[0].instance_id().unwrap().to_owned());
        }
        let volume = ec2
            .create_volume()
            .availability_zone(&subnets[0].1)
            .size(20)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .tags(tag("Name", &names.volume))
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .volume_id()
            .unwrap()
            .to_owned();
        ec2.attach_volume()
            .volume_id(&volume)
            .instance_id(&collectors[0])
            .device("/dev/sdf")
            .send()
            .await
            .unwrap();
        let address = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .send()
            .await
            .unwrap()
            .allocation_id()
            .unwrap()
            .to_owned();
        ec2.associate_address()
            .allocation_id(&address)
            .instance_id(&collectors[1])
            .send()
            .await
            .unwrap();
        let lb = elb
            .create_load_balancer()
            .name(&names.lb)
            .subnets(&subnets[0].0)
            .subnets(&subnets[1].0)
            .security_groups(&group_id)
            .send()
            .await
            .unwrap();
        let lb_arn = lb.load_balancers()[0]
            .load_balancer_arn()
            .unwrap()
            .to_owned();
        let zone_id = fresh_zone(route53, &names.zone).await;
        let record = ResourceRecordSet::builder()
            .name(&names.record)
            .r#type(RrType::A)
            .ttl(300)
            .resource_records(ResourceRecord::builder().value("10.1.2.3").build().unwrap())
            .build()
            .unwrap();
        route53
            .change_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .change_batch(
                ChangeBatch::builder()
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Create)
                            .resource_record_set(record)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        Fleet {
            collectors,
            data_volume: volume,
            group_id,
            lb_arn,
            zone_id,
            record: names.record.clone(),
            address,
            names: names.clone(),
        }
    }
}

/// A hosted zone named `name`, after removing leftovers of the same name from earlier runs.
pub async fn fresh_zone(route53: &aws_sdk_route53::Client, name: &str) -> String {
    let fqdn = format!("{name}.");
    for zone in route53
        .list_hosted_zones()
        .send()
        .await
        .unwrap()
        .hosted_zones()
    {
        if zone.name() == fqdn {
            let id = zone.id().to_owned();
            let sets = route53
                .list_resource_record_sets()
                .hosted_zone_id(&id)
                .send()
                .await
                .unwrap();
            let changes: Vec<Change> = sets
                .resource_record_sets()
                .iter()
                .filter(|s| !matches!(s.r#type(), RrType::Soa | RrType::Ns))
                .map(|s| {
                    Change::builder()
                        .action(ChangeAction::Delete)
                        .resource_record_set(s.clone())
                        .build()
                        .unwrap()
                })
                .collect();
            if !changes.is_empty() {
                route53
                    .change_resource_record_sets()
                    .hosted_zone_id(&id)
                    .change_batch(
                        ChangeBatch::builder()
                            .set_changes(Some(changes))
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            route53.delete_hosted_zone().id(&id).send().await.unwrap();
        }
    }
    let created = route53
        .create_hosted_zone()
        .name(&fqdn)
        .caller_reference(format!("{name}-{:?}", std::time::SystemTime::now()))
        .send()
        .await
        .unwrap();
    created
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned()
}

pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}
