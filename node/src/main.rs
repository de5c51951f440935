//! `huiyan`: the node of one site of the Judicial Smart Eye (司法慧眼) pilot.
//!
//! See the README for what the node does; `huiyan --help` for the commands.
//!
//! # Limitations
//!
//! - The media relay between sites (#5) does not yet meet its goals on lossy links
//!   (docs/relay.md).
//! - The hotline has one dispatcher, the bureau (docs/hotline.md).
//! - Mediation recordings (WebM per participant) stay on the node that recorded them; their
//!   records reach the bureau, the files do not yet (TODO(#6)). A recording running when the
//!   node stops ends there: it does not resume after a restart although the case's flag is on.
//! - `huiyan demo --link` emulates the mesh (sync) traffic of the linked sites only, not media.

mod accounts;
mod agreement;
mod api;
mod audit;
mod auth;
mod config;
mod demo;
mod error;
mod hotline;
mod http;
mod logging;
mod mediation;
mod metrics;
mod node;
mod qr;
mod rooms;
mod run;
mod systemd;
mod users;
mod views;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Error;

#[derive(Debug, Parser)]
#[command(name = "huiyan", version, about = "One node of the huiyan (慧眼) mesh")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one node from its site config.
    Run {
        /// The site config, such as /etc/huiyan/site.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Create this node's Ed25519 key and print its PeerId.
    Keygen {
        /// Where to write the key (mode 0600); an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check site configs and rosters; prints every error and exits 2 if there is any.
    CheckConfig {
        /// Files or directories of `*.toml` files (`roster.toml` is read as the roster).
        #[arg(default_value = "site-configs")]
        paths: Vec<PathBuf>,
    },
    /// Staff accounts.
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
    /// Run the whole pilot (every site of the roster) on this machine, on loopback.
    Demo {
        /// Where the nodes keep their data, keys and logs; default a fresh temp dir, removed
        /// when the demo stops.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The first port; each site takes ten from here.
        #[arg(long, default_value_t = 8000)]
        base_port: u16,
        /// Emulate a mountain link between the matching sites and the rest, such as
        /// `scenic-*=256kbit,300ms,2%` (rate, RTT, loss; also `jitter=Nms`, `mtu=N`, `down`).
        /// Repeatable; a later flag overrides an earlier one for the sites both match.
        #[arg(long = "link", value_name = "SITES=SPEC")]
        links: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a staff account, or replace one (new password and roles), on a stopped node;
    /// it reaches every site by sync. Prints a generated password unless --password-stdin.
    Add {
        /// The site config of this node.
        #[arg(long)]
        config: PathBuf,
        /// Sign-in name: 2-32 lower-case letters, digits, `.`, `-`, `_`.
        #[arg(long)]
        username: String,
        /// The name colleagues see.
        #[arg(long)]
        name: String,
        /// A role on a unit, `role@unit` (such as `admin@bureau`, `mediator@scenic-2`);
        /// repeat for several.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Read the password (one line, at least 8 characters) from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn user_add(
    config: &std::path::Path,
    username: String,
    display_name: String,
    grants: &[String],
    password_stdin: bool,
) -> Result<(), Error> {
    let grants = grants
        .iter()
        .map(|g| g.parse())
        .collect::<Result<Vec<_>, String>>()
        .map_err(Error::Usage)?;
    let (password, generated) = if password_stdin {
        (users::password_from_stdin()?, false)
    } else {
        (accounts::random_password(), true)
    };
    let new = users::NewAccount {
        username: username.clone(),
        display_name,
        grants,
        password: password.clone(),
    };
    users::add(config, new)?;
    if generated {
        println!("created `{username}` with password: {password}");
    } else {
        println!("created `{username}`");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Both rustls crypto back-ends get linked in; choose one before any TLS config is built.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = match cli.command {
        Cmd::Run { config } => {
            logging::init();
            run::run(&config)
        }
        Cmd::Keygen { out } => huiyan_mesh::identity::generate_key_file(&out)
            .map(|peer| {
                eprintln!("wrote the node key to {}; its PeerId:", out.display());
                println!("{peer}");
            })
            .map_err(Error::from),
        Cmd::CheckConfig { paths } => config::check_paths(&paths)
            .map(|n| println!("{n} file(s) checked, no error"))
            .map_err(Error::Config),
        Cmd::Demo {
            dir,
            base_port,
            links,
        } => demo::demo(dir, base_port, &links),
        Cmd::User {
            command:
                UserCmd::Add {
                    config,
                    username,
                    name,
                    grants,
                    password_stdin,
                },
        } => user_add(&config, username, name, &grants, password_stdin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("huiyan: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
