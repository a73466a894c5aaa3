//! Mints a development token (signed with `.dev.vars`' JWT_SECRET) for trying Homeroom locally.
//!
//! `homeroom-token --user alice --role teacher [--name "Ms Alice"] [--tenant default] [--room math] [--ttl 3600]`

use clap::Parser;
use homeroom_shared::auth::UserClaims;
use homeroom_shared::protocol::Role;
use homeroom_tests::tokens::{now_secs, Minter};

#[derive(Parser, Debug)]
#[command(about = "Mint a development JWT for Homeroom (uses JWT_SECRET from .dev.vars)")]
struct Args {
    /// User id (the `sub` claim).
    #[arg(long)]
    user: String,
    /// teacher, student or admin.
    #[arg(long, default_value = "student")]
    role: String,
    /// Display name (defaults to the user id).
    #[arg(long)]
    name: Option<String>,
    /// Tenant (defaults to "default").
    #[arg(long)]
    tenant: Option<String>,
    /// Restrict the token to these rooms (repeatable).
    #[arg(long)]
    room: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let role: Role = serde_json::from_value(serde_json::Value::String(args.role.clone()))
        .map_err(|_| anyhow::anyhow!("--role must be teacher, student or admin, not {:?}", args.role))?;
    let claims = UserClaims {
        sub: args.user.clone(),
        name: Some(args.name.unwrap_or(args.user)),
        role: Some(role),
        tenant: args.tenant,
        rooms: (!args.room.is_empty()).then_some(args.room),
        perms: None,
        exp: now_secs() + args.ttl,
        nbf: None,
        iat: Some(now_secs()),
    };
    println!("{}", Minter::dev()?.sign(&claims));
    Ok(())
}
