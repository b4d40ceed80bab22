//! Accounts: registration rules, login, and the import that moves users over without hashing.

use anyhow::Result;
use kith_client::ClientError;
use kith_proto::ErrorCode;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::harness::{Attempt, PASSWORD, TestNode, refilled_since, run_kith, spend_allowance};

fn code(result: Result<kith_client::Authed, ClientError>) -> (u16, ErrorCode) {
    match result {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn registering_checks_names_passwords_and_uniqueness() -> Result<()> {
    let node = TestNode::start().await?;
    let client = node.client();
    let alice = client.register("alice", PASSWORD).await?;
    assert_eq!(alice.user_id().as_str(), "alice@test");

    assert_eq!(code(client.register("alice", PASSWORD).await), (409, ErrorCode::UsernameTaken));
    assert_eq!(code(client.register("Alice", PASSWORD).await), (400, ErrorCode::InvalidRequest));
    assert_eq!(code(client.register(&"a".repeat(33), PASSWORD).await), (400, ErrorCode::InvalidRequest));
    assert_eq!(code(client.register("bob", "short").await), (400, ErrorCode::InvalidRequest));
    assert_eq!(code(client.register("bob", &"p".repeat(257)).await), (400, ErrorCode::InvalidRequest));
    let longest = client.register("b.o_b-1", &"p".repeat(256)).await?;
    assert_eq!(longest.user_id().as_str(), "b.o_b-1@test");
    Ok(())
}

#[tokio::test]
async fn login_gives_the_same_answer_for_unknown_users_and_wrong_passwords() -> Result<()> {
    let node = TestNode::start().await?;
    let client = node.client();
    client.register("alice", PASSWORD).await?;
    let alice = client.login("alice", PASSWORD).await?;
    assert_eq!(alice.user_id().as_str(), "alice@test");

    let wrong = client.login("alice", "wrong password").await;
    let unknown = client.login("nobody", PASSWORD).await;
    let malformed = client.login("NOT A NAME", PASSWORD).await;
    let messages: Vec<_> = [wrong, unknown, malformed]
        .into_iter()
        .map(|r| match r {
            Err(ClientError::Api { status, code, message }) => (status, code, message),
            other => panic!("expected 401, got {other:?}"),
        })
        .collect();
    assert_eq!(messages[0].0, 401);
    assert_eq!(messages[0].1, ErrorCode::InvalidCredentials);
    assert!(messages.iter().all(|m| *m == messages[0]), "{messages:?}");
    Ok(())
}

#[tokio::test]
async fn account_requests_are_rate_limited_per_address_and_other_addresses_are_not() -> Result<()> {
    let (rate, burst) = (1, 3);
    let node = TestNode::start_with(
        crate::harness::Backend::Sqlite,
        &["--account-rate", &rate.to_string(), "--account-burst", &burst.to_string()],
    )
    .await?;
    let client = node.client();
    // Requests refused for their content (no hashing, so cheap) spend the allowance too.
    let refused = spend_allowance(burst, rate, async |_| match client.register("Not A Name", PASSWORD).await {
        Err(ClientError::Api { status: 400, code: ErrorCode::InvalidRequest, .. }) => Ok(Attempt::Accepted),
        Err(ClientError::Api { status: 429, code: ErrorCode::RateLimited, .. }) => Ok(Attempt::Limited),
        other => anyhow::bail!("expected 400 or 429, got {other:?}"),
    })
    .await?;
    // A good registration from the same address is refused too (unless a refill came since).
    let alice = client.register("alice", PASSWORD).await;
    if !refilled_since(refused, rate) {
        assert!(matches!(alice, Err(ClientError::Api { status: 429, code: ErrorCode::RateLimited, .. })), "{alice:?}");
    }
    // Another address has its own allowance.
    crate::harness::install_crypto();
    let other_address = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(crate::harness::PATIENCE)
        .build()?;
    let response = other_address
        .post(node.url("/api/v1/register"))
        .json(&serde_json::json!({"username": "bob", "password": PASSWORD}))
        .send()
        .await?;
    assert_eq!(response.status(), 201, "{}", response.text().await?);
    Ok(())
}

/// Registers `name` over a proxy at 127.0.0.1 that says the client is `forwarded_for`; returns
/// whether the account allowance let it through.
async fn register_via(node: &TestNode, forwarded_for: &str, name: &str) -> Result<Attempt> {
    let response = crate::harness::http()
        .post(node.url("/api/v1/register"))
        .header("x-forwarded-for", forwarded_for)
        .json(&serde_json::json!({"username": name, "password": "x"}))
        .send()
        .await?;
    match response.status().as_u16() {
        400 => Ok(Attempt::Accepted),
        429 => Ok(Attempt::Limited),
        other => anyhow::bail!("expected 400 or 429, got {other}: {}", response.text().await?),
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_account_allowance() -> Result<()> {
    let (rate, burst) = (1, 3);
    let limits = ["--account-rate", "1", "--account-burst", "3"];
    // The test is the proxy: 127.0.0.1, trusted; the clients are only names in the header.
    let trusting = TestNode::start_with(
        crate::harness::Backend::Sqlite,
        &[&limits[..], &["--trusted-proxy", "127.0.0.1/32"]].concat(),
    )
    .await?;
    // Checked against the start of the spending: no token can have come back before a second
    // has passed since the first was taken.
    let began = tokio::time::Instant::now();
    spend_allowance(burst, rate, async |_| register_via(&trusting, "203.0.113.1", "Bad Name").await).await?;
    // Another client behind the same proxy has its own allowance...
    assert_eq!(register_via(&trusting, "203.0.113.2", "Bad Name").await?, Attempt::Accepted);
    // ...and the first is still refused, whatever it claims to the left of the proxy's entry.
    if !refilled_since(began, rate) {
        assert_eq!(register_via(&trusting, "203.0.113.2, 203.0.113.1", "Bad Name").await?, Attempt::Limited);
    }

    // The same header from a peer that is not trusted is ignored: one allowance for all.
    let untrusting = TestNode::start_with(
        crate::harness::Backend::Sqlite,
        &[&limits[..], &["--trusted-proxy", "10.0.0.0/8"]].concat(),
    )
    .await?;
    let began = tokio::time::Instant::now();
    spend_allowance(burst, rate, async |_| register_via(&untrusting, "203.0.113.1", "Bad Name").await).await?;
    if !refilled_since(began, rate) {
        assert_eq!(register_via(&untrusting, "203.0.113.2", "Bad Name").await?, Attempt::Limited);
    }
    Ok(())
}

/// `kith user import` into the node's store, from a file.
async fn import(node: &TestNode, file: &Path) -> Result<std::process::Output> {
    let (data_dir, database_url) = (node.data_dir().as_os_str(), node.database_url());
    let args: [&OsStr; 9] = [
        "user".as_ref(),
        "import".as_ref(),
        "--server-name".as_ref(),
        "test".as_ref(),
        "--data-dir".as_ref(),
        data_dir,
        "--database-url".as_ref(),
        database_url.as_ref(),
        file.as_os_str(),
    ];
    run_kith(&args, &[]).await
}

fn import_file(dir: &Path, name: &str, lines: &[serde_json::Value]) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, lines.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    Ok(path)
}

fn invalid_credentials(result: Result<kith_client::Authed, ClientError>) -> bool {
    matches!(result, Err(ClientError::Api { status: 401, code: ErrorCode::InvalidCredentials, .. }))
}

#[tokio::test]
async fn imported_users_can_log_in_and_files_with_bad_or_repeated_lines_import_nothing() -> Result<()> {
    let mut node = TestNode::start().await?;
    // A hash made by the node itself, as another server would have stored it.
    node.user("template").await?;
    let hash: String = {
        let pool = sqlx::SqlitePool::connect(&node.database_url()).await?;
        let hash = sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = 'template@test'")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        hash
    };
    node.kill().await?;
    let line = |name: &str, hash: &str| serde_json::json!({"username": name, "passwordHash": hash});

    let dir = tempfile::tempdir()?;
    let good: Vec<_> = (0..300).map(|i| line(&format!("user{i}"), &hash)).collect();
    let out = import(&node, &import_file(dir.path(), "users.jsonl", &good)?).await?;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let bad = [line("ok", &hash), line("md5", "$1$abc$def"), line("Bad Name", &hash)];
    let out = import(&node, &import_file(dir.path(), "bad.jsonl", &bad)?).await?;
    let output = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(output.contains("line 2") && output.contains("line 3"), "{output}");

    // The same user twice in one file (say, two exports concatenated) is refused too: which
    // password should win is not the importer's guess to make.
    let repeated = [line("dana", &hash), line("erik", &hash), line("dana", &hash)];
    let out = import(&node, &import_file(dir.path(), "repeated.jsonl", &repeated)?).await?;
    let output = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{output}");
    assert!(output.contains("line 3") && output.contains("line 1") && output.contains("dana"), "{output}");

    node.restart().await?;
    let user = node.client().login("user299", PASSWORD).await?;
    assert_eq!(user.user_id().as_str(), "user299@test");
    for name in ["ok", "dana", "erik"] {
        assert!(
            invalid_credentials(node.client().login(name, PASSWORD).await),
            "{name}: a file with bad lines imports nothing"
        );
    }
    Ok(())
}
