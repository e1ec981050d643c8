//! A test's world for `sunset-teardown`: its own region of the AWS emulator, a small legacy fleet
//! built through the SDK, sequence files, and the built binary run against them.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, InstanceType, ResourceType, TagSpecification,
};
use sunset_teardown_engine::{AuditRecord, read_audit_log};
use sunset_test_support::emulator_log::EmulatorLog;
pub(crate) use sunset_test_support::harness::text;
use sunset_test_support::{aws_config, service_env, unique_name};

#[path = "../../examples/fleet/mod.rs"]
mod fleet;
use fleet::tag;
pub(crate) use fleet::{Fleet, Names};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sunset-teardown");
/// moto's account.
pub(crate) const ACCOUNT: &str = "123456789012";

pub(crate) struct World {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub ec2: aws_sdk_ec2::Client,
    pub(crate) elb: aws_sdk_elasticloadbalancingv2::Client,
    pub route53: aws_sdk_route53::Client,
    pub(crate) region: String,
    /// Unique per test: every name in the fleet starts with it.
    pub(crate) prefix: String,
    pub(crate) state: tempfile::TempDir,
    pub(crate) dir: tempfile::TempDir,
    /// What the binary's requests did at the emulator, read from the emulator's own log.
    pub(crate) emulator: EmulatorLog,
}

const REGIONS: [&str; 10] = [
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "ca-central-1",
    "sa-east-1",
];

impl World {
    pub(crate) fn new(prefix: &str) -> World {
        let prefix = unique_name(prefix).replace('_', "-");
        let region =
            REGIONS[prefix.bytes().map(usize::from).sum::<usize>() % REGIONS.len()].to_owned();
        World::in_region(prefix, region)
    }

    /// A world for fleets with fixed names (the shipped sequences name theirs): in the first
    /// region whose security groups hold none of `group_names` yet, so a second run against the
    /// same long-lived emulator does not collide with the first run's fleet.
    pub(crate) fn where_unused(prefix: &str, group_names: &[&str]) -> World {
        let prefix = unique_name(prefix).replace('_', "-");
        let start = prefix.bytes().map(usize::from).sum::<usize>();
        for offset in 0..REGIONS.len() {
            let world = World::in_region(
                prefix.clone(),
                REGIONS[(start + offset) % REGIONS.len()].to_owned(),
            );
            let taken = world.runtime.block_on(async {
                world
                    .ec2
                    .describe_security_groups()
                    .filters(
                        aws_sdk_ec2::types::Filter::builder()
                            .name("group-name")
                            .set_values(Some(group_names.iter().map(|n| (*n).to_owned()).collect()))
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap()
                    .security_groups()
                    .len()
            });
            if taken == 0 {
                return world;
            }
        }
        panic!(
            "every test region of the emulator already holds {group_names:?}: restart it \
             (`cargo xtask services down && cargo xtask services up`)"
        )
    }

    fn in_region(prefix: String, region: String) -> World {
        let runtime = sunset_test_support::harness::runtime();
        let config = runtime.block_on(aws_config());
        let config = config
            .to_builder()
            .region(aws_config::Region::new(region.clone()))
            .build();
        World {
            ec2: aws_sdk_ec2::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            route53: aws_sdk_route53::Client::new(&config),
            runtime,
            region,
            prefix,
            state: tempfile::tempdir().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            emulator: EmulatorLog::start("sunset-teardown-test"),
        }
    }

    /// Builds the legacy fleet (see [`fleet::build`]) in this world's region.
    pub(crate) fn fleet(&self, names: &Names) -> Fleet {
        self.runtime
            .block_on(fleet::build(&self.ec2, &self.elb, &self.route53, names))
    }

    /// An Application Load Balancer in the default VPC, named `{tag}-` and the prefix's unique
    /// tail (ELBv2 names are at most 32 characters), its ARN and its VPC.
    pub(crate) fn load_balancer(&self, tag: &str) -> (String, String) {
        let short = &self.prefix[self.prefix.len().saturating_sub(8)..];
        self.runtime.block_on(async {
            let vpc = self.ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
                .vpc_id()
                .unwrap()
                .to_owned();
            let subnets: Vec<String> = self
                .ec2
                .describe_subnets()
                .send()
                .await
                .unwrap()
                .subnets()
                .iter()
                .filter(|s| s.vpc_id() == Some(vpc.as_str()))
                .map(|s| s.subnet_id().unwrap().to_owned())
                .take(2)
                .collect();
            let created = self
                .elb
                .create_load_balancer()
                .name(format!("{tag}-{short}"))
                .set_subnets(Some(subnets))
                .send()
                .await
                .unwrap();
            let arn = created.load_balancers()[0]
                .load_balancer_arn()
                .unwrap()
                .to_owned();
            (arn, vpc)
        })
    }

    /// An instance outside any sequence, with extra tags.
    pub(crate) fn instance(
        &self,
        name: &str,
        extra: &[(&str, &str)],
        termination_protected: bool,
    ) -> String {
        self.runtime.block_on(async {
            let mut tags = TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag("Name", name));
            for (k, v) in extra {
                tags = tags.tags(tag(k, v));
            }
            let mut run = self
                .ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .min_count(1)
                .max_count(1)
                .instance_type(InstanceType::T3Micro)
                .tag_specifications(tags.build());
            if termination_protected {
                run = run.disable_api_termination(true);
            }
            let id = run.send().await.unwrap().instances()[0]
                .instance_id()
                .unwrap()
                .to_owned();
            if termination_protected {
                self.ec2
                    .modify_instance_attribute()
                    .instance_id(&id)
                    .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
                    .send()
                    .await
                    .unwrap();
            }
            id
        })
    }

    /// `count` instances in one call, all tagged `key=value`: their ids.
    pub(crate) fn instances(&self, key: &str, value: &str, count: i32) -> Vec<String> {
        self.runtime.block_on(async {
            let tags = TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag(key, value))
                .build();
            let out = self
                .ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .min_count(count)
                .max_count(count)
                .instance_type(InstanceType::T3Micro)
                .tag_specifications(tags)
                .send()
                .await
                .unwrap();
            out.instances()
                .iter()
                .map(|i| i.instance_id().unwrap().to_owned())
                .collect()
        })
    }

    /// Writes a sequence file; `{region}` and `{account}` are filled in.
    pub(crate) fn sequence(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        let text = yaml
            .replace("{region}", &self.region)
            .replace("{account}", ACCOUNT);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .envs(service_env())
            .env("AWS_REGION", &self.region)
            .env("SUNSET_STATE_DIR", self.state.path())
            .env("NO_COLOR", "1")
            .env(self.emulator.env().0, self.emulator.env().1)
            .stdin(Stdio::null());
        command
    }

    /// Runs the binary to completion.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sunset-teardown")
    }

    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sunset-teardown")
    }

    /// Every audit log line the runs of this world wrote.
    pub(crate) fn audit(&self) -> Vec<AuditRecord> {
        let mut records = Vec::new();
        for path in audit_logs(self.state.path()) {
            records.extend(read_audit_log(&path).unwrap());
        }
        records.sort_by_key(|r| r.at);
        records
    }

    pub(crate) fn instance_state(&self, id: &str) -> String {
        self.runtime.block_on(async {
            let out = self
                .ec2
                .describe_instances()
                .instance_ids(id)
                .send()
                .await
                .unwrap();
            out.reservations()[0].instances()[0]
                .state()
                .unwrap()
                .name()
                .unwrap()
                .as_str()
                .to_owned()
        })
    }

    pub(crate) fn volume_attachments(&self, id: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let out = self
                .ec2
                .describe_volumes()
                .volume_ids(id)
                .send()
                .await
                .unwrap();
            out.volumes()[0]
                .attachments()
                .iter()
                .map(|a| a.instance_id().unwrap_or_default().to_owned())
                .collect()
        })
    }

    pub(crate) fn group_exists(&self, id: &str) -> bool {
        self.runtime.block_on(async {
            self.ec2
                .describe_security_groups()
                .filters(Filter::builder().name("group-id").values(id).build())
                .send()
                .await
                .unwrap()
                .security_groups()
                .len()
                == 1
        })
    }

    pub(crate) fn load_balancer_exists(&self, arn: &str) -> bool {
        self.runtime.block_on(async {
            self.elb
                .describe_load_balancers()
                .send()
                .await
                .unwrap()
                .load_balancers()
                .iter()
                .any(|lb| lb.load_balancer_arn() == Some(arn))
        })
    }

    pub(crate) fn record_values(&self, zone_id: &str, name: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let sets = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(zone_id)
                .send()
                .await
                .unwrap();
            sets.resource_record_sets()
                .iter()
                .filter(|s| s.name().trim_end_matches('.') == name)
                .flat_map(|s| s.resource_records().iter().map(|r| r.value().to_owned()))
                .collect()
        })
    }

    pub(crate) fn snapshots_of(&self, volume: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let out = self
                .ec2
                .describe_snapshots()
                .owner_ids("self")
                .filters(Filter::builder().name("volume-id").values(volume).build())
                .send()
                .await
                .unwrap();
            out.snapshots()
                .iter()
                .map(|s| s.snapshot_id().unwrap().to_owned())
                .collect()
        })
    }
}

fn audit_logs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(audit_logs(&path));
            } else if path.file_name().is_some_and(|n| n == "audit.jsonl") {
                found.push(path);
            }
        }
    }
    found
}

/// Mutating calls that succeeded, as (operation, id) pairs, in order.
pub(crate) fn mutations(records: &[AuditRecord]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r.mutating && r.result == "ok")
        .flat_map(|r| {
            r.ids
                .iter()
                .map(move |id| (r.operation.clone(), id.clone()))
        })
        .collect()
}

/// The emulator's own request log agrees with the audit log: each mutating AWS call the audit
/// log says succeeded reached the emulator once, and no other mutating request reached it.
pub(crate) fn assert_emulator_saw_each_audited_mutation_once(world: &World) {
    let local = ["http", "sql", "command", "archive"];
    let mut audited: Vec<String> = world
        .audit()
        .iter()
        .filter(|r| r.mutating && r.result == "ok" && !local.contains(&r.service.as_str()))
        .map(|r| r.operation.clone())
        .collect();
    let mut received: Vec<String> = world
        .emulator
        .mutations()
        .into_iter()
        .map(|operation| {
            // Route 53 is a REST API: its one mutating call sunset makes, by path.
            if operation.starts_with("POST ") && operation.trim_end_matches('/').ends_with("/rrset")
            {
                "ChangeResourceRecordSets".to_owned()
            } else {
                operation
            }
        })
        .collect();
    audited.sort();
    received.sort();
    assert!(
        !received.is_empty(),
        "the emulator's log holds no mutating request of this test: the comparison would be vacuous"
    );
    assert_eq!(
        received, audited,
        "mutating requests the emulator received (left) against those the audit log records (right)"
    );
}

/// No mutating call was sent twice for the same resource.
pub(crate) fn assert_each_once(done: &[(String, String)]) {
    let mut unique = done.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        done.len(),
        "a mutating call was repeated: {done:?}"
    );
}

/// Waits until `done` holds, panicking with `what` after `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The legacy-metrics sequence for a prefixed fleet, with waits short enough for tests.
pub(crate) fn metrics_sequence(names: &Names, wait: &str) -> String {
    format!(
        r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  step_1_collectors:
    - action: stop_services
      targets: [{c1}, {c2}]
      validation: no_active_connections
      wait_time: {wait}
  step_2_storage:
    - action: snapshot_volumes
      targets: [{volume}]
      validation: snapshot_completed
    - action: detach_volumes
      validation: no_mount_points
  step_3_compute:
    - action: terminate_instances
      targets: [{group}]
      validation: instance_terminated
      wait_time: {wait}
    - action: release_addresses
  step_4_networking:
    - action: remove_dns
      records: [{record}]
    - action: delete_load_balancers
      targets: [{lb}]
    - action: clean_security_groups
"#,
        c1 = names.collectors[0],
        c2 = names.collectors[1],
        volume = names.volume,
        group = names.group_tag,
        record = names.record,
        lb = names.lb,
    )
}

/// A legacy service's admin endpoint: `POST /drain` answers 202; `GET /health` answers 200 for
/// the first two requests (still draining), then 503.
pub(crate) fn legacy_service() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let health_checks = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&health_checks);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut request_line).unwrap_or_default();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let status = if request_line.starts_with("POST /drain") {
                "202 Accepted"
            } else if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, health_checks)
}
