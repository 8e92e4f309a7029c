//! The life of one device: experiments on schedule, result writers fed at the configured rate,
//! video chunks while recording.
//!
//! The loop wakes every [`Rates::flush_every`], asks [`next_action`] what to do, and writes the
//! tracking frames that became due since the last flush (frames follow wall time, so a device
//! running for a minute at 2 fps has written 120 frames per ROI). Writers come from
//! `etho-devicekit`: the MariaDB writer drops and recreates `<NAME>_db` for every experiment, as
//! the firmware does; the SQLite writer creates `results/<id>/<NAME>/<stamp>/<stamp>_<id>.db`
//! in the configured journal mode (WAL by default, like current firmware) and keeps one
//! connection for the whole experiment, closed when it stops. A `kill-writer` fault device's
//! writer dies without closing, leaving the file as a power cut would.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etho_devicekit::schema::{ExperimentSpec, ResultWriter};
use etho_devicekit::writer_mariadb::MariaDbExperiment;
use etho_devicekit::writer_sqlite::SqliteExperiment;
use mysql_async::Opts;
use rand::{Rng, SeedableRng};

use crate::config::{DbKind, Rates, Role};
use crate::device::{now_f64, SimDevice};
use crate::experiment::{next_action, next_start_second, Action, Experiment};
use crate::state::{self, RunStatus, SqliteFile};

/// How often table counts are refreshed while writing (a `COUNT(*)` per table).
const COUNTS_EVERY: Duration = Duration::from_secs(2);

enum Writer {
    None,
    MariaDb(Box<MariaDbExperiment>),
    /// Blocking (rusqlite): used from the blocking pool only.
    Sqlite(Arc<Mutex<SqliteExperiment>>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Running {
    index: u64,
    experiment: Experiment,
    started: Instant,
    writer: Writer,
    frames: u64,
    next_chunk: Instant,
    chunks: u64,
    counts_at: Instant,
}

/// Drives one device until the fleet stops.
pub(crate) struct Driver {
    dev: Arc<SimDevice>,
    rates: Rates,
    mariadb: Option<Opts>,
    epoch: Instant,
    running: Option<Running>,
    /// A schedule slot whose start failed: not retried until the schedule moves on.
    failed_index: Option<u64>,
    offline_applied: bool,
}

impl Driver {
    pub(crate) fn new(dev: Arc<SimDevice>, rates: Rates, mariadb: Option<Opts>) -> Driver {
        Driver {
            dev,
            rates,
            mariadb,
            epoch: Instant::now(),
            running: None,
            failed_index: None,
            offline_applied: false,
        }
    }

    pub(crate) async fn run(mut self) {
        let shutdown = self.dev.shutdown_token().clone();
        let mut control = self.dev.subscribe();
        loop {
            self.tick().await;
            tokio::select! {
                _ = tokio::time::sleep(self.rates.flush_every) => {}
                r = control.changed() => if r.is_err() { break },
                _ = shutdown.cancelled() => break,
            }
        }
        // Leave the data consistent: a stopped experiment, a closed file.
        if self.running.is_some() {
            self.stop().await;
        }
    }

    async fn tick(&mut self) {
        let elapsed = self.epoch.elapsed();
        if let Some(after) = self.dev.spec().offline_after() {
            if !self.offline_applied && elapsed >= after {
                self.offline_applied = true;
                tracing::info!(device = %self.dev.name(), "going offline (scheduled fault)");
                self.dev.set_offline(true);
            }
        }
        let planned = self.dev.spec().schedule.at(elapsed);
        let held = self.dev.control().held;
        match next_action(self.running.as_ref().map(|r| r.index), planned, held) {
            Some(Action::Start { index }) if self.failed_index != Some(index) => {
                if self.running.is_some() {
                    self.stop().await;
                }
                self.start(index).await;
            }
            // A slot whose start failed: stop whatever runs, start nothing until the next slot.
            Some(Action::Start { .. }) | Some(Action::Stop) => self.stop().await,
            None => {}
        }
        if self.running.is_some() {
            self.produce().await;
        }
    }

    fn spec_for(&self, e: &Experiment) -> ExperimentSpec {
        let mut spec = ExperimentSpec::new(self.dev.id(), self.dev.name(), e.started);
        spec.n_rois = self.rates.rois.max(1);
        spec.seed = seed_of(self.dev.id(), e.started);
        spec.frame_ms = (1000.0 / self.rates.fps.max(0.01)).round().max(1.0) as i64;
        spec.snapshots = true;
        spec.snapshot_every_ms = self.rates.snapshot_every.as_millis().max(1) as i64;
        spec.snapshot_bytes = self.rates.snapshot_bytes.max(64);
        spec.sensors = true;
        spec.dam = true;
        if self.dev.spec().role == Role::Tracker(DbKind::Sqlite) {
            spec.writer = ResultWriter::Sqlite;
        }
        spec
    }

    fn sqlite_rel_path(&self, e: &Experiment) -> String {
        format!(
            "{}/{}",
            state::results_dir(self.dev.id(), self.dev.name(), e),
            e.backup_filename
        )
    }

    async fn start(&mut self, index: u64) {
        let now = now_f64();
        let previous_start = self.dev.snapshot().current.map(|e| e.started);
        let started = next_start_second(now.floor() as i64, previous_start);
        let spec = self.dev.spec();
        let experiment = Experiment::new(started, self.dev.id(), &spec.user, &spec.location);
        let role = spec.role;
        self.dev.with_state(|st| {
            st.status = RunStatus::Initialising;
            st.error = None;
        });
        let writer = self.create_writer(role, &experiment).await;
        let writer = match writer {
            Ok(w) => w,
            Err(err) => {
                let msg = format!("cannot start experiment: {err:#}");
                tracing::warn!(device = %self.dev.name(), "{msg}");
                self.failed_index = Some(index);
                self.dev.with_state(|st| {
                    st.status = RunStatus::Stopped;
                    st.error = Some(msg);
                    st.time = now;
                });
                return;
            }
        };
        self.failed_index = None;
        let rel = self.sqlite_rel_path(&experiment);
        self.dev.with_state(|st| {
            st.status = match role {
                Role::Recorder => RunStatus::Recording,
                Role::Tracker(_) => RunStatus::Running,
            };
            st.time = started as f64;
            st.previous = st.current.take();
            st.current = Some(experiment.clone());
            st.table_counts.clear();
            st.db_size_bytes = 0;
            st.last_db_update = now;
            st.last_time_stamp = 0;
            st.db_status = match role {
                Role::Recorder => "no_cache",
                Role::Tracker(_) => "tracking",
            };
            if role == Role::Tracker(DbKind::Sqlite) {
                st.sqlite_files.push(SqliteFile {
                    backup_filename: experiment.backup_filename.clone(),
                    rel_path: rel,
                    date: started as f64,
                    db_status: "tracking",
                    table_counts: Default::default(),
                    filesize: 0,
                });
            }
        });
        tracing::info!(device = %self.dev.name(), file = %experiment.backup_filename,
            "experiment started ({})", role.label());
        let now_i = Instant::now();
        self.running = Some(Running {
            index,
            experiment,
            started: now_i,
            writer,
            frames: 0,
            next_chunk: now_i,
            chunks: 0,
            counts_at: now_i,
        });
        self.refresh_counts(true).await;
    }

    async fn create_writer(&self, role: Role, experiment: &Experiment) -> anyhow::Result<Writer> {
        match role {
            Role::Recorder => Ok(Writer::None),
            Role::Tracker(DbKind::MariaDb) => match &self.mariadb {
                Some(opts) => MariaDbExperiment::create(opts.clone(), self.spec_for(experiment))
                    .await
                    .map(|w| Writer::MariaDb(Box::new(w))),
                None => Err(anyhow::anyhow!("no MariaDB server configured")),
            },
            Role::Tracker(DbKind::Sqlite) => {
                let path = self.dev.root().join(self.sqlite_rel_path(experiment));
                let spec = self.spec_for(experiment);
                let journal = self.rates.sqlite_journal;
                blocking(move || SqliteExperiment::create_with(path, spec, journal))
                    .await
                    .map(|w| Writer::Sqlite(Arc::new(Mutex::new(w))))
            }
        }
    }

    async fn produce(&mut self) {
        if self.kill_writer_due() {
            self.kill_writer().await;
            return;
        }
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let due = (run.started.elapsed().as_secs_f64() * self.rates.fps).floor() as u64;
        let frames = due.saturating_sub(run.frames);
        let result = if frames == 0 {
            Ok(())
        } else {
            match &mut run.writer {
                Writer::None => Ok(()),
                Writer::MariaDb(w) => w.append_frames(frames).await.map(drop),
                Writer::Sqlite(w) => {
                    let w = w.clone();
                    blocking(move || lock(&w).append_frames(frames).map(drop)).await
                }
            }
        };
        if let Err(err) = result {
            self.fail(format!("writing results failed: {err:#}")).await;
            return;
        }
        let Some(run) = self.running.as_mut() else {
            return;
        };
        run.frames += frames;
        let t_ms = run.frames * (1000.0 / self.rates.fps.max(0.01)) as u64;
        let chunk = (self.dev.spec().role == Role::Recorder && Instant::now() >= run.next_chunk)
            .then(|| {
                run.next_chunk += self.rates.video_chunk_every.max(Duration::from_millis(100));
                run.chunks += 1;
                run.chunks - 1
            });
        if let Some(chunk) = chunk {
            if let Err(err) = self.write_chunk(chunk).await {
                tracing::warn!(device = %self.dev.name(), "cannot write video chunk: {err:#}");
            }
        }
        self.dev.with_state(|st| {
            st.last_time_stamp = t_ms;
            if frames > 0 {
                st.last_db_update = now_f64();
            }
        });
        self.refresh_counts(false).await;
    }

    async fn write_chunk(&mut self, chunk: u64) -> anyhow::Result<()> {
        let Some(run) = self.running.as_ref() else {
            return Ok(());
        };
        let e = &run.experiment;
        let dir = self
            .dev
            .root()
            .join(state::videos_dir(self.dev.id(), self.dev.name(), e));
        let path: PathBuf = dir.join(format!("{}_{}_{chunk:05}.h264", e.stamp, self.dev.id()));
        let bytes = self.rates.video_chunk_bytes;
        let seed = seed_of(self.dev.id(), e.started) ^ chunk;
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let mut data = vec![0u8; bytes.max(8)];
            rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
            // An H.264 Annex B start code and SPS NAL header, so tools recognise the format.
            data[..5].copy_from_slice(&[0, 0, 0, 1, 0x67]);
            // Written under a temporary name and renamed, as a recorder closes a chunk.
            let tmp = path.with_extension("h264.part");
            std::fs::write(&tmp, &data)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })
        .await?;
        self.dev.with_state(|st| {
            st.video_chunks += 1;
            st.last_db_update = now_f64();
        });
        Ok(())
    }

    async fn refresh_counts(&mut self, force: bool) {
        let Some(run) = self.running.as_mut() else {
            return;
        };
        if !force && run.counts_at.elapsed() < COUNTS_EVERY {
            return;
        }
        run.counts_at = Instant::now();
        let measured = match &mut run.writer {
            Writer::None => return,
            // Rows times a typical row size: the device reports an estimate too.
            Writer::MariaDb(w) => w
                .table_counts()
                .await
                .map(|c| (c.values().sum::<u64>() * 24, c)),
            Writer::Sqlite(w) => {
                let w = w.clone();
                blocking(move || {
                    let w = lock(&w);
                    let counts = w.table_counts()?;
                    let size = std::fs::metadata(w.path()).map(|m| m.len()).unwrap_or(0);
                    Ok((size, counts))
                })
                .await
            }
        };
        let Ok((size, counts)) = measured else {
            return;
        };
        let file = run.experiment.backup_filename.clone();
        self.dev.with_state(|st| {
            st.db_size_bytes = size;
            if let Some(f) = st
                .sqlite_files
                .iter_mut()
                .find(|f| f.backup_filename == file)
            {
                f.table_counts = counts.clone();
                f.filesize = size;
            }
            st.table_counts = counts;
        });
    }

    fn kill_writer_due(&self) -> bool {
        match (self.dev.spec().kill_writer_after(), self.running.as_ref()) {
            (Some(after), Some(run)) => {
                matches!(run.writer, Writer::Sqlite(_)) && run.started.elapsed() >= after
            }
            _ => false,
        }
    }

    /// The `kill-writer` fault: the connection is abandoned, never closed.
    async fn kill_writer(&mut self) {
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let writer = std::mem::replace(&mut run.writer, Writer::None);
        if let Writer::Sqlite(w) = writer {
            let _ = tokio::task::spawn_blocking(move || match Arc::try_unwrap(w) {
                Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()).abandon(),
                // Someone still holds it (cannot happen between ticks): leak it all the same.
                Err(shared) => std::mem::forget(shared),
            })
            .await;
        }
        tracing::warn!(device = %self.dev.name(), "result writer killed (fault): its -wal stays");
        self.fail(
            "the result writer was killed without closing its database (kill-writer fault)".into(),
        )
        .await;
    }

    async fn fail(&mut self, msg: String) {
        tracing::warn!(device = %self.dev.name(), "{msg}");
        if let Some(run) = self.running.take() {
            self.failed_index = Some(run.index);
        }
        self.dev.with_state(|st| {
            st.status = RunStatus::Stopped;
            st.error = Some(msg);
            st.time = now_f64();
            st.db_status = "error";
        });
    }

    async fn stop(&mut self) {
        let Some(mut run) = self.running.take() else {
            return;
        };
        self.dev.with_state(|st| st.status = RunStatus::Stopping);
        // Counts first, so the final answer matches what the writer leaves behind.
        let stopped = now_f64().floor() as i64;
        let finished = match &mut run.writer {
            Writer::None => Ok(()),
            Writer::MariaDb(w) => w.finish(stopped).await,
            Writer::Sqlite(w) => {
                let w = w.clone();
                blocking(move || lock(&w).finish(stopped)).await
            }
        };
        if let Err(err) = &finished {
            tracing::warn!(device = %self.dev.name(), "cannot finish experiment: {err:#}");
        }
        self.running = Some(run);
        self.refresh_counts(true).await;
        let Some(run) = self.running.take() else {
            return;
        };
        // Close the SQLite file (its connection) before reporting the experiment finalised.
        if let Writer::Sqlite(w) = run.writer {
            let _ = tokio::task::spawn_blocking(move || drop(w)).await;
        } else {
            drop(run.writer);
        }
        let file = run.experiment.backup_filename.clone();
        let sqlite_path = self.dev.root().join(self.sqlite_rel_path(&run.experiment));
        let size = std::fs::metadata(&sqlite_path).map(|m| m.len()).ok();
        self.dev.with_state(|st| {
            st.status = RunStatus::Stopped;
            st.time = stopped as f64;
            st.db_status = "finalised";
            if let Some(e) = st.current.as_mut() {
                e.stopped = Some(stopped);
            }
            if let Some(f) = st
                .sqlite_files
                .iter_mut()
                .find(|f| f.backup_filename == file)
            {
                f.db_status = "finalised";
                if let Some(size) = size {
                    f.filesize = size;
                }
            }
        });
        tracing::info!(device = %self.dev.name(), file = %file, frames = run.frames,
            "experiment stopped");
    }
}

/// A seed for one experiment of one device.
fn seed_of(id: &str, started: i64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain(started.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("blocking task failed: {e}"))?
}
