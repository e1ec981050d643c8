//! Every sslmode against the real server. `cargo xtask services up` gives its cluster a
//! certificate for `localhost` signed by a CA of its own (`SUNSET_PG_CA_FILE`).

use sunset_pg::Database;
use sunset_test_support::{HOW_TO_START, database_url, service_var};

fn ca_file() -> String {
    service_var("SUNSET_PG_CA_FILE").unwrap_or_else(|_| {
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
