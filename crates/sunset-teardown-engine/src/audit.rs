//! The audit log: one JSON line per AWS call (and per local command, query or HTTP request),
//! written as the call returns. Mutating lines are fsynced before the runner moves on, so after
//! a crash the log still shows every change that the checkpoint may not yet know about.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sunset_plan::Redactor;

use crate::Error;

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    /// `plan`, `apply` or `rollback`.
    pub command: String,
    pub step: Option<String>,
    pub action: Option<String>,
    /// `ec2`, `route53`, `elbv2`, `sts`, `command`, `sql`, `http`, `archive`.
    pub service: String,
    pub operation: String,
    pub mutating: bool,
    /// The resources the call named.
    pub ids: Vec<String>,
    /// `ok` or `error`.
    pub result: String,
    pub error: Option<String>,
}

/// Where the current calls belong: set by the runner as it moves through steps.
#[derive(Debug, Clone, Default)]
struct Scope {
    command: String,
    step: Option<String>,
    action: Option<String>,
}

/// One kind of call, as the metrics count it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallKind {
    pub service: String,
    pub operation: String,
    pub mutating: bool,
    /// `ok` or `error`.
    pub result: String,
}

/// Every call of a command by kind, shared with the binary's metrics while the command runs.
#[derive(Debug, Default)]
pub struct CallTally {
    calls: Mutex<BTreeMap<CallKind, u64>>,
}

impl CallTally {
    pub fn snapshot(&self) -> BTreeMap<CallKind, u64> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn add(&self, kind: CallKind) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(kind)
            .or_default() += 1;
    }
}

pub struct AuditLog {
    path: PathBuf,
    /// Environment values of the sequence (tokens in URLs, passwords in connection strings)
    /// are written as their `${NAME}`.
    redactor: Redactor,
    tally: std::sync::Arc<CallTally>,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    scope: Scope,
}

impl AuditLog {
    /// Opens (appending) the audit log at `path`, readable by its owner only; every call is
    /// also counted in `tally`.
    pub fn open(
        path: &Path,
        command: &str,
        redactor: Redactor,
        tally: std::sync::Arc<CallTally>,
    ) -> Result<AuditLog, Error> {
        if let Some(dir) = path.parent() {
            sunset_checkpoint::create_private_dir(dir)
                .map_err(Error::io("create audit directory", dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(Error::io("open audit log", path))?;
        Ok(AuditLog {
            path: path.to_owned(),
            redactor,
            tally,
            inner: Mutex::new(Inner {
                file,
                scope: Scope {
                    command: command.to_owned(),
                    ..Scope::default()
                },
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Attributes the following calls to `step` and `action` (both `None` outside any step).
    pub fn set_scope(&self, step: Option<&str>, action: Option<&str>) {
        let mut inner = self.lock();
        inner.scope.step = step.map(str::to_owned);
        inner.scope.action = action.map(str::to_owned);
    }

    /// Appends one call. A mutating call's line is on disk when this returns.
    pub fn record(
        &self,
        service: &str,
        operation: &str,
        mutating: bool,
        ids: &[String],
        outcome: Result<(), &str>,
    ) -> Result<(), Error> {
        let mut inner = self.lock();
        let record = AuditRecord {
            at: Utc::now(),
            command: inner.scope.command.clone(),
            step: inner.scope.step.clone(),
            action: inner.scope.action.clone(),
            service: service.to_owned(),
            operation: self.redactor.redact(operation),
            mutating,
            ids: ids.iter().map(|id| self.redactor.redact(id)).collect(),
            result: if outcome.is_ok() { "ok" } else { "error" }.to_owned(),
            error: outcome.err().map(|e| self.redactor.redact(e)),
        };
        self.tally.add(CallKind {
            service: record.service.clone(),
            operation: record.operation.clone(),
            mutating,
            result: record.result.clone(),
        });
        let mut line = serde_json::to_vec(&record).expect("an audit record serializes");
        line.push(b'\n');
        let path = self.path.clone();
        inner
            .file
            .write_all(&line)
            .map_err(Error::io("append to audit log", &path))?;
        if mutating {
            inner
                .file
                .sync_data()
                .map_err(Error::io("fsync audit log", &path))?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads an audit log back (for `status`, tests and reviews).
pub fn read_audit_log(path: &Path) -> Result<Vec<AuditRecord>, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io("read audit log", path))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::BadInput(format!(
                    "{}:{}: not an audit record: {e}",
                    path.display(),
                    index + 1
                ))
            })
        })
        .collect()
}
