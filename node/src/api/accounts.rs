//! `/api/v1/session`, `/api/v1/users` and `/api/v1/audit`: sign in and out, manage staff
//! accounts, read the audit trail.
//!
//! Admins manage the accounts of their units: they see and change only accounts whose every
//! grant lies within a unit they administer, and grant only such units.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{self, Account, Grant, Role};
use crate::api::problem::{Body, Problem};
use crate::audit::{self, Event};
use crate::auth::{Admin, COOKIE, ClientAddr, LIFETIME, Staff};
use crate::node::Node;

/// Most audit events one GET returns.
const MAX_AUDIT_PAGE: usize = 1000;

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(sign_in, whoami, sign_out))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user))
        .routes(routes!(get_audit))
}

/// Username and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    username: String,
    password: String,
}

/// An account as the API shows it (never its password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    username: String,
    display_name: String,
    grants: Vec<Grant>,
    disabled: bool,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> AccountView {
        AccountView {
            username: a.username.clone(),
            display_name: a.display_name.clone(),
            grants: a.grants.clone(),
            disabled: a.disabled,
        }
    }
}

/// The signed-in account and its session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    account: AccountView,
    /// This node's site.
    site: String,
    /// When the session ends if unused, ms since the Unix epoch.
    expires_ms: u64,
    /// The session token, for clients that send `Authorization: Bearer` (browsers use the
    /// cookie set with this answer). Only in the sign-in answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

async fn audit(node: &Node, event: Event) -> Result<(), Problem> {
    let mesh = node.mesh.get().ok_or_else(Problem::starting)?;
    audit::record(mesh, &node.config.site, event)
        .await
        .map_err(|e| Problem::internal("cannot write the audit record", e))
}

/// Signs in with a username and password; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "accounts", request_body = SignIn,
    responses(
        (status = 200, description = "Signed in", body = SessionView),
        (status = 401, description = "Wrong username or password"),
        (status = 429, description = "Too many failed attempts from this address"),
    ))]
async fn sign_in(
    State(node): State<Arc<Node>>,
    ClientAddr(from): ClientAddr,
    Body(req): Body<SignIn>,
) -> Result<Response, Problem> {
    let ip = from.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !node.signin_limit.allowed(ip) {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed sign-ins from this address; wait five minutes",
        ));
    }
    let account = node.views.accounts().get(&req.username).cloned();
    let known = account.is_some();
    let ok = match account.clone() {
        Some(a) if !a.disabled => {
            let hash = a.password_hash;
            tokio::task::spawn_blocking(move || accounts::verify_password(&req.password, &hash))
                .await
                .unwrap_or(false)
        }
        _ => false,
    };
    let Some(account) = account.filter(|_| ok) else {
        node.signin_limit.failed(ip);
        node.metrics
            .sign_ins
            .get_or_create(&outcome("failed"))
            .inc();
        // A name that is no account may be a password typed in the wrong field: not kept.
        let who = if known {
            req.username.clone()
        } else {
            "unknown".to_owned()
        };
        audit(
            &node,
            Event {
                who,
                action: "signin_failed".into(),
                target: None,
                from,
            },
        )
        .await?;
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong username or password (or the account is disabled)",
        ));
    };
    node.signin_limit.succeeded(ip);
    // Audited before the session exists: a sign-in that cannot be audited does not happen.
    audit(
        &node,
        Event {
            who: account.username.clone(),
            action: "signin".into(),
            target: None,
            from,
        },
    )
    .await?;
    let (token, session) = node
        .sessions
        .create(&account.username)
        .map_err(|e| Problem::internal("cannot store the session", e))?;
    node.metrics.sign_ins.get_or_create(&outcome("ok")).inc();
    let secure = if node.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        LIFETIME.as_secs()
    );
    let body = SessionView {
        account: (&account).into(),
        site: node.config.site.clone(),
        expires_ms: session.expires_ms(),
        token: Some(token),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

fn outcome(o: &str) -> crate::metrics::OutcomeLabel {
    crate::metrics::OutcomeLabel { outcome: o.into() }
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/session", tag = "accounts",
    responses(
        (status = 200, description = "Signed in", body = SessionView),
        (status = 401, description = "Not signed in, or the session ended"),
    ))]
async fn whoami(State(node): State<Arc<Node>>, staff: Staff) -> Json<SessionView> {
    Json(SessionView {
        account: (&staff.account).into(),
        site: node.config.site.clone(),
        expires_ms: staff.session.expires_ms(),
        token: None,
    })
}

/// Signs out: ends the session and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/session", tag = "accounts",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in"),
    ))]
async fn sign_out(
    State(node): State<Arc<Node>>,
    ClientAddr(from): ClientAddr,
    staff: Staff,
) -> Result<Response, Problem> {
    node.sessions
        .remove(&staff.token)
        .map_err(|e| Problem::internal("cannot end the session", e))?;
    audit(
        &node,
        Event {
            who: staff.account.username.clone(),
            action: "signout".into(),
            target: None,
            from,
        },
    )
    .await?;
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// Whether an admin may see and change `account`: every grant of it lies within a unit the
/// admin administers.
fn manages(node: &Node, admin: &Staff, grants: &[Grant]) -> bool {
    let units = admin.units(Role::Admin);
    !units.is_empty()
        && grants
            .iter()
            .all(|g| units.iter().any(|u| node.org.contains(u, &g.unit)))
}

/// Accounts this admin manages.
#[utoipa::path(get, path = "/api/v1/users", tag = "accounts",
    responses(
        (status = 200, description = "Accounts of the admin's units", body = Vec<AccountView>),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin"),
    ))]
async fn list_users(
    State(node): State<Arc<Node>>,
    Admin(staff): Admin,
) -> Result<Json<Vec<AccountView>>, Problem> {
    let accounts = node.views.accounts();
    let list = accounts
        .all()
        .filter(|a| manages(&node, &staff, &a.grants))
        .map(AccountView::from)
        .collect();
    Ok(Json(list))
}

/// A new staff account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    display_name: String,
    /// At least 8 characters.
    password: String,
    grants: Vec<Grant>,
}

/// Changes to an account; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    display_name: Option<String>,
    password: Option<String>,
    grants: Option<Vec<Grant>>,
    disabled: Option<bool>,
}

/// Appends a version of an account and waits until the views hold it, so that the account can
/// sign in on this node as soon as the answer arrives.
async fn write_account(node: &Arc<Node>, account: &Account) -> Result<(), Problem> {
    let mesh = node.mesh.get().cloned().ok_or_else(Problem::starting)?;
    let payload = serde_json::to_value(account).unwrap_or_default();
    mesh.append_async(accounts::SCOPE.into(), accounts::KIND.into(), payload)
        .await
        .map_err(|e| Problem::internal("cannot store the account", e))?;
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.views.catch_up(&mesh))
        .await
        .map_err(|e| Problem::internal("cannot update the accounts view", e))?
        .map_err(|e| Problem::internal("cannot update the accounts view", e))?;
    Ok(())
}

async fn hash(password: String) -> Result<String, Problem> {
    tokio::task::spawn_blocking(move || accounts::hash_password(&password))
        .await
        .map_err(|e| Problem::internal("cannot hash the password", e))?
        .map_err(|e| Problem::bad_request("weak_password", e))
}

/// Creates a staff account on units the admin administers.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = AccountView),
        (status = 400, description = "Invalid username, unit or password"),
        (status = 403, description = "Not an admin of every unit granted"),
        (status = 409, description = "The username is taken"),
    ))]
async fn create_user(
    State(node): State<Arc<Node>>,
    ClientAddr(from): ClientAddr,
    Admin(staff): Admin,
    Body(req): Body<NewUser>,
) -> Result<Response, Problem> {
    let problems = accounts::check_account(&node.org, &req.username, &req.grants);
    if !problems.is_empty() {
        return Err(Problem::bad_request("invalid_account", problems.join("; ")));
    }
    if !manages(&node, &staff, &req.grants) {
        return Err(Problem::forbidden(
            "you may grant roles only on the units you administer",
        ));
    }
    if node.views.accounts().get(&req.username).is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "username_taken",
            format!("the username `{}` is taken; choose another", req.username),
        ));
    }
    let account = Account {
        username: req.username,
        display_name: req.display_name,
        password_hash: hash(req.password).await?,
        grants: req.grants,
        disabled: false,
        by: staff.account.username.clone(),
    };
    audit(
        &node,
        Event {
            who: staff.account.username.clone(),
            action: "user.create".into(),
            target: Some(account.username.clone()),
            from,
        },
    )
    .await?;
    write_account(&node, &account).await?;
    Ok((StatusCode::CREATED, Json(AccountView::from(&account))).into_response())
}

/// Changes an account the admin manages: name, password, roles, disabled.
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "accounts",
    params(("username" = String, Path, description = "The account")),
    request_body = UserChange,
    responses(
        (status = 200, description = "Changed", body = AccountView),
        (status = 400, description = "Invalid unit or password"),
        (status = 403, description = "Not an admin of the account's units"),
        (status = 404, description = "No such account"),
    ))]
async fn update_user(
    State(node): State<Arc<Node>>,
    ClientAddr(from): ClientAddr,
    Path(username): Path<String>,
    Admin(staff): Admin,
    Body(change): Body<UserChange>,
) -> Result<Json<AccountView>, Problem> {
    let current = node.views.accounts().get(&username).cloned();
    let mut account = current
        .filter(|a| manages(&node, &staff, &a.grants))
        .ok_or_else(|| Problem::not_found(format!("no account `{username}` in your units")))?;
    if let Some(grants) = change.grants {
        let problems = accounts::check_account(&node.org, &username, &grants);
        if !problems.is_empty() {
            return Err(Problem::bad_request("invalid_account", problems.join("; ")));
        }
        if !manages(&node, &staff, &grants) {
            return Err(Problem::forbidden(
                "you may grant roles only on the units you administer",
            ));
        }
        account.grants = grants;
    }
    if let Some(name) = change.display_name {
        account.display_name = name;
    }
    if let Some(password) = change.password {
        account.password_hash = hash(password).await?;
    }
    if let Some(disabled) = change.disabled {
        account.disabled = disabled;
    }
    account.by = staff.account.username.clone();
    audit(
        &node,
        Event {
            who: staff.account.username.clone(),
            action: "user.update".into(),
            target: Some(username),
            from,
        },
    )
    .await?;
    write_account(&node, &account).await?;
    Ok(Json(AccountView::from(&account)))
}

/// Paging back through the audit trail.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events before this time (ms since the Unix epoch); default now.
    before_ms: Option<u64>,
    /// Page size, default 100, at most 1000.
    limit: Option<usize>,
}

/// Audit events of the admin's units held by this node, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "accounts", params(AuditQuery),
    responses(
        (status = 200, description = "Events, newest first", body = Vec<audit::Entry>),
        (status = 403, description = "Not an admin"),
    ))]
async fn get_audit(
    State(node): State<Arc<Node>>,
    Admin(staff): Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<audit::Entry>>, Problem> {
    let units = staff.units(Role::Admin);
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE);
    let page = node
        .views
        .audit()
        .page(q.before_ms.unwrap_or(u64::MAX), limit, |e| {
            units.iter().any(|u| node.org.contains(u, &e.site))
        });
    Ok(Json(page))
}
