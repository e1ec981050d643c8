//! Every sslmode against the real server. `cargo xtask services up` gives its cluster a
//! certificate for `localhost` signed by a CA of its own (`SUNSET_PG_CA_FILE`).

use sunset_outcome::Classify;
use sunset_pg::Database;
use sunset_test_support::{HOW_TO_START, database_url, service_var};

fn ca_file() -> String {
    service_var("SUNSET_PG_CA_FILE")
        .ok()
        .filter(|ca| !ca.is_empty())
        .unwrap_or_else(|| {
        panic!(
            "no SUNSET_PG_CA_FILE: these tests need the TLS-enabled cluster of `cargo xtask services up` \
             (an external DATABASE_URL has no CA file to check against): {HOW_TO_START}"
        )
    })
}

/// The services' URL with `host` swapped in and `query` appended.
fn url(host: &str, query: &str) -> String {
    let base = database_url();
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let (user, rest) = rest.split_once('@').map_or(("", rest), |(u, r)| (u, r));
    let (_, port_and_path) = rest.split_once(':').expect("host:port");
    let at = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    let separator = if port_and_path.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{scheme}://{at}{host}:{port_and_path}{separator}{query}")
}

async fn encrypted(url: &str) -> Result<bool, sunset_pg::Error> {
    let client = sunset_pg::connect(url, "sunset-pg test").await?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0))
}

#[tokio::test]
async fn every_sslmode_does_what_libpq_does() {
    let ca = ca_file();
    assert!(
        !encrypted(&url("127.0.0.1", "sslmode=disable"))
            .await
            .unwrap()
    );
    assert!(
        encrypted(&url("127.0.0.1", "sslmode=prefer"))
            .await
            .unwrap()
    );
    assert!(
        encrypted(&url("127.0.0.1", "sslmode=require"))
            .await
            .unwrap()
    );
    // The certificate names `localhost`: verify-full checks that, verify-ca only the chain.
    assert!(
        encrypted(&url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ))
        .await
        .unwrap()
    );
    assert!(
        encrypted(&url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        ))
        .await
        .unwrap()
    );
    let wrong_name = encrypted(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect_err("the certificate is not for 127.0.0.1");
    assert!(!wrong_name.is_bad_input());
    assert!(
        wrong_name
            .to_string()
            .to_lowercase()
            .contains("certificate"),
        "{wrong_name}"
    );
    // Not signed by the public roots.
    let untrusted = encrypted(&url("localhost", "sslmode=verify-full&sslrootcert=system"))
        .await
        .expect_err("a private CA is not in the public roots");
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );
}

#[tokio::test]
async fn key_value_strings_carry_tls_settings_too() {
    let ca = ca_file();
    let base = Database::parse(&database_url()).expect("the services' URL");
    let port = base.config.get_ports().first().copied().unwrap_or(5432);
    let user = base.config.get_user().unwrap_or("postgres");
    let dbname = base.config.get_dbname().unwrap_or("postgres");
    let url = format!(
        "host=localhost port={port} user={user} dbname={dbname} sslmode=verify-full sslrootcert='{ca}'"
    );
    assert!(encrypted(&url).await.unwrap());
}

/// A server that speaks no TLS: answers every SSL or GSSAPI encryption request with `N`, then
/// passes the plain connection through to the real server.
fn plain_only_server(upstream_port: u16) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut client = client;
                let mut head = [0u8; 8];
                loop {
                    if client.read_exact(&mut head).is_err() {
                        return;
                    }
                    let length = u32::from_be_bytes(head[..4].try_into().unwrap());
                    let code = u32::from_be_bytes(head[4..].try_into().unwrap());
                    if length == 8 && matches!(code, 80877103 | 80877104) {
                        if client.write_all(b"N").is_err() {
                            return;
                        }
                        continue;
                    }
                    break;
                }
                let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream_port))
                else {
                    return;
                };
                if server.write_all(&head).is_err() {
                    return;
                }
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut client_in, &mut server_out));
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    port
}

/// A CA the server's certificate was not signed by.
fn wrong_ca(dir: &std::path::Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    let path = dir.join("wrong-ca.crt");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path.display().to_string()
}

/// libpq's own client, the oracle: `psql` from PATH or the distributions' directories.
fn psql() -> std::path::PathBuf {
    let mut candidates: Vec<std::path::PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("psql"))
            .collect();
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        candidates.extend(dirs.flatten().map(|d| d.path().join("bin/psql")));
    }
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .unwrap_or_else(|| {
            panic!("no psql: the TLS table is judged by libpq's own client; install postgresql-client (apt-get install postgresql-client)")
        })
}

/// Whether psql connects with `url` and whether its session is encrypted; `home` has no
/// `~/.postgresql/root.crt`, and no PG* variable is set.
fn psql_outcome(psql: &std::path::Path, url: &str, home: &std::path::Path) -> Option<bool> {
    let out = std::process::Command::new(psql)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-XAtq",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .arg(url)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim() == "t")
}

async fn sunset_outcome(url: &str, home: &std::path::Path) -> Option<bool> {
    let home = home.display().to_string();
    let env = move |name: &str| (name == "HOME").then(|| home.clone());
    let database = Database::parse_with_env(url, &env).ok()?;
    let connect = tokio::time::timeout(std::time::Duration::from_secs(10), database.connect());
    let client = connect.await.ok()?.ok()?;
    Some(
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0),
    )
}

#[tokio::test]
async fn sunset_connects_exactly_when_psql_connects_and_encrypts_when_it_does() {
    let ca = ca_file();
    let home = tempfile::tempdir().unwrap();
    let wrong = wrong_ca(home.path());
    let psql = psql();
    let base = Database::parse(&database_url()).unwrap();
    let port = base.config.get_ports().first().copied().unwrap_or(5432);
    let plain_port = plain_only_server(port);
    let user = base.config.get_user().unwrap_or("postgres").to_owned();
    let dbname = base.config.get_dbname().unwrap_or("postgres").to_owned();
    let servers = [
        ("right certificate", "localhost", port),
        ("wrong host name", "127.0.0.1", port),
        ("no TLS", "localhost", plain_port),
    ];
    let roots = [
        ("right CA", Some(ca.as_str())),
        ("wrong CA", Some(wrong.as_str())),
        ("no root file", None),
    ];
    let modes = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    let mut table = Vec::new();
    let mut differences = Vec::new();
    for (server, host, port) in servers {
        for (root_name, root) in roots {
            for mode in modes {
                let mut url = format!("postgres://{user}@{host}:{port}/{dbname}?sslmode={mode}");
                if let Some(root) = root {
                    url.push_str(&format!("&sslrootcert={root}"));
                }
                let by_psql = psql_outcome(&psql, &url, home.path());
                let by_sunset = sunset_outcome(&url, home.path()).await;
                let show = |o: Option<bool>| match o {
                    None => "refused",
                    Some(true) => "TLS",
                    Some(false) => "plain",
                };
                let line = format!(
                    "{server:<18} {root_name:<13} {mode:<12} psql {:<8} sunset {}",
                    show(by_psql),
                    show(by_sunset)
                );
                if by_psql != by_sunset {
                    differences.push(line.clone());
                }
                table.push(line);
            }
        }
    }
    assert!(
        differences.is_empty(),
        "sunset and psql disagree:\n{}\n\nthe whole table:\n{}",
        differences.join("\n"),
        table.join("\n")
    );
    // The table is not vacuous: each outcome occurs.
    let all = table.join("\n");
    for outcome in ["psql refused", "psql TLS", "psql plain"] {
        assert!(all.contains(outcome), "{all}");
    }
}

#[tokio::test]
async fn pgsslmode_and_pgsslrootcert_from_the_environment_apply_to_a_url_without_them() {
    let ca = ca_file();
    let home = tempfile::tempdir().unwrap();
    let wrong = wrong_ca(home.path());
    let url = url("localhost", "application_name=env-test");
    let home_text = home.path().display().to_string();
    let with = |root: String| {
        let home = home_text.clone();
        move |name: &str| match name {
            "PGSSLMODE" => Some("verify-full".to_owned()),
            "PGSSLROOTCERT" => Some(root.clone()),
            "HOME" => Some(home.clone()),
            _ => None,
        }
    };
    let good = Database::parse_with_env(&url, &with(ca.clone())).unwrap();
    assert_eq!(good.tls_mode, sunset_pg::TlsMode::VerifyFull);
    let client = good.connect().await.expect("verify-full with the right CA");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
    let bad = Database::parse_with_env(&url, &with(wrong)).unwrap();
    let error = bad.connect().await.expect_err("the wrong CA is refused");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
    // Without a root file anywhere, verify-full refuses before connecting, as libpq does.
    let home = home_text.clone();
    let no_root = move |name: &str| match name {
        "PGSSLMODE" => Some("verify-full".to_owned()),
        "HOME" => Some(home.clone()),
        _ => None,
    };
    let error = Database::parse_with_env(&url, &no_root).unwrap_err();
    assert!(error.to_string().contains("root.crt"), "{error}");
    // An sslmode in the URL wins over PGSSLMODE.
    let url_wins = Database::parse_with_env(&format!("{url}&sslmode=disable"), &with(ca)).unwrap();
    assert_eq!(url_wins.tls_mode, sunset_pg::TlsMode::Disable);
}
