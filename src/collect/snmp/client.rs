//! One SNMP conversation with one device: timeouts, retries, batching, walks.
//!
//! `snmp2` gives a bare request/response session; everything that makes polling robust lives
//! here. A timed-out request drops its session and opens a new socket for the retry, so a late
//! answer to the abandoned request can never be mistaken for the next one (snmp2 would reject
//! it as a request-id mismatch and every following retry would then read the previous late
//! reply). Responses are converted to owned values right away because snmp2's `Pdu` borrows
//! the session's receive buffer.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snmp2::AsyncSession;

use super::config::{AuthProtocol, PrivProtocol, SecurityLevel, SnmpVersion, TargetConfig};
use super::SnmpError;

pub use super::value::{ObjectId, Received, SnmpValue};

struct Response {
    error_status: u32,
    error_index: u32,
    varbinds: Vec<(ObjectId, SnmpValue)>,
}

const ERR_TOO_BIG: u32 = 1;
const ERR_NO_SUCH_NAME: u32 = 2;

/// Everything needed to (re)open a session, with secrets resolved once.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub version: SnmpVersion,
    community: Vec<u8>,
    security: Option<snmp2::v3::Security>,
    pub timeout: Duration,
    pub retries: u32,
    pub max_repetitions: u32,
    pub max_oids_per_get: usize,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(
        t: &TargetConfig,
        timeout: Duration,
        retries: u32,
        max_repetitions: u32,
        max_oids_per_get: usize,
    ) -> Result<Endpoint, SnmpError> {
        let cfg_err = |message: String| SnmpError::Config {
            target: t.name.clone(),
            message,
        };
        let (host, port) = super::config::split_host_port(&t.address).map_err(cfg_err)?;
        let resolve = |s: &crate::secret::Secret, key: &str| {
            s.resolve()
                .map_err(|e| cfg_err(format!("{key}: {e}")))
                .map(String::into_bytes)
        };
        let mut community = Vec::new();
        let mut security = None;
        match t.version {
            SnmpVersion::V1 | SnmpVersion::V2c => {
                let c = t
                    .community
                    .as_ref()
                    .ok_or_else(|| cfg_err("community is required for version 1 and 2c".into()))?;
                community = resolve(c, "community")?;
            }
            SnmpVersion::V3 => {
                use snmp2::v3;
                let user = t
                    .user
                    .as_deref()
                    .ok_or_else(|| cfg_err("user is required for version 3".into()))?;
                let level = t.security_level.unwrap_or(SecurityLevel::AuthPriv);
                let auth_pw = match (&t.auth_password, level) {
                    (_, SecurityLevel::NoAuthNoPriv) => Vec::new(),
                    (Some(p), _) => resolve(p, "auth_password")?,
                    (None, _) => return Err(cfg_err("auth_password is required".into())),
                };
                let auth_proto = match t.auth_protocol.unwrap_or(AuthProtocol::Sha) {
                    AuthProtocol::Md5 => v3::AuthProtocol::Md5,
                    AuthProtocol::Sha => v3::AuthProtocol::Sha1,
                    AuthProtocol::Sha224 => v3::AuthProtocol::Sha224,
                    AuthProtocol::Sha256 => v3::AuthProtocol::Sha256,
                    AuthProtocol::Sha384 => v3::AuthProtocol::Sha384,
                    AuthProtocol::Sha512 => v3::AuthProtocol::Sha512,
                };
                let mut sec =
                    v3::Security::new(user.as_bytes(), &auth_pw).with_auth_protocol(auth_proto);
                sec = match level {
                    SecurityLevel::NoAuthNoPriv => sec.with_auth(v3::Auth::NoAuthNoPriv),
                    SecurityLevel::AuthNoPriv => sec.with_auth(v3::Auth::AuthNoPriv),
                    SecurityLevel::AuthPriv => {
                        let p = t.priv_password.as_ref().ok_or_else(|| {
                            cfg_err("priv_password is required for authPriv".into())
                        })?;
                        let cipher = match t.priv_protocol.unwrap_or(PrivProtocol::Aes) {
                            PrivProtocol::Des => v3::Cipher::Des,
                            PrivProtocol::Aes => v3::Cipher::Aes128,
                            PrivProtocol::Aes192 => v3::Cipher::Aes192,
                            PrivProtocol::Aes256 => v3::Cipher::Aes256,
                        };
                        let s = sec.with_auth(v3::Auth::AuthPriv {
                            cipher,
                            privacy_password: resolve(p, "priv_password")?,
                        });
                        // AES-192/256 with a short auth hash need a key extension; Reeder's
                        // is what Net-SNMP and most vendors implement.
                        if cipher.priv_key_needs_extension(&auth_proto) {
                            s.with_key_extension_method(v3::KeyExtension::Reeder)
                        } else {
                            s
                        }
                    }
                };
                if let Some(ctx) = &t.context {
                    sec = sec.with_context_name(ctx);
                }
                security = Some(sec);
            }
        }
        Ok(Endpoint {
            name: t.name.clone(),
            host,
            port,
            version: t.version,
            community,
            security,
            timeout,
            retries,
            max_repetitions: max_repetitions.max(1),
            max_oids_per_get: max_oids_per_get.max(1),
        })
    }
}

impl Endpoint {
    /// The SNMPv3 security template (user, protocols, passwords; no engine state yet).
    pub(crate) fn security(&self) -> Option<&snmp2::v3::Security> {
        self.security.as_ref()
    }
}

/// A polling conversation. Counts requests and varbinds for the poll's own sample.
pub struct Client {
    ep: Arc<Endpoint>,
    // Boxed: the session embeds a 64 KiB receive buffer.
    session: Option<Box<AsyncSession>>,
    pub varbinds: u64,
    pub requests: u64,
}

enum Req<'a> {
    Get(&'a [ObjectId]),
    GetNext(&'a ObjectId),
    GetBulk(&'a [ObjectId], u32),
    /// GETBULK with every varbind a non-repeater: one GETNEXT per OID in one PDU.
    NextEach(&'a [ObjectId]),
}

impl Client {
    pub fn new(ep: Arc<Endpoint>) -> Client {
        Client {
            ep,
            session: None,
            varbinds: 0,
            requests: 0,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    async fn open(ep: &Endpoint) -> Result<Box<AsyncSession>, SnmpError> {
        let addr = (ep.host.as_str(), ep.port);
        let io = |e: std::io::Error| SnmpError::Io {
            target: ep.name.clone(),
            detail: format!("cannot open a UDP session to {}:{}: {e}", ep.host, ep.port),
        };
        let req_id: i32 = rand::random::<i32>() & 0x3fff_ffff;
        let mut s = match ep.version {
            SnmpVersion::V1 => AsyncSession::new_v1(addr, &ep.community, req_id).await,
            SnmpVersion::V2c => AsyncSession::new_v2c(addr, &ep.community, req_id).await,
            SnmpVersion::V3 => {
                let sec = ep.security.clone().ok_or_else(|| SnmpError::Config {
                    target: ep.name.clone(),
                    message: "SNMPv3 security parameters missing".into(),
                })?;
                AsyncSession::new_v3(addr, req_id, sec).await
            }
        }
        .map(Box::new)
        .map_err(io)?;
        if ep.version == SnmpVersion::V3 {
            s.init().await.map_err(|e| map_err(ep, e))?;
        }
        Ok(s)
    }

    async fn exchange(sess: &mut AsyncSession, req: &Req<'_>) -> Result<Response, snmp2::Error> {
        let oids: Vec<snmp2::Oid<'static>> = match req {
            Req::Get(o) | Req::GetBulk(o, _) | Req::NextEach(o) => o
                .iter()
                .map(|o| o.to_snmp2().map_err(|_| snmp2::Error::ValueOutOfRange))
                .collect::<Result<_, _>>()?,
            Req::GetNext(o) => vec![o.to_snmp2().map_err(|_| snmp2::Error::ValueOutOfRange)?],
        };
        let refs: Vec<&snmp2::Oid<'_>> = oids.iter().collect();
        let pdu = match req {
            Req::Get(_) => sess.get_many(&refs).await?,
            Req::GetNext(_) => sess.getnext(refs[0]).await?,
            Req::GetBulk(_, reps) => sess.getbulk(&refs, 0, *reps).await?,
            Req::NextEach(_) => sess.getbulk(&refs, refs.len() as u32, 0).await?,
        };
        let varbinds = pdu
            .varbinds
            .clone()
            .filter_map(|(o, v)| Some((ObjectId::from_snmp2(&o)?, SnmpValue::from_snmp2(&v))))
            .collect();
        Ok(Response {
            error_status: pdu.error_status,
            error_index: pdu.error_index,
            varbinds,
        })
    }

    /// One request with timeout and retries. A timeout or transport error drops the session
    /// so the retry uses a fresh socket (and, for v3, fresh engine discovery).
    async fn request(&mut self, req: Req<'_>) -> Result<Response, SnmpError> {
        let ep = self.ep.clone();
        let mut last: Option<SnmpError> = None;
        let mut auth_updates = 0;
        let mut attempt = 0;
        while attempt <= ep.retries {
            self.requests += 1;
            if self.session.is_none() && ep.version == SnmpVersion::V3 {
                // Engine discovery on a new session is one more exchange.
                self.requests += 1;
            }
            let session = &mut self.session;
            let fut = async {
                if session.is_none() {
                    *session = Some(Self::open(&ep).await?);
                }
                let s = session.as_mut().expect("session was just opened");
                Self::exchange(s, &req).await.map_err(|e| map_err(&ep, e))
            };
            match tokio::time::timeout(ep.timeout, fut).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(SnmpError::AuthUpdated)) if auth_updates < 2 => {
                    // The engine's boots/time changed under us; snmp2 has updated its state.
                    auth_updates += 1;
                    continue;
                }
                Ok(Err(e @ (SnmpError::Auth { .. } | SnmpError::Config { .. }))) => {
                    // Retrying a wrong password only locks accounts and wastes time.
                    self.session = None;
                    return Err(e);
                }
                Ok(Err(e)) => {
                    self.session = None;
                    last = Some(e);
                }
                Err(_) => {
                    self.session = None;
                    last = Some(SnmpError::Timeout {
                        target: ep.name.clone(),
                        attempts: attempt + 1,
                        timeout: ep.timeout,
                        hint: silence_hint(ep.version),
                    });
                }
            }
            attempt += 1;
        }
        Err(last.unwrap_or(SnmpError::Timeout {
            target: ep.name.clone(),
            attempts: attempt,
            timeout: ep.timeout,
            hint: silence_hint(ep.version),
        }))
    }

    /// GETs `oids` in PDUs of at most `max_oids_per_get`. Absent objects come back as
    /// `NoSuchObject`; a v1 `noSuchName` or a `tooBig` splits the batch instead of failing it.
    pub async fn get(&mut self, oids: &[ObjectId]) -> Result<Vec<(ObjectId, Received)>, SnmpError> {
        let mut out = Vec::with_capacity(oids.len());
        let mut queue: Vec<&[ObjectId]> = oids.chunks(self.ep.max_oids_per_get).rev().collect();
        while let Some(batch) = queue.pop() {
            let resp = self.request(Req::Get(batch)).await?;
            let at_ns = crate::model::now_ns();
            match resp.error_status {
                0 => {
                    self.varbinds += resp.varbinds.len() as u64;
                    for (oid, value) in resp.varbinds {
                        out.push((oid, Received { value, at_ns }));
                    }
                }
                ERR_TOO_BIG | ERR_NO_SUCH_NAME if batch.len() > 1 => {
                    let mid = batch.len() / 2;
                    queue.push(&batch[mid..]);
                    queue.push(&batch[..mid]);
                }
                ERR_NO_SUCH_NAME => {
                    out.push((
                        batch[0].clone(),
                        Received {
                            value: SnmpValue::NoSuchObject,
                            at_ns,
                        },
                    ));
                }
                status => {
                    return Err(SnmpError::ErrorStatus {
                        target: self.ep.name.clone(),
                        status,
                        oid: batch
                            .get((resp.error_index as usize).saturating_sub(1))
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// For each OID, the next OID the agent holds after it (`None` past the end of its
    /// MIB): how detection asks "does this device serve that subtree?" in one exchange per
    /// `max_oids_per_get` OIDs (v2c/v3 GETBULK with only non-repeaters; v1 one GETNEXT each).
    pub async fn next_of(&mut self, oids: &[ObjectId]) -> Result<Vec<Option<ObjectId>>, SnmpError> {
        let mut out = Vec::with_capacity(oids.len());
        if self.ep.version == SnmpVersion::V1 {
            for o in oids {
                let r = self.request(Req::GetNext(o)).await?;
                self.varbinds += r.varbinds.len() as u64;
                out.push(match r.error_status {
                    0 => r
                        .varbinds
                        .into_iter()
                        .next()
                        .filter(|(_, v)| !matches!(v, SnmpValue::EndOfMibView))
                        .map(|(o, _)| o),
                    _ => None,
                });
            }
            return Ok(out);
        }
        for batch in oids.chunks(self.ep.max_oids_per_get.max(1)) {
            let r = self.request(Req::NextEach(batch)).await?;
            if r.error_status != 0 {
                return Err(SnmpError::ErrorStatus {
                    target: self.ep.name.clone(),
                    status: r.error_status,
                    oid: batch[0].to_string(),
                });
            }
            self.varbinds += r.varbinds.len() as u64;
            let mut got = r.varbinds.into_iter();
            for _ in batch {
                out.push(
                    got.next()
                        .filter(|(_, v)| !matches!(v, SnmpValue::EndOfMibView))
                        .map(|(o, _)| o),
                );
            }
        }
        Ok(out)
    }

    /// Walks each subtree in `roots`, returning `(root index, oid, value)` in walk order.
    /// v2c/v3 use GETBULK with several columns per request; v1 uses GETNEXT. A column stops at
    /// the end of its subtree, at `endOfMibView`, or when an agent returns a non-increasing OID
    /// (a loop guard for buggy agents).
    pub async fn walk(
        &mut self,
        roots: &[ObjectId],
    ) -> Result<Vec<(usize, ObjectId, Received)>, SnmpError> {
        const MAX_VARBINDS_PER_WALK: usize = 1_000_000;
        const COLUMNS_PER_BULK: usize = 8;
        let mut out = Vec::new();
        // (root index, cursor)
        let mut active: Vec<(usize, ObjectId)> = roots.iter().cloned().enumerate().collect();
        while !active.is_empty() {
            if out.len() > MAX_VARBINDS_PER_WALK {
                return Err(SnmpError::Protocol {
                    target: self.ep.name.clone(),
                    detail: format!(
                        "walk returned more than {MAX_VARBINDS_PER_WALK} varbinds; aborting"
                    ),
                });
            }
            let take = active.len().min(COLUMNS_PER_BULK);
            let batch: Vec<(usize, ObjectId)> = active[..take].to_vec();
            let cursors: Vec<ObjectId> = batch.iter().map(|(_, c)| c.clone()).collect();
            let resp = if self.ep.version == SnmpVersion::V1 {
                // v1 has no GETBULK; one GETNEXT per column cursor.
                let mut vbs = Vec::new();
                for c in &cursors {
                    let r = self.request(Req::GetNext(c)).await?;
                    if r.error_status == ERR_NO_SUCH_NAME {
                        vbs.push((c.clone(), SnmpValue::EndOfMibView));
                    } else if r.error_status != 0 {
                        return Err(SnmpError::ErrorStatus {
                            target: self.ep.name.clone(),
                            status: r.error_status,
                            oid: c.to_string(),
                        });
                    } else {
                        vbs.extend(r.varbinds.into_iter().take(1));
                    }
                }
                Response {
                    error_status: 0,
                    error_index: 0,
                    varbinds: vbs,
                }
            } else {
                // Keep a response under typical MTU-ish sizes: repetitions shrink as columns grow.
                let reps = (self.ep.max_repetitions / take as u32).max(1);
                self.request(Req::GetBulk(&cursors, reps)).await?
            };
            let at_ns = crate::model::now_ns();
            if resp.error_status != 0 {
                return Err(SnmpError::ErrorStatus {
                    target: self.ep.name.clone(),
                    status: resp.error_status,
                    oid: cursors
                        .get((resp.error_index as usize).saturating_sub(1))
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                });
            }
            self.varbinds += resp.varbinds.len() as u64;
            let mut done = vec![false; take];
            let mut progressed = vec![false; take];
            let mut answered = vec![false; take];
            let total = resp.varbinds.len();
            let mut cursor_now: Vec<ObjectId> = cursors.clone();
            for (i, (oid, value)) in resp.varbinds.into_iter().enumerate() {
                let col = i % take;
                answered[col] = true;
                if done[col] {
                    continue;
                }
                let root = &roots[batch[col].0];
                if matches!(value, SnmpValue::EndOfMibView)
                    || !oid.starts_with(root)
                    || oid <= cursor_now[col]
                {
                    done[col] = true;
                    continue;
                }
                cursor_now[col] = oid.clone();
                progressed[col] = true;
                if !matches!(value, SnmpValue::NoSuchObject | SnmpValue::NoSuchInstance) {
                    out.push((batch[col].0, oid, Received { value, at_ns }));
                }
            }
            if total == 0 {
                return Err(SnmpError::Protocol {
                    target: self.ep.name.clone(),
                    detail: format!(
                        "empty GETBULK/GETNEXT response while walking {}",
                        cursors[0]
                    ),
                });
            }
            // Rebuild the active list: finished columns drop out, the rest continue from their
            // new cursor. An agent may truncate a GETBULK response so that later columns get
            // no varbind at all: those simply ask again from where they were.
            let mut next: Vec<(usize, ObjectId)> = Vec::with_capacity(active.len());
            for col in 0..take {
                if !done[col] && (progressed[col] || !answered[col]) {
                    next.push((batch[col].0, cursor_now[col].clone()));
                }
            }
            next.extend(active.drain(take..));
            active = next;
        }
        Ok(out)
    }
}

fn silence_hint(v: SnmpVersion) -> &'static str {
    match v {
        SnmpVersion::V3 => {
            "a wrong priv_protocol/priv_password: agents drop what they cannot decrypt"
        }
        _ => "a wrong community or agent ACL: agents stay silent on a bad community",
    }
}

fn map_err(ep: &Endpoint, e: snmp2::Error) -> SnmpError {
    use snmp2::Error as E;
    match e {
        E::AuthUpdated => SnmpError::AuthUpdated,
        E::AuthFailure(kind) => SnmpError::Auth {
            target: ep.name.clone(),
            detail: format!(
                "SNMPv3 authentication failed ({kind}); check user, security_level, auth/priv protocol and passwords"
            ),
        },
        E::Crypto(c) => SnmpError::Auth {
            target: ep.name.clone(),
            detail: format!("SNMPv3 crypto error ({c}); check priv_protocol and priv_password"),
        },
        E::CommunityMismatch => SnmpError::Protocol {
            target: ep.name.clone(),
            detail: "reply carried a different community".into(),
        },
        E::AsnWrongType if ep.version == SnmpVersion::V3 => SnmpError::Auth {
            target: ep.name.clone(),
            detail: "the agent answered with a report instead of a response; check user, security_level, auth/priv protocol and passwords".into(),
        },
        E::Send | E::Receive => SnmpError::Io {
            target: ep.name.clone(),
            detail: format!(
                "UDP send/receive to {}:{} failed (port unreachable or network down)",
                ep.host, ep.port
            ),
        },
        other => SnmpError::Protocol {
            target: ep.name.clone(),
            detail: format!("{other}"),
        },
    }
}

/// Monotonic helper for poll durations.
pub fn elapsed_s(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
