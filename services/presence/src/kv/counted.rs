//! A bucket that counts its operations: how many KV round trips presence makes for each
//! connect, disconnect or dead edge is a number to watch (and to keep low).

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Changes, Entry, KvBucket, KvError};

/// Labels of `p2piano_presence_kv_ops_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvOpLabels {
    /// The bucket's role: `sessions`, `connections` or `edges`.
    pub bucket: &'static str,
    /// The operation: `get`, `create`, `update`, `put`, `delete`, `keys` or `watch`.
    pub op: &'static str,
}

/// `inner`, counting every operation under `bucket` in `ops`.
pub struct CountedBucket {
    inner: Arc<dyn KvBucket>,
    bucket: &'static str,
    ops: Family<KvOpLabels, Counter>,
}

impl CountedBucket {
    /// Wraps `inner`.
    pub fn wrap(
        inner: Arc<dyn KvBucket>,
        bucket: &'static str,
        ops: Family<KvOpLabels, Counter>,
    ) -> Arc<dyn KvBucket> {
        Arc::new(Self { inner, bucket, ops })
    }

    fn count(&self, op: &'static str) {
        self.ops
            .get_or_create(&KvOpLabels {
                bucket: self.bucket,
                op,
            })
            .inc();
    }
}

#[async_trait::async_trait]
impl KvBucket for CountedBucket {
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        self.count("get");
        self.inner.get(key).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.count("create");
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: u64) -> Result<u64, KvError> {
        self.count("update");
        self.inner.update(key, value, expected).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.count("put");
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<(), KvError> {
        self.count("delete");
        self.inner.delete(key, expected).await
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.count("keys");
        self.inner.keys().await
    }

    async fn watch(&self) -> Result<Changes, KvError> {
        self.count("watch");
        self.inner.watch().await
    }
}
