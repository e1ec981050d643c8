//! Target resolution: the ids, Name tags, group tags and `tag:Key=Value` selectors of a sequence
//! turned into concrete resources, in as few calls as the APIs allow. A target that matches
//! nothing is an error, never a silent no-op.
//!
//! Longer than ~600 lines: one resolver per target kind, alike by design, plus the pinning that
//! compares them.

use std::collections::{BTreeMap, BTreeSet};

use sunset_plan::Text;
use sunset_plan::format::{ActionFile, ActionKind, SequenceFile};

use crate::Error;
use crate::cloud::Cloud;
use crate::model::{ActionRecord, ResourceKind, StepRecord, Target};
use crate::resources::{
    AddressInfo, HostedZone, InstanceInfo, LoadBalancerInfo, RecordInfo, SecurityGroupInfo,
    VolumeInfo, filter, fqdn,
};

/// Tag keys a bare name is also looked up under when no resource has it as its Name tag: the
/// names operators use for a group of machines.
pub const GROUP_TAG_KEYS: [&str; 4] = [
    "Group",
    "Role",
    "aws:autoscaling:groupName",
    "aws:cloudformation:stack-name",
];

/// The resource kind an action acts on; `None` for actions that need no AWS resource.
pub(crate) fn target_kind(kind: ActionKind) -> Option<ResourceKind> {
    use ActionKind::*;
    match kind {
        StopServices | StopInstances | StartInstances | TerminateInstances | Command => {
            Some(ResourceKind::Instance)
        }
        SnapshotVolumes | DetachVolumes | DeleteVolumes => Some(ResourceKind::Volume),
        ReleaseAddresses => Some(ResourceKind::Address),
        DeleteSecurityGroups | CleanSecurityGroups => Some(ResourceKind::SecurityGroup),
        DeleteLoadBalancers => Some(ResourceKind::LoadBalancer),
        RemoveDns => Some(ResourceKind::Record),
        Archive | Sql | Http | Gate | ShiftTraffic => None,
    }
}

/// Resolves targets, remembering every description it read so the plan can show current states.
pub(crate) struct Resolver<'a> {
    cloud: &'a Cloud,
    pub instances: BTreeMap<String, InstanceInfo>,
    pub volumes: BTreeMap<String, VolumeInfo>,
    addresses: Option<Vec<AddressInfo>>,
    groups: Option<Vec<SecurityGroupInfo>>,
    load_balancers: Option<Vec<LoadBalancerInfo>>,
    load_balancer_tags: bool,
    zones: Option<Vec<HostedZone>>,
    pub records: BTreeMap<String, RecordInfo>,
}

enum Spec<'t> {
    Id(&'t str),
    Selector(&'t str, &'t str),
    Name(&'t str),
}

fn spec(target: &str) -> Spec<'_> {
    if let Some(selector) = target.strip_prefix("tag:")
        && let Some((key, value)) = selector.split_once('=')
    {
        return Spec::Selector(key, value);
    }
    let is_id = ["i-", "vol-", "sg-", "eipalloc-", "arn:"]
        .iter()
        .any(|prefix| target.starts_with(prefix))
        && !target.contains(' ');
    if is_id {
        Spec::Id(target)
    } else {
        Spec::Name(target)
    }
}

fn push_unique(found: &mut Vec<Target>, target: Target) {
    if !found.iter().any(|t| t.id == target.id) {
        found.push(target);
    }
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(cloud: &'a Cloud) -> Self {
        Resolver {
            cloud,
            instances: BTreeMap::new(),
            volumes: BTreeMap::new(),
            addresses: None,
            groups: None,
            load_balancers: None,
            load_balancer_tags: false,
            zones: None,
            records: BTreeMap::new(),
        }
    }

    /// The states of the instances and volumes read so far, by id.
    pub(crate) fn known_states(&self) -> BTreeMap<String, String> {
        crate::states::Described {
            instances: self.instances.values().cloned().collect(),
            volumes: self.volumes.values().cloned().collect(),
            ..Default::default()
        }
        .states()
    }

    /// Resolves explicit targets of `kind`; the error message names the target that failed.
    pub(crate) async fn resolve(
        &mut self,
        kind: ResourceKind,
        targets: &[Text],
        zone: Option<&str>,
    ) -> Result<Vec<Target>, String> {
        let result = match kind {
            ResourceKind::Instance => self.instances_for(targets).await,
            ResourceKind::Volume => self.volumes_for(targets).await,
            ResourceKind::Address => self.addresses_for(targets).await,
            ResourceKind::SecurityGroup => self.groups_for(targets).await,
            ResourceKind::LoadBalancer => self.load_balancers_for(targets).await,
            ResourceKind::Record => self.records_for(targets, zone).await,
        };
        result.map_err(|e| match e {
            Found::Missing(message) => message,
            Found::Failed(error) => error.to_string(),
        })
    }

    async fn instances_for(&mut self, targets: &[Text]) -> Result<Vec<Target>, Found> {
        let mut found = Vec::new();
        let ids: Vec<String> = targets
            .iter()
            .filter_map(|t| match spec(t.as_str()) {
                Spec::Id(id) => Some(id.to_owned()),
                _ => None,
            })
            .collect();
        let by_id = self.cloud.instances_by_id(&ids).await?;
        let names: Vec<String> = targets
            .iter()
            .filter_map(|t| match spec(t.as_str()) {
                Spec::Name(name) => Some(name.to_owned()),
                _ => None,
            })
            .collect();
        // One listing of every instance carrying one of the names as any tag's value (each
        // listing costs a scan of the region), then the Name tag first and the group tags in
        // order, each only for the names the ones before did not match.
        let carrying = self.instances_tagged("tag-value", &names).await?;
        let tagged_with = |key: &str, values: &[String]| -> Vec<InstanceInfo> {
            carrying
                .iter()
                .filter(|i| i.tags.get(key).is_some_and(|v| values.contains(v)))
                .cloned()
                .collect()
        };
        let by_name = tagged_with("Name", &names);
        let mut unmatched: Vec<String> = names
            .iter()
            .filter(|n| !by_name.iter().any(|i| i.tags.get("Name") == Some(*n)))
            .cloned()
            .collect();
        let mut by_group: Vec<(String, InstanceInfo)> = Vec::new();
        for key in GROUP_TAG_KEYS {
            if unmatched.is_empty() {
                break;
            }
            for instance in tagged_with(key, &unmatched) {
                by_group.push((key.to_owned(), instance));
            }
            unmatched.retain(|n| !by_group.iter().any(|(k, i)| i.tags.get(k) == Some(n)));
        }
        for target in targets {
            let before = found.len();
            match spec(target.as_str()) {
                Spec::Id(id) => {
                    if let Some(instance) = by_id.iter().find(|i| i.id == id) {
                        push_unique(&mut found, self.instance_target(instance, "id".into()));
                    }
                }
                Spec::Name(name) => {
                    for instance in by_name.iter().filter(|i| i.name.as_deref() == Some(name)) {
                        push_unique(
                            &mut found,
                            self.instance_target(instance, format!("Name tag `{name}`")),
                        );
                    }
                    for (key, instance) in by_group
                        .iter()
                        .filter(|(k, i)| i.tags.get(k).map(String::as_str) == Some(name))
                    {
                        push_unique(
                            &mut found,
                            self.instance_target(instance, format!("tag {key}={name}")),
                        );
                    }
                }
                Spec::Selector(key, value) => {
                    for instance in self.instances_tagged(key, &[value.to_owned()]).await? {
                        push_unique(
                            &mut found,
                            self.instance_target(&instance, format!("tag:{key}={value}")),
                        );
                    }
                }
            }
            if found.len() == before && !targets_overlap(&found, target) {
                return Err(Found::Missing(missing_message(
                    target.as_str(),
                    "instance",
                    &GROUP_TAG_KEYS,
                )));
            }
        }
        Ok(found)
    }

    fn instance_target(&mut self, instance: &InstanceInfo, via: String) -> Target {
        self.instances.insert(instance.id.clone(), instance.clone());
        Target {
            kind: ResourceKind::Instance,
            id: instance.id.clone(),
            label: instance.name.clone(),
            via,
        }
    }

    /// Live instances whose tag `key` has one of `values` (`key` "tag-value": any tag).
    async fn instances_tagged(
        &mut self,
        key: &str,
        values: &[String],
    ) -> Result<Vec<InstanceInfo>, Error> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        // Names outlive instances (a replaced host keeps its Name), and EC2 lists terminated
        // instances for an hour: by name or tag, only instances that still exist are meant.
        let alive = ["pending", "running", "stopping", "stopped"].map(str::to_owned);
        let found = self
            .cloud
            .instances_where(
                vec![
                    if key == "tag-value" {
                        filter(key, values)
                    } else {
                        filter(&format!("tag:{key}"), values)
                    },
                    filter("instance-state-name", &alive),
                ],
                values,
            )
            .await?;
        for instance in &found {
            self.instances.insert(instance.id.clone(), instance.clone());
        }
        Ok(found)
    }

    async fn volumes_for(&mut self, targets: &[Text]) -> Result<Vec<Target>, Found> {
        let mut found = Vec::new();
        for target in targets {
            let before = found.len();
            let volumes = match spec(target.as_str()) {
                Spec::Id(id) => self
                    .cloud
                    .volumes_by_id(&[id.to_owned()])
                    .await?
                    .into_iter()
                    .map(|v| (v, "id".to_owned()))
                    .collect(),
                Spec::Name(name) => self
                    .cloud
                    .volumes_where(
                        vec![filter("tag:Name", &[name.to_owned()])],
                        &[name.to_owned()],
                    )
                    .await?
                    .into_iter()
                    .map(|v| (v, format!("Name tag `{name}`")))
                    .collect(),
                Spec::Selector(key, value) => self
                    .cloud
                    .volumes_where(
                        vec![filter(&format!("tag:{key}"), &[value.to_owned()])],
                        &[],
                    )
                    .await?
                    .into_iter()
                    .map(|v| (v, format!("tag:{key}={value}")))
                    .collect::<Vec<_>>(),
            };
            for (volume, via) in volumes {
                push_unique(&mut found, self.volume_target(&volume, via));
            }
            if found.len() == before
                && !matches!(spec(target.as_str()), Spec::Id(id) if id.starts_with("vol-"))
            {
                // A name of instances: their attached volumes.
                if let Ok(instances) = self.instances_for(std::slice::from_ref(target)).await {
                    let ids: Vec<String> = instances.iter().map(|t| t.id.clone()).collect();
                    for target in self.volumes_of_instances(&ids, true).await? {
                        push_unique(&mut found, target);
                    }
                }
            }
            if found.len() == before && !targets_overlap(&found, target) {
                return Err(Found::Missing(missing_message(
                    target.as_str(),
                    "volume (or instance with volumes)",
                    &[],
                )));
            }
        }
        Ok(found)
    }

    fn volume_target(&mut self, volume: &VolumeInfo, via: String) -> Target {
        self.volumes.insert(volume.id.clone(), volume.clone());
        Target {
            kind: ResourceKind::Volume,
            id: volume.id.clone(),
            label: volume.name.clone(),
            via,
        }
    }

    /// The volumes attached to `instance_ids` (all of them, or only the non-root ones).
    pub(crate) async fn volumes_of_instances(
        &mut self,
        instance_ids: &[String],
        with_root: bool,
    ) -> Result<Vec<Target>, Error> {
        let missing: Vec<String> = instance_ids
            .iter()
            .filter(|id| !self.instances.contains_key(*id))
            .cloned()
            .collect();
        for instance in self.cloud.instances_by_id(&missing).await? {
            self.instances.insert(instance.id.clone(), instance);
        }
        let mut volume_ids = Vec::new();
        for id in instance_ids {
            let Some(instance) = self.instances.get(id) else {
                continue;
            };
            for (device, volume) in &instance.volumes {
                if with_root || instance.root_device.as_deref() != Some(device.as_str()) {
                    volume_ids.push((volume.clone(), format!("attached to {id} as {device}")));
                }
            }
        }
        let ids: Vec<String> = volume_ids.iter().map(|(v, _)| v.clone()).collect();
        let described = self.cloud.volumes_by_id(&ids).await?;
        let mut found = Vec::new();
        for (volume_id, via) in volume_ids {
            if let Some(volume) = described.iter().find(|v| v.id == volume_id) {
                push_unique(&mut found, self.volume_target(volume, via));
            }
        }
        Ok(found)
    }

    async fn addresses_for(&mut self, targets: &[Text]) -> Result<Vec<Target>, Found> {
        let all = self.all_addresses().await?.to_vec();
        match_listed(
            targets,
            &all,
            "Elastic IP (allocation id, public IP)",
            |address, spec| match spec {
                Spec::Id(id) if address.allocation_id == *id => Some("id".to_owned()),
                Spec::Name(name) if address.public_ip.as_deref() == Some(*name) => {
                    Some("public IP".to_owned())
                }
                _ => tag_match(&address.tags, spec),
            },
            address_target,
        )
    }

    /// The Elastic IPs associated with `instance_ids`.
    pub(crate) async fn addresses_of_instances(
        &mut self,
        instance_ids: &[String],
    ) -> Result<Vec<Target>, Error> {
        let all = self.all_addresses().await?.to_vec();
        Ok(all
            .iter()
            .filter_map(|a| {
                let instance = a.instance_id.as_ref()?;
                instance_ids
                    .contains(instance)
                    .then(|| address_target(a, format!("associated with {instance}")))
            })
            .collect())
    }

    pub(crate) async fn all_addresses(&mut self) -> Result<&[AddressInfo], Error> {
        if self.addresses.is_none() {
            self.addresses = Some(self.cloud.addresses().await?);
        }
        Ok(self.addresses.as_deref().unwrap_or_default())
    }

    async fn groups_for(&mut self, targets: &[Text]) -> Result<Vec<Target>, Found> {
        let all = self.all_groups().await?.to_vec();
        match_listed(
            targets,
            &all,
            "security group (id, group name)",
            |group, spec| match spec {
                Spec::Id(id) if group.id == *id => Some("id".to_owned()),
                Spec::Name(name) if group.group_name == *name => Some("group name".to_owned()),
                _ => tag_match(&group.tags, spec),
            },
            group_target,
        )
    }

    pub(crate) async fn all_groups(&mut self) -> Result<&[SecurityGroupInfo], Error> {
        if self.groups.is_none() {
            self.groups = Some(self.cloud.security_groups().await?);
        }
        Ok(self.groups.as_deref().unwrap_or_default())
    }

    /// The security groups of `instance_ids` and `load_balancer_arns`, except VPC defaults.
    pub(crate) async fn groups_of(
        &mut self,
        instance_ids: &[String],
        load_balancer_arns: &[String],
    ) -> Result<Vec<Target>, Error> {
        let missing: Vec<String> = instance_ids
            .iter()
            .filter(|id| !self.instances.contains_key(*id))
            .cloned()
            .collect();
        for instance in self.cloud.instances_by_id(&missing).await? {
            self.instances.insert(instance.id.clone(), instance);
        }
        let mut wanted: Vec<(String, String)> = Vec::new();
        for id in instance_ids {
            if let Some(instance) = self.instances.get(id) {
                wanted.extend(
                    instance
                        .security_groups
                        .iter()
                        .map(|g| (g.clone(), format!("used by {id}"))),
                );
            }
        }
        for lb in self.all_load_balancers().await?.to_vec() {
            if load_balancer_arns.contains(&lb.arn) {
                wanted.extend(
                    lb.security_groups
                        .iter()
                        .map(|g| (g.clone(), format!("used by load balancer {}", lb.name))),
                );
            }
        }
        let all = self.all_groups().await?.to_vec();
        let mut found = Vec::new();
        for (id, via) in wanted {
            if let Some(group) = all.iter().find(|g| g.id == id && g.group_name != "default") {
                push_unique(&mut found, group_target(group, via));
            }
        }
        Ok(found)
    }

    async fn load_balancers_for(&mut self, targets: &[Text]) -> Result<Vec<Target>, Found> {
        let needs_tags = targets
            .iter()
            .any(|t| matches!(spec(t.as_str()), Spec::Selector(..)));
        if needs_tags && !self.load_balancer_tags {
            self.all_load_balancers().await?;
            let mut lbs = self.load_balancers.take().unwrap_or_default();
            let tagged = self.cloud.tag_load_balancers(&mut lbs).await;
            self.load_balancers = Some(lbs);
            tagged?;
            self.load_balancer_tags = true;
        }
        let all = self.all_load_balancers().await?.to_vec();
        match_listed(
            targets,
            &all,
            "load balancer (name, ARN)",
            |lb, spec| match spec {
                Spec::Id(arn) if lb.arn == *arn => Some("ARN".to_owned()),
                Spec::Name(name) if lb.name == *name => Some("name".to_owned()),
                Spec::Selector(..) => tag_match(&lb.tags, spec),
                _ => None,
            },
            |lb, via| Target {
                kind: ResourceKind::LoadBalancer,
                id: lb.arn.clone(),
                label: Some(lb.name.clone()),
                via,
            },
        )
    }

    pub(crate) async fn all_load_balancers(&mut self) -> Result<&[LoadBalancerInfo], Error> {
        if self.load_balancers.is_none() {
            self.load_balancers = Some(self.cloud.load_balancers().await?);
        }
        Ok(self.load_balancers.as_deref().unwrap_or_default())
    }

    async fn records_for(
        &mut self,
        names: &[Text],
        zone: Option<&str>,
    ) -> Result<Vec<Target>, Found> {
        if self.zones.is_none() {
            self.zones = Some(self.cloud.hosted_zones().await?);
        }
        let zones = self.zones.clone().unwrap_or_default();
        let mut found = Vec::new();
        for name in names {
            let record_name = fqdn(name.as_str());
            let candidates: Vec<&HostedZone> = zones
                .iter()
                .filter(|z| match zone {
                    Some(wanted) => {
                        z.id == wanted.trim_start_matches("/hostedzone/") || z.name == fqdn(wanted)
                    }
                    None => record_name == z.name || record_name.ends_with(&format!(".{}", z.name)),
                })
                .collect();
            let longest = candidates.iter().map(|z| z.name.len()).max().unwrap_or(0);
            let best: Vec<&&HostedZone> = candidates
                .iter()
                .filter(|z| z.name.len() == longest)
                .collect();
            let hosted = match best.as_slice() {
                [] => {
                    return Err(Found::Missing(format!(
                        "no hosted zone holds `{name}`{}",
                        zone.map(|z| format!(" (zone `{z}`)")).unwrap_or_default()
                    )));
                }
                [one] => **one,
                several => {
                    let ids: Vec<String> = several
                        .iter()
                        .map(|z| {
                            format!(
                                "{} ({})",
                                z.id,
                                if z.private { "private" } else { "public" }
                            )
                        })
                        .collect();
                    return Err(Found::Missing(format!(
                        "`{name}` is in several hosted zones named {}: {}; set `zone` to one of their ids",
                        several[0].name,
                        ids.join(", ")
                    )));
                }
            };
            let records = self.cloud.records_named(hosted, &record_name).await?;
            if records.is_empty() {
                return Err(Found::Missing(format!(
                    "no record named `{record_name}` in hosted zone {} ({})",
                    hosted.name, hosted.id
                )));
            }
            for record in records {
                let id = record_id(&record);
                self.records.insert(id.clone(), record.clone());
                push_unique(
                    &mut found,
                    Target {
                        kind: ResourceKind::Record,
                        id,
                        label: Some(format!("{} {}", record.name, record.record_type)),
                        via: format!("zone {}", hosted.name),
                    },
                );
            }
        }
        Ok(found)
    }
}

/// A Name tag or selector matching `tags`: how it matched.
fn tag_match(tags: &crate::resources::Tags, spec: &Spec<'_>) -> Option<String> {
    match spec {
        Spec::Name(name) if tags.get("Name").map(String::as_str) == Some(name) => {
            Some(format!("Name tag `{name}`"))
        }
        Spec::Selector(key, value) if tags.get(*key).map(String::as_str) == Some(value) => {
            Some(format!("tag:{key}={value}"))
        }
        _ => None,
    }
}

/// Matches every target against a listed kind of resource; each target must match something.
fn match_listed<T>(
    targets: &[Text],
    all: &[T],
    what: &str,
    matches: impl Fn(&T, &Spec<'_>) -> Option<String>,
    to_target: impl Fn(&T, String) -> Target,
) -> Result<Vec<Target>, Found> {
    let mut found = Vec::new();
    for target in targets {
        let before = found.len();
        let target_spec = spec(target.as_str());
        for item in all {
            if let Some(via) = matches(item, &target_spec) {
                push_unique(&mut found, to_target(item, via));
            }
        }
        if found.len() == before && !targets_overlap(&found, target) {
            return Err(Found::Missing(missing_message(target.as_str(), what, &[])));
        }
    }
    Ok(found)
}

/// The id a DNS record set is pinned by.
pub(crate) fn record_id(record: &RecordInfo) -> String {
    let mut id = format!("{}/{}/{}", record.zone_id, record.name, record.record_type);
    if let Some(set) = &record.set_identifier {
        id.push('/');
        id.push_str(set);
    }
    id
}

fn address_target(address: &AddressInfo, via: String) -> Target {
    Target {
        kind: ResourceKind::Address,
        id: address.allocation_id.clone(),
        label: address
            .tags
            .get("Name")
            .cloned()
            .or_else(|| address.public_ip.clone()),
        via,
    }
}

fn group_target(group: &SecurityGroupInfo, via: String) -> Target {
    Target {
        kind: ResourceKind::SecurityGroup,
        id: group.id.clone(),
        label: Some(
            group
                .tags
                .get("Name")
                .cloned()
                .unwrap_or_else(|| group.group_name.clone()),
        ),
        via,
    }
}

/// A target that names something an earlier target of the same action already named.
fn targets_overlap(found: &[Target], target: &Text) -> bool {
    found.iter().any(|t| t.id == target.as_str())
}

fn missing_message(target: &str, what: &str, group_keys: &[&str]) -> String {
    match spec(target) {
        Spec::Selector(key, value) => {
            format!("selector `{target}` matches no {what} (no tag {key}={value})")
        }
        Spec::Id(_) => format!("`{target}`: no such {what}"),
        Spec::Name(_) if group_keys.is_empty() => format!("`{target}` matches no {what}"),
        Spec::Name(_) => format!(
            "`{target}` matches no {what} by id, Name tag, or tags {}",
            group_keys.join(", ")
        ),
    }
}

/// A resolution failure: nothing matched (the sequence's fault) or a call failed.
enum Found {
    Missing(String),
    Failed(Error),
}

impl From<Error> for Found {
    fn from(error: Error) -> Self {
        Found::Failed(error)
    }
}

/// Resolves every action of `sequence` (or re-resolves them to compare with pinned ones).
pub(crate) async fn resolve_sequence(
    sequence: &SequenceFile,
    resolver: &mut Resolver<'_>,
) -> Result<Vec<StepRecord>, Error> {
    let mut steps = Vec::new();
    // What earlier actions will remove, for `clean_security_groups`.
    let mut removed_instances: Vec<String> = Vec::new();
    let mut removed_load_balancers: Vec<String> = Vec::new();
    for (step_name, actions) in sequence.decommission_sequence.iter() {
        let mut records: Vec<ActionRecord> = Vec::new();
        for action in actions {
            let record = resolve_action(
                step_name.as_str(),
                action,
                records.last(),
                &removed_instances,
                &removed_load_balancers,
                resolver,
            )
            .await?;
            match record.kind {
                ActionKind::TerminateInstances => removed_instances.extend(record.target_ids()),
                ActionKind::DeleteLoadBalancers => {
                    removed_load_balancers.extend(record.target_ids())
                }
                _ => {}
            }
            records.push(record);
        }
        steps.push(StepRecord {
            name: step_name.as_str().to_owned(),
            state: sunset_plan::StepState::Pending,
            actions: records,
            started_at: None,
            finished_at: None,
            next_eligible_at: None,
            failure: None,
        });
    }
    Ok(steps)
}

async fn resolve_action(
    step: &str,
    action: &ActionFile,
    previous: Option<&ActionRecord>,
    removed_instances: &[String],
    removed_load_balancers: &[String],
    resolver: &mut Resolver<'_>,
) -> Result<ActionRecord, Error> {
    let this_name = action_name(action.action);
    let fail = |message: String| Error::Resolve {
        step: step.to_owned(),
        action: this_name.clone(),
        message,
    };
    let Some(kind) = target_kind(action.action) else {
        return Ok(ActionRecord::new(action.action, Vec::new(), None));
    };
    if action.action == ActionKind::RemoveDns {
        let targets = resolver
            .resolve(
                kind,
                &action.records,
                action.zone.as_ref().map(Text::as_str),
            )
            .await
            .map_err(fail)?;
        return Ok(ActionRecord::new(action.action, targets, None));
    }
    if !action.targets.is_empty() {
        let targets = resolver
            .resolve(kind, &action.targets, None)
            .await
            .map_err(fail)?;
        return Ok(ActionRecord::new(action.action, targets, None));
    }
    if action.action == ActionKind::CleanSecurityGroups {
        let targets = resolver
            .groups_of(removed_instances, removed_load_balancers)
            .await?;
        let derived = "the security groups of the instances and load balancers this sequence removes, each deleted once nothing else uses it".to_owned();
        return Ok(ActionRecord::new(action.action, targets, Some(derived)));
    }
    let Some(previous) = previous.filter(|p| !p.targets.is_empty()) else {
        if action.action == ActionKind::Command {
            return Ok(ActionRecord::new(action.action, Vec::new(), None));
        }
        return Err(fail(format!(
            "`{this_name}` has no `targets` and no action before it in the step to take them from"
        )));
    };
    let previous_kind = previous.targets[0].kind;
    let previous_name = action_name(previous.kind);
    let (targets, derived) = match (kind, previous_kind) {
        (wanted, had) if wanted == had => (
            previous.targets.clone(),
            format!("the targets of `{previous_name}` before it"),
        ),
        (ResourceKind::Volume, ResourceKind::Instance) => {
            let targets = resolver
                .volumes_of_instances(&previous.target_ids(), false)
                .await?;
            (
                targets,
                format!(
                    "the data volumes (not the root volume) of the instances of `{previous_name}`"
                ),
            )
        }
        (ResourceKind::Address, ResourceKind::Instance) => {
            let targets = resolver
                .addresses_of_instances(&previous.target_ids())
                .await?;
            (
                targets,
                format!("the Elastic IPs of the instances of `{previous_name}`"),
            )
        }
        (ResourceKind::Instance, ResourceKind::Volume) => {
            let mut targets = Vec::new();
            for id in previous.target_ids() {
                if let Some(volume) = resolver.volumes.get(&id) {
                    for attachment in volume.attachments.clone() {
                        let instance = resolver
                            .cloud
                            .instances_by_id(std::slice::from_ref(&attachment.instance_id))
                            .await?;
                        for instance in instance {
                            push_unique(
                                &mut targets,
                                resolver.instance_target(&instance, format!("has {id} attached")),
                            );
                        }
                    }
                }
            }
            (
                targets,
                format!("the instances the volumes of `{previous_name}` are attached to"),
            )
        }
        _ => {
            return Err(fail(format!(
                "`{this_name}` has no `targets` and can not take them from `{previous_name}` before it (it acts on {}s)",
                previous_kind
                    .noun(2)
                    .trim_start_matches("2 ")
                    .trim_end_matches('s')
            )));
        }
    };
    if targets.is_empty() {
        return Err(fail(format!(
            "`{this_name}` has no `targets`, and {derived} are none"
        )));
    }
    Ok(ActionRecord::new(action.action, targets, Some(derived)))
}

/// The sequence file's name of an action kind (`snapshot_volumes`).
pub fn action_name(kind: ActionKind) -> String {
    kind.as_str().to_owned()
}

/// The ids of pinned targets and freshly resolved ones differ: says how.
pub(crate) fn difference(pinned: &[Target], fresh: &[Target]) -> Option<String> {
    let old: BTreeSet<&str> = pinned.iter().map(|t| t.id.as_str()).collect();
    let new: BTreeSet<&str> = fresh.iter().map(|t| t.id.as_str()).collect();
    if old == new {
        return None;
    }
    let gone: Vec<&str> = old.difference(&new).copied().collect();
    let added: Vec<&str> = new.difference(&old).copied().collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("now also {}", added.join(", ")));
    }
    if !gone.is_empty() {
        parts.push(format!("no longer {}", gone.join(", ")));
    }
    Some(parts.join("; "))
}
