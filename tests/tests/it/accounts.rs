//! Accounts: registration rules, login, and the import that moves users over without hashing.

use anyhow::Result;
use kith_client::ClientError;
use kith_proto::ErrorCode;

use crate::harness::{PASSWORD, TestNode};

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
    assert!(client.register("b.o_b-1", &"p".repeat(256)).await.is_ok());
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
async fn account_requests_are_rate_limited_per_address() -> Result<()> {
    let node =
        TestNode::start_with(crate::harness::Backend::Sqlite, &["--account-rate", "1", "--account-burst", "2"]).await?;
    let client = node.client();
    // All at once, so that the allowance cannot refill between them however slow hashing is.
    let (alice, bob, carol) = tokio::join!(
        client.register("alice", PASSWORD),
        client.register("bob", PASSWORD),
        client.register("carol", PASSWORD)
    );
    let answers = [alice, bob, carol];
    let limited: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert_eq!(limited.len(), 1, "{answers:?}");
    assert!(
        matches!(limited[0], Err(ClientError::Api { status: 429, code: ErrorCode::RateLimited, .. })),
        "{answers:?}"
    );
    Ok(())
}

#[tokio::test]
async fn imported_users_can_log_in_and_bad_hashes_are_refused() -> Result<()> {
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

    let dir = tempfile::tempdir()?;
    let good = dir.path().join("users.jsonl");
    let lines: Vec<String> = (0..300)
        .map(|i| serde_json::json!({"username": format!("user{i}"), "passwordHash": hash}).to_string())
        .collect();
    std::fs::write(&good, lines.join("\n"))?;
    let import = |file: &std::path::Path| {
        std::process::Command::new(TestNode::binary())
            .args(["user", "import", "--server-name", "test", "--data-dir"])
            .arg(node.data_dir())
            .arg("--database-url")
            .arg(node.database_url())
            .arg(file)
            .output()
    };
    let out = import(&good)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        [
            serde_json::json!({"username": "ok", "passwordHash": hash}).to_string(),
            serde_json::json!({"username": "md5", "passwordHash": "$1$abc$def"}).to_string(),
            serde_json::json!({"username": "Bad Name", "passwordHash": hash}).to_string(),
        ]
        .join("\n"),
    )?;
    let out = import(&bad)?;
    let output = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(output.contains("line 2") && output.contains("line 3"), "{output}");

    node.restart().await?;
    let user = node.client().login("user299", PASSWORD).await?;
    assert_eq!(user.user_id().as_str(), "user299@test");
    assert!(node.client().login("ok", PASSWORD).await.is_err(), "a file with bad lines imports nothing");
    Ok(())
}
