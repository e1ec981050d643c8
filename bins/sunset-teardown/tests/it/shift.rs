//! Over 600 lines on purpose: the haproxy, backend and load scaffolding the three shifts share.
//!
//! `shift_traffic` through a real haproxy: two local HTTP servers as the legacy and the new
//! backend, a bounded loopback load generator through haproxy, haproxy's own Prometheus
//! exporter scraped by the services' Prometheus for the gates. Weights are judged by asking
//! haproxy's runtime API directly, and the changes by the audit log.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sunset_test_support::harness::text;
use sunset_test_support::prometheus::{FileTarget, Prometheus};

use crate::support::World;

/// One backend server: answers 200 (or 500 once told to fail) and counts what it served.
struct Server {
    port: u16,
    served: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (served, failing) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (count, fail) = (Arc::clone(&served), Arc::clone(&failing));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 2048];
                let _ = stream.read(&mut request);
                count.fetch_add(1, Ordering::SeqCst);
                let status = if fail.load(Ordering::SeqCst) {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                );
            }
        });
        Server {
            port,
            served,
            failing,
        }
    }
}

/// haproxy in front of the two servers, with its runtime API and its Prometheus exporter.
struct Haproxy {
    child: Child,
    front: u16,
    api: String,
    _scraped: FileTarget,
    label: String,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Haproxy {
    fn start(world: &World, prometheus: &Prometheus, legacy: &Server, new: &Server) -> Haproxy {
        let binary = sunset_test_support::service_var("SUNSET_HAPROXY").unwrap_or_else(|_| {
            panic!(
                "haproxy is not installed: `cargo xtask services up` installs it (Debian package haproxy)"
            )
        });
        let (front, metrics) = (free_port(), free_port());
        let api = world.dir.path().join("haproxy.sock");
        let config = world.dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global
    stats socket {api} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend app
    bind 127.0.0.1:{front}
    default_backend app
frontend metrics
    bind 127.0.0.1:{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
backend app
    balance roundrobin
    server legacy 127.0.0.1:{legacy} weight 100
    server new 127.0.0.1:{new} weight 0
",
                api = api.display(),
                legacy = legacy.port,
                new = new.port,
            ),
        )
        .unwrap();
        let child = Command::new(&binary)
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !api.exists() || TcpStream::connect(("127.0.0.1", front)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let label = world.prefix.clone();
        let scraped = prometheus.scrape(&label, ([127, 0, 0, 1], metrics).into());
        Haproxy {
            child,
            front,
            api: api.display().to_string(),
            _scraped: scraped,
            label,
        }
    }

    /// `get weight` of both servers, asked directly: the oracle for every stage.
    fn weights(&self) -> (u32, u32) {
        let ask = |server: &str| -> u32 {
            let mut stream = std::os::unix::net::UnixStream::connect(&self.api).unwrap();
            stream
                .write_all(format!("get weight app/{server}\n").as_bytes())
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer.split_whitespace().next().unwrap().parse().unwrap()
        };
        (ask("legacy"), ask("new"))
    }

    /// Requests through haproxy every 10 ms until dropped: (requests, non-200 answers).
    fn load(&self) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (halt, count, failed, front) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&errors),
            self.front,
        );
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", front)) {
                    let _ = stream
                        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    count.fetch_add(1, Ordering::SeqCst);
                    if !answer.starts_with("HTTP/1.1 200") {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Load {
            stop,
            thread: Some(thread),
            errors,
        }
    }

    fn sequence(&self, world: &World, name: &str, prometheus: &str) -> PathBuf {
        let responses = |filter: &str| {
            format!(
                r#"sum(rate(haproxy_server_http_responses_total{{test="{}", proxy="app"{filter}}}[3s]))"#,
                self.label
            )
        };
        let errors = format!("{} / {}", responses(r#", code="5xx""#), responses(""));
        let split = format!(
            "100 * {} / {}",
            responses(r#", server="new""#),
            responses("")
        );
        world.sequence(
            name,
            &format!(
                r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  shift:
    - action: shift_traffic
      traffic: {{ haproxy: {{ runtime_api: "{api}", backend: app, legacy: legacy, new: new }} }}
      stages: [10, 25, 50, 100]
      hold: 6s
      interval: 500ms
      gates:
        - {{ name: error ratio, prometheus: "{prometheus}", query: '{errors}', below: 0.05, for: 3s }}
        - {{ name: traffic split, prometheus: "{prometheus}", query: '{split}', within_weight: 20, for: 3s }}
"#,
                api = self.api,
            ),
        )
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    errors: Arc<AtomicUsize>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// haproxy in front of a legacy and a new server, under load, its metrics in Prometheus.
struct Scene {
    _prometheus: Prometheus,
    url: String,
    world: World,
    legacy: Server,
    new: Server,
    haproxy: Haproxy,
    load: Load,
}

impl Scene {
    fn start(prefix: &str) -> Scene {
        let prometheus = Prometheus::from_env();
        let url = sunset_test_support::service_var("SUNSET_PROMETHEUS_URL").unwrap();
        let world = World::new(prefix);
        let (legacy, new) = (Server::start(), Server::start());
        let haproxy = Haproxy::start(&world, &prometheus, &legacy, &new);
        let load = haproxy.load();
        prometheus.wait_for(
            &format!(
                r#"haproxy_server_http_responses_total{{test="{}", server="legacy"}} > 0"#,
                haproxy.label
            ),
            Duration::from_secs(30),
        );
        Scene {
            _prometheus: prometheus,
            url,
            world,
            legacy,
            new,
            haproxy,
            load,
        }
    }
}

/// The shares the audit log says were set, in order.
fn shares_set(world: &World) -> Vec<String> {
    world
        .audit()
        .iter()
        .filter(|r| r.service == "haproxy" && r.mutating && r.result == "ok")
        .map(|r| {
            let new = r.operation.split(';').next().unwrap_or_default();
            new.rsplit(' ').next().unwrap_or_default().to_owned()
        })
        .collect()
}

fn shift_record(world: &World) -> Option<serde_json::Value> {
    let runs = std::fs::read_dir(world.state.path().join("teardown")).ok()?;
    for run in runs.filter_map(Result::ok) {
        let dir = run.path().join("shift");
        for entry in std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            if entry.path().extension().is_some_and(|e| e == "json") {
                return serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok();
            }
        }
    }
    None
}

#[test]
fn a_shift_moves_the_weights_to_100_under_load_and_resumes_after_sigkill_without_a_second_change() {
    let Scene {
        url,
        world,
        legacy: _legacy,
        new,
        haproxy,
        load,
        ..
    } = Scene::start("td-shift");
    let sequence = haproxy.sequence(&world, "shift", &url);
    let seq = sequence.to_str().unwrap();
    let plan = world.run(&["plan", seq]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains(
            "shift haproxy backend `app` from `legacy` to `new` through 10%, 25%, 50%, 100% (each held 6s, 2 gates watched)"
        ),
        "{}",
        text(&plan)
    );

    // Killed while it holds 25 %: proven by the shift's record and haproxy's own weights.
    let mut running = world.spawn(&["apply", seq, "--yes"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = shift_record(&world);
        if record
            .as_ref()
            .is_some_and(|r| r["stage"] == 1 && r["phase"] == "holding")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shift never held 25%: {record:?}"
        );
        assert!(
            running.try_wait().unwrap().is_none(),
            "apply ended before 25%"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(haproxy.weights(), (75, 25), "killed at 25%");

    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        haproxy.weights(),
        (0, 100),
        "every request now goes to the new server"
    );
    assert_eq!(
        shares_set(&world),
        ["10", "25", "50", "100"],
        "one change per stage: the resumed run did not set 25% again"
    );
    // A new attempt starts from the weights as they are: all at 100 %, nothing to send.
    let out = world.run(&["apply", seq, "--yes", "--restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(shares_set(&world), ["10", "25", "50", "100"], "no change");
    let before = new.served.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        new.served.load(Ordering::SeqCst) > before,
        "the new server serves"
    );
    assert_eq!(
        load.errors.load(Ordering::SeqCst),
        0,
        "no request failed while the traffic moved"
    );
    drop(load);
}

#[test]
fn a_gate_broken_at_50_moves_traffic_back_to_25_and_exits_1_and_rollback_restores_all() {
    let Scene {
        url,
        world,
        legacy: _legacy,
        new,
        haproxy,
        load,
        ..
    } = Scene::start("td-shift-back");
    // The new system fails under half the traffic: it answers 500 once haproxy gives it 50.
    let watching = Arc::new(AtomicBool::new(true));
    let breaker = {
        let (api, failing, watching) = (
            haproxy.api.clone(),
            Arc::clone(&new.failing),
            Arc::clone(&watching),
        );
        std::thread::spawn(move || {
            while watching.load(Ordering::SeqCst) {
                if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&api) {
                    let _ = stream.write_all(b"get weight app/new\n");
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    if answer.split_whitespace().next() == Some("50") {
                        failing.store(true, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let sequence = haproxy.sequence(&world, "shift", &url);
    let seq = sequence.to_str().unwrap();
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "a gate broke at 50% on the new system: `error ratio` was not below 0.05 for 3s"
        ) && text(&out).contains("traffic is back at 25% (legacy 75, new 25)"),
        "{}",
        text(&out)
    );
    assert!(
        new.failing.load(Ordering::SeqCst),
        "the new server did fail"
    );
    assert_eq!(haproxy.weights(), (75, 25), "back at the stage before");
    assert_eq!(shares_set(&world), ["10", "25", "50", "25"]);
    watching.store(false, Ordering::SeqCst);
    breaker.join().unwrap();
    drop(load);

    let out = world.run(&["rollback", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(haproxy.weights(), (100, 0), "as before the shift");
}

/// The Route 53 and ELBv2 targets against the emulator: the weights AWS reports after each
/// run, and one change per stage in the audit log and in the emulator's own request log.
#[test]
fn route53_and_elbv2_shifts_make_one_change_per_stage() {
    use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum};
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let world = World::new("td-shift-aws");
    // ELBv2 names are at most 32 characters: the prefix's unique tail.
    let short = world.prefix[world.prefix.len().saturating_sub(8)..].to_owned();
    let zone_name = format!("{}.example.", world.prefix);
    let record = format!("api.{zone_name}");
    let (lb_arn, vpc) = world.load_balancer("shift");
    let (zone_id, listener, legacy_group, new_group) = world.runtime.block_on(async {
        let zone = world
            .route53
            .create_hosted_zone()
            .name(&zone_name)
            .caller_reference(&world.prefix)
            .send()
            .await
            .unwrap();
        let zone_id = zone
            .hosted_zone()
            .unwrap()
            .id()
            .trim_start_matches("/hostedzone/")
            .to_owned();
        let set = |id: &str, weight: i64, ip: &str| {
            Change::builder()
                .action(ChangeAction::Create)
                .resource_record_set(
                    ResourceRecordSet::builder()
                        .name(&record)
                        .r#type(RrType::A)
                        .ttl(60)
                        .set_identifier(id)
                        .weight(weight)
                        .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        world
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .change_batch(
                ChangeBatch::builder()
                    .changes(set("legacy", 100, "10.0.0.1"))
                    .changes(set("new", 0, "10.0.0.2"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let group = |name: String| {
            let (elb, vpc) = (&world.elb, vpc.clone());
            async move {
                elb.create_target_group()
                    .name(name)
                    .protocol(ProtocolEnum::Http)
                    .port(80)
                    .vpc_id(vpc)
                    .send()
                    .await
                    .unwrap()
                    .target_groups()[0]
                    .target_group_arn()
                    .unwrap()
                    .to_owned()
            }
        };
        let legacy_group = group(format!("old-{short}")).await;
        let new_group = group(format!("new-{short}")).await;
        let listener = world
            .elb
            .create_listener()
            .load_balancer_arn(&lb_arn)
            .protocol(ProtocolEnum::Http)
            .port(80)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(&legacy_group)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .listeners()[0]
            .listener_arn()
            .unwrap()
            .to_owned();
        (zone_id, listener, legacy_group, new_group)
    });
    let sequence = world.sequence(
        "aws-shift",
        &format!(
            r#"allowed_accounts: ["{{account}}"]
region: {{region}}
decommission_sequence:
  dns:
    - action: shift_traffic
      traffic: {{ route53: {{ zone: "{zone_name}", record: "{record}", legacy: legacy, new: new }} }}
      stages: [10, 50, 100]
      hold: 1s
  balancer:
    - action: shift_traffic
      traffic: {{ elbv2: {{ listener: "{listener}", legacy: "{legacy_group}", new: "{new_group}" }} }}
      stages: [25, 100]
      hold: 1s
"#
        ),
    );
    let seq = sequence.to_str().unwrap();
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (weights, forward) = world.runtime.block_on(async {
        let sets = world
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .send()
            .await
            .unwrap();
        let weights: Vec<(String, i64)> = sets
            .resource_record_sets()
            .iter()
            .filter(|s| s.r#type() == &RrType::A)
            .map(|s| (s.set_identifier().unwrap().to_owned(), s.weight().unwrap()))
            .collect();
        let listeners = world
            .elb
            .describe_listeners()
            .listener_arns(&listener)
            .send()
            .await
            .unwrap();
        let forward: Vec<(String, i32)> = listeners.listeners()[0].default_actions()[0]
            .forward_config()
            .unwrap()
            .target_groups()
            .iter()
            .map(|t| {
                (
                    t.target_group_arn().unwrap().to_owned(),
                    t.weight().unwrap(),
                )
            })
            .collect();
        (weights, forward)
    });
    let mut weights = weights;
    weights.sort();
    assert_eq!(weights, [("legacy".to_owned(), 0), ("new".to_owned(), 100)]);
    assert_eq!(forward, [(legacy_group, 0), (new_group, 100)]);
    let changes = |operation: &str| {
        world
            .audit()
            .iter()
            .filter(|r| r.mutating && r.operation == operation && r.result == "ok")
            .count()
    };
    assert_eq!(changes("ChangeResourceRecordSets"), 3, "one per stage");
    assert_eq!(changes("ModifyListener"), 2, "one per stage");
    let emulator: Vec<String> = world.emulator.mutations();
    assert_eq!(
        emulator.iter().filter(|m| m.ends_with("/rrset")).count(),
        3,
        "{emulator:?}"
    );
    assert_eq!(
        emulator
            .iter()
            .filter(|m| m.contains("ModifyListener"))
            .count(),
        2,
        "{emulator:?}"
    );
    // Rolled back: both where they were before the shifts.
    let out = world.run(&["rollback", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let legacy_weight = world.runtime.block_on(async {
        world
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .send()
            .await
            .unwrap()
            .resource_record_sets()
            .iter()
            .find(|s| s.set_identifier() == Some("legacy"))
            .and_then(|s| s.weight())
    });
    assert_eq!(legacy_weight, Some(100));
}

/// A hold longer than the run may watch (`--watch-for`) exits 3 like a wait gate; the next
/// apply holds on from where the first left off, without setting the stage again.
#[test]
fn a_hold_longer_than_the_run_watches_exits_3_and_the_next_apply_holds_on() {
    let Scene {
        url,
        world,
        legacy: _legacy,
        new: _new,
        haproxy,
        load,
        ..
    } = Scene::start("td-shift-watch");
    let sequence = haproxy.sequence(&world, "shift", &url);
    let seq = sequence.to_str().unwrap();
    let out = world.run(&["apply", seq, "--yes", "--watch-for", "2s"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("longer than this run watches; apply again to go on holding"),
        "{}",
        text(&out)
    );
    assert_eq!(haproxy.weights(), (90, 10), "still holding the first stage");
    let record = shift_record(&world).expect("the shift's record");
    assert_eq!(
        (record["stage"].clone(), record["phase"].clone()),
        (0.into(), "holding".into())
    );
    let out = world.run(&["apply", seq, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(haproxy.weights(), (0, 100));
    assert_eq!(
        shares_set(&world),
        ["10", "25", "50", "100"],
        "10% was set once"
    );
    drop(load);
}
