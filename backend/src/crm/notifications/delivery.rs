//! Delivery beyond the inbox: each user's channel choices per kind and quiet hours, the delivery
//! jobs, and the email channel (SMTP through lettre).
//!
//! A new notification plans one delivery job per external channel the user chose for its kind,
//! due at once, or, for a non-urgent message during the user's quiet hours, when they end. The
//! job is unique per notification and channel. Delivery is at least once: a process that dies
//! after the server accepted the mail and before the job's outcome is stored sends it again.

use std::collections::BTreeMap;
use std::sync::Arc;

use apalis::prelude::BoxDynError;
use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;

use super::Notification;
use crate::config::EmailConfig;
use crate::jobs::{Job, JobOptions, enqueue_in};
use crate::platform::db::{Db, DbError, Tx};

/// The channels a user can choose, besides the inbox (which always gets a copy).
pub const CHANNELS: [&str; 2] = ["inbox", "email"];

/// Where each kind goes when the user has not chosen.
fn default_channels() -> Vec<String> {
    vec!["inbox".into(), "email".into()]
}

/// A user's delivery settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, SurrealValue)]
pub struct Settings {
    /// Channels per notification kind (`task.reminder`, `digest`, ...).
    pub channels: BTreeMap<String, Vec<String>>,
    /// Quiet hours start, local `HH:MM`.
    pub quiet_start: Option<String>,
    /// Quiet hours end, local `HH:MM`.
    pub quiet_end: Option<String>,
}

impl Settings {
    /// The channels of `kind`.
    pub fn channels_for(&self, kind: &str) -> Vec<String> {
        self.channels
            .get(kind)
            .cloned()
            .unwrap_or_else(default_channels)
    }

    /// When a non-urgent message created at `now` may go out: `now`, or the end of the quiet
    /// hours it falls in (in `tz`).
    pub fn release_time(&self, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let parse = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M").ok())
        };
        let (Some(start), Some(end)) = (parse(&self.quiet_start), parse(&self.quiet_end)) else {
            return now;
        };
        let local = now.with_timezone(&tz);
        let time = local.time();
        let quiet = if start <= end {
            start <= time && time < end
        } else {
            time >= start || time < end
        };
        if !quiet {
            return now;
        }
        let mut day = local.date_naive();
        if time >= end {
            day = day.succ_opt().unwrap_or(day);
        }
        tz.from_local_datetime(&day.and_time(end))
            .earliest()
            .map_or(now, |t| t.with_timezone(&Utc))
    }
}

/// A user's settings (the defaults when never set).
pub async fn settings_of(db: &Db, user: &str) -> Result<Settings, DbError> {
    let row: Option<Settings> = db.get("notification_setting", user).await?;
    Ok(row.unwrap_or_default())
}

/// "Deliver notification `notification` through `channel`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// The notification's key.
    pub notification: String,
    /// `email`, ...
    pub channel: String,
}

impl Job for Deliver {
    const QUEUE: &'static str = "notification.deliver";
}

#[derive(Debug, SurrealValue)]
struct UserContact {
    email: Option<String>,
    time_zone: String,
}

/// Adds to `tx` the delivery of `notification` (stored as `key`) through each channel the
/// user chose beyond the inbox, due now or, when not urgent, at the end of the user's quiet
/// hours. Planned in the transaction that stores the notification, so a notification is never
/// stored without its deliveries (a crash between the two lost the email before).
pub async fn plan_in(
    db: &Db,
    tx: &mut Tx,
    notification: &Notification,
    key: &str,
) -> Result<(), DbError> {
    let settings = settings_of(db, &notification.user).await?;
    let contact: Option<UserContact> = db.get("user", &notification.user).await?;
    let tz: Tz = contact
        .as_ref()
        .and_then(|c| c.time_zone.parse().ok())
        .unwrap_or(chrono_tz::Asia::Shanghai);
    let now = Utc::now();
    let at = if notification.urgent {
        now
    } else {
        settings.release_time(now, tz)
    };
    for channel in settings.channels_for(&notification.kind) {
        if channel == "inbox" {
            continue;
        }
        let job = Deliver {
            notification: key.to_string(),
            channel,
        };
        let options = JobOptions {
            run_at: Some(at),
            unique: true,
            ..JobOptions::default()
        };
        if let Err(e) = enqueue_in(tx, &job, &options) {
            tracing::error!(error = %e, "cannot plan a notification delivery");
        }
    }
    Ok(())
}

/// Who a delivery is for.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The user's id.
    pub user: String,
    /// Their email address.
    pub email: Option<String>,
    /// Their phone number (E.164).
    pub phone: Option<String>,
}

/// A way to reach a user besides the inbox. Email is here; the SMS and DingTalk/WeCom adapters
/// implement it too. A channel that cannot reach this recipient (no address) succeeds without
/// sending; an error makes the delivery job retry with backoff.
pub trait Channel: Send + Sync {
    /// The name users choose it by, e.g. `email`.
    fn name(&self) -> &'static str;

    /// Sends one message.
    fn deliver<'a>(
        &'a self,
        to: &'a Recipient,
        title: &'a str,
        body: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), BoxDynError>>;
}

/// The channels this process can deliver through.
#[derive(Clone, Default)]
pub struct Channels(Vec<Arc<dyn Channel>>);

impl Channels {
    /// The channels the configuration turns on.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let mut channels = Self::default();
        if let Some(email) = Email::from_config(&config.email) {
            channels.0.push(Arc::new(email));
        }
        channels
    }

    fn get(&self, name: &str) -> Option<&Arc<dyn Channel>> {
        self.0.iter().find(|c| c.name() == name)
    }
}

/// The email channel.
#[derive(Clone)]
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Email {
    /// The channel configured by `config`, or `None` when email is off or misconfigured.
    pub fn from_config(config: &EmailConfig) -> Option<Self> {
        if config.smtp_host.is_empty() {
            return None;
        }
        let from: Mailbox = match config.from.parse() {
            Ok(from) => from,
            Err(e) => {
                tracing::error!(error = %e, "email.from is not a mailbox; email is off");
                return None;
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.smtp_host.as_str())
                .port(config.smtp_port);
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().into()));
        }
        Some(Self {
            transport: builder.build(),
            from,
        })
    }
}

impl Channel for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Recipient,
        title: &'a str,
        body: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), BoxDynError>> {
        Box::pin(async move {
            let Some(address) = &to.email else {
                return Ok(());
            };
            let message = Message::builder()
                .from(self.from.clone())
                .to(address.parse()?)
                .subject(title)
                .body(body.to_string())?;
            self.transport.send(message).await?;
            Ok(())
        })
    }
}

#[derive(Debug, SurrealValue)]
struct Stored {
    user: String,
    title: String,
    body: String,
}

#[derive(Debug, SurrealValue)]
struct Address {
    email: Option<String>,
    phone: Option<String>,
}

/// Runs a delivery job.
pub async fn deliver(db: &Db, channels: &Channels, job: &Deliver) -> Result<(), BoxDynError> {
    let stored: Option<Stored> = db.get("notification", &job.notification).await?;
    let Some(stored) = stored else {
        return Ok(());
    };
    let Some(channel) = channels.get(&job.channel) else {
        return Ok(()); // not configured on this deployment
    };
    let address: Option<Address> = db.get("user", &stored.user).await?;
    let address = address.unwrap_or(Address {
        email: None,
        phone: None,
    });
    let recipient = Recipient {
        user: stored.user,
        email: address.email,
        phone: address.phone,
    };
    channel
        .deliver(&recipient, &stored.title, &stored.body)
        .await
}
