//! The dead-letter store, in the same redb database as the group positions (`offsets.redb`).
//!
//! Tables:
//!
//! - `deadletters`: `(scope, id)` → entry. A tuple key compares the scope as a whole first, so
//!   the entries of one scope are contiguous whatever characters scopes hold (`a` never mixes
//!   with `a/b`), and within a scope they sort by id.
//! - `deadletter_ids`: `scope` → the last id assigned in it. Never decreased or removed, so ids
//!   are not reused after `remove`, `purge` or a reopen.
//!
//! An id is the scope's counter as 20 decimal digits (`00000000000000000001`), so its text
//! order is its numeric order, which is insertion order.
//!
//! An entry's value (little-endian): `version:u8` (1), `attempts:u32`, `has_status:u8` then
//! `status:u16` when 1, `reason: len:u32 bytes`, `has_error:u8` then `error: len:u32 bytes` when
//! 1, `dead_lettered_at: len:u32 bytes`, then the rest is the event in
//! [`switchyard_event::storage`] form (attribute types, order and data form kept). Decoding
//! never panics: bad bytes are [`LogError::Corrupt`].
//!
//! Every mutation commits with [`Durability::Immediate`] (fsynced before it returns). Entries
//! are independent of topics: retention and topic or group deletion never touch them.

use std::ops::Bound;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use switchyard_event::storage;
use switchyard_log::{DeadLetter, DeadLetterStore, LogError, Position};

use crate::groups::{db_error, SharedDb};
use crate::{blocking, lock};

/// `(scope, id)` → encoded entry.
const ENTRIES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("deadletters");
/// `scope` → last id assigned.
const LAST_IDS: TableDefinition<'_, &str, u64> = TableDefinition::new("deadletter_ids");

const VERSION: u8 = 1;

/// The embedded [`DeadLetterStore`]. Closed with the log (the database goes with the groups).
pub(crate) struct DeadLetters {
    db: SharedDb,
}

impl DeadLetters {
    /// Creates the tables if needed, so that readers always find them.
    pub(crate) fn open(db: SharedDb) -> Result<DeadLetters, LogError> {
        with_db(&db, |db| {
            let txn = db.begin_write().map_err(db_error)?;
            txn.open_table(ENTRIES).map_err(db_error)?;
            txn.open_table(LAST_IDS).map_err(db_error)?;
            txn.commit().map_err(db_error)
        })?;
        Ok(DeadLetters { db })
    }
}

fn with_db<T>(db: &SharedDb, f: impl FnOnce(&Database) -> Result<T, LogError>) -> Result<T, LogError> {
    let guard = lock(db);
    f(guard.as_ref().ok_or(LogError::Closed)?)
}

/// The id for the `n`th entry of a scope.
fn format_id(n: u64) -> String {
    format!("{n:020}")
}

fn put(db: &SharedDb, scope: &str, value: &[u8]) -> Result<String, LogError> {
    with_db(db, |db| {
        let mut txn = db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate);
        let id = {
            let mut last_ids = txn.open_table(LAST_IDS).map_err(db_error)?;
            let last = last_ids.get(scope).map_err(db_error)?.map_or(0, |v| v.value());
            let next = last
                .checked_add(1)
                .ok_or_else(|| LogError::Unavailable(format!("dead-letter ids of scope '{scope}' are exhausted")))?;
            last_ids.insert(scope, next).map_err(db_error)?;
            let id = format_id(next);
            let mut entries = txn.open_table(ENTRIES).map_err(db_error)?;
            entries.insert((scope, id.as_str()), value).map_err(db_error)?;
            id
        };
        txn.commit().map_err(db_error)?;
        Ok(id)
    })
}

fn list(db: &SharedDb, scope: &str, after: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    with_db(db, |db| {
        let txn = db.begin_read().map_err(db_error)?;
        let table = txn.open_table(ENTRIES).map_err(db_error)?;
        let start = match after {
            Some(after) => Bound::Excluded((scope, after)),
            None => Bound::Included((scope, "")),
        };
        let mut out = Vec::new();
        for item in table.range::<(&str, &str)>((start, Bound::Unbounded)).map_err(db_error)? {
            let (key, value) = item.map_err(db_error)?;
            let (entry_scope, id) = key.value();
            if entry_scope != scope {
                break;
            }
            out.push(decode(scope, id, value.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    })
}

fn get(db: &SharedDb, scope: &str, id: &str) -> Result<Option<DeadLetter>, LogError> {
    with_db(db, |db| {
        let txn = db.begin_read().map_err(db_error)?;
        let table = txn.open_table(ENTRIES).map_err(db_error)?;
        let value = table.get((scope, id)).map_err(db_error)?;
        value.map(|v| decode(scope, id, v.value())).transpose()
    })
}

fn remove(db: &SharedDb, scope: &str, id: &str) -> Result<bool, LogError> {
    with_db(db, |db| {
        let mut txn = db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate);
        let existed = {
            let mut table = txn.open_table(ENTRIES).map_err(db_error)?;
            let removed = table.remove((scope, id)).map_err(db_error)?;
            removed.is_some()
        };
        if existed {
            txn.commit().map_err(db_error)?;
        } else {
            txn.abort().map_err(db_error)?;
        }
        Ok(existed)
    })
}

fn purge(db: &SharedDb, scope: &str) -> Result<u64, LogError> {
    with_db(db, |db| {
        let mut txn = db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate);
        let removed = {
            let mut table = txn.open_table(ENTRIES).map_err(db_error)?;
            let mut ids = Vec::new();
            for item in table.range::<(&str, &str)>((scope, "")..).map_err(db_error)? {
                let (key, _) = item.map_err(db_error)?;
                let (entry_scope, id) = key.value();
                if entry_scope != scope {
                    break;
                }
                ids.push(id.to_owned());
            }
            for id in &ids {
                table.remove((scope, id.as_str())).map_err(db_error)?;
            }
            ids.len()
        };
        if removed > 0 {
            txn.commit().map_err(db_error)?;
        } else {
            txn.abort().map_err(db_error)?;
        }
        Ok(removed as u64)
    })
}

fn put_len(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<(), LogError> {
    let len = u32::try_from(bytes.len()).map_err(|_| {
        LogError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("dead letter {what} too long")))
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// The stored form of an entry (its id is the key, not part of the value).
fn encode(entry: &DeadLetter) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::with_capacity(64 + entry.reason.len() + entry.event.data().map_or(0, |d| d.bytes.len()));
    out.push(VERSION);
    out.extend_from_slice(&entry.attempts.to_le_bytes());
    match entry.last_status {
        None => out.push(0),
        Some(status) => {
            out.push(1);
            out.extend_from_slice(&status.to_le_bytes());
        }
    }
    put_len(&mut out, entry.reason.as_bytes(), "reason")?;
    match &entry.last_error {
        None => out.push(0),
        Some(error) => {
            out.push(1);
            put_len(&mut out, error.as_bytes(), "error")?;
        }
    }
    put_len(&mut out, entry.dead_lettered_at.as_bytes(), "time")?;
    storage::encode_into(&entry.event, &mut out).map_err(|error| {
        LogError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("dead letter event: {error}")))
    })?;
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len()).ok_or("truncated entry")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }

    fn flag(&mut self) -> Result<bool, &'static str> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("invalid flag"),
        }
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "text is not utf-8")
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }
}

/// Decodes a stored entry; never panics.
fn decode(scope: &str, id: &str, bytes: &[u8]) -> Result<DeadLetter, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        position: Position { partition: 0, offset: id.parse().unwrap_or(0) },
        reason: format!("dead letter '{id}' of scope '{scope}': {reason}"),
    };
    let mut r = Reader { bytes, at: 0 };
    let fields = (|| {
        if r.u8()? != VERSION {
            return Err("unknown entry version");
        }
        let attempts = u32::from_le_bytes(r.array()?);
        let last_status = if r.flag()? { Some(u16::from_le_bytes(r.array()?)) } else { None };
        let reason = r.string()?;
        let last_error = if r.flag()? { Some(r.string()?) } else { None };
        let dead_lettered_at = r.string()?;
        Ok((attempts, last_status, reason, last_error, dead_lettered_at))
    })();
    let (attempts, last_status, reason, last_error, dead_lettered_at) = fields.map_err(|e| corrupt(e.to_owned()))?;
    let event = storage::decode(&Bytes::copy_from_slice(r.rest())).map_err(|e| corrupt(format!("event: {e}")))?;
    Ok(DeadLetter { id: id.to_owned(), event, reason, attempts, last_status, last_error, dead_lettered_at })
}

#[async_trait]
impl DeadLetterStore for DeadLetters {
    async fn put(&self, scope: &str, entry: DeadLetter) -> Result<String, LogError> {
        let value = encode(&entry)?;
        let (db, scope) = (SharedDb::clone(&self.db), scope.to_owned());
        blocking(move || put(&db, &scope, &value)).await
    }

    async fn list(&self, scope: &str, after: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
        let (db, scope, after) = (SharedDb::clone(&self.db), scope.to_owned(), after.map(str::to_owned));
        blocking(move || list(&db, &scope, after.as_deref(), limit)).await
    }

    async fn get(&self, scope: &str, id: &str) -> Result<Option<DeadLetter>, LogError> {
        let (db, scope, id) = (SharedDb::clone(&self.db), scope.to_owned(), id.to_owned());
        blocking(move || get(&db, &scope, &id)).await
    }

    async fn remove(&self, scope: &str, id: &str) -> Result<bool, LogError> {
        let (db, scope, id) = (SharedDb::clone(&self.db), scope.to_owned(), id.to_owned());
        blocking(move || remove(&db, &scope, &id)).await
    }

    async fn purge(&self, scope: &str) -> Result<u64, LogError> {
        let (db, scope) = (SharedDb::clone(&self.db), scope.to_owned());
        blocking(move || purge(&db, &scope)).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use switchyard_log::testkit::sample_event;

    use super::*;

    fn entry(last_status: Option<u16>, last_error: Option<&str>) -> DeadLetter {
        DeadLetter {
            id: "ignored".to_owned(),
            event: sample_event("e-1", 40),
            reason: "retries exhausted ✓".to_owned(),
            attempts: 7,
            last_status,
            last_error: last_error.map(str::to_owned),
            dead_lettered_at: "2024-05-01T12:00:00Z".to_owned(),
        }
    }

    #[test]
    fn encoding_round_trips() {
        for original in [entry(None, None), entry(Some(503), None), entry(None, Some("connection refused"))] {
            let bytes = encode(&original).unwrap();
            let decoded = decode("s", "00000000000000000001", &bytes).unwrap();
            assert_eq!(decoded, DeadLetter { id: "00000000000000000001".to_owned(), ..original });
        }
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let bytes = encode(&entry(Some(500), Some("timeout"))).unwrap();
        for len in 0..bytes.len() {
            let err = decode("s", "00000000000000000003", &bytes[..len]).unwrap_err();
            assert!(matches!(err, LogError::Corrupt { position: Position { offset: 3, .. }, .. }), "{len}: {err}");
        }
        let mut versioned = bytes.clone();
        versioned[0] = 9;
        assert!(matches!(decode("s", "x", &versioned), Err(LogError::Corrupt { .. })));
        let mut long = bytes;
        long.push(0);
        assert!(matches!(decode("s", "x", &long), Err(LogError::Corrupt { .. })));
    }

    #[test]
    fn ids_sort_numerically() {
        assert_eq!(format_id(1), "00000000000000000001");
        assert_eq!(format_id(u64::MAX).len(), 20);
        assert!(format_id(9) < format_id(10));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode("s", "1", &bytes);
        }

        #[test]
        fn decoding_mutated_entries_never_panics(at in 0usize..200, byte in any::<u8>()) {
            let mut bytes = encode(&entry(Some(404), Some("x"))).unwrap();
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = decode("s", "1", &bytes);
        }
    }
}
