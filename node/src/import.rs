//! `kith user import`: creates accounts from JSON lines of `{"username", "passwordHash"}`, with
//! argon2id PHC hashes, so an organisation can move its users over (and a load test can set up
//! thousands) without hashing anything.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::BufRead;

use kith_proto::{DeviceId, Timestamp, UserId, Username};
use serde::Deserialize;

use crate::password::check_imported_hash;
use crate::store::{ImportReport, NewUser, Store, StoreError};

/// Accounts written per transaction.
const BATCH: usize = 1000;

/// One input line.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImportLine {
    username: String,
    password_hash: String,
}

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Some lines are invalid; nothing was imported.
    #[error("{} invalid line(s), nothing imported:\n{}", .0.len(), .0.join("\n"))]
    Invalid(Vec<String>),
    /// The input could not be read.
    #[error("reading input: {0}")]
    Read(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most invalid lines listed in an error.
const MAX_LISTED: usize = 20;

/// Reads all of `input`, checks every line, then imports the accounts as users of `server`.
/// Existing user ids are skipped. A username on two lines is a bad line: which password should
/// win is not the importer's guess to make.
///
/// # Errors
/// [`ImportError::Invalid`] listing bad lines (then nothing is imported); read and store errors.
pub async fn import_users(
    store: &dyn Store,
    server: &kith_proto::ServerName,
    input: impl BufRead,
) -> Result<ImportReport, ImportError> {
    let mut users = Vec::new();
    let mut invalid = Vec::new();
    let mut first_line: HashMap<UserId, usize> = HashMap::new();
    let created_at = Timestamp::now();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed =
            parse_line(&line, server, created_at).and_then(|user| match first_line.entry(user.user_id.clone()) {
                Entry::Occupied(first) => Err(format!("{} is already on line {}", user.user_id, first.get())),
                Entry::Vacant(slot) => {
                    slot.insert(index + 1);
                    Ok(user)
                }
            });
        match parsed {
            Ok(user) => users.push(user),
            Err(why) => {
                if invalid.len() < MAX_LISTED {
                    invalid.push(format!("line {}: {why}", index + 1));
                } else if invalid.len() == MAX_LISTED {
                    invalid.push("…".to_owned());
                }
            }
        }
    }
    if !invalid.is_empty() {
        return Err(ImportError::Invalid(invalid));
    }
    let mut report = ImportReport::default();
    for batch in users.chunks(BATCH) {
        let done = store.import_users(batch.to_vec()).await?.await?;
        report.created += done.created;
        report.skipped += done.skipped;
    }
    Ok(report)
}

fn parse_line(line: &str, server: &kith_proto::ServerName, created_at: Timestamp) -> Result<NewUser, String> {
    let parsed: ImportLine =
        serde_json::from_str(line).map_err(|e| format!("expected {{\"username\", \"passwordHash\"}}: {e}"))?;
    let username = Username::parse(&parsed.username).map_err(|e| e.to_string())?;
    check_imported_hash(&parsed.password_hash).map_err(|e| format!("passwordHash: {e}"))?;
    Ok(NewUser {
        user_id: UserId::new(username, server.clone()),
        password_hash: parsed.password_hash,
        created_at,
        device: DeviceId::default(),
    })
}
