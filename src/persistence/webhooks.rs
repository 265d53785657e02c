//! What outgoing webhooks keep on disk, in sled trees beside the journal:
//!
//! | tree                | key                                   | value                            |
//! |---------------------|---------------------------------------|----------------------------------|
//! | `webhook_endpoints` | endpoint id                           | the endpoint (with its secrets)  |
//! | `webhook_outbox`    | endpoint id, 0, the event's key       | one pending delivery             |
//! | `webhook_recent`    | endpoint id                           | its last finished attempts       |
//!
//! The event's key is the history's `events` key (app, mode, sort part of the id, id), so one
//! endpoint's pending deliveries sort oldest event first. This module knows bytes and the codec,
//! not what an endpoint or a delivery holds: those types belong to `crate::webhooks`.
//!
//! Durability: endpoint changes and new outbox rows are synced before anyone is told (an answer,
//! or the history being told the event is taken). Attempt results are written without a sync:
//! losing one to a crash sends that event once more, which at-least-once delivery allows.

use super::codec::{CodecError, decode_value, encode_value};
use super::journal::{DiskSync, Journal, JournalError, KvTree, SledJournal};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum WebhookStoreError {
    #[error(transparent)]
    Store(#[from] JournalError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

#[derive(Clone)]
pub struct WebhookStore {
    endpoints: KvTree,
    outbox: KvTree,
    recent: KvTree,
    disk: DiskSync,
}

/// The outbox key of `event_key` for `endpoint`.
pub fn row_key(endpoint: &str, event_key: &[u8]) -> Vec<u8> {
    let mut key = endpoint_prefix(endpoint);
    key.extend_from_slice(event_key);
    key
}

fn endpoint_prefix(endpoint: &str) -> Vec<u8> {
    let mut key = endpoint.as_bytes().to_vec();
    key.push(0);
    key
}

type Pairs<T> = Vec<(Vec<u8>, T)>;

impl WebhookStore {
    pub fn open(journal: &SledJournal) -> Result<WebhookStore, WebhookStoreError> {
        Ok(WebhookStore {
            endpoints: journal.tree("webhook_endpoints")?,
            outbox: journal.tree("webhook_outbox")?,
            recent: journal.tree("webhook_recent")?,
            disk: journal.disk_sync(),
        })
    }

    pub fn endpoints<T: DeserializeOwned>(&self) -> Result<Vec<T>, WebhookStoreError> {
        let mut out = Vec::new();
        for item in self.endpoints.scan_prefix(&[]) {
            let (_, value) = item?;
            out.push(decode_value(&value)?);
        }
        Ok(out)
    }

    /// Writes an endpoint and syncs: durable when this returns.
    pub fn put_endpoint<T: Serialize>(
        &self,
        id: &str,
        endpoint: &T,
    ) -> Result<(), WebhookStoreError> {
        let value = encode_value(endpoint)?;
        self.endpoints
            .write([(id.as_bytes().to_vec(), Some(value))])?;
        self.disk.sync()?;
        Ok(())
    }

    /// Removes an endpoint with its pending deliveries and attempts, then syncs.
    pub fn delete_endpoint(&self, id: &str) -> Result<(), WebhookStoreError> {
        self.endpoints.write([(id.as_bytes().to_vec(), None)])?;
        let mut rows = Vec::new();
        for item in self.outbox.scan_prefix(&endpoint_prefix(id)) {
            rows.push((item?.0.to_vec(), None));
        }
        self.outbox.write(rows)?;
        self.recent.write([(id.as_bytes().to_vec(), None)])?;
        self.disk.sync()?;
        Ok(())
    }

    /// Every pending delivery, for the deliverer's start.
    pub fn rows<T: DeserializeOwned>(&self) -> Result<Pairs<T>, WebhookStoreError> {
        let mut out = Vec::new();
        for item in self.outbox.scan_prefix(&[]) {
            let (key, value) = item?;
            out.push((key.to_vec(), decode_value(&value)?));
        }
        Ok(out)
    }

    /// One endpoint's pending deliveries.
    pub fn rows_of<T: DeserializeOwned>(
        &self,
        endpoint: &str,
    ) -> Result<Pairs<T>, WebhookStoreError> {
        let mut out = Vec::new();
        for item in self.outbox.scan_prefix(&endpoint_prefix(endpoint)) {
            let (key, value) = item?;
            out.push((key.to_vec(), decode_value(&value)?));
        }
        Ok(out)
    }

    pub fn row<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, WebhookStoreError> {
        match self.outbox.get(key)? {
            Some(value) => Ok(Some(decode_value(&value)?)),
            None => Ok(None),
        }
    }

    /// New pending deliveries, synced: durable when this returns.
    pub fn add_rows<T: Serialize>(&self, rows: &[(Vec<u8>, T)]) -> Result<(), WebhookStoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(rows.len());
        for (key, row) in rows {
            changes.push((key.clone(), Some(encode_value(row)?)));
        }
        self.outbox.write(changes)?;
        self.disk.sync()?;
        Ok(())
    }

    /// Rewrites (`Some`) or removes (`None`) pending deliveries, without a sync (see the module's
    /// note on durability).
    pub fn update_rows<T: Serialize>(
        &self,
        rows: &[(Vec<u8>, Option<T>)],
    ) -> Result<(), WebhookStoreError> {
        let mut changes = Vec::with_capacity(rows.len());
        for (key, row) in rows {
            let value = row.as_ref().map(encode_value).transpose()?;
            changes.push((key.clone(), value));
        }
        Ok(self.outbox.write(changes)?)
    }

    pub fn recent<T: DeserializeOwned>(
        &self,
        endpoint: &str,
    ) -> Result<Option<T>, WebhookStoreError> {
        match self.recent.get(endpoint.as_bytes())? {
            Some(value) => Ok(Some(decode_value(&value)?)),
            None => Ok(None),
        }
    }

    /// Writes endpoints' recent attempts, without a sync: they are for the dashboard.
    pub fn put_recent<T: Serialize>(&self, lists: &[(&str, &T)]) -> Result<(), WebhookStoreError> {
        let mut changes = Vec::with_capacity(lists.len());
        for (endpoint, list) in lists {
            changes.push((endpoint.as_bytes().to_vec(), Some(encode_value(list)?)));
        }
        Ok(self.recent.write(changes)?)
    }
}
