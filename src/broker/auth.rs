//! Who is connecting: CONNECT credentials checked against the store.
//!
//! Machine accounts (agent, device, integration) carry 128-bit random secrets stored as
//! SHA-256, so checking one costs microseconds. Staff log in with their own password
//! (argon2id, ~50 ms): a successful check is cached so a reconnecting dashboard does not
//! burn CPU, and at most two run at once so a flood of bad logins cannot starve the box.

use crate::auth::{same, sha256_hex, verify_password};
use crate::domain::acl::Acl;
use crate::domain::mqtt::{self, MqttScope};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// MQTT 3.1.1 CONNACK return codes for refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 1: unacceptable protocol version.
    Protocol = 1,
    /// 2: identifier rejected.
    ClientId = 2,
    /// 3: server unavailable.
    Unavailable = 3,
    /// 4: bad user name or password.
    BadCredentials = 4,
    /// 5: not authorised.
    NotAuthorised = 5,
}

/// An authenticated client.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The account's user name, e.g. `agent:pc-01`, or a staff user's name.
    pub account: String,
    pub kind: Kind,
    pub acl: Acl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Agent,
    Device,
    Integration,
    Staff,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Agent, Kind::Device, Kind::Integration, Kind::Staff];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Device => "device",
            Kind::Integration => "integration",
            Kind::Staff => "staff",
        }
    }

    /// Plugs often cannot do TLS; agents and people always can, and their secrets
    /// must not cross the LAN in clear.
    pub fn allowed_in_plain(self) -> bool {
        matches!(self, Kind::Device | Kind::Integration)
    }
}

const CACHE_TTL: Duration = Duration::from_secs(600);
const CACHE_MAX: usize = 1024;

#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    argon: Semaphore,
    /// user -> (SHA-256 of the password that worked, the stored hash it matched, when).
    cache: Mutex<HashMap<String, (String, String, Instant)>>,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            argon: Semaphore::new(2),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Check a CONNECT's user name and password; `secure` is whether it came over TLS.
    pub async fn check(
        &self,
        login: Option<(&str, &str)>,
        secure: bool,
    ) -> Result<Principal, (Refusal, &'static str)> {
        let Some((user, password)) = login else {
            return Err((Refusal::NotAuthorised, "no credentials"));
        };
        let principal = if user.contains(':') {
            self.machine(user, password)?
        } else {
            self.staff(user, password).await?
        };
        if !secure && !principal.kind.allowed_in_plain() {
            return Err((
                Refusal::NotAuthorised,
                "this account must connect over TLS (port 8883)",
            ));
        }
        Ok(principal)
    }

    fn machine(&self, user: &str, password: &str) -> Result<Principal, (Refusal, &'static str)> {
        let record = self
            .store
            .mqtt_account(user)
            .map_err(|_| (Refusal::Unavailable, "store unavailable"))?
            .ok_or((Refusal::BadCredentials, "unknown account"))?;
        if record.account.revoked {
            return Err((Refusal::BadCredentials, "account revoked"));
        }
        let Some(hash) = &record.secret_hash else {
            return Err((Refusal::BadCredentials, "account has no secret yet"));
        };
        if !same(&sha256_hex(password), hash) {
            return Err((Refusal::BadCredentials, "wrong secret"));
        }
        let kind = match record.account.scope {
            MqttScope::Agent { .. } => Kind::Agent,
            MqttScope::Device { .. } => Kind::Device,
            MqttScope::Integration { .. } => Kind::Integration,
        };
        Ok(Principal {
            account: user.to_owned(),
            kind,
            acl: mqtt::acl(&record.account.scope),
        })
    }

    async fn staff(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Principal, (Refusal, &'static str)> {
        let record = self
            .store
            .user(user)
            .map_err(|_| (Refusal::Unavailable, "store unavailable"))?;
        let principal = || Principal {
            account: user.to_owned(),
            kind: Kind::Staff,
            acl: mqtt::human_acl(),
        };
        // Verify even for unknown users would be kinder to timing, but the user list is
        // not secret from staff and argon2 time is the scarce resource here.
        let Some(record) = record else {
            return Err((Refusal::BadCredentials, "unknown user"));
        };
        let presented = sha256_hex(password);
        if let Some((pw, stored, at)) = self.lock().get(user)
            && same(pw, &presented)
            && *stored == record.password_hash
            && at.elapsed() < CACHE_TTL
        {
            return Ok(principal());
        }
        let _permit = self
            .argon
            .acquire()
            .await
            .map_err(|_| (Refusal::Unavailable, "shutting down"))?;
        let (pw, phc) = (password.to_owned(), record.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &phc))
            .await
            .unwrap_or(false);
        if !ok {
            return Err((Refusal::BadCredentials, "wrong password"));
        }
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, _, at)| at.elapsed() < CACHE_TTL);
        }
        if cache.len() < CACHE_MAX {
            cache.insert(
                user.to_owned(),
                (presented, record.password_hash, Instant::now()),
            );
        }
        Ok(principal())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String, Instant)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
