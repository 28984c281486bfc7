//! [`ScepTransactionStore`] on redb: issued certificates by (transaction, CSR key), with an
//! expiry index so pruning reads only what expired.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::tables::{SCEP_ISSUED, SCEP_ISSUED_EXPIRY};
use super::{RedbStore, backend, decode, encode};
use crate::store::{
    ChallengeStatus, Emit, Event, ScepIssuance, ScepIssue, ScepTransactionStore, StoreResult,
    Timestamp,
};

/// Most records returned for one transaction ID.
const MAX_PER_TRANSACTION: usize = 8;

fn unix_ms(t: Timestamp) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[async_trait]
impl ScepTransactionStore for RedbStore {
    async fn put_scep_issue(&self, issue: &ScepIssue) -> StoreResult<()> {
        let issue = issue.clone();
        self.write(move |txn| put_issue_in(txn, &issue)).await
    }

    async fn record_issuance(
        &self,
        issuance: &ScepIssuance,
        now: Timestamp,
        emit: Emit<()>,
    ) -> StoreResult<(ChallengeStatus, Vec<Event>)> {
        let r = issuance.clone();
        self.write(move |txn| {
            if let Some(challenge) = &r.challenge {
                let status = super::challenges::consume_in(txn, challenge, now)?;
                if status != ChallengeStatus::Accepted {
                    return Ok((status, Vec::new()));
                }
            }
            if let Some(old) = &r.renewal_of {
                super::identity::link_renewal_in(txn, old, &r.certificate)?;
            }
            if let Some(b) = &r.binding {
                super::identity::bind_in(txn, &r.certificate, b)?;
            }
            put_issue_in(txn, &r.issue)?;
            let events = super::events::append_in(txn, &emit.build(&()), now)?;
            Ok((ChallengeStatus::Accepted, events))
        })
        .await
    }

    async fn scep_issues(
        &self,
        transaction_id: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<ScepIssue>> {
        self.read(|txn| {
            let t = txn.open_table(SCEP_ISSUED).map_err(backend)?;
            let mut out = Vec::new();
            let from: (&str, &[u8]) = (transaction_id, &[]);
            for entry in t.range(from..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                if k.value().0 != transaction_id || out.len() >= MAX_PER_TRANSACTION {
                    break;
                }
                let issue: ScepIssue = decode("SCEP transaction", v.value())?;
                if issue.expires_at > now {
                    out.push(issue);
                }
            }
            Ok(out)
        })
    }

    async fn prune_scep_issues(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let cutoff = unix_ms(before);
        self.write(move |txn| {
            let mut expiry = txn.open_table(SCEP_ISSUED_EXPIRY).map_err(backend)?;
            let mut doomed = Vec::new();
            let start: (i64, &str, &[u8]) = (i64::MIN, "", &[]);
            let end: (i64, &str, &[u8]) = (cutoff, "", &[]);
            for entry in expiry.range(start..end).map_err(backend)? {
                if doomed.len() >= limit {
                    break;
                }
                let (k, _) = entry.map_err(backend)?;
                let (at, tx, key) = k.value();
                doomed.push((at, tx.to_owned(), key.to_vec()));
            }
            let mut t = txn.open_table(SCEP_ISSUED).map_err(backend)?;
            for (at, tx, key) in &doomed {
                expiry
                    .remove((*at, tx.as_str(), key.as_slice()))
                    .map_err(backend)?;
                t.remove((tx.as_str(), key.as_slice())).map_err(backend)?;
            }
            Ok(doomed.len() as u64)
        })
        .await
    }
}

/// Remember (or replace) `issue` inside `txn` (see [`ScepTransactionStore::put_scep_issue`]).
fn put_issue_in(txn: &::redb::WriteTransaction, issue: &ScepIssue) -> StoreResult<()> {
    let key = (
        issue.transaction_id.as_str(),
        issue.csr_key_sha256.as_slice(),
    );
    let mut t = txn.open_table(SCEP_ISSUED).map_err(backend)?;
    let mut expiry = txn.open_table(SCEP_ISSUED_EXPIRY).map_err(backend)?;
    let previous: Option<ScepIssue> = t
        .get(key)
        .map_err(backend)?
        .map(|v| decode("SCEP transaction", v.value()))
        .transpose()?;
    if let Some(p) = previous {
        expiry
            .remove((unix_ms(p.expires_at), key.0, key.1))
            .map_err(backend)?;
    }
    t.insert(key, encode(issue).as_slice()).map_err(backend)?;
    expiry
        .insert((unix_ms(issue.expires_at), key.0, key.1), ())
        .map_err(backend)?;
    Ok(())
}
