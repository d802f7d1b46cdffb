//! Landing's lake-line codec: one Kafka record (heatmap_core.events.RawBatchRecord as JSON) to the
//! lines of the raw lake, as JSON lines and as Parquet columns, without a Python object per event.
//!
//! It accepts a strict subset of what the reference decoder (msgspec, `heatmap_core.events`)
//! accepts, and gives exactly the reference's lines for it (tests/landing/test_native.py). Anything
//! outside the subset (a string with an escape, a time with more than six fractional digits, an
//! invalid record) returns None, and landing takes the reference path for that record: it alone
//! decides what is rejected.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Deserialize;

const EVENT_TYPES: [&str; 5] = ["mousemove", "click", "rageclick", "scroll", "touch"];
const DEVICES: [&str; 4] = ["desktop", "tablet", "mobile", "unknown"];
const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

fn default_version() -> i64 {
    2
}
fn default_event_type<'a>() -> &'a str {
    "mousemove"
}
fn default_device<'a>() -> &'a str {
    "unknown"
}

// Borrowed strings: a string with an escape fails to borrow, and the record takes the reference path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event<'a> {
    event_time: &'a str,
    x_norm: f64,
    y_norm: f64,
    #[serde(default = "default_event_type")]
    event_type: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageView<'a> {
    view_id: &'a str,
    viewport_w: i64,
    viewport_h: i64,
    screen_w: i64,
    screen_h: i64,
}

// Not deny_unknown_fields: the reference ignores a record's unknown fields too.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(default = "default_version")]
    version: i64,
    client_id: &'a str,
    screen_id: &'a str,
    batch_id: &'a str,
    received_at: &'a str,
    events: Vec<Event<'a>>,
    #[serde(default)]
    view: Option<PageView<'a>>,
    #[serde(default = "default_device")]
    device: &'a str,
}

/// heatmap_core.ids.ID_PATTERN: 1-64 of [A-Za-z0-9_-].
fn is_identifier(text: &str, min: usize) -> bool {
    (min..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if month <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        month,
        day,
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// The UTC instants Python's datetime can hold: 0001-01-01 to 9999-12-31.
const MIN_US: i64 = -62_135_596_800_000_000;
const MAX_US: i64 = 253_402_300_800_000_000 - 1;

/// Microseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, in UTC.
fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if rest.first() == Some(&b'.') {
        let width = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&width) {
            return None;
        }
        micros = digits(&rest[1..=width])? * 10i64.pow(6 - width as u32);
        rest = &rest[1 + width..];
    }
    let offset_minutes = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    let local = days_from_civil(year, month, day) * DAY_US
        + ((hour * 60 + minute) * 60 + second) * 1_000_000
        + micros;
    let utc = local - offset_minutes * 60_000_000;
    (MIN_US..=MAX_US).contains(&utc).then_some(utc)
}

/// msgspec's form of a UTC instant: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, the fraction only when not zero.
fn write_time(out: &mut Vec<u8>, micros: i64) {
    fn digits_of(out: &mut Vec<u8>, value: i64, width: u32) {
        for place in (0..width).rev() {
            out.push(b'0' + (value / 10i64.pow(place) % 10) as u8);
        }
    }
    let (year, month, day) = civil_from_days(micros.div_euclid(DAY_US));
    let of_day = micros.rem_euclid(DAY_US);
    let seconds = of_day / 1_000_000;
    let fraction = of_day % 1_000_000;
    digits_of(out, year, 4);
    out.push(b'-');
    digits_of(out, month, 2);
    out.push(b'-');
    digits_of(out, day, 2);
    out.push(b'T');
    digits_of(out, seconds / 3600, 2);
    out.push(b':');
    digits_of(out, seconds / 60 % 60, 2);
    out.push(b':');
    digits_of(out, seconds % 60, 2);
    if fraction != 0 {
        out.push(b'.');
        digits_of(out, fraction, 6);
    }
    out.push(b'Z');
}

fn write_float(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
}

fn write_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// The lines of one UTC hour of a record, in the record's order, with their Parquet columns.
#[derive(Default)]
struct Run {
    hour: i64,
    lines: Vec<u8>,
    events: usize,
    event_time: Vec<u8>,  // int64 microseconds, little-endian
    x_norm: Vec<u8>,      // float64
    y_norm: Vec<u8>,      // float64
    event_type: Vec<u8>,  // uint8: index in EVENT_TYPES
    batch_index: Vec<u8>, // int32
}

struct Lines {
    received_at: i64,
    newest: i64,
    runs: Vec<Run>,
}

fn valid_view(view: &PageView) -> bool {
    let viewport = 1..=16_384;
    let screen = 1..=1_000_000;
    is_identifier(view.view_id, 8)
        && viewport.contains(&view.viewport_w)
        && viewport.contains(&view.viewport_h)
        && screen.contains(&view.screen_w)
        && screen.contains(&view.screen_h)
}

fn lake_lines(record: &Record, partition: i32, offset: i64) -> Option<Lines> {
    if !(record.version == 1 || record.version == 2)
        || !is_identifier(record.client_id, 1)
        || !is_identifier(record.screen_id, 1)
        || !DEVICES.contains(&record.device)
        || !record.view.as_ref().is_none_or(valid_view)
    {
        return None;
    }
    let received_at = parse_time(record.received_at)?;
    // The record's parts of each line, in heatmap_core.lake_schema.LakeEvent's field order.
    let head = format!(
        r#"{{"client_id":"{}","screen_id":"{}","event_time":""#,
        record.client_id, record.screen_id
    );
    let mut middle = br#","received_at":""#.to_vec();
    write_time(&mut middle, received_at);
    middle.extend_from_slice(
        format!(r#"","batch_id":"{}","kafka_partition":"#, record.batch_id).as_bytes(),
    );
    write_int(&mut middle, i64::from(partition));
    middle.extend_from_slice(br#","kafka_offset":"#);
    write_int(&mut middle, offset);
    middle.extend_from_slice(br#","batch_index":"#);
    let mut tail = format!(r#","device":"{}","view_id":"#, record.device).into_bytes();
    match &record.view {
        Some(view) => {
            let numbers = [
                view.viewport_w,
                view.viewport_h,
                view.screen_w,
                view.screen_h,
            ];
            tail.extend_from_slice(format!(r#""{}""#, view.view_id).as_bytes());
            for (name, value) in ["viewport_w", "viewport_h", "screen_w", "screen_h"]
                .iter()
                .zip(numbers)
            {
                tail.extend_from_slice(format!(r#","{name}":{value}"#).as_bytes());
            }
        }
        None => tail.extend_from_slice(
            br#"null,"viewport_w":null,"viewport_h":null,"screen_w":null,"screen_h":null"#,
        ),
    }
    tail.extend_from_slice(b"}\n");

    let mut runs: Vec<Run> = Vec::new();
    let mut newest = i64::MIN;
    for (index, event) in record.events.iter().enumerate() {
        let time = parse_time(event.event_time)?;
        let kind = EVENT_TYPES.iter().position(|t| *t == event.event_type)?;
        if !(0.0..=1.0).contains(&event.x_norm) || !(0.0..=1.0).contains(&event.y_norm) {
            return None;
        }
        newest = newest.max(time);
        let hour = time.div_euclid(HOUR_US) * HOUR_US;
        if runs.last().is_none_or(|run| run.hour != hour) {
            let line = head.len() + middle.len() + tail.len() + 96;
            let lines = Vec::with_capacity(line * (record.events.len() - index));
            runs.push(Run {
                hour,
                lines,
                ..Run::default()
            });
        }
        let run = runs.last_mut()?;
        run.lines.extend_from_slice(head.as_bytes());
        write_time(&mut run.lines, time);
        run.lines.extend_from_slice(br#"","x_norm":"#);
        write_float(&mut run.lines, event.x_norm);
        run.lines.extend_from_slice(br#","y_norm":"#);
        write_float(&mut run.lines, event.y_norm);
        run.lines.extend_from_slice(br#","event_type":""#);
        run.lines.extend_from_slice(event.event_type.as_bytes());
        run.lines.push(b'"');
        run.lines.extend_from_slice(&middle);
        write_int(&mut run.lines, index as i64);
        run.lines.extend_from_slice(&tail);
        run.events += 1;
        run.event_time.extend_from_slice(&time.to_le_bytes());
        run.x_norm.extend_from_slice(&event.x_norm.to_le_bytes());
        run.y_norm.extend_from_slice(&event.y_norm.to_le_bytes());
        run.event_type.push(kind as u8);
        run.batch_index
            .extend_from_slice(&i32::try_from(index).ok()?.to_le_bytes());
    }
    Some(Lines {
        received_at,
        newest,
        runs,
    })
}

type PyRun<'py> = (
    i64,
    Bound<'py, PyBytes>,
    usize,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
);
type PyView<'py> = (&'py str, i64, i64, i64, i64);

/// The lake lines of one Kafka record (its value as bytes), or None when it is outside the subset
/// this codec takes (the reference decoder then decides). A record without events gives no runs.
///
/// Returns ``(client_id, screen_id, batch_id, received_at_us, device, view, newest_event_us, runs)``
/// where ``view`` is ``(view_id, viewport_w, viewport_h, screen_w, screen_h)`` or None,
/// ``newest_event_us`` is None without events, and each run, the events of one UTC hour in order, is
/// ``(hour_us, json_lines, events, event_time, x_norm, y_norm, event_type, batch_index)``, the last
/// five as little-endian int64 microseconds, float64, float64, uint8 (an index in EVENT_TYPES), int32.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn lake_record<'py>(
    py: Python<'py>,
    value: &'py [u8],
    partition: i32,
    offset: i64,
) -> Option<(
    &'py str,
    &'py str,
    &'py str,
    i64,
    &'py str,
    Option<PyView<'py>>,
    Option<i64>,
    Vec<PyRun<'py>>,
)> {
    let record: Record<'py> = serde_json::from_slice(value).ok()?;
    let lines = py.detach(|| lake_lines(&record, partition, offset))?;
    let bytes = |data: &[u8]| PyBytes::new(py, data);
    let runs = lines
        .runs
        .iter()
        .map(|run| {
            (
                run.hour,
                bytes(&run.lines),
                run.events,
                bytes(&run.event_time),
                bytes(&run.x_norm),
                bytes(&run.y_norm),
                bytes(&run.event_type),
                bytes(&run.batch_index),
            )
        })
        .collect();
    let view = record.view.as_ref().map(|v| {
        (
            v.view_id,
            v.viewport_w,
            v.viewport_h,
            v.screen_w,
            v.screen_h,
        )
    });
    let newest = (!record.events.is_empty()).then_some(lines.newest);
    Some((
        record.client_id,
        record.screen_id,
        record.batch_id,
        lines.received_at,
        record.device,
        view,
        newest,
        runs,
    ))
}

#[pymodule]
fn heatmap_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("EVENT_TYPES", EVENT_TYPES.to_vec())?;
    module.add_function(wrap_pyfunction!(lake_record, module)?)?;
    Ok(())
}
