//! Cron schedules: `schedules = ["*/5 * * * *"]` under `[workflows.NAME]`
//! creates one instance per tick.
//!
//! A tick's instance id is made of the workflow, the schedule and the tick
//! time (`report-cron-1a2b3c4d-20261204T090000Z`), and creating an instance
//! whose id exists does nothing: so a tick fires once, however many hosts
//! share the store and however often weft restarts. Ticks missed while no
//! weft ran are skipped, or (`missed = "latest"`) the latest of them runs
//! once; which ticks were missed is read from the instances themselves.

use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;

use super::Scheduler;

/// A schedule as written in weft.toml: a cron expression (UTC, missed ticks
/// skipped), or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ScheduleSpec {
    Cron(String),
    Full(FullSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullSpec {
    /// Five fields (minute hour day month weekday) or six (seconds first).
    pub cron: String,
    /// An IANA time zone such as `Europe/Paris` (default UTC).
    pub timezone: Option<String>,
    /// Ticks missed while weft was down: `skip` (default) or `latest`.
    pub missed: Option<Missed>,
    /// The instance's input; weft adds `cron` and `scheduledTime`.
    pub params: Option<Map<String, Value>>,
}

/// What to do with ticks missed while no weft ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Run none of them.
    #[default]
    Skip,
    /// Run the latest of them, once.
    Latest,
}

/// A parsed schedule of one workflow.
#[derive(Debug)]
pub struct Schedule {
    pub workflow: String,
    pub cron: String,
    pub timezone: chrono_tz::Tz,
    pub missed: Missed,
    params: Map<String, Value>,
    parsed: croner::Cron,
    /// Names the schedule in instance ids: a hash of its expression and
    /// time zone.
    key: String,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleInfo {
    pub workflow: String,
    pub cron: String,
    pub timezone: String,
    pub missed: Missed,
    /// The next tick, in ms since the Unix epoch, and as RFC 3339.
    pub next_ms: Option<i64>,
    pub next: Option<String>,
    /// The prefix of its instances' ids.
    pub id_prefix: String,
}

impl Schedule {
    /// Checks and parses `spec`, a schedule of `workflow`.
    pub fn parse(workflow: &str, spec: &ScheduleSpec) -> Result<Schedule> {
        let full = match spec {
            ScheduleSpec::Cron(c) => FullSpec {
                cron: c.clone(),
                timezone: None,
                missed: None,
                params: None,
            },
            ScheduleSpec::Full(f) => f.clone(),
        };
        let what = || format!("schedule \"{}\" of workflow `{workflow}`", full.cron);
        let fields = full.cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            bail!(
                "{}: a cron expression has 5 fields (minute hour day month weekday) or 6 (seconds first), not {fields}",
                what()
            );
        }
        let parsed: croner::Cron = full
            .cron
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
        let tz_name = full.timezone.as_deref().unwrap_or("UTC");
        let timezone: chrono_tz::Tz = tz_name.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: `{tz_name}` is not an IANA time zone (such as Europe/Paris)",
                what()
            )
        })?;
        let hash = sha2::Sha256::digest(format!("{}\n{tz_name}", full.cron).as_bytes());
        let key = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
        let s = Schedule {
            workflow: workflow.to_owned(),
            cron: full.cron.clone(),
            timezone,
            missed: full.missed.unwrap_or_default(),
            params: full.params.unwrap_or_default(),
            parsed,
            key,
        };
        if !crate::runner::valid_id(&s.id(Utc::now())) {
            bail!(
                "{}: the workflow's name makes instance ids that are not valid (letters, digits, `-`, `_`)",
                what()
            );
        }
        s.next_after(Utc::now())
            .with_context(|| format!("{}: it never fires", what()))?;
        Ok(s)
    }

    /// The prefix of the ids of this schedule's instances.
    pub fn id_prefix(&self) -> String {
        format!("{}-cron-{}-", self.workflow, self.key)
    }

    /// The id of the instance of the tick at `tick`.
    pub fn id(&self, tick: DateTime<Utc>) -> String {
        format!("{}{}", self.id_prefix(), tick.format("%Y%m%dT%H%M%SZ"))
    }

    /// The tick an id of this schedule names.
    fn tick_of(&self, id: &str) -> Option<DateTime<Utc>> {
        let t = id.strip_prefix(&self.id_prefix())?;
        let naive = chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").ok()?;
        Some(Utc.from_utc_datetime(&naive))
    }

    /// The first tick after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.timezone);
        let next = self.parsed.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    fn latest_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.timezone);
        let prev = self.parsed.find_previous_occurrence(&local, true).ok()?;
        Some(prev.with_timezone(&Utc))
    }

    /// The input of the tick's instance: the schedule's `params` with the
    /// expression and the tick time (ms) added.
    fn input(&self, tick: DateTime<Utc>) -> String {
        let mut v = self.params.clone();
        v.entry("cron")
            .or_insert_with(|| Value::from(self.cron.clone()));
        v.entry("scheduledTime")
            .or_insert_with(|| Value::from(tick.timestamp_millis()));
        Value::Object(v).to_string()
    }

    pub fn info(&self) -> ScheduleInfo {
        let next = self.next_after(Utc::now());
        ScheduleInfo {
            workflow: self.workflow.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.name().to_owned(),
            missed: self.missed,
            next_ms: next.map(|t| t.timestamp_millis()),
            next: next.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            id_prefix: self.id_prefix(),
        }
    }
}

impl Scheduler {
    /// Starts firing `schedules`; they are listed by [`Scheduler::schedules`].
    pub fn start_schedules(self: &Arc<Self>, schedules: Vec<Schedule>) {
        let schedules = Arc::new(schedules);
        let _ = self.schedules.set(schedules.clone());
        if schedules.is_empty() {
            return;
        }
        let me = Arc::downgrade(self);
        *self.cron.lock().unwrap() = Some(tokio::spawn(fire_schedules(me, schedules)));
    }

    /// The schedules this server fires, with their next ticks.
    pub fn schedules(&self) -> Vec<ScheduleInfo> {
        self.schedules
            .get()
            .map(|s| s.iter().map(Schedule::info).collect())
            .unwrap_or_default()
    }
}

/// Longest sleep between two looks at the clock (it may be changed).
const LOOK_AGAIN: Duration = Duration::from_secs(30);

async fn fire_schedules(me: Weak<Scheduler>, schedules: Arc<Vec<Schedule>>) {
    let now = Utc::now();
    if let Some(s) = me.upgrade() {
        catch_up(&s, &schedules, now).await;
    }
    let mut next: Vec<Option<DateTime<Utc>>> =
        schedules.iter().map(|s| s.next_after(now)).collect();
    loop {
        let Some((i, at)) = next
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, (*t)?)))
            .min_by_key(|(_, t)| *t)
        else {
            return;
        };
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait.min(LOOK_AGAIN)).await;
        let now = Utc::now();
        if now < at {
            continue;
        }
        let Some(s) = me.upgrade() else { return };
        let sch = &schedules[i];
        fire(&s, sch, at).await;
        // Fallen behind by more than a tick (the host was suspended, or
        // busy): the ticks in between were missed.
        let mut following = sch.next_after(at);
        if following.is_some_and(|f| f <= now) {
            if sch.missed == Missed::Latest
                && let Some(latest) = sch.latest_until(now)
            {
                fire(&s, sch, latest).await;
            }
            following = sch.next_after(now);
        }
        next[i] = following;
    }
}

/// At start: counts the ticks each schedule missed since its last
/// instance (none for a schedule that never fired), says so, and for a
/// `latest` schedule runs the latest of them.
async fn catch_up(s: &Scheduler, schedules: &[Schedule], now: DateTime<Utc>) {
    let ids: Vec<String> = match s.rt.journal.list(None).await {
        Ok(recs) => recs.into_iter().map(|r| r.id).collect(),
        Err(e) => {
            tracing::warn!("reading instances to catch up on missed schedule ticks: {e}");
            return;
        }
    };
    for sch in schedules {
        let Some(last) = ids.iter().filter_map(|id| sch.tick_of(id)).max() else {
            continue;
        };
        let (mut missed, mut t) = (0u64, last);
        while let Some(n) = sch.next_after(t).filter(|n| *n <= now) {
            missed += 1;
            t = n;
            if missed == 100_000 {
                break;
            }
        }
        if missed == 0 {
            continue;
        }
        let what = format!(
            "{missed} ticks of schedule \"{}\" of `{}` while no weft ran",
            sch.cron, sch.workflow
        );
        match sch.missed {
            Missed::Skip => {
                crate::cli::term::status("Missed", &format!("{what}; skipped (missed = \"skip\")"))
            }
            Missed::Latest => {
                crate::cli::term::status(
                    "Missed",
                    &format!("{what}; running the latest, {}", sch.id(t)),
                );
                fire(s, sch, t).await;
            }
        }
    }
}

/// Creates the instance of the tick at `tick`, unless it exists; tries
/// again for a while if the store fails.
async fn fire(s: &Scheduler, sch: &Schedule, tick: DateTime<Utc>) {
    let id = sch.id(tick);
    let input = sch.input(tick);
    let mut delay = Duration::from_millis(200);
    for _ in 0..8 {
        let Some(me) = s.me.get().and_then(|w| w.upgrade()) else {
            return;
        };
        match me
            .create(&sch.workflow, Some(id.clone()), &input, None)
            .await
        {
            Ok((true, _)) => {
                tracing::info!(
                    target: "weft::instance",
                    workflow = %sch.workflow,
                    instance = %id,
                    cron = %sch.cron,
                    "scheduled instance created"
                );
                return;
            }
            // Another host, or an earlier run of this one, fired it.
            Ok((false, _)) => return,
            Err(e) => {
                tracing::warn!(
                    "schedule \"{}\" of `{}`: creating {id}: {e}",
                    sch.cron,
                    sch.workflow
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ticks_ids_and_time_zones() {
        let s = Schedule::parse("report", &ScheduleSpec::Cron("*/5 * * * *".into())).unwrap();
        let t = at("2026-12-04T09:02:30Z");
        assert_eq!(s.next_after(t), Some(at("2026-12-04T09:05:00Z")));
        assert_eq!(s.latest_until(t), Some(at("2026-12-04T09:00:00Z")));
        let id = s.id(at("2026-12-04T09:05:00Z"));
        assert!(
            id.starts_with("report-cron-") && id.ends_with("-20261204T090500Z"),
            "{id}"
        );
        assert_eq!(s.tick_of(&id), Some(at("2026-12-04T09:05:00Z")));
        assert_eq!(s.tick_of("report-cron-00000000-20261204T090500Z"), None);

        let paris = Schedule::parse(
            "report",
            &ScheduleSpec::Full(FullSpec {
                cron: "0 9 * * *".into(),
                timezone: Some("Europe/Paris".into()),
                missed: Some(Missed::Latest),
                params: None,
            }),
        )
        .unwrap();
        // 09:00 in Paris is 08:00 UTC in winter.
        assert_eq!(paris.next_after(t), Some(at("2026-12-05T08:00:00Z")));
        assert_ne!(paris.id_prefix(), s.id_prefix());
        let input: Value = serde_json::from_str(&paris.input(at("2026-12-05T08:00:00Z"))).unwrap();
        assert_eq!(input["scheduledTime"], 1_796_457_600_000_i64);
        assert_eq!(input["cron"], "0 9 * * *");

        let six = Schedule::parse("r", &ScheduleSpec::Cron("*/10 * * * * *".into())).unwrap();
        assert_eq!(six.next_after(t), Some(at("2026-12-04T09:02:40Z")));
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        let err = |c: &str, tz: Option<&str>| {
            Schedule::parse(
                "report",
                &ScheduleSpec::Full(FullSpec {
                    cron: c.into(),
                    timezone: tz.map(Into::into),
                    missed: None,
                    params: None,
                }),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(err("* * * *", None).contains("5 fields"));
        assert!(err("61 * * * *", None).contains("schedule \"61 * * * *\""));
        assert!(err("0 9 * * *", Some("Mars/Olympus")).contains("IANA"));
    }
}
