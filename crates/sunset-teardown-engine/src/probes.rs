//! Local probes and steps: a shell command, an SQL statement, an HTTP request. Each is audited
//! like an AWS call, and none of them ever prints a secret (database URLs are not logged).

use std::time::Duration;

use sunset_plan::Text;

use crate::Error;
use crate::audit::AuditLog;
use crate::resources::InstanceInfo;

/// Runs `command` with `sh -c`; for a target instance its id, Name and private IP are in
/// `SUNSET_TARGET_ID`, `SUNSET_TARGET_NAME` and `SUNSET_TARGET_IP`. The command sees only PATH,
/// HOME, those and the variables named in `pass_env`: never sunset's own AWS keys or
/// `DATABASE_URL` unless the sequence asks. Returns the exit status and the last line of output
/// (for messages).
pub(crate) async fn run_command(
    audit: &AuditLog,
    command: &str,
    target: Option<&InstanceInfo>,
    pass_env: &[Text],
    timeout: Duration,
    mutating: bool,
) -> Result<(bool, String), Error> {
    let mut child = tokio::process::Command::new("sh");
    child.arg("-c").arg(command).kill_on_drop(true).env_clear();
    let passed = ["PATH", "HOME"]
        .into_iter()
        .chain(pass_env.iter().map(Text::as_str));
    for name in passed {
        if let Some(value) = std::env::var_os(name) {
            child.env(name, value);
        }
    }
    if let Some(target) = target {
        child
            .env("SUNSET_TARGET_ID", &target.id)
            .env(
                "SUNSET_TARGET_NAME",
                target.name.as_deref().unwrap_or_default(),
            )
            .env(
                "SUNSET_TARGET_IP",
                target.private_ip.as_deref().unwrap_or_default(),
            );
    }
    let ids: Vec<String> = target.map(|t| vec![t.id.clone()]).unwrap_or_default();
    let output = match tokio::time::timeout(timeout, child.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            let message = format!("cannot run `{command}`: {error}");
            audit.record("command", command, mutating, &ids, Err(&message))?;
            return Err(Error::Probe(message));
        }
        Err(_) => {
            let message = format!(
                "`{command}` did not finish within {}",
                sunset_plan::format_duration(timeout)
            );
            audit.record("command", command, mutating, &ids, Err(&message))?;
            return Err(Error::Probe(message));
        }
    };
    let text = String::from_utf8_lossy(if output.stderr.is_empty() {
        &output.stdout
    } else {
        &output.stderr
    });
    let last = text.lines().last().unwrap_or_default().trim().to_owned();
    let ok = output.status.success();
    let outcome = format!("{}: {last}", output.status);
    audit.record(
        "command",
        command,
        mutating,
        &ids,
        if ok { Ok(()) } else { Err(&outcome) },
    )?;
    Ok((ok, outcome))
}

/// Runs `sql` and returns the first column of the first row as text (`None` for no rows).
/// Connecting and the statement together take at most `timeout`: the server cancels the
/// statement itself (`statement_timeout`), so a slow query does not outlive the check.
pub(crate) async fn run_sql(
    audit: &AuditLog,
    database_url: &str,
    sql: &str,
    timeout: Duration,
    mutating: bool,
) -> Result<Option<String>, Error> {
    let result = match tokio::time::timeout(timeout, query_first(database_url, sql, timeout)).await
    {
        Ok(result) => result,
        Err(_) => Err(Error::Probe(format!(
            "`{sql}` did not finish within {}",
            sunset_plan::format_duration(timeout)
        ))),
    };
    let failure = result.as_ref().err().map(Error::with_causes);
    audit.record(
        "sql",
        sql,
        mutating,
        &[],
        failure.as_deref().map_or(Ok(()), Err),
    )?;
    result
}

/// A wrong URL is bad input at once ([`Error::Connection`]); a server that cannot be reached
/// or a failing statement is a probe failure, which a validation retries until its timeout.
async fn query_first(
    database_url: &str,
    sql: &str,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    let client = sunset_pg::connect(database_url, "sunset-teardown")
        .await
        .map_err(|e| match e {
            sunset_pg::Error::Url(_) => Error::Connection(e),
            other => Error::Probe(format!(
                "cannot connect to the database of the `sql` step: {other}"
            )),
        })?;
    let probe = |what: String| {
        move |e: tokio_postgres::Error| Error::Probe(format!("{what}: {}", sunset_pg::describe(&e)))
    };
    client
        .simple_query(&format!(
            "SET statement_timeout = {}",
            timeout.as_millis().clamp(1, i32::MAX as u128)
        ))
        .await
        .map_err(probe("cannot set statement_timeout".to_owned()))?;
    let messages = client
        .simple_query(sql)
        .await
        .map_err(probe(format!("`{sql}` failed")));
    drop(client);
    let first = messages?.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
        _ => None,
    });
    Ok(first.flatten())
}

/// Sends one HTTP request and returns its status code.
pub(crate) async fn http_status(
    audit: &AuditLog,
    method: &str,
    url: &str,
    timeout: Duration,
    mutating: bool,
) -> Result<u16, Error> {
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Error::BadInput(format!("`{method}` is not an HTTP method")))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::Probe(format!("cannot build an HTTP client: {e}")))?;
    let operation = format!("{method} {url}");
    match client.request(method, url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            audit.record("http", &operation, mutating, &[], Ok(()))?;
            Ok(status)
        }
        Err(error) => {
            let message = format!("{operation}: {error}");
            audit.record("http", &operation, mutating, &[], Err(&message))?;
            Err(Error::Probe(message))
        }
    }
}
