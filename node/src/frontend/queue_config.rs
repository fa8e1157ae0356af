//! UpdateTaskQueueConfig and the dispatch rates polls bring to matching: a queue's rate set
//! through the API ([`crate::queue_configs`]) takes precedence over the one its workers ask for.

use temporalio_protos::temporal::api::enums::v1 as enums;
use temporalio_protos::temporal::api::taskqueue::v1 as tq;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::errors::invalid;
use super::{check_id, Frontend};
use crate::deployments::queue_type;
use crate::engine::proto;
use crate::matching::{QueueKey, RateSource};

/// Longest reason of a rate limit change, as in Temporal.
const MAX_REASON_CHARS: usize = 1000;

impl Frontend {
    /// Brings matching up to date with `key`'s dispatch rates before a poll: the API's, and
    /// the workers' when the poll names one.
    pub(super) fn apply_dispatch_rates(
        &self,
        key: &QueueKey,
        worker: Option<&tq::TaskQueueMetadata>,
    ) {
        if let Some(metadata) = worker {
            self.matching
                .set_dispatch_rate(key, RateSource::Worker, metadata.max_tasks_per_second);
        }
        let api = self
            .queue_configs
            .rate(&key.namespace_id, queue_type(key.kind), &key.name);
        self.matching.set_dispatch_rate(key, RateSource::Api, api);
    }

    /// The rate limit in force on `key`'s queue, for DescribeTaskQueue (none: unlimited).
    pub(super) fn effective_rate_limit(
        &self,
        key: &QueueKey,
    ) -> Option<ws::describe_task_queue_response::EffectiveRateLimit> {
        let api = self
            .queue_configs
            .rate(&key.namespace_id, queue_type(key.kind), &key.name)
            .map(|rate| (rate, RateSource::Api));
        let worker = self
            .matching
            .dispatch_rate(key)
            .filter(|(_, source)| *source == RateSource::Worker);
        api.or(worker).map(
            |(rate, source)| ws::describe_task_queue_response::EffectiveRateLimit {
                requests_per_second: rate as f32,
                rate_limit_source: match source {
                    RateSource::Api => enums::RateLimitSource::Api,
                    RateSource::Worker => enums::RateLimitSource::Worker,
                } as i32,
            },
        )
    }

    pub(super) async fn update_task_queue_config_rpc(
        &self,
        r: ws::UpdateTaskQueueConfigRequest,
    ) -> Result<ws::UpdateTaskQueueConfigResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("TaskQueue", &r.task_queue, true)?;
        if r.update_fairness_key_rate_limit_default.is_some()
            || !r.set_fairness_weight_overrides.is_empty()
            || !r.unset_fairness_weight_overrides.is_empty()
        {
            return Err(Status::unimplemented(
                "Keel has no fairness keys yet, so it takes no fairness key rate limits or \
                 weights; set only the queue rate limit",
            ));
        }
        let Some(update) = r.update_queue_rate_limit else {
            return Err(invalid(
                "nothing to update: set update_queue_rate_limit (a rate, or none to remove it)",
            ));
        };
        if update.rate_limit.as_ref().is_some_and(|limit| {
            limit.requests_per_second.is_nan() || limit.requests_per_second < 0.0
        }) {
            return Err(invalid(
                "RequestsPerSecond for UpdateQueueRateLimit rate limit must be non-negative.",
            ));
        }
        if update.reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(format!(
                "UpdateQueueRateLimit.Reason field too long (max {MAX_REASON_CHARS} characters)."
            )));
        }
        let kind = if r.task_queue_type == enums::TaskQueueType::Activity as i32 {
            enums::TaskQueueType::Activity
        } else {
            enums::TaskQueueType::Workflow
        } as i32;
        let now = self.now();
        let config = self
            .queue_configs
            .change(&namespace.id, kind, &r.task_queue, |config| {
                config.queue_rate_limit = Some(tq::RateLimitConfig {
                    rate_limit: update.rate_limit,
                    metadata: Some(tq::ConfigMetadata {
                        reason: update.reason.clone(),
                        update_identity: r.identity.clone(),
                        update_time: Some(proto::timestamp(now)),
                    }),
                });
            })
            .await?;
        Ok(ws::UpdateTaskQueueConfigResponse {
            config: Some(config),
        })
    }
}
