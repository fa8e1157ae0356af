//! Task queue configs (UpdateTaskQueueConfig): rate limits set through the API, which take
//! precedence over the rates workers ask for. Records live in the metadata group (key
//! `q|ns|type|name`, the `TaskQueueConfig` protobuf), written through its leader, and are
//! cached on every node; matching reads the rate of a queue from the cache on each poll.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prost::Message;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueueConfig;

use crate::namespaces::{MetadataWrite, NamespaceError, Namespaces};
use crate::shard::keys;

/// (namespace id, `TaskQueueType`, name).
type QueueId = (String, i32, String);

#[derive(Default)]
struct Cache {
    configs: HashMap<QueueId, TaskQueueConfig>,
    /// Metadata group applied index the cache reflects.
    applied: u64,
}

/// The task queue configs of every namespace, as this node knows them.
pub struct QueueConfigs {
    namespaces: Arc<Namespaces>,
    cache: RwLock<Cache>,
}

impl QueueConfigs {
    /// Loads the configs applied on this node.
    pub fn load(namespaces: Arc<Namespaces>) -> Result<QueueConfigs, NamespaceError> {
        let configs = QueueConfigs {
            namespaces,
            cache: RwLock::new(Cache::default()),
        };
        configs.reload()?;
        Ok(configs)
    }

    fn reload(&self) -> Result<(), NamespaceError> {
        let applied = self.namespaces.applied_index();
        let (start, end) = keys::queue_config_range();
        let mut configs = HashMap::new();
        self.namespaces.scan_metadata(&start, &end, |key, value| {
            if let (Some(id), Ok(config)) = (
                keys::parse_queue_config(key),
                TaskQueueConfig::decode(value),
            ) {
                configs.insert(id, config);
            }
        })?;
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Cache { configs, applied };
        Ok(())
    }

    /// Re-reads the configs if the metadata group applied anything since they were read.
    fn refresh(&self) {
        let stale = self.cache.read().unwrap_or_else(|e| e.into_inner()).applied
            != self.namespaces.applied_index();
        if stale {
            if let Err(error) = self.reload() {
                tracing::warn!(%error, "task queue configs could not be re-read");
            }
        }
    }

    /// Reads the config of a task queue, if one was set, with `read`.
    fn with<T>(
        &self,
        namespace_id: &str,
        kind: i32,
        name: &str,
        read: impl FnOnce(&TaskQueueConfig) -> T,
    ) -> Option<T> {
        self.refresh();
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        if cache.configs.is_empty() {
            return None;
        }
        let id = (namespace_id.to_string(), kind, name.to_string());
        cache.configs.get(&id).map(read)
    }

    /// The config of a task queue (default if none was set).
    pub fn get(&self, namespace_id: &str, kind: i32, name: &str) -> TaskQueueConfig {
        self.with(namespace_id, kind, name, TaskQueueConfig::clone)
            .unwrap_or_default()
    }

    /// The rate limit set through the API for a task queue, if any.
    pub fn rate(&self, namespace_id: &str, kind: i32, name: &str) -> Option<f64> {
        self.with(namespace_id, kind, name, |config| {
            config
                .queue_rate_limit
                .as_ref()
                .and_then(|limit| limit.rate_limit)
                .map(|limit| f64::from(limit.requests_per_second))
        })
        .flatten()
    }

    /// Applies `change` to a task queue's config and writes it through the metadata group
    /// (deleted when nothing is left in it); answers the config as written.
    pub async fn change(
        &self,
        namespace_id: &str,
        kind: i32,
        name: &str,
        change: impl FnOnce(&mut TaskQueueConfig),
    ) -> Result<TaskQueueConfig, NamespaceError> {
        let key = keys::queue_config(namespace_id, kind, name);
        let written = self
            .namespaces
            .write_metadata(|read| -> Result<_, NamespaceError> {
                let stored = read(&key)?;
                let mut config = stored
                    .as_deref()
                    .and_then(|bytes| TaskQueueConfig::decode(bytes).ok())
                    .unwrap_or_default();
                change(&mut config);
                let mut write = MetadataWrite::default();
                if config == TaskQueueConfig::default() {
                    if stored.is_some() {
                        write.deletes.push(key.clone());
                    }
                } else {
                    write.puts.push((key.clone(), config.encode_to_vec()));
                }
                Ok((write, config))
            })
            .await?;
        self.reload()?;
        Ok(written)
    }
}
