//! `huiyan user add`: create (or reset) a staff account from the node's host, such as the first
//! admin after a deploy, or an admin locked out of every site.
//!
//! It writes the account record into the site's own log in the data dir, signed with the node
//! key, exactly as the node would; the node must be stopped (it holds the store), and the
//! account reaches every other site by sync once the node runs again. An existing username is
//! replaced: new password, name and roles.

use std::io::BufRead;
use std::path::Path;

use huiyan_mesh::replica::append_offline;
use huiyan_mesh::store::Store;

use crate::accounts::{self, Account, Grant, OrgTree};
use crate::config::{self, Loaded};
use crate::error::Error;

/// What `huiyan user add` was asked to create.
#[derive(Debug)]
pub struct NewAccount {
    pub username: String,
    pub display_name: String,
    pub grants: Vec<Grant>,
    pub password: String,
}

/// Reads a password (one line) from standard input.
pub fn password_from_stdin() -> Result<String, Error> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::Usage(format!("cannot read the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Creates the account in the stopped node's log.
pub fn add(config_path: &Path, new: NewAccount) -> Result<(), Error> {
    let Loaded { config, roster } = config::load(config_path).map_err(Error::Config)?;
    let (keypair, _, _) = crate::run::identity(&config, &roster)?;
    let org = OrgTree::from_roster(&roster);
    let problems = accounts::check_account(&org, &new.username, &new.grants);
    if !problems.is_empty() {
        return Err(Error::Usage(problems.join("; ")));
    }
    let password_hash = accounts::hash_password(&new.password).map_err(Error::Usage)?;
    let account = Account {
        username: new.username,
        display_name: new.display_name,
        password_hash,
        grants: new.grants,
        disabled: false,
        by: "cli".into(),
    };

    let store = Store::open(&config.data_dir).map_err(|e| match e {
        huiyan_mesh::Error::StoreLocked { .. } => Error::Usage(format!(
            "the node of site `{}` is running and holds its data dir {}; stop it first \
             (`systemctl stop huiyan`), or create the account signed in as an admin \
             (POST /api/v1/users)",
            config.site,
            config.data_dir.display()
        )),
        other => other.into(),
    })?;
    // The audit event first: an account whose creation cannot be audited is not created.
    let event = crate::audit::Event {
        who: "cli".into(),
        action: "user.create".into(),
        target: Some(account.username.clone()),
        from: None,
    };
    let records = [
        (
            crate::audit::scope(&config.site),
            crate::audit::KIND,
            serde_json::to_value(&event),
        ),
        (
            accounts::SCOPE.to_owned(),
            accounts::KIND,
            serde_json::to_value(&account),
        ),
    ];
    for (scope, kind, payload) in records {
        let payload = payload.unwrap_or_default();
        append_offline(
            keypair.clone(),
            &config.site,
            roster.clone(),
            store.clone(),
            &scope,
            kind,
            &payload,
        )?;
    }
    Ok(())
}
