//! What state each target is in, as one line of text (`running`, `in-use, attached to i-... as
//! /dev/sdf`, `present: 10.0.0.1`): shown by `plan` and recorded before each action, so
//! rollback knows what it may undo.

use std::collections::BTreeMap;

use crate::Error;
use crate::actions;
use crate::cloud::Cloud;
use crate::model::{ActionRecord, ResourceKind, Target};

/// Each target's state just before the action starts: rollback returns it to exactly this.
pub(crate) async fn states_before(
    cloud: &Cloud,
    record: &ActionRecord,
) -> Result<BTreeMap<String, String>, Error> {
    let mut states = target_states(cloud, &record.targets, BTreeMap::new()).await?;
    for target in &record.targets {
        states
            .entry(target.id.clone())
            .or_insert_with(|| "absent".to_owned());
    }
    Ok(states)
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
        match kind {
            ResourceKind::Instance => {
                for i in cloud.instances_by_id(&ids).await? {
                    states.insert(i.id, i.state);
                }
            }
            ResourceKind::Volume => {
                for v in cloud.volumes_by_id(&ids).await? {
                    let attached = v
                        .attachments
                        .iter()
                        .map(|a| format!(", attached to {} as {}", a.instance_id, a.device))
                        .collect::<String>();
                    states.insert(v.id, format!("{}{attached}", v.state));
                }
            }
            ResourceKind::Address => {
                for a in cloud
                    .addresses()
                    .await?
                    .into_iter()
                    .filter(|a| ids.contains(&a.allocation_id))
                {
                    let state = a.instance_id.map_or_else(
                        || "unassociated".to_owned(),
                        |i| format!("associated with {i}"),
                    );
                    states.insert(a.allocation_id, state);
                }
            }
            ResourceKind::SecurityGroup => {
                for g in cloud
                    .security_groups()
                    .await?
                    .into_iter()
                    .filter(|g| ids.contains(&g.id))
                {
                    states.insert(g.id, format!("exists ({})", g.group_name));
                }
            }
            ResourceKind::LoadBalancer => {
                for lb in cloud
                    .load_balancers()
                    .await?
                    .into_iter()
                    .filter(|lb| ids.contains(&lb.arn))
                {
                    states.insert(lb.arn, lb.state);
                }
            }
            ResourceKind::Record => {
                for r in actions::current_records(cloud, &ids).await? {
                    let values = match &r.alias {
                        Some(alias) => format!("alias {}", alias.dns_name),
                        None => r.values.join(" "),
                    };
                    states.insert(crate::resolve::record_id(&r), format!("present: {values}"));
                }
            }
        }
    }
    Ok(states)
}
