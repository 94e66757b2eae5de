//! Spreadsheet files for customer import and export: CSV and XLSX read into a text [`Table`],
//! and headers plus rows written back out. Pure functions over bytes: no I/O, no database.

use std::io::Cursor;

use calamine::{Data, ExcelDateTime, Reader, SheetType, Xlsx};
use rust_xlsxwriter::{ColNum, Format, RowNum, Workbook};

/// The UTF-8 byte order mark; Excel needs it to open a CSV file with Chinese text correctly.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// File formats of import and export.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values in UTF-8, the lowest common denominator of spreadsheet tools.
    Csv,
    /// An Excel workbook (Office Open XML), what most sales teams actually keep lists in.
    Xlsx,
}

impl FileFormat {
    /// MIME type for responses.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    /// File extension without the dot, for download file names.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Xlsx => "xlsx",
        }
    }

    /// The format whose [`extension`](Self::extension) (also its name) is `extension`: for
    /// uploaded file names.
    pub fn from_extension(extension: &str) -> Option<Self> {
        [Self::Csv, Self::Xlsx]
            .into_iter()
            .find(|format| format.extension() == extension)
    }
}

/// A table read from a file: the header row and the data rows, every cell as trimmed text.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The first non-empty row, which names the columns.
    pub headers: Vec<String>,
    /// The non-empty rows after the header, each at least as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

/// Why a file could not be read or written; the messages are shown to the uploading user.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The CSV file is in another encoding (often GBK from older Excel versions).
    #[error("the file is not UTF-8 text; save it as \"CSV UTF-8\" in Excel and upload again")]
    NotUtf8,
    /// The CSV file is malformed, or a CSV file could not be written.
    #[error("the CSV file could not be processed: {0}")]
    Csv(String),
    /// The Excel file is corrupt, encrypted or not an XLSX file, or could not be written.
    #[error("the Excel file could not be processed: {0}")]
    Xlsx(String),
    /// The file holds no header row.
    #[error("the file is empty; the first row must hold the column names")]
    Empty,
    /// The file holds more data rows than the limit, which is carried.
    #[error("the file has more than {0} data rows; split it into smaller files")]
    TooManyRows(usize),
}

/// Most data rows one file may hold.
pub const MAX_ROWS: usize = 100_000;

/// Reads the first sheet (XLSX) or the whole file (CSV) into a Table.
pub fn read_table(format: FileFormat, bytes: &[u8]) -> Result<Table, FileError> {
    if format == FileFormat::Xlsx {
        return read_xlsx(bytes);
    }
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|_| FileError::NotUtf8)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let csv_error = |e: csv::Error| FileError::Csv(e.to_string());
    collect(
        reader
            .records()
            .map(|r| r.map(|r| trimmed(r.iter())).map_err(csv_error)),
    )
}

/// Writes headers and rows as CSV (UTF-8 with a BOM so that Excel opens Chinese text correctly).
pub fn write_csv(headers: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, FileError> {
    let csv_error = |e: csv::Error| FileError::Csv(e.to_string());
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(BOM.to_vec());
    writer.write_record(headers).map_err(csv_error)?;
    for row in rows {
        writer
            .write_record(row.iter().map(|cell| defuse_formula(cell).into_owned()))
            .map_err(csv_error)?;
    }
    writer
        .into_inner()
        .map_err(|e| FileError::Csv(e.to_string()))
}

/// A cell a spreadsheet would run as a formula (`=HYPERLINK(...)`, `@SUM(...)`, `-cmd|...`)
/// gets a leading apostrophe, so an exported name cannot attack whoever opens the file. Phone
/// numbers such as `+86 138...` and negative numbers stay as they are.
fn defuse_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    let numeric = cell.chars().enumerate().all(|(i, c)| {
        c.is_ascii_digit() || matches!(c, ' ' | '(' | ')' | '-') || (i == 0 && c == '+')
    });
    let dangerous = match cell.chars().next() {
        Some('=' | '@' | '\t' | '\r') => true,
        Some('+' | '-') => !numeric,
        _ => false,
    };
    if dangerous {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Writes headers (bold) and rows into one worksheet named "customers", as XLSX bytes.
pub fn write_xlsx(headers: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, FileError> {
    let xlsx_error = |e: rust_xlsxwriter::XlsxError| FileError::Xlsx(e.to_string());
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("customers").map_err(xlsx_error)?;
    let bold = Format::new().set_bold();
    for (col, header) in headers.iter().enumerate() {
        sheet
            .write_string_with_format(0, index::<ColNum>(col)?, *header, &bold)
            .map_err(xlsx_error)?;
    }
    for (row, cells) in rows.iter().enumerate() {
        let row = index::<RowNum>(row + 1)?;
        for (col, cell) in cells.iter().enumerate() {
            if cell.is_empty() {
                continue;
            }
            // Always text: numbers would lose a phone's leading `+` and zeros.
            sheet
                .write_string(row, index::<ColNum>(col)?, cell.as_str())
                .map_err(xlsx_error)?;
        }
    }
    sheet.set_freeze_panes(1, 0).map_err(xlsx_error)?;
    sheet.set_autofit_max_width(300).autofit();
    workbook.save_to_buffer().map_err(xlsx_error)
}

/// A row or column index as the worksheet's index type.
fn index<T: TryFrom<usize>>(i: usize) -> Result<T, FileError> {
    T::try_from(i).map_err(|_| FileError::Xlsx("the table is too large for a worksheet".into()))
}

fn read_xlsx(bytes: &[u8]) -> Result<Table, FileError> {
    let xlsx_error = |e: calamine::XlsxError| FileError::Xlsx(e.to_string());
    let mut workbook: Xlsx<Cursor<&[u8]>> = Xlsx::new(Cursor::new(bytes)).map_err(xlsx_error)?;
    let name = workbook
        .sheets_metadata()
        .iter()
        .find(|sheet| sheet.typ == SheetType::WorkSheet)
        .map(|sheet| sheet.name.clone())
        .ok_or(FileError::Empty)?;
    let range = workbook.worksheet_range(&name).map_err(xlsx_error)?;
    collect(range.rows().map(|r| Ok(trimmed(r.iter().map(cell_text)))))
}

/// Shared by both readers: the first non-empty row is the header, empty rows are skipped, short
/// rows are padded to the header's length, and at most [`MAX_ROWS`] data rows are accepted.
fn collect<I>(lines: I) -> Result<Table, FileError>
where
    I: IntoIterator<Item = Result<Vec<String>, FileError>>,
{
    let mut headers: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for row in lines {
        let mut row = row?;
        if row.iter().all(String::is_empty) {
            continue;
        }
        let Some(width) = headers.as_ref().map(Vec::len) else {
            headers = Some(row);
            continue;
        };
        if rows.len() == MAX_ROWS {
            return Err(FileError::TooManyRows(MAX_ROWS));
        }
        if row.len() < width {
            row.resize(width, String::new());
        }
        rows.push(row);
    }
    let headers = headers.ok_or(FileError::Empty)?;
    Ok(Table { headers, rows })
}

/// Cells as trimmed text, since spreadsheets are full of stray spaces.
fn trimmed<S: AsRef<str>>(cells: impl Iterator<Item = S>) -> Vec<String> {
    cells.map(|cell| cell.as_ref().trim().to_owned()).collect()
}

/// A cell as the user sees it in Excel, as far as a customer list needs.
fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(text) | Data::DateTimeIso(text) | Data::DurationIso(text) => text.clone(),
        // A phone number typed as a number comes back as a float such as 13800138000.0.
        Data::Float(value) if value.fract() == 0.0 && value.abs() < 1e15 => format!("{value:.0}"),
        Data::DateTime(datetime) => datetime_text(datetime),
        other => other.to_string(),
    }
}

/// An Excel serial date as ISO 8601 (date only when there is no time of day), or a duration as
/// hours:minutes:seconds.
fn datetime_text(datetime: &ExcelDateTime) -> String {
    if datetime.is_duration() {
        let s = (datetime.as_f64() * 86_400.0).round().abs() as u64;
        return format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    }
    let (year, month, day, hour, minute, second, _) = datetime.to_ymd_hms_milli();
    if (hour, minute, second) == (0, 0, 0) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}")
    }
}
