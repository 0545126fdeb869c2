//! Keeps the running system in line with the declarations: one log topic per broker, one
//! group and one dispatcher worker per trigger whose broker exists. Every REST write goes
//! through here, serialised, so the store, the log and the dispatcher never disagree for long.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use switchyard_dispatcher::policy::{Backoff, KnativeRetry};
use switchyard_dispatcher::{Dispatcher, Filter, Format, Ordering, Target, TriggerConfig};
use switchyard_log::{EventLog, LogError};
use switchyard_meta::resources::{
    resolve_delivery, AttributesFilter, BackoffPolicy, Condition, DeliveryFormat, DeliveryOrdering, SubscriptionsFilter,
};
use switchyard_meta::store::Upsert;
use switchyard_meta::{Broker, Store, StoreError, Trigger};
use tokio::sync::Mutex;

/// A failure while applying a declaration.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored resource no longer passes validation (stored before a rule existed).
    #[error("stored trigger '{trigger}' is invalid: {error}")]
    Invalid {
        /// The trigger.
        trigger: String,
        /// Why.
        error: switchyard_meta::ValidationError,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The broker's log topic.
pub fn topic_name(namespace: &str, broker: &str) -> String {
    format!("{namespace}.{broker}")
}

fn group_name(namespace: &str, trigger: &str) -> String {
    format!("{namespace}.{trigger}")
}

/// Declarations applied to the running system.
pub struct Controller {
    store: Store,
    log: Arc<dyn EventLog>,
    dispatcher: Dispatcher,
    /// Brokers that exist, for ingest's fast lookup: `(namespace, name)` → topic.
    brokers: RwLock<HashMap<(String, String), String>>,
    /// Serialises writes.
    writes: Mutex<()>,
}

impl Controller {
    /// Brings up every stored broker and trigger.
    pub async fn start(
        store: Store,
        log: Arc<dyn EventLog>,
        dispatcher: Dispatcher,
    ) -> Result<Controller, ControlError> {
        let controller =
            Controller { store, log, dispatcher, brokers: RwLock::new(HashMap::new()), writes: Mutex::new(()) };
        for broker in controller.store.list_brokers(None)? {
            let (namespace, name) = names(&broker.metadata);
            controller.log.create_topic(&topic_name(namespace, name)).await?;
            controller.register_broker(namespace, name);
        }
        for trigger in controller.store.list_triggers(None)? {
            controller.activate_or_report(&trigger).await?;
        }
        Ok(controller)
    }

    /// The topic of an existing broker.
    pub fn broker_topic(&self, namespace: &str, name: &str) -> Option<String> {
        let brokers = self.brokers.read().unwrap_or_else(|e| e.into_inner());
        brokers.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates or replaces a broker.
    pub async fn put_broker(&self, broker: Broker) -> Result<(Broker, Upsert), ControlError> {
        let _guard = self.writes.lock().await;
        let (namespace, name) = names(&broker.metadata);
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.log.create_topic(&topic_name(&namespace, &name)).await?;
        let (stored, upsert) = self.store.put_broker(broker)?;
        self.register_broker(&namespace, &name);
        // Triggers inherit the broker's delivery spec: (re)start those that use this broker.
        for trigger in self.store.list_triggers(Some(&namespace))? {
            if trigger.spec.broker == name {
                self.activate_or_report(&trigger).await?;
            }
        }
        Ok((stored, upsert))
    }

    /// Deletes a broker with its events. Its triggers stay declared, not ready, until a broker
    /// of that name exists again (Knative behaves the same).
    pub async fn delete_broker(&self, namespace: &str, name: &str) -> Result<Option<Broker>, ControlError> {
        let _guard = self.writes.lock().await;
        let Some(broker) = self.store.get_broker(namespace, name)? else { return Ok(None) };
        self.brokers.write().unwrap_or_else(|e| e.into_inner()).remove(&(namespace.to_owned(), name.to_owned()));
        for trigger in self.store.list_triggers(Some(namespace))? {
            if trigger.spec.broker == name {
                let (_, trigger_name) = names(&trigger.metadata);
                self.dispatcher.stop(namespace, trigger_name).await;
            }
        }
        self.store.delete_broker(namespace, name)?;
        self.log.delete_topic(&topic_name(namespace, name)).await?;
        Ok(Some(broker))
    }

    /// Creates or replaces a trigger. A new trigger receives events appended after this returns.
    pub async fn put_trigger(&self, trigger: Trigger) -> Result<(Trigger, Upsert), ControlError> {
        let _guard = self.writes.lock().await;
        let (namespace, name) = names(&trigger.metadata);
        let previous = self.store.get_trigger(namespace, name)?;
        if let Some(previous) = previous.filter(|p| p.spec.broker != trigger.spec.broker) {
            // Moving to another broker: the old position means nothing there.
            self.dispatcher.stop(namespace, name).await;
            let old_topic = topic_name(namespace, &previous.spec.broker);
            match self.log.delete_group(&old_topic, &group_name(namespace, name)).await {
                Ok(()) | Err(LogError::UnknownTopic(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let (stored, upsert) = self.store.put_trigger(trigger)?;
        self.activate(&stored).await?;
        Ok((stored, upsert))
    }

    /// Deletes a trigger and its progress.
    pub async fn delete_trigger(&self, namespace: &str, name: &str) -> Result<Option<Trigger>, ControlError> {
        let _guard = self.writes.lock().await;
        let Some(trigger) = self.store.get_trigger(namespace, name)? else { return Ok(None) };
        self.dispatcher.stop(namespace, name).await;
        self.store.delete_trigger(namespace, name)?;
        match self.log.delete_group(&topic_name(namespace, &trigger.spec.broker), &group_name(namespace, name)).await {
            Ok(()) | Err(LogError::UnknownTopic(_)) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(Some(trigger))
    }

    /// The broker's status: its ingest address.
    pub fn broker_status(&self, broker: &Broker, base_url: &str) -> serde_json::Value {
        let (namespace, name) = names(&broker.metadata);
        serde_json::json!({
            "address": { "url": format!("{base_url}/{namespace}/{name}") },
            "conditions": [Condition::ready()],
        })
    }

    /// The trigger's status: ready when its broker exists.
    pub fn trigger_status(&self, trigger: &Trigger) -> serde_json::Value {
        let (namespace, _) = names(&trigger.metadata);
        let condition = if self.broker_topic(namespace, &trigger.spec.broker).is_some() {
            Condition::ready()
        } else {
            Condition::not_ready("BrokerDoesNotExist", format!("broker '{}' does not exist", trigger.spec.broker))
        };
        serde_json::json!({
            "subscriberUri": trigger.spec.subscriber.uri,
            "conditions": [condition],
        })
    }

    /// Redelivers dead letters of a trigger; false when the trigger is not running.
    pub async fn redrive(&self, namespace: &str, name: &str, selection: switchyard_dispatcher::Redrive) -> bool {
        self.dispatcher.redrive(namespace, name, selection).await
    }

    /// Stops every trigger, letting in-flight deliveries finish for up to `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.dispatcher.shutdown(grace).await;
    }

    fn register_broker(&self, namespace: &str, name: &str) {
        let mut brokers = self.brokers.write().unwrap_or_else(|e| e.into_inner());
        brokers.insert((namespace.to_owned(), name.to_owned()), topic_name(namespace, name));
    }

    /// Like `activate`, but a trigger stored before a validation rule existed is reported and
    /// left stopped instead of failing every other trigger with it.
    async fn activate_or_report(&self, trigger: &Trigger) -> Result<(), ControlError> {
        match self.activate(trigger).await {
            Err(ControlError::Invalid { trigger, error }) => {
                tracing::error!(%trigger, %error, "trigger not started: fix it with a PUT");
                Ok(())
            }
            other => other,
        }
    }

    /// Starts (or restarts) the trigger's worker if its broker exists.
    async fn activate(&self, trigger: &Trigger) -> Result<(), ControlError> {
        let (namespace, name) = names(&trigger.metadata);
        let Some(broker) = self.store.get_broker(namespace, &trigger.spec.broker)? else {
            self.dispatcher.stop(namespace, name).await;
            return Ok(());
        };
        let topic = topic_name(namespace, &trigger.spec.broker);
        let group = group_name(namespace, name);
        // Durable before the PUT is answered: every event appended afterwards reaches the trigger.
        self.log.create_group(&topic, &group).await?;
        // A trigger's delivery replaces its broker's as a whole (Knative).
        let delivery = resolve_delivery(trigger.spec.delivery.as_ref().or(broker.spec.delivery.as_ref()))
            .map_err(|error| ControlError::Invalid { trigger: format!("{namespace}/{name}"), error })?;
        let format = match delivery.format {
            DeliveryFormat::Binary => Format::Binary,
            DeliveryFormat::Json => Format::Json,
        };
        let target = |uri: &str| -> Result<Target, ControlError> {
            // Validated as an absolute http(s) URL when the resource was submitted.
            let url = url::Url::parse(uri).map_err(|e| ControlError::Invalid {
                trigger: format!("{namespace}/{name}"),
                error: switchyard_meta::ValidationError::field("uri", e.to_string()),
            })?;
            Ok(Target { url, format, namespace: namespace.to_owned(), timeout: delivery.timeout })
        };
        let config = TriggerConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            topic,
            group,
            filter: compile_filter(trigger.spec.filter.as_ref(), &trigger.spec.filters).map_err(|message| {
                ControlError::Invalid {
                    trigger: format!("{namespace}/{name}"),
                    error: switchyard_meta::ValidationError::field("spec.filters", message),
                }
            })?,
            target: target(trigger.spec.subscriber.uri.as_deref().unwrap_or_default())?,
            dead_letter_sink: delivery.dead_letter_uri.as_deref().map(target).transpose()?,
            max_in_flight: delivery.max_in_flight as usize,
            ordering: match delivery.ordering {
                DeliveryOrdering::Unordered => Ordering::Unordered,
                DeliveryOrdering::Ordered => Ordering::Ordered,
            },
            rate_limit: delivery.rate_limit,
            retry: Arc::new(KnativeRetry {
                retries: delivery.retry,
                backoff: match delivery.backoff_policy {
                    BackoffPolicy::Linear => Backoff::Linear,
                    BackoffPolicy::Exponential => Backoff::Exponential,
                },
                delay: delivery.backoff_delay,
                retry_after_max: delivery.retry_after_max,
            }),
        };
        self.dispatcher.start(config).await;
        Ok(())
    }
}

fn names(metadata: &switchyard_meta::resources::Metadata) -> (&str, &str) {
    (metadata.namespace.as_deref().unwrap_or_default(), metadata.name.as_deref().unwrap_or_default())
}

/// Knative: a non-empty `filters` overrides `filter`; an empty one does not. The filters were
/// validated on the way in, so compiling fails only for a resource stored before a rule existed.
pub fn compile_filter(filter: Option<&AttributesFilter>, filters: &[SubscriptionsFilter]) -> Result<Filter, String> {
    if !filters.is_empty() {
        return filters.iter().map(compile_subscriptions_filter).collect::<Result<_, _>>().map(Filter::AllOf);
    }
    Ok(match filter {
        Some(filter) if !filter.attributes.is_empty() => {
            Filter::Attributes(filter.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        _ => Filter::All,
    })
}

fn compile_subscriptions_filter(filter: &SubscriptionsFilter) -> Result<Filter, String> {
    let pairs =
        |map: &std::collections::BTreeMap<String, String>| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let nested = |filters: &[SubscriptionsFilter]| {
        filters.iter().map(compile_subscriptions_filter).collect::<Result<Vec<_>, _>>()
    };
    Ok(match filter {
        SubscriptionsFilter::Exact(map) => Filter::Exact(pairs(map)),
        SubscriptionsFilter::Prefix(map) => Filter::Prefix(pairs(map)),
        SubscriptionsFilter::Suffix(map) => Filter::Suffix(pairs(map)),
        SubscriptionsFilter::All(filters) => Filter::AllOf(nested(filters)?),
        SubscriptionsFilter::Any(filters) => Filter::AnyOf(nested(filters)?),
        SubscriptionsFilter::Not(filter) => Filter::Not(Box::new(compile_subscriptions_filter(filter)?)),
        SubscriptionsFilter::Cesql(expression) => {
            Filter::Cesql(Arc::new(switchyard_cesql::parse(expression).map_err(|e| e.to_string())?))
        }
        SubscriptionsFilter::Jsonpath(query) => {
            Filter::JsonPath(Arc::new(switchyard_dispatcher::filter::parse_jsonpath(query)?))
        }
    })
}
