//! The actions. Each one first reads the current state and only calls for the resources not
//! already where the action takes them, so running it again (after a crash, or a second
//! `apply`) sends no second mutating call. Rules AWS enforces but the emulator does not (a
//! security group in use, an associated address, a terminated instance) are checked here.
//!
//! Longer than ~600 lines: one idempotent implementation per action kind (sixteen), alike by
//! design.

use std::collections::BTreeMap;
use std::time::Duration;
use sunset_outcome::Shutdown;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use sunset_plan::format::{ActionFile, ActionKind, SequenceFile};

use crate::Error;
use crate::cloud::{Cloud, IDS_PER_CALL, already_gone_is_done};
use crate::inventory::Inventory;
use crate::model::ActionRecord;
use crate::probes;
use crate::resolve::action_name;
use crate::resources::{InstanceInfo, RecordInfo, SecurityGroupInfo, filter};
use crate::states::Described;

/// Everything an action needs besides its own record.
pub(crate) struct Context<'a> {
    pub cloud: &'a Cloud,
    pub sequence: &'a SequenceFile,
    /// The run's name: snapshots are tagged with it so a resumed run finds them.
    pub run: &'a str,
    /// The attempt's id: a resumed attempt reuses only the snapshots and archives tagged or
    /// named with it, never an earlier attempt's (taken before data written since).
    pub attempt: &'a str,
    pub step: &'a str,
    pub inventory: &'a Inventory,
    pub state_dir: &'a std::path::Path,
    pub stop: &'a Shutdown,
    /// Traffic shifts watch their holds until then at the latest (`--watch-for`).
    pub watch_until: Option<std::time::Instant>,
}

pub(crate) type Outputs = BTreeMap<String, String>;

/// The record of a traffic shift, beside the audit log: named by its step and its settings.
pub(crate) fn shift_record(ctx: &Context<'_>, action: &ActionFile) -> std::path::PathBuf {
    let dir = ctx
        .cloud
        .audit
        .path()
        .parent()
        .unwrap_or(ctx.state_dir)
        .join("shift");
    let name = format!(
        "{}.{}",
        ctx.step,
        sunset_plan::Fingerprint::of(action).short()
    );
    crate::gates::shift_record(&dir, &name)
}

/// How long a local command, query or request of an action may take.
const LOCAL_STEP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Saves every target's description before the action changes it.
pub(crate) fn save_inventory(
    ctx: &Context<'_>,
    record: &ActionRecord,
    described: &Described,
) -> Result<(), Error> {
    let Some(kind) = record.targets.first().map(|t| t.kind) else {
        return Ok(());
    };
    let action = action_name(record.kind);
    let (inventory, step, action) = (ctx.inventory, ctx.step, action.as_str());
    for i in &described.instances {
        inventory.save(kind, &i.id, step, action, i)?;
    }
    for v in &described.volumes {
        inventory.save(kind, &v.id, step, action, v)?;
    }
    for a in &described.addresses {
        inventory.save(kind, &a.allocation_id, step, action, a)?;
    }
    for g in &described.groups {
        inventory.save(kind, &g.id, step, action, g)?;
    }
    for lb in &described.load_balancers {
        inventory.save(kind, &lb.arn, step, action, lb)?;
    }
    for r in &described.records {
        inventory.save(kind, &crate::resolve::record_id(r), step, action, r)?;
    }
    Ok(())
}

/// Runs one action to completion (its calls, not its validation).
/// `described`: the targets as read just before (the instance actions decide from it which
/// instances still need the call).
pub(crate) async fn execute(
    ctx: &Context<'_>,
    action: &ActionFile,
    record: &ActionRecord,
    described: &Described,
) -> Result<Outputs, Error> {
    let ids = record.target_ids();
    match action.action {
        ActionKind::StopServices if action.command.is_some() => {
            run_command_on_targets(ctx, action, &ids).await
        }
        ActionKind::StopServices | ActionKind::StopInstances => {
            change_instances(ctx, &ids, &described.instances, InstanceChange::Stop).await
        }
        ActionKind::StartInstances => {
            change_instances(ctx, &ids, &described.instances, InstanceChange::Start).await
        }
        ActionKind::TerminateInstances => {
            change_instances(ctx, &ids, &described.instances, InstanceChange::Terminate).await
        }
        ActionKind::SnapshotVolumes => snapshot_volumes(ctx, &ids).await,
        ActionKind::DetachVolumes => detach_volumes(ctx, &ids).await,
        ActionKind::DeleteVolumes => delete_volumes(ctx, &ids).await,
        ActionKind::ReleaseAddresses => release_addresses(ctx, &ids).await,
        ActionKind::DeleteSecurityGroups => delete_groups(ctx, &ids, false).await,
        ActionKind::CleanSecurityGroups => delete_groups(ctx, &ids, true).await,
        ActionKind::RemoveDns => {
            change_records(
                ctx.cloud,
                &ids,
                ChangeAction::Delete,
                &current_records(ctx.cloud, &ids).await?,
            )
            .await
        }
        ActionKind::DeleteLoadBalancers => delete_load_balancers(ctx, &ids).await,
        ActionKind::Archive => archive(ctx, action).await,
        ActionKind::Gate => Ok(Outputs::new()),
        ActionKind::ShiftTraffic => {
            let (interval, _) = crate::checks::timing(action, ctx.sequence);
            let shift = crate::gates::Shift {
                action,
                cloud: ctx.cloud,
                record: shift_record(ctx, action),
                stop: ctx.stop,
                interval,
                watch_until: ctx.watch_until,
                step: ctx.step,
                attempt: ctx.attempt,
            };
            Ok(shift.run().await?.into_iter().collect())
        }
        ActionKind::Command => run_command_on_targets(ctx, action, &ids).await,
        ActionKind::Sql => {
            let url = database_url(action.database_url.as_ref().map(|t| t.as_str()))?;
            let sql = action.sql.as_ref().map(|t| t.as_str()).unwrap_or_default();
            let timeout = action.timeout.map_or(LOCAL_STEP_TIMEOUT, |t| t.0);
            probes::run_sql(&ctx.cloud.audit, &url, sql, timeout, true).await?;
            Ok(Outputs::new())
        }
        ActionKind::Http => {
            let url = action.url.as_ref().map(|t| t.as_str()).unwrap_or_default();
            let method = action.method.as_ref().map_or("POST", |m| m.as_str());
            let status =
                probes::http_status(&ctx.cloud.audit, method, url, LOCAL_STEP_TIMEOUT, true)
                    .await?;
            if !status_ok(status, action.expect_status) {
                return Err(Error::Probe(format!(
                    "{method} {url} answered {status}, expected {}",
                    expected_status(action.expect_status)
                )));
            }
            Ok(Outputs::from([(url.to_owned(), status.to_string())]))
        }
    }
}

pub(crate) fn status_ok(status: u16, expected: Option<u16>) -> bool {
    match expected {
        Some(expected) => status == expected,
        None => (200..300).contains(&status),
    }
}

pub(crate) fn expected_status(expected: Option<u16>) -> String {
    expected.map_or_else(|| "2xx".to_owned(), |s| s.to_string())
}

/// The database of a `sql` step or probe: its own URL, else `DATABASE_URL`.
pub(crate) fn database_url(own: Option<&str>) -> Result<String, Error> {
    own.map(str::to_owned)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or_else(|| {
            Error::BadInput("a `sql` step or probe needs `database_url` or DATABASE_URL".to_owned())
        })
}

async fn run_command_on_targets(
    ctx: &Context<'_>,
    action: &ActionFile,
    ids: &[String],
) -> Result<Outputs, Error> {
    let command = action
        .command
        .as_ref()
        .map(|t| t.as_str())
        .unwrap_or_default();
    let timeout = action.timeout.map_or(LOCAL_STEP_TIMEOUT, |t| t.0);
    let mut outputs = Outputs::new();
    if ids.is_empty() {
        let (ok, outcome) =
            probes::run_command(&ctx.cloud.audit, command, None, &action.env, timeout, true)
                .await?;
        if !ok {
            return Err(Error::Probe(format!("`{command}` failed: {outcome}")));
        }
        return Ok(outputs);
    }
    for instance in ctx.cloud.instances_by_id(ids).await? {
        let (ok, outcome) = probes::run_command(
            &ctx.cloud.audit,
            command,
            Some(&instance),
            &action.env,
            timeout,
            true,
        )
        .await?;
        if !ok {
            return Err(Error::Probe(format!(
                "`{command}` failed for {}: {outcome}",
                instance.id
            )));
        }
        outputs.insert(instance.id.clone(), "command succeeded".to_owned());
    }
    Ok(outputs)
}

#[derive(Clone, Copy)]
pub(crate) enum InstanceChange {
    Stop,
    Start,
    Terminate,
}

/// Stops, starts or terminates the instances not already where `change` takes them.
/// `instances`: the current descriptions of `ids` (one missing is gone).
pub(crate) async fn change_instances(
    ctx: &Context<'_>,
    ids: &[String],
    instances: &[InstanceInfo],
    change: InstanceChange,
) -> Result<Outputs, Error> {
    let mut outputs = Outputs::new();
    let mut to_call = Vec::new();
    for id in ids {
        let Some(instance) = instances.iter().find(|i| &i.id == id) else {
            if matches!(change, InstanceChange::Terminate) {
                outputs.insert(id.clone(), "already gone".to_owned());
                continue;
            }
            return Err(Error::Blocked {
                step: ctx.step.to_owned(),
                message: format!("instance {id} no longer exists"),
            });
        };
        let state = instance.state.as_str();
        let done = match change {
            InstanceChange::Stop => matches!(state, "stopped" | "stopping"),
            InstanceChange::Start => matches!(state, "running" | "pending"),
            InstanceChange::Terminate => matches!(state, "terminated" | "shutting-down"),
        };
        if done {
            outputs.insert(id.clone(), format!("already {state}"));
            continue;
        }
        if !matches!(change, InstanceChange::Terminate)
            && matches!(state, "terminated" | "shutting-down")
        {
            return Err(Error::Blocked {
                step: ctx.step.to_owned(),
                message: format!("instance {id} is {state}: it can not be stopped or started"),
            });
        }
        to_call.push(id.clone());
    }
    for chunk in to_call.chunks(IDS_PER_CALL) {
        let chunk = chunk.to_vec();
        let ec2 = &ctx.cloud.ec2;
        match change {
            InstanceChange::Stop => {
                ctx.cloud
                    .call(
                        "ec2",
                        "StopInstances",
                        true,
                        &chunk,
                        ec2.stop_instances()
                            .set_instance_ids(Some(chunk.clone()))
                            .send(),
                    )
                    .await?;
            }
            InstanceChange::Start => {
                ctx.cloud
                    .call(
                        "ec2",
                        "StartInstances",
                        true,
                        &chunk,
                        ec2.start_instances()
                            .set_instance_ids(Some(chunk.clone()))
                            .send(),
                    )
                    .await?;
            }
            InstanceChange::Terminate => {
                ctx.cloud
                    .call(
                        "ec2",
                        "TerminateInstances",
                        true,
                        &chunk,
                        ec2.terminate_instances()
                            .set_instance_ids(Some(chunk.clone()))
                            .send(),
                    )
                    .await?;
            }
        }
        for id in chunk {
            let verb = match change {
                InstanceChange::Stop => "stopped",
                InstanceChange::Start => "started",
                InstanceChange::Terminate => "terminated",
            };
            outputs.insert(id, verb.to_owned());
        }
    }
    Ok(outputs)
}

async fn snapshot_volumes(ctx: &Context<'_>, ids: &[String]) -> Result<Outputs, Error> {
    let existing = ctx.cloud.snapshots_of_run(ctx.run).await?;
    let mut outputs = Outputs::new();
    for id in ids {
        let found = existing.iter().find(|s| {
            s.volume_id.as_deref() == Some(id)
                && s.tags.get("sunset:step").map(String::as_str) == Some(ctx.step)
                && s.tags.get("sunset:attempt").map_or("", String::as_str) == ctx.attempt
                && s.state != "error"
        });
        if let Some(snapshot) = found {
            outputs.insert(id.clone(), snapshot.id.clone());
            continue;
        }
        let tags = [
            ("sunset:run", ctx.run),
            ("sunset:step", ctx.step),
            ("sunset:attempt", ctx.attempt),
            ("sunset:volume", id.as_str()),
            ("Name", &format!("sunset {} {id}", ctx.step)),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
        let request = ctx
            .cloud
            .ec2
            .create_snapshot()
            .volume_id(id)
            .description(format!(
                "sunset-teardown {} {} before decommission",
                ctx.run, ctx.step
            ))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Snapshot)
                    .set_tags(Some(tags))
                    .build(),
            );
        let snapshot = ctx
            .cloud
            .call(
                "ec2",
                "CreateSnapshot",
                true,
                std::slice::from_ref(id),
                request.send(),
            )
            .await?;
        outputs.insert(
            id.clone(),
            snapshot.snapshot_id().unwrap_or_default().to_owned(),
        );
    }
    Ok(outputs)
}

async fn detach_volumes(ctx: &Context<'_>, ids: &[String]) -> Result<Outputs, Error> {
    let volumes = ctx.cloud.volumes_by_id(ids).await?;
    let mut outputs = Outputs::new();
    for id in ids {
        let Some(volume) = volumes.iter().find(|v| &v.id == id) else {
            return Err(Error::Blocked {
                step: ctx.step.to_owned(),
                message: format!("volume {id} no longer exists"),
            });
        };
        let attached: Vec<_> = volume
            .attachments
            .iter()
            .filter(|a| matches!(a.state.as_str(), "attached" | "attaching"))
            .collect();
        if attached.is_empty() {
            outputs.insert(id.clone(), "already detached".to_owned());
            continue;
        }
        for attachment in attached {
            // The instance id is always sent: without it the emulator answers 500.
            let request = ctx
                .cloud
                .ec2
                .detach_volume()
                .volume_id(id)
                .instance_id(&attachment.instance_id)
                .device(&attachment.device);
            ctx.cloud
                .call(
                    "ec2",
                    "DetachVolume",
                    true,
                    &[id.clone(), attachment.instance_id.clone()],
                    request.send(),
                )
                .await?;
            outputs.insert(
                id.clone(),
                format!(
                    "detached from {} ({})",
                    attachment.instance_id, attachment.device
                ),
            );
        }
    }
    Ok(outputs)
}

async fn delete_volumes(ctx: &Context<'_>, ids: &[String]) -> Result<Outputs, Error> {
    let volumes = ctx.cloud.volumes_by_id(ids).await?;
    let mut outputs = Outputs::new();
    let mut to_delete = Vec::new();
    for id in ids {
        match volumes.iter().find(|v| &v.id == id) {
            None => {
                outputs.insert(id.clone(), "already deleted".to_owned());
            }
            Some(volume) if !volume.attachments.is_empty() => {
                let to: Vec<&str> = volume
                    .attachments
                    .iter()
                    .map(|a| a.instance_id.as_str())
                    .collect();
                return Err(Error::Blocked {
                    step: ctx.step.to_owned(),
                    message: format!(
                        "volume {id} is still attached to {}; detach it first (`detach_volumes`)",
                        to.join(", ")
                    ),
                });
            }
            Some(_) => to_delete.push(id.clone()),
        }
    }
    for id in to_delete {
        let deleted = ctx
            .cloud
            .call(
                "ec2",
                "DeleteVolume",
                true,
                std::slice::from_ref(&id),
                ctx.cloud.ec2.delete_volume().volume_id(&id).send(),
            )
            .await;
        already_gone_is_done(deleted)?;
        outputs.insert(id, "deleted".to_owned());
    }
    Ok(outputs)
}

async fn release_addresses(ctx: &Context<'_>, ids: &[String]) -> Result<Outputs, Error> {
    let addresses = ctx.cloud.addresses().await?;
    // AWS disassociates an address when its instance terminates (the emulator does not).
    let holders: Vec<String> = addresses
        .iter()
        .filter(|a| ids.contains(&a.allocation_id))
        .filter_map(|a| a.instance_id.clone())
        .collect();
    let terminated: Vec<String> = ctx
        .cloud
        .instances_by_id(&holders)
        .await?
        .into_iter()
        .filter(|i| matches!(i.state.as_str(), "terminated" | "shutting-down"))
        .map(|i| i.id)
        .collect();
    let mut outputs = Outputs::new();
    let mut to_release = Vec::new();
    for id in ids {
        match addresses.iter().find(|a| &a.allocation_id == id) {
            None => {
                outputs.insert(id.clone(), "already released".to_owned());
            }
            Some(address)
                if address.association_id.is_some()
                    && !address
                        .instance_id
                        .as_ref()
                        .is_some_and(|i| terminated.contains(i)) =>
            {
                let holder = address
                    .instance_id
                    .clone()
                    .or_else(|| address.network_interface_id.clone())
                    .unwrap_or_default();
                return Err(Error::Blocked {
                    step: ctx.step.to_owned(),
                    message: format!(
                        "address {id} ({}) is still associated with {holder}; terminate or disassociate it first",
                        address.public_ip.as_deref().unwrap_or("?")
                    ),
                });
            }
            Some(_) => to_release.push(id.clone()),
        }
    }
    for id in to_release {
        ctx.cloud
            .call(
                "ec2",
                "ReleaseAddress",
                true,
                std::slice::from_ref(&id),
                ctx.cloud.ec2.release_address().allocation_id(&id).send(),
            )
            .await?;
        outputs.insert(id, "released".to_owned());
    }
    Ok(outputs)
}

/// What still uses each of `ids`: interfaces, live instances, other groups' rules, load balancers.
/// `all_groups` is the region's group listing, already read by the caller.
pub(crate) async fn group_users(
    cloud: &Cloud,
    ids: &[String],
    all_groups: &[SecurityGroupInfo],
) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let live = cloud
        .instances_where(
            vec![
                filter("instance.group-id", ids),
                filter(
                    "instance-state-name",
                    &[
                        "pending".into(),
                        "running".into(),
                        "stopping".into(),
                        "stopped".into(),
                    ],
                ),
            ],
            ids,
        )
        .await?;
    for instance in live {
        for group in instance.security_groups.iter().filter(|g| ids.contains(g)) {
            users
                .entry(group.clone())
                .or_default()
                .push(format!("instance {}", instance.id));
        }
    }
    let live_instances: Vec<String> = users.values().flatten().cloned().collect();
    for (interface, groups, owner) in cloud.interfaces_using(ids).await? {
        let owner_is_dead_instance =
            owner.starts_with("i-") && !live_instances.contains(&format!("instance {owner}"));
        if owner_is_dead_instance {
            continue;
        }
        for group in groups.iter().filter(|g| ids.contains(g)) {
            users.entry(group.clone()).or_default().push(
                format!("network interface {interface} {owner}")
                    .trim()
                    .to_owned(),
            );
        }
    }
    for group in all_groups {
        for referenced in group.references.iter().filter(|r| ids.contains(r)) {
            if !ids.contains(&group.id) {
                users.entry(referenced.clone()).or_default().push(format!(
                    "rules of security group {} ({})",
                    group.id, group.group_name
                ));
            }
        }
    }
    for lb in cloud.load_balancers().await? {
        for group in lb.security_groups.iter().filter(|g| ids.contains(g)) {
            users
                .entry(group.clone())
                .or_default()
                .push(format!("load balancer {}", lb.name));
        }
    }
    for list in users.values_mut() {
        list.sort();
        list.dedup();
    }
    Ok(users)
}

async fn delete_groups(
    ctx: &Context<'_>,
    ids: &[String],
    skip_used: bool,
) -> Result<Outputs, Error> {
    let existing = ctx.cloud.security_groups().await?;
    let present: Vec<String> = ids
        .iter()
        .filter(|id| existing.iter().any(|g| &g.id == *id))
        .cloned()
        .collect();
    let users = group_users(ctx.cloud, &present, &existing).await?;
    let mut outputs = Outputs::new();
    for id in ids.iter().filter(|id| !present.contains(id)) {
        outputs.insert(id.clone(), "already deleted".to_owned());
    }
    if !skip_used {
        let used: Vec<String> = users
            .iter()
            .map(|(g, by)| format!("{g} is used by {}", by.join(", ")))
            .collect();
        if !used.is_empty() {
            return Err(Error::Blocked {
                step: ctx.step.to_owned(),
                message: format!("security groups still in use: {}", used.join("; ")),
            });
        }
    }
    for id in present {
        if let Some(by) = users.get(&id) {
            outputs.insert(id.clone(), format!("kept: still used by {}", by.join(", ")));
            continue;
        }
        let deleted = ctx
            .cloud
            .call(
                "ec2",
                "DeleteSecurityGroup",
                true,
                std::slice::from_ref(&id),
                ctx.cloud.ec2.delete_security_group().group_id(&id).send(),
            )
            .await;
        already_gone_is_done(deleted)?;
        outputs.insert(id, "deleted".to_owned());
    }
    Ok(outputs)
}

/// The record sets behind pinned record ids that still exist.
pub(crate) async fn current_records(
    cloud: &Cloud,
    ids: &[String],
) -> Result<Vec<RecordInfo>, Error> {
    let zones = cloud.hosted_zones().await?;
    let mut found = Vec::new();
    let mut listed: BTreeMap<(String, String), Vec<RecordInfo>> = BTreeMap::new();
    for id in ids {
        let mut parts = id.splitn(3, '/');
        let (Some(zone_id), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(zone) = zones.iter().find(|z| z.id == zone_id) else {
            continue;
        };
        let key = (zone_id.to_owned(), name.to_owned());
        if !listed.contains_key(&key) {
            listed.insert(key.clone(), cloud.records_named(zone, name).await?);
        }
        if let Some(record) = listed[&key]
            .iter()
            .find(|r| &crate::resolve::record_id(r) == id)
        {
            found.push(record.clone());
        }
    }
    Ok(found)
}

pub(crate) fn record_set(record: &RecordInfo) -> Result<ResourceRecordSet, Error> {
    let invalid = |e: aws_sdk_route53::error::BuildError| {
        Error::Internal(format!("record {}: {e}", record.name))
    };
    let values = record
        .values
        .iter()
        .map(|v| ResourceRecord::builder().value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let alias = match &record.alias {
        Some(alias) => Some(
            AliasTarget::builder()
                .hosted_zone_id(&alias.hosted_zone_id)
                .dns_name(&alias.dns_name)
                .evaluate_target_health(alias.evaluate_target_health)
                .build()
                .map_err(invalid)?,
        ),
        None => None,
    };
    ResourceRecordSet::builder()
        .name(&record.name)
        .r#type(RrType::from(record.record_type.as_str()))
        .set_ttl(record.ttl)
        .set_resource_records((!values.is_empty()).then_some(values))
        .set_alias_target(alias)
        .set_set_identifier(record.set_identifier.clone())
        .set_weight(record.weight)
        .build()
        .map_err(invalid)
}

/// Deletes or (on rollback) upserts record sets, one change batch per hosted zone.
pub(crate) async fn change_records(
    cloud: &Cloud,
    ids: &[String],
    action: ChangeAction,
    records: &[RecordInfo],
) -> Result<Outputs, Error> {
    let mut outputs = Outputs::new();
    for id in ids {
        if !records.iter().any(|r| &crate::resolve::record_id(r) == id) {
            outputs.insert(
                id.clone(),
                if action == ChangeAction::Delete {
                    "already absent"
                } else {
                    "nothing saved to restore"
                }
                .to_owned(),
            );
        }
    }
    let mut by_zone: BTreeMap<&str, Vec<&RecordInfo>> = BTreeMap::new();
    for record in records {
        by_zone
            .entry(record.zone_id.as_str())
            .or_default()
            .push(record);
    }
    for (zone, records) in by_zone {
        let changes = records
            .iter()
            .map(|r| {
                Change::builder()
                    .action(action.clone())
                    .resource_record_set(record_set(r)?)
                    .build()
                    .map_err(|e| Error::Internal(e.to_string()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let batch = ChangeBatch::builder()
            .set_changes(Some(changes))
            .comment("sunset-teardown")
            .build()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let record_ids: Vec<String> = records
            .iter()
            .map(|r| crate::resolve::record_id(r))
            .collect();
        cloud
            .call(
                "route53",
                "ChangeResourceRecordSets",
                true,
                &record_ids,
                cloud
                    .route53
                    .change_resource_record_sets()
                    .hosted_zone_id(zone)
                    .change_batch(batch)
                    .send(),
            )
            .await?;
        for id in record_ids {
            outputs.insert(
                id,
                if action == ChangeAction::Delete {
                    "removed"
                } else {
                    "restored"
                }
                .to_owned(),
            );
        }
    }
    Ok(outputs)
}

async fn delete_load_balancers(ctx: &Context<'_>, arns: &[String]) -> Result<Outputs, Error> {
    let existing = ctx.cloud.load_balancers().await?;
    let mut outputs = Outputs::new();
    for arn in arns {
        if !existing.iter().any(|lb| &lb.arn == arn) {
            outputs.insert(arn.clone(), "already deleted".to_owned());
            continue;
        }
        let deleted = ctx
            .cloud
            .call(
                "elbv2",
                "DeleteLoadBalancer",
                true,
                std::slice::from_ref(arn),
                ctx.cloud
                    .elb
                    .delete_load_balancer()
                    .load_balancer_arn(arn)
                    .send(),
            )
            .await;
        already_gone_is_done(deleted)?;
        outputs.insert(arn.clone(), "deleted".to_owned());
    }
    Ok(outputs)
}

/// The archive of an `archive` action: its own `dest` or the sequence's `archive.dest`, named
/// after the run, step and attempt so a resumed attempt continues its own upload and a new
/// attempt makes a new archive.
pub(crate) fn archive_ref(
    ctx: &Context<'_>,
    action: &ActionFile,
) -> Result<sunset_archive_engine::ArchiveRef, Error> {
    let dest = action
        .dest
        .as_ref()
        .or(ctx.sequence.archive.as_ref().map(|a| &a.dest))
        .ok_or_else(|| {
            Error::BadInput(format!(
                "the `archive` action of step `{}` needs `dest` (or a top-level `archive.dest`)",
                ctx.step
            ))
        })?;
    let destination = sunset_archive_engine::Destination::parse(dest.as_str())?;
    let name = if ctx.attempt.is_empty() {
        format!("{}-{}", ctx.run, ctx.step)
    } else {
        format!("{}-{}-{}", ctx.run, ctx.step, ctx.attempt)
    };
    Ok(destination.archive(&name)?)
}

async fn archive(ctx: &Context<'_>, action: &ActionFile) -> Result<Outputs, Error> {
    let archive = archive_ref(ctx, action)?;
    if let sunset_archive_engine::Destination::Local(dir) = &archive.dest {
        std::fs::create_dir_all(dir).map_err(Error::io("create archive directory", dir))?;
    }
    let listed = sunset_archive_engine::list(&archive.dest).await?;
    if listed.iter().any(|l| l.name == archive.name) {
        ctx.cloud
            .audit
            .record("archive", "create", true, &[archive.to_string()], Ok(()))?;
        return Ok(Outputs::from([(
            archive.to_string(),
            "already archived".to_owned(),
        )]));
    }
    let defaults = ctx.sequence.archive.as_ref();
    let dirs = if action.dirs.is_empty() {
        defaults.map(|a| a.dirs.clone()).unwrap_or_default()
    } else {
        action.dirs.clone()
    };
    let tables = if action.tables.is_empty() {
        defaults.map(|a| a.tables.clone()).unwrap_or_default()
    } else {
        action.tables.clone()
    };
    let database_url = action
        .database_url
        .as_ref()
        .or(defaults.and_then(|a| a.database_url.as_ref()))
        .map(|t| t.as_str().to_owned())
        .or_else(|| std::env::var("DATABASE_URL").ok());
    let request = sunset_archive_engine::CreateRequest {
        archive: archive.clone(),
        dirs: dirs.iter().map(|d| d.as_str().into()).collect(),
        tables: tables.iter().map(|t| t.as_str().to_owned()).collect(),
        queries: Vec::new(),
        database_url,
        part_size: 16 * 1024 * 1024,
        concurrency: 4,
        level: 6,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        s3: Default::default(),
        state_dir: ctx.state_dir.join("archive"),
        restart: false,
    };
    let created =
        sunset_archive_engine::create(&request, Default::default(), ctx.stop.clone()).await;
    ctx.cloud.audit.record(
        "archive",
        "create",
        true,
        &[archive.to_string()],
        created.as_ref().map(|_| ()).map_err(|_| "failed"),
    )?;
    let created = created?;
    Ok(Outputs::from([(
        archive.to_string(),
        format!(
            "{} bytes, sha256 {}",
            created.manifest.archive.size, created.manifest.archive.sha256
        ),
    )]))
}
