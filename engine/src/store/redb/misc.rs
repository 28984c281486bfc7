//! [`BootstrapStore`], [`EventStore`] and [`SecretStore`] on redb.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::tables::{
    BOOTSTRAP, BOOTSTRAP_HOLDER, CHALLENGE_EXPIRY, CHALLENGES, EVENTS, MACHINE_INFO, SECRETS,
    next_seq,
};
use super::{RedbStore, backend, decode, encode};
use crate::store::{
    BootstrapStore, CertBinding, CertHash, ChallengeStatus, ChallengeStore, DeviceInfoStore, Emit,
    Event, EventStore, MachineInfoRecord, NewEvent, SecretStore, StoreResult, Timestamp,
};
use crate::wire::enrollment_id::EnrollmentId;
use crate::wire::machine_info::MachineInfo;

#[async_trait]
impl BootstrapStore for RedbStore {
    async fn store_bootstrap_token(
        &self,
        id: &EnrollmentId,
        sealed: Option<Vec<u8>>,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let id = id.clone();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            let mut t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            match &sealed {
                Some(s) => t.insert(id.as_str(), s.as_slice()).map_err(backend)?,
                None => t.remove(id.as_str()).map_err(backend)?,
            };
            // No holder is known for this token: forget any earlier one.
            txn.open_table(BOOTSTRAP_HOLDER)
                .map_err(backend)?
                .remove(id.as_str())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn bootstrap_token(&self, id: &EnrollmentId) -> StoreResult<Option<Vec<u8>>> {
        self.read(|txn| {
            let t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            Ok(t.get(id.as_str())
                .map_err(backend)?
                .map(|v| v.value().to_vec()))
        })
    }

    async fn store_bootstrap_token_held(
        &self,
        id: &EnrollmentId,
        sealed: Option<Vec<u8>>,
        holder: &CertHash,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let (id, holder) = (id.clone(), *holder);
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            let mut t = txn.open_table(BOOTSTRAP).map_err(backend)?;
            let mut h = txn.open_table(BOOTSTRAP_HOLDER).map_err(backend)?;
            match &sealed {
                Some(s) => {
                    t.insert(id.as_str(), s.as_slice()).map_err(backend)?;
                    h.insert(id.as_str(), holder.0.as_slice())
                        .map_err(backend)?;
                }
                None => {
                    t.remove(id.as_str()).map_err(backend)?;
                    h.remove(id.as_str()).map_err(backend)?;
                }
            };
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn bootstrap_holder(&self, id: &EnrollmentId) -> StoreResult<Option<CertHash>> {
        self.read(|txn| {
            let t = txn.open_table(BOOTSTRAP_HOLDER).map_err(backend)?;
            t.get(id.as_str())
                .map_err(backend)?
                .map(|v| {
                    v.value().try_into().map(CertHash).map_err(|_| {
                        crate::store::StoreError::Corrupt {
                            what: format!("bootstrap token holder of {id}"),
                            detail: "not a 32-byte hash".into(),
                        }
                    })
                })
                .transpose()
        })
    }
}

/// Append events inside an open write transaction (so state and its events commit together).
pub(super) fn append_in(
    txn: &::redb::WriteTransaction,
    events: &[NewEvent],
    now: Timestamp,
) -> StoreResult<Vec<Event>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let event = Event {
            seq: next_seq(txn, "event_seq")?,
            at: now,
            kind: e.kind.clone(),
            enrollment_id: e.enrollment_id.clone(),
            data: e.data.clone(),
        };
        txn.open_table(EVENTS)
            .map_err(backend)?
            .insert(event.seq, encode(&event).as_slice())
            .map_err(backend)?;
        out.push(event);
    }
    Ok(out)
}

#[async_trait]
impl EventStore for RedbStore {
    async fn append_events(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> StoreResult<Vec<Event>> {
        self.write(move |txn| append_in(txn, &events, now)).await
    }

    async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<Event>> {
        self.read(|txn| {
            let t = txn.open_table(EVENTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in t.range(after.saturating_add(1)..).map_err(backend)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = entry.map_err(backend)?;
                out.push(decode(&format!("event {}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |txn| {
            let mut t = txn.open_table(EVENTS).map_err(backend)?;
            let mut doomed = Vec::new();
            for entry in t.range(0u64..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let e: Event = decode(&format!("event {}", k.value()), v.value())?;
                if e.at >= before {
                    break;
                }
                doomed.push(e.seq);
            }
            for seq in &doomed {
                t.remove(*seq).map_err(backend)?;
            }
            Ok(doomed.len() as u64)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for RedbStore {
    async fn secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read(|txn| {
            let t = txn.open_table(SECRETS).map_err(backend)?;
            Ok(t.get(name).map_err(backend)?.map(|v| v.value().to_vec()))
        })
    }

    async fn put_secret_emitting(
        &self,
        name: &str,
        sealed: Vec<u8>,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let name = name.to_owned();
        let now = time::OffsetDateTime::now_utc();
        self.write_emitting(emit, now, move |txn| {
            txn.open_table(SECRETS)
                .map_err(backend)?
                .insert(name.as_str(), sealed.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }
}

/// Stored state of a one-time challenge.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChallengeState {
    #[serde(with = "time::serde::rfc3339")]
    expires_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option")]
    used_at: Option<Timestamp>,
    /// The device verified MachineInfo named when the challenge was minted for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    binding: Option<CertBinding>,
}

fn challenge_key(challenge: &str) -> [u8; 32] {
    openssl::sha::sha256(challenge.as_bytes())
}

/// Use `challenge` once inside `txn` (see [`ChallengeStore::consume_challenge`]).
pub(super) fn consume_in(
    txn: &::redb::WriteTransaction,
    challenge: &str,
    now: Timestamp,
) -> StoreResult<ChallengeStatus> {
    let key = challenge_key(challenge);
    let mut t = txn.open_table(CHALLENGES).map_err(backend)?;
    let state: Option<ChallengeState> = t
        .get(key.as_slice())
        .map_err(backend)?
        .map(|v| decode("SCEP challenge", v.value()))
        .transpose()?;
    let Some(mut state) = state else {
        return Ok(ChallengeStatus::Unknown);
    };
    if state.used_at.is_some() {
        return Ok(ChallengeStatus::AlreadyUsed);
    }
    if state.expires_at <= now {
        return Ok(ChallengeStatus::Expired);
    }
    state.used_at = Some(now);
    t.insert(key.as_slice(), encode(&state).as_slice())
        .map_err(backend)?;
    Ok(ChallengeStatus::Accepted)
}

/// Most expired challenges removed in one write transaction.
pub(super) const PRUNE_BATCH: usize = 1000;

fn unix_ms(t: Timestamp) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Index every stored challenge by expiry (the one-time migration of files from before the
/// index). Returns how many were indexed.
pub(super) fn index_challenges(txn: &::redb::WriteTransaction) -> StoreResult<u64> {
    let challenges = txn.open_table(CHALLENGES).map_err(backend)?;
    let mut index = txn.open_table(CHALLENGE_EXPIRY).map_err(backend)?;
    let mut n = 0;
    for entry in challenges.range::<&[u8]>(..).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let state: ChallengeState = decode("SCEP challenge", v.value())?;
        index
            .insert((unix_ms(state.expires_at), k.value()), ())
            .map_err(backend)?;
        n += 1;
    }
    Ok(n)
}

impl RedbStore {
    /// Remove up to `limit` challenges that expired before `before`, oldest first, through the
    /// expiry index (never a scan of the challenge table). Returns how many.
    pub(super) async fn prune_challenge_batch(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> StoreResult<u64> {
        let before_ms = unix_ms(before);
        self.write(move |txn| {
            let mut index = txn.open_table(CHALLENGE_EXPIRY).map_err(backend)?;
            let mut doomed = Vec::new();
            for entry in index
                .range::<(i64, &[u8])>((i64::MIN, &[][..])..(before_ms, &[][..]))
                .map_err(backend)?
                .take(limit)
            {
                let (k, _) = entry.map_err(backend)?;
                let (at, hash) = k.value();
                doomed.push((at, hash.to_vec()));
            }
            let mut challenges = txn.open_table(CHALLENGES).map_err(backend)?;
            for (at, hash) in &doomed {
                index.remove((*at, hash.as_slice())).map_err(backend)?;
                challenges.remove(hash.as_slice()).map_err(backend)?;
            }
            Ok(doomed.len() as u64)
        })
        .await
    }
}

#[async_trait]
impl ChallengeStore for RedbStore {
    async fn put_challenge(&self, challenge: &str, expires_at: Timestamp) -> StoreResult<()> {
        let key = challenge_key(challenge);
        self.write(move |txn| {
            let state = ChallengeState {
                expires_at,
                used_at: None,
                binding: None,
            };
            txn.open_table(CHALLENGES)
                .map_err(backend)?
                .insert(key.as_slice(), encode(&state).as_slice())
                .map_err(backend)?;
            txn.open_table(CHALLENGE_EXPIRY)
                .map_err(backend)?
                .insert((unix_ms(expires_at), key.as_slice()), ())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn put_bound_challenge(
        &self,
        challenge: &str,
        expires_at: Timestamp,
        binding: &CertBinding,
    ) -> StoreResult<()> {
        let key = challenge_key(challenge);
        let binding = binding.clone();
        self.write(move |txn| {
            let state = ChallengeState {
                expires_at,
                used_at: None,
                binding: Some(binding.clone()),
            };
            txn.open_table(CHALLENGES)
                .map_err(backend)?
                .insert(key.as_slice(), encode(&state).as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn challenge_binding(&self, challenge: &str) -> StoreResult<Option<CertBinding>> {
        let key = challenge_key(challenge);
        self.read(|txn| {
            let t = txn.open_table(CHALLENGES).map_err(backend)?;
            let state: Option<ChallengeState> = t
                .get(key.as_slice())
                .map_err(backend)?
                .map(|v| decode("SCEP challenge", v.value()))
                .transpose()?;
            Ok(state.and_then(|s| s.binding))
        })
    }

    async fn consume_challenge(
        &self,
        challenge: &str,
        now: Timestamp,
    ) -> StoreResult<ChallengeStatus> {
        let challenge = challenge.to_owned();
        self.write(move |txn| consume_in(txn, &challenge, now))
            .await
    }

    async fn prune_challenges(&self, before: Timestamp) -> StoreResult<u64> {
        // Bounded batches, each its own short write, so check-ins interleave with a big prune.
        let mut total = 0;
        loop {
            let n = self.prune_challenge_batch(before, PRUNE_BATCH).await?;
            total += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl DeviceInfoStore for RedbStore {
    async fn record_machine_info(
        &self,
        info: &MachineInfo,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<Vec<Event>> {
        let info = info.clone();
        self.write_emitting(emit, now, move |txn| {
            let mut t = txn.open_table(MACHINE_INFO).map_err(backend)?;
            let first_seen_at = t
                .get(info.udid.as_str())
                .map_err(backend)?
                .map(|v| decode::<MachineInfoRecord>("machine info", v.value()))
                .transpose()?
                .map_or(now, |r| r.first_seen_at);
            let record = MachineInfoRecord {
                info: info.clone(),
                first_seen_at,
                last_seen_at: now,
            };
            t.insert(info.udid.as_str(), encode(&record).as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
        .map(|(_, events)| events)
    }

    async fn machine_info(&self, udid: &str) -> StoreResult<Option<MachineInfoRecord>> {
        self.read(|txn| {
            let t = txn.open_table(MACHINE_INFO).map_err(backend)?;
            t.get(udid)
                .map_err(backend)?
                .map(|v| decode("machine info", v.value()))
                .transpose()
        })
    }
}
