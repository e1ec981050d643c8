//! What state each target is in, as one line of text (`running`, `in-use, attached to i-... as
//! /dev/sdf`, `present: 10.0.0.1`): shown by `plan` and recorded before each action, so
//! rollback knows what it may undo.

use std::collections::BTreeMap;

use crate::Error;
use crate::actions;
use crate::cloud::Cloud;
use crate::model::{ActionRecord, ResourceKind, Target};
use crate::resources::{
    AddressInfo, InstanceInfo, LoadBalancerInfo, RecordInfo, SecurityGroupInfo, Tags, VolumeInfo,
};

/// One action's targets as read once before it runs: saved to the inventory, turned into the
/// states recorded for rollback, and handed to the action's own state check, so the same
/// resources are not described three times in a row (validation still reads fresh state).
#[derive(Debug, Default)]
pub(crate) struct Described {
    pub instances: Vec<InstanceInfo>,
    pub volumes: Vec<VolumeInfo>,
    pub addresses: Vec<AddressInfo>,
    pub groups: Vec<SecurityGroupInfo>,
    pub load_balancers: Vec<LoadBalancerInfo>,
    pub records: Vec<RecordInfo>,
}

impl Described {
    /// Reads the targets `ids` of one kind, in one batch (pages of ids, or one listing).
    pub(crate) async fn read(
        cloud: &Cloud,
        kind: ResourceKind,
        ids: &[String],
    ) -> Result<Described, Error> {
        let mut described = Described::default();
        match kind {
            ResourceKind::Instance => described.instances = cloud.instances_by_id(ids).await?,
            ResourceKind::Volume => described.volumes = cloud.volumes_by_id(ids).await?,
            ResourceKind::Address => {
                described.addresses = cloud.addresses().await?;
                described
                    .addresses
                    .retain(|a| ids.contains(&a.allocation_id));
            }
            ResourceKind::SecurityGroup => {
                described.groups = cloud.security_groups().await?;
                described.groups.retain(|g| ids.contains(&g.id));
            }
            ResourceKind::LoadBalancer => {
                described.load_balancers = cloud.load_balancers().await?;
                described.load_balancers.retain(|lb| ids.contains(&lb.arn));
            }
            ResourceKind::Record => {
                described.records = actions::current_records(cloud, ids).await?
            }
        }
        Ok(described)
    }

    /// Each described instance's and volume's id and tags (what the protection checks read).
    pub(crate) fn tags(&self) -> Vec<(String, Tags)> {
        let instances = self
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.tags.clone()));
        let volumes = self.volumes.iter().map(|v| (v.id.clone(), v.tags.clone()));
        instances.chain(volumes).collect()
    }

    /// Each described target's state as one line.
    pub(crate) fn states(&self) -> BTreeMap<String, String> {
        let instances = self
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.state.clone()));
        let volumes = self.volumes.iter().map(|v| {
            let attached = v
                .attachments
                .iter()
                .map(|a| format!(", attached to {} as {}", a.instance_id, a.device))
                .collect::<String>();
            (v.id.clone(), format!("{}{attached}", v.state))
        });
        let addresses = self.addresses.iter().map(|a| {
            let state = a.instance_id.as_ref().map_or_else(
                || "unassociated".to_owned(),
                |i| format!("associated with {i}"),
            );
            (a.allocation_id.clone(), state)
        });
        let groups = self
            .groups
            .iter()
            .map(|g| (g.id.clone(), format!("exists ({})", g.group_name)));
        let load_balancers = self
            .load_balancers
            .iter()
            .map(|lb| (lb.arn.clone(), lb.state.clone()));
        let records = self.records.iter().map(|r| {
            let values = match &r.alias {
                Some(alias) => format!("alias {}", alias.dns_name),
                None => r.values.join(" "),
            };
            (crate::resolve::record_id(r), format!("present: {values}"))
        });
        instances
            .chain(volumes)
            .chain(addresses)
            .chain(groups)
            .chain(load_balancers)
            .chain(records)
            .collect()
    }
}

/// Each target's state just before the action starts, from what was just read: rollback
/// returns it to exactly this.
pub(crate) fn states_before(
    described: &Described,
    record: &ActionRecord,
) -> BTreeMap<String, String> {
    let mut states = described.states();
    for target in &record.targets {
        states
            .entry(target.id.clone())
            .or_insert_with(|| "absent".to_owned());
    }
    states
}

/// The current state of each target, read in one batch per kind (`known` states, just read by
/// the caller, are not read again). A target that no longer exists has no entry.
pub(crate) async fn target_states<'a>(
    cloud: &Cloud,
    targets: impl IntoIterator<Item = &'a Target>,
    known: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Error> {
    let mut by_kind: BTreeMap<ResourceKind, Vec<String>> = BTreeMap::new();
    for target in targets.into_iter().filter(|t| !known.contains_key(&t.id)) {
        let ids = by_kind.entry(target.kind).or_default();
        if !ids.contains(&target.id) {
            ids.push(target.id.clone());
        }
    }
    let mut states = known;
    for (kind, ids) in by_kind {
        states.extend(Described::read(cloud, kind, &ids).await?.states());
    }
    Ok(states)
}
