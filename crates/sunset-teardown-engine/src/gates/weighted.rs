//! Where a traffic shift sets its weights: two haproxy servers (runtime API), two weighted
//! Route 53 record sets, or the two target groups of an ELBv2 listener's forward action. Each
//! reads the weights as they are and sets both in one change, so a stage is one audited call.

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple,
};
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch};
use sunset_plan::format::TrafficTargetFile;

use crate::Error;
use crate::cloud::Cloud;
use crate::gates::haproxy::{Pair, Weights};
use crate::resources::RecordInfo;

pub(crate) enum Weighted<'a> {
    Haproxy(Pair<'a>),
    Route53 {
        cloud: &'a Cloud,
        zone: &'a str,
        record: &'a str,
        record_type: &'a str,
        legacy: &'a str,
        new: &'a str,
    },
    Elbv2 {
        cloud: &'a Cloud,
        listener: &'a str,
        legacy: &'a str,
        new: &'a str,
    },
}

impl<'a> Weighted<'a> {
    /// How a plan names it: `haproxy backend `app`: `legacy` to `new``.
    pub(crate) fn describe(traffic: &TrafficTargetFile) -> String {
        if let Some(h) = &traffic.haproxy {
            format!(
                "haproxy backend `{}` from `{}` to `{}`",
                h.backend, h.legacy, h.new
            )
        } else if let Some(r) = &traffic.route53 {
            format!(
                "Route 53 {} `{}` in `{}` from set `{}` to set `{}`",
                r.record_type, r.record, r.zone, r.legacy, r.new
            )
        } else if let Some(e) = &traffic.elbv2 {
            format!(
                "listener {} from target group {} to {}",
                e.listener, e.legacy, e.new
            )
        } else {
            "nothing".to_owned()
        }
    }

    pub(crate) fn of(traffic: &'a TrafficTargetFile, cloud: &'a Cloud) -> Result<Self, Error> {
        if let Some(haproxy) = &traffic.haproxy {
            return Ok(Weighted::Haproxy(Pair {
                audit: &cloud.audit,
                api: haproxy.runtime_api.as_str(),
                backend: haproxy.backend.as_str(),
                legacy: haproxy.legacy.as_str(),
                new: haproxy.new.as_str(),
            }));
        }
        if let Some(route53) = &traffic.route53 {
            return Ok(Weighted::Route53 {
                cloud,
                zone: route53.zone.as_str(),
                record: route53.record.as_str(),
                record_type: route53.record_type.as_str(),
                legacy: route53.legacy.as_str(),
                new: route53.new.as_str(),
            });
        }
        if let Some(elbv2) = &traffic.elbv2 {
            return Ok(Weighted::Elbv2 {
                cloud,
                listener: elbv2.listener.as_str(),
                legacy: elbv2.legacy.as_str(),
                new: elbv2.new.as_str(),
            });
        }
        Err(Error::Internal("`traffic` names no target".to_owned()))
    }

    pub(crate) async fn weights(&self) -> Result<Weights, Error> {
        match self {
            Weighted::Haproxy(pair) => pair.weights().await,
            Weighted::Route53 { .. } => {
                let (legacy, new) = self.record_sets().await?;
                let weight = |r: &RecordInfo| u32::try_from(r.weight.unwrap_or(0)).unwrap_or(0);
                Ok(Weights {
                    legacy: weight(&legacy),
                    new: weight(&new),
                })
            }
            Weighted::Elbv2 {
                cloud,
                listener,
                legacy,
                new,
            } => {
                let output = cloud
                    .call(
                        "elbv2",
                        "DescribeListeners",
                        false,
                        &[(*listener).to_owned()],
                        cloud
                            .elb
                            .describe_listeners()
                            .listener_arns(*listener)
                            .send(),
                    )
                    .await?;
                let forward = output
                    .listeners()
                    .first()
                    .and_then(|l| {
                        l.default_actions()
                            .iter()
                            .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
                    })
                    .ok_or_else(|| {
                        Error::Probe(format!("listener {listener} has no forward action"))
                    })?;
                let weight_of = |arn: &str| -> u32 {
                    match forward.forward_config() {
                        Some(config) => config
                            .target_groups()
                            .iter()
                            .find(|t| t.target_group_arn() == Some(arn))
                            .map_or(0, |t| u32::try_from(t.weight().unwrap_or(1)).unwrap_or(0)),
                        // A plain forward sends everything to its one group.
                        None => u32::from(forward.target_group_arn() == Some(arn)) * 100,
                    }
                };
                Ok(Weights {
                    legacy: weight_of(legacy),
                    new: weight_of(new),
                })
            }
        }
    }

    pub(crate) async fn set(&self, weights: Weights) -> Result<(), Error> {
        match self {
            Weighted::Haproxy(pair) => pair.set(weights).await,
            Weighted::Route53 { cloud, .. } => {
                let (mut legacy, mut new) = self.record_sets().await?;
                legacy.weight = Some(i64::from(weights.legacy));
                new.weight = Some(i64::from(weights.new));
                let changes = [&legacy, &new]
                    .into_iter()
                    .map(|r| {
                        Change::builder()
                            .action(ChangeAction::Upsert)
                            .resource_record_set(crate::actions::record_set(r)?)
                            .build()
                            .map_err(|e| Error::Internal(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let batch = ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .comment(format!(
                        "sunset-teardown: shift to {}% on {}",
                        weights.share(),
                        new.set_identifier.as_deref().unwrap_or_default()
                    ))
                    .build()
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let ids = [
                    crate::resolve::record_id(&legacy),
                    crate::resolve::record_id(&new),
                ];
                cloud
                    .call(
                        "route53",
                        "ChangeResourceRecordSets",
                        true,
                        &ids,
                        cloud
                            .route53
                            .change_resource_record_sets()
                            .hosted_zone_id(&legacy.zone_id)
                            .change_batch(batch)
                            .send(),
                    )
                    .await?;
                Ok(())
            }
            Weighted::Elbv2 {
                cloud,
                listener,
                legacy,
                new,
            } => {
                let group = |arn: &str, weight: u32| {
                    TargetGroupTuple::builder()
                        .target_group_arn(arn)
                        .weight(i32::try_from(weight).unwrap_or(i32::MAX))
                        .build()
                };
                let action = Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .forward_config(
                        ForwardActionConfig::builder()
                            .target_groups(group(legacy, weights.legacy))
                            .target_groups(group(new, weights.new))
                            .build(),
                    )
                    .build();
                cloud
                    .call(
                        "elbv2",
                        "ModifyListener",
                        true,
                        &[(*listener).to_owned()],
                        cloud
                            .elb
                            .modify_listener()
                            .listener_arn(*listener)
                            .default_actions(action)
                            .send(),
                    )
                    .await?;
                Ok(())
            }
        }
    }

    /// The legacy and the new weighted record set, as Route 53 has them now.
    async fn record_sets(&self) -> Result<(RecordInfo, RecordInfo), Error> {
        let Weighted::Route53 {
            cloud,
            zone,
            record,
            record_type,
            legacy,
            new,
        } = self
        else {
            return Err(Error::Internal("not a Route 53 target".to_owned()));
        };
        let wanted = crate::resources::fqdn(zone);
        let zones = cloud.hosted_zones().await?;
        let hosted = zones
            .iter()
            .find(|z| z.id == *zone || z.name == wanted)
            .ok_or_else(|| Error::Probe(format!("no hosted zone `{zone}`")))?;
        let sets = cloud.records_named(hosted, record).await?;
        let find = |identifier: &str| {
            sets.iter()
                .find(|r| {
                    r.record_type == *record_type
                        && r.set_identifier.as_deref() == Some(identifier)
                })
                .cloned()
                .ok_or_else(|| {
                    Error::Probe(format!(
                        "no {record_type} record set `{record}` with SetIdentifier `{identifier}` in zone `{zone}`"
                    ))
                })
        };
        Ok((find(legacy)?, find(new)?))
    }
}
