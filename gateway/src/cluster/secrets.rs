//! The deployment's secrets in Redis ([`keys::SECRETS`]): unless the
//! configuration names them, every node signs tokens and checks the admin
//! key with the same ones, so a token made at any node opens every node.
//!
//! The first node to start writes freshly generated secrets with HSETNX;
//! every node then reads back whatever won, so nodes starting together
//! agree.

use vigil_control::store::{Secrets, StoreError, hex_decode, hex_encode};

use super::keys;
use super::store::Link;

/// Shortest signing secret accepted from Redis (HS256 wants a key at least
/// as long as its hash, RFC 7518 §3.2).
const MIN_SIGNING_SECRET_LEN: usize = 32;

/// The deployment's secrets, and whether this node created the admin key.
pub fn shared(link: &Link) -> Result<(Secrets, bool), StoreError> {
    let fresh = Secrets {
        admin_key: hex_encode(&rand::random::<[u8; 32]>()),
        signing_secret: rand::random::<[u8; 32]>().to_vec(),
    };
    let created = write_missing(link, &fresh)?;
    let (admin_key, signing): (Option<String>, Option<String>) = link.run(|c| {
        redis::cmd("HMGET")
            .arg(keys::SECRETS)
            .arg("admin_key")
            .arg("signing_secret")
            .query(c)
    })?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("{} {what} in Redis", keys::SECRETS));
    let admin_key = admin_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| corrupt("has no admin_key"))?;
    let signing_secret = signing
        .as_deref()
        .and_then(hex_decode)
        .filter(|s| s.len() >= MIN_SIGNING_SECRET_LEN)
        .ok_or_else(|| corrupt("has no usable signing_secret"))?;
    Ok((
        Secrets {
            admin_key,
            signing_secret,
        },
        created,
    ))
}

/// Writes `secrets` where Redis has none (HSETNX); answers whether the
/// admin key was written.
fn write_missing(link: &Link, secrets: &Secrets) -> Result<bool, StoreError> {
    let (admin, _signing): (bool, bool) = link.run(|c| {
        redis::pipe()
            .atomic()
            .hset_nx(keys::SECRETS, "admin_key", &secrets.admin_key)
            .hset_nx(
                keys::SECRETS,
                "signing_secret",
                hex_encode(&secrets.signing_secret),
            )
            .query(c)
    })?;
    Ok(admin)
}

/// Writes the secrets this node uses back to a Redis that lost them
/// (restarted without persistence), so that a node started next gets the
/// same ones rather than making new ones.
pub fn restore(client: &redis::Client, secrets: &Secrets) -> Result<(), StoreError> {
    let link = Link::from_client(client.clone());
    write_missing(&link, secrets).map(|_| ())
}
