//! What each action and validation kind is, in one place: its name as written in a sequence,
//! whether it can be undone and how. The engine, the binary and the demo all ask here.

use crate::format::{ActionFile, ActionKind, ValidationKind};

/// How `rollback` treats an action that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// Put back as it was (start what was stopped, re-attach, recreate records).
    Reverse,
    /// Left in place on purpose, with why (snapshots, archives).
    Kept(&'static str),
    /// Cannot be undone (terminations, deletions, commands).
    Irreversible,
}

impl ActionKind {
    pub const ALL: [ActionKind; 18] = [
        ActionKind::StopServices,
        ActionKind::StopInstances,
        ActionKind::StartInstances,
        ActionKind::SnapshotVolumes,
        ActionKind::DetachVolumes,
        ActionKind::DeleteVolumes,
        ActionKind::TerminateInstances,
        ActionKind::ReleaseAddresses,
        ActionKind::DeleteSecurityGroups,
        ActionKind::CleanSecurityGroups,
        ActionKind::RemoveDns,
        ActionKind::DeleteLoadBalancers,
        ActionKind::Archive,
        ActionKind::Command,
        ActionKind::Sql,
        ActionKind::Http,
        ActionKind::Gate,
        ActionKind::ShiftTraffic,
    ];

    /// The name a sequence writes (`terminate_instances`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionKind::StopServices => "stop_services",
            ActionKind::StopInstances => "stop_instances",
            ActionKind::StartInstances => "start_instances",
            ActionKind::SnapshotVolumes => "snapshot_volumes",
            ActionKind::DetachVolumes => "detach_volumes",
            ActionKind::DeleteVolumes => "delete_volumes",
            ActionKind::TerminateInstances => "terminate_instances",
            ActionKind::ReleaseAddresses => "release_addresses",
            ActionKind::DeleteSecurityGroups => "delete_security_groups",
            ActionKind::CleanSecurityGroups => "clean_security_groups",
            ActionKind::RemoveDns => "remove_dns",
            ActionKind::DeleteLoadBalancers => "delete_load_balancers",
            ActionKind::Archive => "archive",
            ActionKind::Command => "command",
            ActionKind::Sql => "sql",
            ActionKind::Http => "http",
            ActionKind::Gate => "gate",
            ActionKind::ShiftTraffic => "shift_traffic",
        }
    }
}

impl ValidationKind {
    pub const ALL: [ValidationKind; 15] = [
        ValidationKind::InstanceStopped,
        ValidationKind::InstanceRunning,
        ValidationKind::InstanceTerminated,
        ValidationKind::SnapshotCompleted,
        ValidationKind::NoAttachments,
        ValidationKind::NoMountPoints,
        ValidationKind::NoActiveConnections,
        ValidationKind::RecordAbsent,
        ValidationKind::LoadBalancerGone,
        ValidationKind::SecurityGroupGone,
        ValidationKind::HttpStatus,
        ValidationKind::CommandSucceeds,
        ValidationKind::SqlReturnsZero,
        ValidationKind::MetricsMatch,
        ValidationKind::NoTraffic,
    ];

    /// The name a sequence writes (`snapshot_completed`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ValidationKind::InstanceStopped => "instance_stopped",
            ValidationKind::InstanceRunning => "instance_running",
            ValidationKind::InstanceTerminated => "instance_terminated",
            ValidationKind::SnapshotCompleted => "snapshot_completed",
            ValidationKind::NoAttachments => "no_attachments",
            ValidationKind::NoMountPoints => "no_mount_points",
            ValidationKind::NoActiveConnections => "no_active_connections",
            ValidationKind::RecordAbsent => "record_absent",
            ValidationKind::LoadBalancerGone => "load_balancer_gone",
            ValidationKind::SecurityGroupGone => "security_group_gone",
            ValidationKind::HttpStatus => "http_status",
            ValidationKind::CommandSucceeds => "command_succeeds",
            ValidationKind::SqlReturnsZero => "sql_returns_zero",
            ValidationKind::MetricsMatch => "metrics_match",
            ValidationKind::NoTraffic => "no_traffic",
        }
    }
}

impl ActionFile {
    /// Whether it runs something sunset cannot observe or undo: a command (`command`, or
    /// `stop_services` with one), a statement, a request.
    pub fn runs_locally(&self) -> bool {
        match self.action {
            ActionKind::Command | ActionKind::Sql | ActionKind::Http => true,
            ActionKind::StopServices => self.command.is_some(),
            _ => false,
        }
    }

    /// How rollback treats it once it ran.
    pub fn undo(&self) -> Undo {
        use ActionKind::*;
        if self.runs_locally() {
            return Undo::Irreversible;
        }
        match self.action {
            StopServices | StopInstances | StartInstances | DetachVolumes | RemoveDns
            | ShiftTraffic => Undo::Reverse,
            SnapshotVolumes => Undo::Kept("snapshots are kept (they change nothing)"),
            Archive => Undo::Kept("the archive is kept"),
            Gate => Undo::Kept("a gate changes nothing"),
            TerminateInstances | DeleteVolumes | ReleaseAddresses | DeleteSecurityGroups
            | CleanSecurityGroups | DeleteLoadBalancers | Command | Sql | Http => {
                Undo::Irreversible
            }
        }
    }

    /// Whether a confirmation must name the step: the action cannot be rolled back.
    pub fn is_irreversible(&self) -> bool {
        self.undo() == Undo::Irreversible
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_name<T: serde::Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn names_are_the_ones_sequences_write() {
        for kind in ActionKind::ALL {
            assert_eq!(kind.as_str(), serde_name(kind));
        }
        for kind in ValidationKind::ALL {
            assert_eq!(kind.as_str(), serde_name(kind));
        }
    }
}
