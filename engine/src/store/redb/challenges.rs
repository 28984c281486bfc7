//! [`ChallengeStore`] on redb: one-time SCEP challenges by hash in `challenges`, with an expiry
//! index (`challenge_expiry`) so pruning reads only what expired.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::tables::{CHALLENGE_EXPIRY, CHALLENGES};
use super::{RedbStore, backend, decode, encode};
use crate::store::{CertBinding, ChallengeStatus, ChallengeStore, StoreResult, Timestamp};

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
