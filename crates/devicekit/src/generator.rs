//! Deterministic experiment data: what a tracking ethoscope writes, as a pure function of an
//! [`ExperimentSpec`] and how far the experiment has advanced.
//!
//! [`ExperimentGenerator::next_frames`] advances simulated time by whole tracking frames and returns
//! the rows the device would have written meanwhile: one row per ROI per frame, a JPEG-sized
//! snapshot every `snapshot_every_ms`, a sensor reading every 120 s, a DAM activity line every 60 s.
//! The first data batch also carries the `VAR_MAP` rows, as the firmware writes them at the first
//! tracking row. Nothing reads the clock, so tests never sleep to make data appear.

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use crate::schema::{self, ExperimentSpec, TableDef, UtcTime, ROI_VARIABLES};

/// One value, typed as SQLite would store it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Integer.
    Int(i64),
    /// Floating point.
    Real(f64),
    /// Text.
    Text(String),
    /// Binary.
    Blob(Vec<u8>),
}

/// Rows for one table, data columns only (`id` is assigned by the database, in insertion order).
#[derive(Debug, Clone, PartialEq)]
pub struct TableRows {
    /// The table these rows go to.
    pub table: TableDef,
    /// One inner vector per row, in `table.columns` order.
    pub rows: Vec<Vec<Cell>>,
}

/// What the device writes during some frames.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// `Some` on the first data batch: replace `VAR_MAP` with these rows (`DELETE` + `INSERT`).
    pub var_map: Option<Vec<Vec<Cell>>>,
    /// ROI tables that get their first row in this batch (created lazily, as the firmware does).
    pub new_roi_tables: Vec<TableDef>,
    /// Rows per table, tracking tables first.
    pub tables: Vec<TableRows>,
}

impl Batch {
    /// Total number of rows in the batch (excluding `VAR_MAP`).
    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }
}

const SENSOR_EVERY_MS: i64 = 120_000;
const DAM_EVERY_MS: i64 = 60_000;

/// Advances one experiment. See the module docs.
#[derive(Debug)]
pub struct ExperimentGenerator {
    spec: ExperimentSpec,
    rng: StdRng,
    t_ms: i64,
    frames: u64,
    next_snapshot_ms: i64,
    next_sensor_ms: i64,
    next_dam_ms: i64,
}

impl ExperimentGenerator {
    /// A generator at experiment start (no frames yet).
    pub fn new(spec: ExperimentSpec) -> ExperimentGenerator {
        let rng = StdRng::seed_from_u64(spec.seed);
        ExperimentGenerator {
            rng,
            t_ms: 0,
            frames: 0,
            next_snapshot_ms: 0,
            next_sensor_ms: 0,
            next_dam_ms: DAM_EVERY_MS,
            spec,
        }
    }

    /// The experiment being generated.
    pub fn spec(&self) -> &ExperimentSpec {
        &self.spec
    }

    /// Frames generated so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Simulated milliseconds since experiment start.
    pub fn t_ms(&self) -> i64 {
        self.t_ms
    }

    /// Rows written when the experiment starts: `METADATA`, `ROI_MAP`, `START_EVENTS`.
    pub fn initial_rows(&self) -> Vec<TableRows> {
        let metadata = self
            .spec
            .metadata_rows()
            .into_iter()
            .map(|(f, v)| vec![Cell::Text(f), v.map(Cell::Text).unwrap_or(Cell::Null)])
            .collect();
        let roi_map = (1..=i64::from(self.spec.n_rois))
            .map(|i| {
                let col = (i - 1) % 10;
                let row = (i - 1) / 10;
                vec![
                    Cell::Int(i),
                    Cell::Int(i),
                    Cell::Int(20 + col * 120),
                    Cell::Int(40 + row * 440),
                    Cell::Int(110),
                    Cell::Int(400),
                ]
            })
            .collect();
        vec![
            TableRows {
                table: schema::metadata(),
                rows: metadata,
            },
            TableRows {
                table: schema::roi_map(),
                rows: roi_map,
            },
            TableRows {
                table: schema::start_events(),
                rows: vec![vec![
                    Cell::Int(self.spec.start_time),
                    Cell::Text("graceful_start".into()),
                ]],
            },
        ]
    }

    /// The `VAR_MAP` rows (`var_name`, `sql_type`, `functional_type`).
    pub fn var_map_rows() -> Vec<Vec<Cell>> {
        ROI_VARIABLES
            .iter()
            .map(|(name, ty, func)| {
                vec![
                    Cell::Text((*name).to_string()),
                    Cell::Text((*ty).to_string()),
                    Cell::Text((*func).to_string()),
                ]
            })
            .collect()
    }

    /// Advances by `frames` tracking frames and returns what the device wrote meanwhile. Memory is
    /// proportional to `frames × n_rois`: callers writing millions of rows ask for chunks.
    pub fn next_frames(&mut self, frames: u64) -> Batch {
        let mut batch = Batch::default();
        if frames == 0 {
            return batch;
        }
        if self.frames == 0 {
            batch.var_map = Some(Self::var_map_rows());
            batch.new_roi_tables = (1..=self.spec.n_rois).map(schema::roi_table).collect();
        }
        let n_rois = self.spec.n_rois as usize;
        let mut roi_rows: Vec<Vec<Vec<Cell>>> = vec![Vec::new(); n_rois];
        let mut snapshots = Vec::new();
        let mut sensors = Vec::new();
        let mut dam = Vec::new();
        for _ in 0..frames {
            self.t_ms += self.spec.frame_ms;
            self.frames += 1;
            let t = self.t_ms;
            for rows in roi_rows.iter_mut() {
                rows.push(self.roi_row(t));
            }
            if self.spec.snapshots && t >= self.next_snapshot_ms {
                self.next_snapshot_ms = t + self.spec.snapshot_every_ms;
                snapshots.push(vec![Cell::Int(t), Cell::Blob(self.jpeg_like())]);
            }
            if self.spec.sensors && t >= self.next_sensor_ms {
                self.next_sensor_ms = t + SENSOR_EVERY_MS;
                sensors.push(self.sensor_row(t));
            }
            if self.spec.dam && t >= self.next_dam_ms {
                self.next_dam_ms = t + DAM_EVERY_MS;
                dam.push(self.dam_row(t, n_rois));
            }
        }
        for (i, rows) in roi_rows.into_iter().enumerate() {
            batch.tables.push(TableRows {
                table: schema::roi_table(i as u32 + 1),
                rows,
            });
        }
        if !snapshots.is_empty() {
            batch.tables.push(TableRows {
                table: schema::img_snapshots(),
                rows: snapshots,
            });
        }
        if !sensors.is_empty() {
            batch.tables.push(TableRows {
                table: schema::sensors(),
                rows: sensors,
            });
        }
        if !dam.is_empty() {
            batch.tables.push(TableRows {
                table: schema::csv_dam_activity(self.spec.n_rois),
                rows: dam,
            });
        }
        batch
    }

    /// One tracking row of one ROI at `t` ms.
    fn roi_row(&mut self, t: i64) -> Vec<Cell> {
        let r = &mut self.rng;
        vec![
            Cell::Int(t),
            Cell::Int(r.random_range(0..1280)),
            Cell::Int(r.random_range(0..960)),
            Cell::Int(r.random_range(10..60)),
            Cell::Int(r.random_range(5..30)),
            Cell::Int(r.random_range(0..180)),
            Cell::Int(r.random_range(-1000..3000)),
            Cell::Int(i64::from(r.random_bool(0.05))),
            Cell::Int(0),
        ]
    }

    /// One `SENSORS` row at `t` ms.
    fn sensor_row(&mut self, t: i64) -> Vec<Cell> {
        let r = &mut self.rng;
        // Values a FLOAT column holds exactly after rounding to one decimal in f32.
        let temperature = f64::from((r.random_range(230..270) as f32) / 10.0);
        let humidity = f64::from((r.random_range(400..700) as f32) / 10.0);
        let pressure = f64::from((r.random_range(9900..10300) as f32) / 10.0);
        vec![
            Cell::Int(t),
            Cell::Real(temperature),
            Cell::Real(humidity),
            Cell::Int(r.random_range(0..1000)),
            Cell::Real(pressure),
        ]
    }

    /// One `CSV_DAM_ACTIVITY` row at `t` ms: date, time, one count per ROI.
    fn dam_row(&mut self, t: i64, n_rois: usize) -> Vec<Cell> {
        let when = UtcTime::from_epoch(self.spec.start_time + t / 1000);
        let date = format!("{:02} {} {}", when.day, when.month_abbrev(), when.year);
        let time = format!("{:02}:{:02}:{:02}", when.hour, when.minute, when.second);
        let mut row = vec![Cell::Text(date), Cell::Text(time)];
        for _ in 0..n_rois {
            row.push(Cell::Int(self.rng.random_range(0..300)));
        }
        row
    }

    /// Random bytes framed like a JPEG (SOI/APP0 header, EOI trailer), about `snapshot_bytes` long.
    fn jpeg_like(&mut self) -> Vec<u8> {
        let base = self.spec.snapshot_bytes.max(32);
        let len = self.rng.random_range(base * 4 / 5..=base * 6 / 5);
        let mut img = vec![0u8; len];
        self.rng.fill_bytes(&mut img);
        let header = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
        ];
        img[..header.len()].copy_from_slice(&header);
        img[len - 2] = 0xFF;
        img[len - 1] = 0xD9;
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExperimentSpec {
        let mut s = ExperimentSpec::new("0123456789abcdef0123456789abcdef", "ETHOSCOPE_001", 0);
        s.n_rois = 3;
        s
    }

    #[test]
    fn deterministic_and_incremental() {
        let mut a = ExperimentGenerator::new(spec());
        let mut b = ExperimentGenerator::new(spec());
        let first = a.next_frames(10);
        assert_eq!(first, b.next_frames(10));
        assert!(first.var_map.is_some());
        assert_eq!(first.new_roi_tables.len(), 3);
        let second = a.next_frames(10);
        assert!(second.var_map.is_none() && second.new_roi_tables.is_empty());
        assert_ne!(first.tables[0].rows, second.tables[0].rows);
        let mut other = spec();
        other.seed = 2;
        assert_ne!(ExperimentGenerator::new(other).next_frames(10), first);
    }

    #[test]
    fn periodic_tables_follow_simulated_time() {
        let mut g = ExperimentGenerator::new(spec());
        // 3000 frames × 200 ms = 600 s: snapshots at 0.2 s and 300.2 s, sensors every 120 s,
        // DAM every 60 s.
        let b = g.next_frames(3000);
        let count = |name: &str| {
            b.tables
                .iter()
                .find(|t| t.table.name == name)
                .map_or(0, |t| t.rows.len())
        };
        assert_eq!(count("ROI_1"), 3000);
        assert_eq!(count("IMG_SNAPSHOTS"), 2);
        assert_eq!(count("SENSORS"), 5);
        assert_eq!(count("CSV_DAM_ACTIVITY"), 10);
        let snap = &b
            .tables
            .iter()
            .find(|t| t.table.name == "IMG_SNAPSHOTS")
            .unwrap()
            .rows[0][1];
        let Cell::Blob(img) = snap else { panic!() };
        assert_eq!(&img[..2], &[0xFF, 0xD8]);
        assert_eq!(&img[img.len() - 2..], &[0xFF, 0xD9]);
    }
}
