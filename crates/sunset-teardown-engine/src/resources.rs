//! What the runner knows of each AWS resource, read in as few calls as the APIs allow
//! (many ids per call, paginators everywhere). `described` keeps the SDK's full description for
//! the inventory file written before a resource is changed.
//!
//! Longer than ~600 lines: one describe-and-summarize pair per resource kind (six kinds), alike
//! by design.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::cloud::{Cloud, IDS_PER_CALL};

pub(crate) type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub name: Option<String>,
    pub state: String,
    pub instance_type: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub vpc_id: Option<String>,
    pub root_device: Option<String>,
    pub security_groups: Vec<String>,
    /// Attached EBS volumes: device name to volume id.
    pub volumes: BTreeMap<String, String>,
    pub tags: Tags,
    pub described: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    pub id: String,
    pub name: Option<String>,
    pub state: String,
    pub size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub availability_zone: Option<String>,
    pub attachments: Vec<Attachment>,
    pub tags: Tags,
    pub described: String,
}

/// Where a volume is attached: what `rollback` needs to attach it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub instance_id: String,
    pub device: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddressInfo {
    pub allocation_id: String,
    pub public_ip: Option<String>,
    pub association_id: Option<String>,
    pub instance_id: Option<String>,
    pub network_interface_id: Option<String>,
    pub tags: Tags,
    pub described: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecurityGroupInfo {
    pub id: String,
    pub group_name: String,
    pub vpc_id: Option<String>,
    /// Other groups this one's rules name (ingress and egress).
    pub references: Vec<String>,
    pub tags: Tags,
    pub described: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadBalancerInfo {
    pub arn: String,
    pub name: String,
    pub dns_name: Option<String>,
    pub state: String,
    pub kind: Option<String>,
    pub security_groups: Vec<String>,
    pub tags: Tags,
    pub described: String,
}

/// One DNS record set, with everything needed to create it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    pub zone_id: String,
    pub zone_name: String,
    pub name: String,
    pub record_type: String,
    pub ttl: Option<i64>,
    pub values: Vec<String>,
    pub alias: Option<AliasInfo>,
    pub set_identifier: Option<String>,
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasInfo {
    pub hosted_zone_id: String,
    pub dns_name: String,
    pub evaluate_target_health: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub volume_id: Option<String>,
    pub state: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostedZone {
    pub id: String,
    pub name: String,
    pub private: bool,
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

pub(crate) fn filter(name: &str, values: &[String]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.to_vec()))
        .build()
}

/// Normalises a DNS name to Route 53's form: lower case, trailing dot.
pub(crate) fn fqdn(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    }
}

fn instance_info(instance: &aws_sdk_ec2::types::Instance) -> Option<InstanceInfo> {
    let tags = tags_of(instance.tags());
    Some(InstanceInfo {
        id: instance.instance_id()?.to_owned(),
        name: tags.get("Name").cloned(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "unknown".to_owned()),
        instance_type: instance.instance_type().map(|t| t.as_str().to_owned()),
        private_ip: instance.private_ip_address().map(str::to_owned),
        public_ip: instance.public_ip_address().map(str::to_owned),
        vpc_id: instance.vpc_id().map(str::to_owned),
        root_device: instance.root_device_name().map(str::to_owned),
        security_groups: instance
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect(),
        volumes: instance
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some((
                    m.device_name()?.to_owned(),
                    m.ebs()?.volume_id()?.to_owned(),
                ))
            })
            .collect(),
        tags,
        described: format!("{instance:#?}"),
    })
}

fn volume_info(volume: &aws_sdk_ec2::types::Volume) -> Option<VolumeInfo> {
    let tags = tags_of(volume.tags());
    Some(VolumeInfo {
        id: volume.volume_id()?.to_owned(),
        name: tags.get("Name").cloned(),
        state: volume
            .state()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "unknown".to_owned()),
        size_gib: volume.size(),
        volume_type: volume.volume_type().map(|t| t.as_str().to_owned()),
        availability_zone: volume.availability_zone().map(str::to_owned),
        attachments: volume
            .attachments()
            .iter()
            .filter_map(|a| {
                Some(Attachment {
                    instance_id: a.instance_id()?.to_owned(),
                    device: a.device().unwrap_or_default().to_owned(),
                    state: a.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                })
            })
            .collect(),
        tags,
        described: format!("{volume:#?}"),
    })
}

impl Cloud {
    /// Instances by id; ids that do not exist are simply absent from the answer.
    pub async fn instances_by_id(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Error> {
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_CALL) {
            found.extend(
                self.instances_where(vec![filter("instance-id", chunk)], chunk)
                    .await?,
            );
        }
        Ok(found)
    }

    /// Instances matching every filter (one paginated call).
    pub async fn instances_where(
        &self,
        filters: Vec<Filter>,
        audit_ids: &[String],
    ) -> Result<Vec<InstanceInfo>, Error> {
        let pages = self
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(1000)
            .into_paginator()
            .send()
            .try_collect();
        let mut found = Vec::new();
        for page in self
            .call("ec2", "DescribeInstances", false, audit_ids, pages)
            .await?
        {
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().filter_map(instance_info));
            }
        }
        Ok(found)
    }

    pub async fn volumes_by_id(&self, ids: &[String]) -> Result<Vec<VolumeInfo>, Error> {
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_CALL) {
            found.extend(
                self.volumes_where(vec![filter("volume-id", chunk)], chunk)
                    .await?,
            );
        }
        Ok(found)
    }

    pub async fn volumes_where(
        &self,
        filters: Vec<Filter>,
        audit_ids: &[String],
    ) -> Result<Vec<VolumeInfo>, Error> {
        let pages = self
            .ec2
            .describe_volumes()
            .set_filters(Some(filters))
            .max_results(500)
            .into_paginator()
            .send()
            .try_collect();
        let mut found = Vec::new();
        for page in self
            .call("ec2", "DescribeVolumes", false, audit_ids, pages)
            .await?
        {
            found.extend(page.volumes().iter().filter_map(volume_info));
        }
        Ok(found)
    }

    /// Every Elastic IP of the region (the API has no paginator; an account holds few).
    pub async fn addresses(&self) -> Result<Vec<AddressInfo>, Error> {
        let output = self
            .call(
                "ec2",
                "DescribeAddresses",
                false,
                &[],
                self.ec2.describe_addresses().send(),
            )
            .await?;
        Ok(output
            .addresses()
            .iter()
            .filter_map(|a| {
                Some(AddressInfo {
                    allocation_id: a.allocation_id()?.to_owned(),
                    public_ip: a.public_ip().map(str::to_owned),
                    association_id: a.association_id().map(str::to_owned),
                    instance_id: a.instance_id().map(str::to_owned),
                    network_interface_id: a.network_interface_id().map(str::to_owned),
                    tags: tags_of(a.tags()),
                    described: format!("{a:#?}"),
                })
            })
            .collect())
    }

    /// Every security group of the region.
    pub async fn security_groups(&self) -> Result<Vec<SecurityGroupInfo>, Error> {
        let pages = self
            .ec2
            .describe_security_groups()
            .max_results(1000)
            .into_paginator()
            .send()
            .try_collect();
        let mut found = Vec::new();
        for page in self
            .call("ec2", "DescribeSecurityGroups", false, &[], pages)
            .await?
        {
            for group in page.security_groups() {
                let Some(id) = group.group_id() else { continue };
                let references = group
                    .ip_permissions()
                    .iter()
                    .chain(group.ip_permissions_egress())
                    .flat_map(|p| p.user_id_group_pairs())
                    .filter_map(|pair| pair.group_id().map(str::to_owned))
                    .filter(|other| other != id)
                    .collect();
                found.push(SecurityGroupInfo {
                    id: id.to_owned(),
                    group_name: group.group_name().unwrap_or_default().to_owned(),
                    vpc_id: group.vpc_id().map(str::to_owned),
                    references,
                    tags: tags_of(group.tags()),
                    described: format!("{group:#?}"),
                });
            }
        }
        Ok(found)
    }

    /// Network interfaces that carry any of `group_ids`, as (interface, group ids, owner).
    pub async fn interfaces_using(
        &self,
        group_ids: &[String],
    ) -> Result<Vec<(String, Vec<String>, String)>, Error> {
        let mut found = Vec::new();
        for chunk in group_ids.chunks(IDS_PER_CALL) {
            let pages = self
                .ec2
                .describe_network_interfaces()
                .filters(filter("group-id", chunk))
                .into_paginator()
                .send()
                .try_collect();
            for page in self
                .call("ec2", "DescribeNetworkInterfaces", false, chunk, pages)
                .await?
            {
                for interface in page.network_interfaces() {
                    let owner = interface
                        .attachment()
                        .and_then(|a| a.instance_id())
                        .map(str::to_owned)
                        .or_else(|| interface.description().map(str::to_owned))
                        .unwrap_or_default();
                    found.push((
                        interface
                            .network_interface_id()
                            .unwrap_or_default()
                            .to_owned(),
                        interface
                            .groups()
                            .iter()
                            .filter_map(|g| g.group_id().map(str::to_owned))
                            .collect(),
                        owner,
                    ));
                }
            }
        }
        Ok(found)
    }

    /// Snapshots this run created, found by the tags they were created with.
    pub async fn snapshots_of_run(&self, run: &str) -> Result<Vec<SnapshotInfo>, Error> {
        let pages = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter("tag:sunset:run", &[run.to_owned()]))
            .into_paginator()
            .send()
            .try_collect();
        let mut found = Vec::new();
        for page in self
            .call("ec2", "DescribeSnapshots", false, &[], pages)
            .await?
        {
            for snapshot in page.snapshots() {
                let Some(id) = snapshot.snapshot_id() else {
                    continue;
                };
                found.push(SnapshotInfo {
                    id: id.to_owned(),
                    volume_id: snapshot.volume_id().map(str::to_owned),
                    state: snapshot
                        .state()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    tags: tags_of(snapshot.tags()),
                });
            }
        }
        Ok(found)
    }

    /// Instances with termination protection on, asked a few at a time (the attribute has no
    /// batch form).
    pub async fn termination_protected(&self, ids: &[String]) -> Result<Vec<String>, Error> {
        let checks = stream::iter(ids.iter().cloned())
            .map(|id| async move {
                let output = self
                    .call(
                        "ec2",
                        "DescribeInstanceAttribute",
                        false,
                        std::slice::from_ref(&id),
                        self.ec2
                            .describe_instance_attribute()
                            .instance_id(&id)
                            .attribute(InstanceAttributeName::DisableApiTermination)
                            .send(),
                    )
                    .await?;
                let protected = output
                    .disable_api_termination()
                    .and_then(|v| v.value())
                    .unwrap_or(false);
                Ok::<_, Error>(protected.then_some(id))
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(checks.into_iter().flatten().collect())
    }

    pub async fn load_balancers(&self) -> Result<Vec<LoadBalancerInfo>, Error> {
        let pages = self
            .elb
            .describe_load_balancers()
            .into_paginator()
            .send()
            .try_collect();
        let mut found = Vec::new();
        for page in self
            .call("elbv2", "DescribeLoadBalancers", false, &[], pages)
            .await?
        {
            for lb in page.load_balancers() {
                let Some(arn) = lb.load_balancer_arn() else {
                    continue;
                };
                found.push(LoadBalancerInfo {
                    arn: arn.to_owned(),
                    name: lb.load_balancer_name().unwrap_or_default().to_owned(),
                    dns_name: lb.dns_name().map(str::to_owned),
                    state: lb
                        .state()
                        .and_then(|s| s.code())
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_else(|| "unknown".to_owned()),
                    kind: lb.r#type().map(|t| t.as_str().to_owned()),
                    security_groups: lb.security_groups().to_vec(),
                    tags: Tags::new(),
                    described: format!("{lb:#?}"),
                });
            }
        }
        Ok(found)
    }

    /// Fills in the tags of load balancers (20 per call, the API's limit).
    pub async fn tag_load_balancers(&self, lbs: &mut [LoadBalancerInfo]) -> Result<(), Error> {
        let arns: Vec<String> = lbs.iter().map(|lb| lb.arn.clone()).collect();
        for chunk in arns.chunks(20) {
            let output = self
                .call(
                    "elbv2",
                    "DescribeTags",
                    false,
                    chunk,
                    self.elb
                        .describe_tags()
                        .set_resource_arns(Some(chunk.to_vec()))
                        .send(),
                )
                .await?;
            for description in output.tag_descriptions() {
                let Some(lb) = lbs
                    .iter_mut()
                    .find(|lb| Some(lb.arn.as_str()) == description.resource_arn())
                else {
                    continue;
                };
                lb.tags = description
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t.key()?.to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        ))
                    })
                    .collect();
            }
        }
        Ok(())
    }

    pub async fn deletion_protected(&self, arn: &str) -> Result<bool, Error> {
        let output = self
            .call(
                "elbv2",
                "DescribeLoadBalancerAttributes",
                false,
                &[arn.to_owned()],
                self.elb
                    .describe_load_balancer_attributes()
                    .load_balancer_arn(arn)
                    .send(),
            )
            .await?;
        Ok(output
            .attributes()
            .iter()
            .any(|a| a.key() == Some("deletion_protection.enabled") && a.value() == Some("true")))
    }

    pub async fn hosted_zones(&self) -> Result<Vec<HostedZone>, Error> {
        let pages = self
            .route53
            .list_hosted_zones()
            .into_paginator()
            .send()
            .try_collect();
        let mut zones = Vec::new();
        for page in self
            .call("route53", "ListHostedZones", false, &[], pages)
            .await?
        {
            for zone in page.hosted_zones() {
                zones.push(HostedZone {
                    id: zone.id().trim_start_matches("/hostedzone/").to_owned(),
                    name: fqdn(zone.name()),
                    private: zone.config().is_some_and(|c| c.private_zone()),
                });
            }
        }
        Ok(zones)
    }

    /// The record sets named exactly `name` in `zone` (every type).
    pub async fn records_named(
        &self,
        zone: &HostedZone,
        name: &str,
    ) -> Result<Vec<RecordInfo>, Error> {
        let name = fqdn(name);
        let mut found = Vec::new();
        let mut start: Option<(String, aws_sdk_route53::types::RrType, Option<String>)> = None;
        loop {
            let request = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(&zone.id)
                .start_record_name(start.as_ref().map_or(name.as_str(), |s| s.0.as_str()))
                .set_start_record_type(start.as_ref().map(|s| s.1.clone()))
                .set_start_record_identifier(start.as_ref().and_then(|s| s.2.clone()));
            let output = self
                .call(
                    "route53",
                    "ListResourceRecordSets",
                    false,
                    std::slice::from_ref(&name),
                    request.send(),
                )
                .await?;
            let mut past = false;
            for set in output.resource_record_sets() {
                if fqdn(set.name()) != name {
                    past = true;
                    continue;
                }
                found.push(RecordInfo {
                    zone_id: zone.id.clone(),
                    zone_name: zone.name.clone(),
                    name: fqdn(set.name()),
                    record_type: set.r#type().as_str().to_owned(),
                    ttl: set.ttl(),
                    values: set
                        .resource_records()
                        .iter()
                        .map(|r| r.value().to_owned())
                        .collect(),
                    alias: set.alias_target().map(|a| AliasInfo {
                        hosted_zone_id: a.hosted_zone_id().to_owned(),
                        dns_name: a.dns_name().to_owned(),
                        evaluate_target_health: a.evaluate_target_health(),
                    }),
                    set_identifier: set.set_identifier().map(str::to_owned),
                    weight: set.weight(),
                });
            }
            if past || !output.is_truncated() {
                break;
            }
            match (output.next_record_name(), output.next_record_type()) {
                (Some(next), Some(kind)) => {
                    start = Some((
                        next.to_owned(),
                        kind.clone(),
                        output.next_record_identifier().map(str::to_owned),
                    ))
                }
                _ => break,
            }
        }
        // The zone apex's own SOA and NS records are not the application's to remove.
        found.retain(|r| !(r.name == zone.name && matches!(r.record_type.as_str(), "SOA" | "NS")));
        Ok(found)
    }
}
