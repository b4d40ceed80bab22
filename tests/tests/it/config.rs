//! Configuration through the real binary: a TOML file, `KITH_*` variables and flags, in the
//! order the README promises (flags beat the environment, which beats the file, which beats
//! the defaults), lists included, and a file with an unknown key refused by name.

use std::path::PathBuf;

use anyhow::Result;
use kith_client::ClientError;
use kith_proto::ErrorCode;

use crate::harness::{Backend, PASSWORD, TestNode};

/// A config file in the node's data directory.
fn config_file(node: &TestNode, text: &str) -> Result<PathBuf> {
    let path = node.data_dir().join("kith.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The server name a node serves as, as its users see it (each name has its own users, so the
/// same probe registers afresh on every start).
async fn served_name(node: &TestNode) -> Result<String> {
    let user = node.client().register("probe", PASSWORD).await?;
    Ok(user.user_id().server_name().to_string())
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_file_which_beats_the_default() -> Result<()> {
    let mut node = TestNode::prepare("ignored", Backend::Sqlite, &[])?;
    node.omit_flag("--server-name");
    let file = config_file(&node, "server_name = \"from-file\"\n")?;
    let file = file.to_string_lossy().into_owned();

    // Nothing anywhere: the default.
    node.launch().await?;
    assert_eq!(served_name(&node).await?, "localhost");
    node.kill().await?;

    // The file (named by the environment).
    node.set_env("KITH_CONFIG", &file);
    node.launch().await?;
    assert_eq!(served_name(&node).await?, "from-file");
    node.kill().await?;

    // The environment over the file.
    node.set_env("KITH_SERVER_NAME", "from-env");
    node.launch().await?;
    assert_eq!(served_name(&node).await?, "from-env");
    node.kill().await?;

    // A flag over both.
    node.set_args(&["--server-name", "from-flag"]);
    node.launch().await?;
    assert_eq!(served_name(&node).await?, "from-flag");
    Ok(())
}

/// A binding for a node that is never started (sends to it just wait in the outbox).
fn binding(name: &str) -> String {
    let peer_id = kith_federation::NodeKey::ephemeral().peer_id();
    format!("{name}=/ip4/{}/tcp/4001/p2p/{peer_id}", crate::harness::unique_loopback())
}

/// Which of `servers` the node federates with: a send to a user there is accepted (and
/// queued), one to a server it does not know is refused as `unknown_server`.
async fn pinned(node: &TestNode, servers: &[&str]) -> Result<Vec<String>> {
    let user = node.client().login("alice", PASSWORD).await?;
    let mut known = Vec::new();
    for server in servers {
        match user.send_message(&format!("bob@{server}"), "hello", None).await {
            Ok(_) => known.push((*server).to_owned()),
            Err(ClientError::Api { status: 404, code: ErrorCode::UnknownServer, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(known)
}

#[tokio::test]
async fn peer_flags_and_kith_peers_replace_the_files_peers_rather_than_adding_to_them() -> Result<()> {
    let mut node = TestNode::prepare("test", Backend::Sqlite, &[])?;
    let in_file = binding("alpha");
    let (name, address) = in_file.split_once('=').unwrap_or_default();
    let file = config_file(&node, &format!("[[peers]]\nname = \"{name}\"\naddress = \"{address}\"\n"))?;
    let file = file.to_string_lossy().into_owned();
    let servers = ["alpha", "beta", "gamma", "delta"];

    node.set_args(&["--config", &file]);
    node.launch().await?;
    node.user("alice").await?;
    assert_eq!(pinned(&node, &servers).await?, ["alpha"], "the file's peers");
    node.kill().await?;

    let (beta, gamma) = (binding("beta"), binding("gamma"));
    node.set_env("KITH_PEERS", &format!("{beta},{gamma}"));
    node.launch().await?;
    assert_eq!(pinned(&node, &servers).await?, ["beta", "gamma"], "KITH_PEERS replaces the file's peers");
    node.kill().await?;

    let delta = binding("delta");
    node.set_args(&["--config", &file, "--peer", &delta]);
    node.launch().await?;
    assert_eq!(pinned(&node, &servers).await?, ["delta"], "--peer replaces KITH_PEERS and the file's peers");
    Ok(())
}

#[tokio::test]
async fn a_config_file_with_an_unknown_key_is_refused_and_names_it() -> Result<()> {
    let mut node = TestNode::prepare("test", Backend::Sqlite, &[])?;
    let file = config_file(&node, "message_rate = 10\nmesage_burst = 20\n")?;
    node.set_args(&["--config", &file.to_string_lossy()]);
    let refused = node.launch().await;
    let error = format!("{:#}", refused.err().ok_or_else(|| anyhow::anyhow!("the node started"))?);
    assert!(error.contains("exited before listening"), "{error}");
    assert!(error.contains("unknown field `mesage_burst`"), "the key is named: {error}");
    assert!(error.contains(&*file.to_string_lossy()), "the file is named: {error}");
    Ok(())
}
