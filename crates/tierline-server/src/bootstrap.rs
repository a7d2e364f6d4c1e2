//! Server bootstrap shared by `tierline serve` and the integration tests: bind first (so
//! `/health` answers at once), load the model on a blocking thread, then serve `/ready`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, AppState};
use tierline_infer::classify;
use tierline_infer::head_versions::HeadVersions;
use tierline_infer::EngineMetrics;
use tierline_support::conversation::{Events, Support};
use tierline_support::insights::alerts::Alerting;
use tierline_support::kb::EditsStorage;
use tierline_support::kb::KnowledgeBase;
use tierline_support::settings::AuthMode;
use tierline_support::store::{Store, KB_CHANNEL};

/// Runs the HTTP server on `listener` until `shutdown` resolves. Fails (after the server stops)
/// when the models cannot be loaded (including a head trained on another encoder).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    // Storage and policy first: a bad policy or an unreadable database stops the start at once.
    let store = open_store(&config).await?;
    closed_by_default(&config, &listener, store.as_ref()).await?;
    let events = Events::default();
    let relay = events.relay_through(store.clone());
    let alerting = Alerting::new(
        store.clone(),
        config.anomaly.clone(),
        &config.support.alert_webhook_url,
        config.support.alert_webhook_attempts,
        events.clone(),
    );
    let support = Arc::new(
        Support::new(store.clone(), config.support.policy.clone(), alerting, events)?.with_privacy(&config.privacy),
    );
    let sweeper = support.spawn_sweeper();
    let spikes = support.spawn_spike_watch();
    #[cfg(unix)]
    let reloader = reload_policy_on_sighup(support.clone());
    let state = AppState::new(
        config.server.clone(),
        support,
        config.support.auth,
        config.support.public_chat,
        registry.clone(),
    )?;
    let engine_metrics = EngineMetrics::register(&registry)?;
    let head_watch = watch_head_versions(state.clone(), config.clone());
    let gauges = http::routes::health::spawn_support_gauges(state.clone());
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();

    let load_state = state.clone();
    let load_config = config.clone();
    // With a shared store every node reads the knowledge base's edits from it.
    let shared_edits = store
        .shared()
        .then(|| EditsStorage::Shared { store: store.clone(), runtime: tokio::runtime::Handle::current() });
    let follow_edits = shared_edits.is_some().then(|| follow_shared_edits(state.clone(), store.clone()));
    tokio::spawn(async move {
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let classifier = classify::start(&load_config.infer(), engine_metrics, true)?;
            let engine = classifier.engine().clone();
            let kb = KnowledgeBase::from_config(engine, &load_config.data_dir, &load_config.kb, shared_edits)?;
            Ok((classifier, kb))
        })
        .await;
        match loaded {
            Ok(Ok((classifier, kb))) => {
                let info = classifier.engine().info();
                tracing::info!(model = %info.id, backend = %info.backend, heads = classifier.cards().len(), kb = kb.is_some(), "ready");
                if let Some(kb) = kb {
                    load_state.set_kb(kb);
                }
                load_state.set_classifier(classifier);
            }
            Ok(Err(err)) => {
                tracing::error!("cannot load the encoder: {err:#}");
                load_state.set_load_error(format!("{err:#}"));
                let _ = failed_tx.send(());
            }
            Err(err) => {
                load_state.set_load_error(format!("model loading task failed: {err}"));
                let _ = failed_tx.send(());
            }
        }
    });

    let load_failed = async move {
        // The sender is dropped without a message when loading succeeds: that is no reason to stop.
        if failed_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = load_failed => {}
        }
    };
    tracing::info!(address = %listener.local_addr()?, "listening");
    http::serve(listener, state.clone(), stop, grace).await?;
    sweeper.abort();
    spikes.abort();
    for task in relay.into_iter().chain(follow_edits) {
        task.abort();
    }
    head_watch.abort();
    gauges.abort();
    #[cfg(unix)]
    reloader.abort();
    if let Some(engine) = state.engine() {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown()).await?;
    }
    if let Some(error) = state.load_error() {
        anyhow::bail!("{error}");
    }
    Ok(())
}

/// Without API keys every route is open, so the server only serves this machine (loopback);
/// any other address needs a key first, or `support.auth = "off"` said out loud.
async fn closed_by_default(config: &Config, listener: &TcpListener, store: &dyn Store) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let mode = config.support.auth;
    if mode == AuthMode::Off {
        tracing::warn!(%address, "support.auth = \"off\": every route, admin ones included, is open to anyone who can reach this address");
        return Ok(());
    }
    if store.key_count().await? > 0 || mode == AuthMode::Required {
        return Ok(());
    }
    if !address.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve on {address} without API keys: every route would be open to the network. \
             Create an admin key first (`tierline keys create --name ops --scope admin`), bind a loopback \
             address, or set support.auth = \"off\" to run open on purpose"
        );
    }
    tracing::warn!(%address, "no API keys yet: open to this machine only (loopback); create an admin key with `tierline keys create --name ops --scope admin`");
    Ok(())
}

/// The configured store; a PostgreSQL server that is not up yet is retried for a minute (nodes
/// and the database often start together).
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let database = config.database_path();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tierline_support::store::open(&database, config.support.pool_size).await {
            Ok(store) => {
                tracing::info!(store = store.kind(), "database open");
                return Ok(store);
            }
            Err(err) if config.support.is_shared() && std::time::Instant::now() < deadline => {
                tracing::warn!(error = format!("{err:#}"), "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Rebuilds this node's index when another node edits the knowledge base: at once on its
/// notification, and at the latest every `EDITS_POLL` (a notification lost during an outage).
fn follow_shared_edits(state: AppState, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
    const EDITS_POLL: Duration = Duration::from_secs(10);
    tokio::spawn(async move {
        let mut notifications = store.listen(&[KB_CHANNEL]);
        loop {
            match notifications.as_mut() {
                Some(listener) => {
                    let _ = tokio::time::timeout(EDITS_POLL, listener.recv()).await;
                }
                None => tokio::time::sleep(EDITS_POLL).await,
            }
            let Some(kb) = state.kb().cloned() else { continue };
            match tokio::task::spawn_blocking(move || kb.follow_shared_edits()).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = format!("{err:#}"), "knowledge-base edits not followed; retrying")
                }
                Err(err) => tracing::error!(%err, "knowledge-base follow task failed"),
            }
        }
    })
}

/// Serves a newly promoted (or rolled-back) head version without a restart: the version files
/// are checked every `models.head_poll_secs`.
fn watch_head_versions(state: AppState, config: Config) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let settings = config.infer();
        let versions = HeadVersions::new(settings.head_versions_dir());
        let interval = Duration::from_secs(settings.models.head_poll_secs);
        let mut served: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            let Some(classifier) = state.classifier().cloned() else { continue };
            let reader = versions.clone();
            let Ok(fingerprint) = tokio::task::spawn_blocking(move || reader.fingerprint()).await else { continue };
            if served.as_ref() == Some(&fingerprint) {
                continue;
            }
            let reload_settings = settings.clone();
            // The first look reloads too: a promotion may have landed while the models loaded.
            let reloaded = tokio::task::spawn_blocking(move || classifier.reload_heads(&reload_settings)).await;
            match reloaded {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = format!("{err:#}"), "promoted head not served, keeping the current heads")
                }
                Err(err) => tracing::error!(%err, "head reload task failed"),
            }
            // A broken version is reported once, not every poll; the next promotion is tried anew.
            served = Some(fingerprint);
        }
    })
}

/// SIGHUP re-reads the policy file (a bad file is logged and the old policy stays).
#[cfg(unix)]
fn reload_policy_on_sighup(support: Arc<Support>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload the policy over HTTP");
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(err) = support.reload_policy() {
                tracing::error!("policy not reloaded: {err:#}");
            }
        }
    })
}
