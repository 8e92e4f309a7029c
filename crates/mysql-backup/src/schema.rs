//! From the device's table definitions to the mirror's: identifier checks, the reference type
//! mapping, and how each table is copied. Pure code, no I/O.
//!
//! Every name here comes from the device, so only plain identifiers (`^[A-Za-z0-9_]{1,64}$`) are
//! used, and always quoted. A table whose name or any column name is not plain is skipped with a
//! warning (upstream interpolated them raw into SQL, bug B1).
//! Tables SQLite could not keep apart (names equal up to case, its reserved `sqlite_` prefix,
//! columns equal up to case) are skipped the same way instead of failing the whole job.
//!
//! Declared types follow upstream's substring mapping (§4.3) so existing mirrors keep their
//! layout: `int` → INTEGER, `char`/`text` → TEXT, `float`/`double`/`decimal` → REAL, `blob` →
//! BLOB, anything else → TEXT; except where that mapping lost data: `bit` is INTEGER (not TEXT),
//! geometry types are BLOB (upstream made `point` INTEGER because it contains "int"), and a
//! `decimal` wider than 15 digits is TEXT (REAL keeps 15). The primary key is kept; a single
//! integer `id` key becomes SQLite's `INTEGER PRIMARY KEY`.
//!
//! Values are converted by the column's type ([`ValueKind`]), not by what the protocol happened
//! to send: a `BIT` arrives as bytes and is a number, a `BINARY` with NUL bytes is bytes, not text.

/// SQLite storage class chosen for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `INTEGER`
    Integer,
    /// `TEXT`
    Text,
    /// `REAL`
    Real,
    /// `BLOB`
    Blob,
}

impl SqlType {
    /// The SQLite type name.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlType::Integer => "INTEGER",
            SqlType::Text => "TEXT",
            SqlType::Real => "REAL",
            SqlType::Blob => "BLOB",
        }
    }
}

/// How a column's values are converted, from its MariaDB type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `TINYINT` … `BIGINT` (signed or unsigned), `YEAR`.
    Integer,
    /// `BIT(n)`: big-endian bytes, stored as the number.
    Bit,
    /// `FLOAT`, `DOUBLE`.
    Real,
    /// `DECIMAL`/`NUMERIC`: the exact decimal text (a REAL column converts it, a TEXT one keeps
    /// every digit).
    Decimal,
    /// Character types, `ENUM`, `SET`, `JSON` (MariaDB's `LONGTEXT`), and types this code does
    /// not know: UTF-8 text, other bytes kept as bytes.
    Text,
    /// `BINARY`, `VARBINARY`, `BLOB`s and geometry types (MariaDB's internal WKB): bytes as they
    /// are, NUL bytes included.
    Bytes,
    /// `DATE`: `YYYY-MM-DD` (the zero date `0000-00-00` included).
    Date,
    /// `DATETIME`, `TIMESTAMP`: `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    DateTime,
    /// `TIME`: `[-]HH:MM:SS[.ffffff]`, hours beyond 24 included.
    Time,
}

/// The base type word of a `COLUMN_TYPE` (`decimal(65,30) unsigned` → `decimal`), lower case.
fn base_type(mysql_type: &str) -> String {
    let t = mysql_type.trim().to_ascii_lowercase();
    let end = t
        .find(|c: char| c == '(' || c.is_whitespace())
        .unwrap_or(t.len());
    t[..end].to_string()
}

/// Geometry types (stored by MariaDB as SRID + WKB bytes).
const GEOMETRY: [&str; 8] = [
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
];

/// Digits a REAL keeps exactly.
const REAL_DIGITS: u32 = 15;

/// The conversion of a column's values.
pub fn value_kind(mysql_type: &str) -> ValueKind {
    match base_type(mysql_type).as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bool"
        | "boolean" => ValueKind::Integer,
        "bit" => ValueKind::Bit,
        "float" | "double" | "real" => ValueKind::Real,
        "decimal" | "numeric" | "dec" | "fixed" => ValueKind::Decimal,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            ValueKind::Bytes
        }
        g if GEOMETRY.contains(&g) => ValueKind::Bytes,
        "date" => ValueKind::Date,
        "datetime" | "timestamp" => ValueKind::DateTime,
        "time" => ValueKind::Time,
        _ => ValueKind::Text,
    }
}

/// The precision of a `decimal(p[,s])` type (MariaDB's default is 10).
fn decimal_precision(mysql_type: &str) -> u32 {
    let t = mysql_type.to_ascii_lowercase();
    t.split_once('(')
        .and_then(|(_, rest)| rest.split([',', ')']).next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(10)
}

/// The declared SQLite type: upstream's mapping, with the fixes listed in the module docs.
pub fn sqlite_type(mysql_type: &str) -> SqlType {
    let base = base_type(mysql_type);
    if base == "bit" {
        return SqlType::Integer;
    }
    if GEOMETRY.contains(&base.as_str()) {
        return SqlType::Blob;
    }
    if value_kind(mysql_type) == ValueKind::Decimal && decimal_precision(mysql_type) > REAL_DIGITS {
        return SqlType::Text;
    }
    upstream_type(mysql_type)
}

/// Upstream's type mapping (first match wins, on the lower-cased MariaDB column type).
pub fn upstream_type(mysql_type: &str) -> SqlType {
    let t = mysql_type.to_ascii_lowercase();
    if t.contains("int") {
        SqlType::Integer
    } else if t.contains("varchar") || t.contains("text") || t.contains("char") {
        SqlType::Text
    } else if t.contains("float") || t.contains("double") || t.contains("decimal") {
        SqlType::Real
    } else if t.contains("blob") {
        SqlType::Blob
    } else {
        SqlType::Text
    }
}

/// True for a name safe to use as an SQL identifier: 1 to 64 of `A-Z a-z 0-9 _`.
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Quotes an identifier for SQLite (`"name"`, inner quotes doubled).
pub fn sqlite_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an identifier for MariaDB (`` `name` ``, inner backticks doubled).
pub fn mysql_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteColumn {
    /// Column name.
    pub name: String,
    /// `COLUMN_TYPE`, e.g. `smallint(6)`, `char(100)`, `longblob`.
    pub column_type: String,
    /// Part of the primary key (`COLUMN_KEY = 'PRI'`).
    pub primary: bool,
}

/// A table of the device's experiment database, columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTable {
    /// Table name.
    pub name: String,
    /// Columns in ordinal order.
    pub columns: Vec<RemoteColumn>,
}

/// How a table is kept in step (`by_id` / `whole_table` in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMode {
    /// Keyed by a single integer `id`: copy rows above the local maximum.
    ById,
    /// Anything else (`ROI_MAP`, `VAR_MAP`, `METADATA`, ...): make the local table equal to the
    /// remote one as a multiset.
    WholeTable,
}

/// A mirrored column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Name (a plain identifier).
    pub name: String,
    /// Local storage class.
    pub sql_type: SqlType,
    /// How its values are converted.
    pub kind: ValueKind,
}

/// One table to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// Name (a plain identifier).
    pub name: String,
    /// Columns in remote order.
    pub columns: Vec<Column>,
    /// Primary key columns (possibly empty).
    pub primary_key: Vec<String>,
    /// How rows are copied.
    pub mode: CopyMode,
}

impl TablePlan {
    /// `CREATE TABLE` for the mirror.
    pub fn create_sql(&self) -> String {
        let single_pk = self.primary_key.len() == 1;
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut s = format!("{} {}", sqlite_quote(&c.name), c.sql_type.as_str());
                if single_pk && self.primary_key[0] == c.name {
                    s.push_str(" PRIMARY KEY");
                }
                s
            })
            .collect();
        if self.primary_key.len() > 1 {
            parts.push(format!(
                "PRIMARY KEY ({})",
                self.primary_key
                    .iter()
                    .map(|c| sqlite_quote(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        format!(
            "CREATE TABLE {} ({})",
            sqlite_quote(&self.name),
            parts.join(", ")
        )
    }

    /// Column names, quoted for SQLite, comma-separated.
    pub fn sqlite_columns(&self) -> String {
        self.columns
            .iter()
            .map(|c| sqlite_quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Column names, quoted for MariaDB, comma-separated.
    pub fn mysql_columns(&self) -> String {
        self.columns
            .iter()
            .map(|c| mysql_quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Index of the `id` column (for [`CopyMode::ById`] tables).
    pub fn id_index(&self) -> Option<usize> {
        self.columns.iter().position(|c| c.name == "id")
    }
}

/// A remote table that is not mirrored, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The table name, cut to 80 characters for display.
    pub table: String,
    /// Why.
    pub reason: String,
}

/// Decides what to mirror: one plan per table with plain names, one [`Skipped`] per other table.
pub fn plan_tables(remote: &[RemoteTable]) -> (Vec<TablePlan>, Vec<Skipped>) {
    let mut plans = Vec::new();
    let mut skipped = Vec::new();
    // SQLite names are case-insensitive (MariaDB's are not on Linux): two device tables that
    // differ only in case would be written into one mirror table.
    let mut seen = std::collections::HashSet::new();
    for table in remote {
        let refusal = bad_name(table)
            .or_else(|| {
                (!seen.insert(table.name.to_ascii_lowercase()))
                    .then(|| "another table has the same name up to case".to_string())
            })
            .or_else(|| bad_columns(table));
        match refusal {
            Some(reason) => skipped.push(Skipped {
                table: table.name.chars().take(80).collect(),
                reason,
            }),
            None => plans.push(table_plan(table)),
        }
    }
    (plans, skipped)
}

/// Why a table's name cannot be used, if so.
fn bad_name(table: &RemoteTable) -> Option<String> {
    if !is_plain_identifier(&table.name) {
        return Some("table name is not a plain identifier".into());
    }
    table
        .name
        .to_ascii_lowercase()
        .starts_with("sqlite_")
        .then(|| "table names starting with sqlite_ are reserved by SQLite".into())
}

/// Why a table's columns cannot be mirrored (names SQLite cannot hold, none at all), if so.
fn bad_columns(table: &RemoteTable) -> Option<String> {
    let shown = |name: &str| name.chars().take(80).collect::<String>();
    let mut columns_seen = std::collections::HashSet::new();
    if let Some(dup) = table
        .columns
        .iter()
        .find(|c| !columns_seen.insert(c.name.to_ascii_lowercase()))
    {
        return Some(format!(
            "columns named {:?} differ only in case",
            shown(&dup.name)
        ));
    }
    if let Some(bad) = table.columns.iter().find(|c| !is_plain_identifier(&c.name)) {
        return Some(format!(
            "column name {:?} is not a plain identifier",
            shown(&bad.name)
        ));
    }
    table
        .columns
        .is_empty()
        .then(|| "table has no columns".into())
}

/// The plan of a usable table: columns mapped, key kept, copied by id when the key is a single
/// integer `id`.
fn table_plan(table: &RemoteTable) -> TablePlan {
    let columns: Vec<Column> = table
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            sql_type: sqlite_type(&c.column_type),
            kind: value_kind(&c.column_type),
        })
        .collect();
    let primary_key: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.primary)
        .map(|c| c.name.clone())
        .collect();
    let by_id = primary_key.len() == 1
        && primary_key[0] == "id"
        && columns
            .iter()
            .any(|c| c.name == "id" && c.sql_type == SqlType::Integer);
    TablePlan {
        name: table.name.clone(),
        columns,
        primary_key,
        mode: if by_id {
            CopyMode::ById
        } else {
            CopyMode::WholeTable
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, primary: bool) -> RemoteColumn {
        RemoteColumn {
            name: name.into(),
            column_type: ty.into(),
            primary,
        }
    }

    #[test]
    fn reference_type_mapping() {
        for (t, want) in [
            ("int(11)", SqlType::Integer),
            ("smallint(6)", SqlType::Integer),
            ("tinyint(1)", SqlType::Integer),
            ("bigint(20) unsigned", SqlType::Integer),
            ("point", SqlType::Integer),
            ("varchar(255)", SqlType::Text),
            ("char(100)", SqlType::Text),
            ("tinytext", SqlType::Text),
            ("longtext", SqlType::Text),
            ("float", SqlType::Real),
            ("double", SqlType::Real),
            ("decimal(10,2)", SqlType::Real),
            ("blob", SqlType::Blob),
            ("LONGBLOB", SqlType::Blob),
            ("datetime", SqlType::Text),
            ("varbinary(10)", SqlType::Text),
            ("enum('a','b')", SqlType::Text),
        ] {
            assert_eq!(upstream_type(t), want, "{t}");
        }
    }

    /// Ours: upstream's, except where it lost data; and the conversion of each type.
    #[test]
    fn types_and_conversions_by_column_type() {
        use ValueKind as K;
        for (t, declared, kind) in [
            ("int(11)", SqlType::Integer, K::Integer),
            ("bigint(20) unsigned", SqlType::Integer, K::Integer),
            ("year(4)", SqlType::Text, K::Integer),
            ("bit(1)", SqlType::Integer, K::Bit),
            ("bit(64)", SqlType::Integer, K::Bit),
            ("float", SqlType::Real, K::Real),
            ("decimal(10,2)", SqlType::Real, K::Decimal),
            ("decimal(15,5) unsigned", SqlType::Real, K::Decimal),
            ("decimal(65,30)", SqlType::Text, K::Decimal),
            ("decimal", SqlType::Real, K::Decimal),
            ("enum('a','b')", SqlType::Text, K::Text),
            ("set('x','y')", SqlType::Text, K::Text),
            ("longtext", SqlType::Text, K::Text),
            ("json", SqlType::Text, K::Text),
            ("inet6", SqlType::Text, K::Text),
            ("binary(4)", SqlType::Text, K::Bytes),
            ("varbinary(10)", SqlType::Text, K::Bytes),
            ("longblob", SqlType::Blob, K::Bytes),
            ("point", SqlType::Blob, K::Bytes),
            ("geometry", SqlType::Blob, K::Bytes),
            ("date", SqlType::Text, K::Date),
            ("datetime(6)", SqlType::Text, K::DateTime),
            ("timestamp", SqlType::Text, K::DateTime),
            ("time(3)", SqlType::Text, K::Time),
        ] {
            assert_eq!((sqlite_type(t), value_kind(t)), (declared, kind), "{t}");
        }
    }

    #[test]
    fn plans_keep_the_primary_key_and_skip_odd_names() {
        let remote = vec![
            RemoteTable {
                name: "ROI_1".into(),
                columns: vec![
                    col("id", "int(11)", true),
                    col("t", "int(11)", false),
                    col("is_inferred", "tinyint(1)", false),
                ],
            },
            RemoteTable {
                name: "METADATA".into(),
                columns: vec![
                    col("field", "char(100)", false),
                    col("value", "text", false),
                ],
            },
            RemoteTable {
                name: "bad`name".into(),
                columns: vec![col("id", "int(11)", true)],
            },
            RemoteTable {
                name: "ODD_COLS".into(),
                columns: vec![col("a b", "int(11)", false)],
            },
            RemoteTable {
                name: "PAIRS".into(),
                columns: vec![col("a", "int(11)", true), col("b", "char(4)", true)],
            },
        ];
        let (plans, skipped) = plan_tables(&remote);
        assert_eq!(plans.len(), 3);
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].table, "bad`name");
        assert!(skipped[1].reason.contains("a b"));
        assert_eq!(plans[0].mode, CopyMode::ById);
        assert_eq!(
            plans[0].create_sql(),
            r#"CREATE TABLE "ROI_1" ("id" INTEGER PRIMARY KEY, "t" INTEGER, "is_inferred" INTEGER)"#
        );
        assert_eq!(plans[1].mode, CopyMode::WholeTable);
        assert_eq!(
            plans[1].create_sql(),
            r#"CREATE TABLE "METADATA" ("field" TEXT, "value" TEXT)"#
        );
        assert_eq!(plans[2].mode, CopyMode::WholeTable);
        assert!(plans[2]
            .create_sql()
            .ends_with(r#"PRIMARY KEY ("a", "b"))"#));
        assert_eq!(plans[0].mysql_columns(), "`id`, `t`, `is_inferred`");
    }

    #[test]
    fn names_sqlite_cannot_hold_apart_are_skipped() {
        let table = |name: &str, cols: &[&str]| RemoteTable {
            name: name.into(),
            columns: cols.iter().map(|c| col(c, "int(11)", *c == "id")).collect(),
        };
        let remote = vec![
            table("ROI_1", &["id", "x"]),
            table("roi_1", &["id", "x"]),
            table("sqlite_master", &["id"]),
            table("SQLITE_x", &["id"]),
            table("TWINS", &["id", "x", "X"]),
        ];
        let (plans, skipped) = plan_tables(&remote);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].name, "ROI_1");
        let names: Vec<&str> = skipped.iter().map(|s| s.table.as_str()).collect();
        assert_eq!(names, ["roi_1", "sqlite_master", "SQLITE_x", "TWINS"]);
        assert!(skipped[0].reason.contains("case"));
        assert!(skipped[1].reason.contains("reserved"));
        assert!(skipped[3].reason.contains("\"X\""), "{}", skipped[3].reason);
    }

    #[test]
    fn identifiers() {
        assert!(is_plain_identifier("CSV_DAM_ACTIVITY"));
        for bad in ["", "a`b", "a\"b", "a b", "a;b", "é", &"x".repeat(65)] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
        assert_eq!(sqlite_quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(mysql_quote("a`b"), "`a``b`");
    }
}
