//! Store images: a consistent copy of a whole store (rows, held rows, the index,
//! the reverse index of embeds, the change log and the offsets they all match),
//! read in one transaction, so a new store can start from it and consume Kafka
//! from its offsets instead of replaying the topics. The same image is a backup.
//!
//! An image is JSON lines: a header naming the definition the rows were built
//! with, one line per entry, and a trailer with the number of entries and the
//! SHA-256 of every line before it. Restoring checks all three before the store
//! is used: an image of another definition, a truncated or a corrupted one is
//! refused, and nothing of it is kept.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{
    Layout, StoreError, CHANGES, COUNTERS, DEFINITION_HASH, EMBEDS, FORMAT, HELD, INDEX,
    LOG_BATCHES, META, OFFSETS, ROWS,
};

/// The image format: bumped when its lines change meaning.
const IMAGE_VERSION: u32 = 1;
/// The longest line an image may have: a row, with its embeds, is far smaller; a
/// stream without line breaks is refused before it fills memory.
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// How an image names the definition its rows were built with.
pub fn definition_of(layout: &Layout) -> String {
    format!("{FORMAT}:{}", layout.definition_hash)
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image: {0}")]
    Io(#[from] std::io::Error),
    #[error("the image is not valid: {0}")]
    Invalid(String),
    #[error("the image holds definition {found}, this experience is {expected}")]
    OtherDefinition { found: String, expected: String },
    #[error("the image is truncated: it ends after {0} entries without its trailer")]
    Truncated(u64),
    #[error("the image is corrupted: its checksum does not match its contents")]
    Corrupted,
}

impl From<redb::Error> for ImageError {
    fn from(e: redb::Error) -> Self {
        ImageError::Store(e.into())
    }
}

macro_rules! image_redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for ImageError {
            fn from(e: $t) -> Self {
                ImageError::Store(e.into())
            }
        }
    )*};
}
image_redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Serialize, Deserialize)]
struct Header {
    facet_image: u32,
    /// The store format and definition the rows were built with.
    definition: String,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    entries: u64,
    sha256: String,
}

/// One entry of one table.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry<'a> {
    Row {
        p: String,
        k: String,
        #[serde(borrow)]
        v: &'a RawValue,
    },
    Held {
        p: String,
        k: String,
        #[serde(borrow)]
        v: &'a RawValue,
    },
    Embed {
        e: [String; 5],
    },
    Index {
        e: [String; 4],
    },
    Change {
        seq: u64,
        #[serde(borrow)]
        v: &'a RawValue,
    },
    LogBatch {
        seq: u64,
        #[serde(borrow)]
        v: &'a RawValue,
    },
    Offset {
        topic: String,
        partition: i32,
        next: i64,
    },
    Meta {
        k: String,
        v: String,
    },
    Counter {
        k: String,
        v: u64,
    },
}

/// What an image holds, as written or restored.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    pub definition: String,
    pub entries: u64,
    pub sha256: String,
}

/// Lines written with their running checksum.
struct Lines<W: Write> {
    out: W,
    hash: Sha256,
    entries: u64,
}

impl<W: Write> Lines<W> {
    fn line(&mut self, value: &impl Serialize) -> Result<(), ImageError> {
        let mut text = serde_json::to_vec(value).map_err(StoreError::from)?;
        text.push(b'\n');
        self.hash.update(&text);
        self.out.write_all(&text)?;
        Ok(())
    }

    fn entry(&mut self, entry: &Entry<'_>) -> Result<(), ImageError> {
        self.entries += 1;
        self.line(entry)
    }
}

/// Writes an image of the store at `path`, which no process may have open (a
/// running runtime serves its image over HTTP instead).
pub fn export_file(path: &Path, out: impl Write) -> Result<ImageSummary, ImageError> {
    let db = super::database().open(path)?;
    export(&db.begin_read()?, out)
}

/// Writes an image of everything `txn` sees.
pub(super) fn export(
    txn: &redb::ReadTransaction,
    out: impl Write,
) -> Result<ImageSummary, ImageError> {
    let definition = txn
        .open_table(META)?
        .get(DEFINITION_HASH)?
        .map(|v| v.value().to_string())
        .ok_or_else(|| ImageError::Invalid("the store has no definition".into()))?;
    let mut lines = Lines {
        out,
        hash: Sha256::new(),
        entries: 0,
    };
    lines.line(&Header {
        facet_image: IMAGE_VERSION,
        definition: definition.clone(),
    })?;
    export_entries(txn, &mut lines)?;
    let entries = lines.entries;
    let sha256 = format!("{:x}", lines.hash.clone().finalize());
    lines.line(&serde_json::json!({"end": Trailer { entries, sha256: sha256.clone() }}))?;
    lines.out.flush()?;
    Ok(ImageSummary {
        definition,
        entries,
        sha256,
    })
}

/// Every entry of the image, table by table, in key order.
fn export_entries(
    txn: &redb::ReadTransaction,
    lines: &mut Lines<impl Write>,
) -> Result<(), ImageError> {
    for (table, is_row) in [(ROWS, true), (HELD, false)] {
        for entry in txn.open_table(table)?.iter()? {
            let (key, value) = entry?;
            let (p, k) = key.value();
            let v = raw(value.value())?;
            let (p, k) = (p.to_string(), k.to_string());
            lines.entry(&match is_row {
                true => Entry::Row { p, k, v: &v },
                false => Entry::Held { p, k, v: &v },
            })?;
        }
    }
    for entry in txn.open_table(EMBEDS)?.iter()? {
        let (key, _) = entry?;
        let (a, b, c, d, e) = key.value();
        let e = [a, b, c, d, e].map(str::to_string);
        lines.entry(&Entry::Embed { e })?;
    }
    for entry in txn.open_table(INDEX)?.iter()? {
        let (key, _) = entry?;
        let (a, b, c, d) = key.value();
        let e = [a, b, c, d].map(str::to_string);
        lines.entry(&Entry::Index { e })?;
    }
    for (table, is_change) in [(CHANGES, true), (LOG_BATCHES, false)] {
        for entry in txn.open_table(table)?.iter()? {
            let (seq, value) = entry?;
            let (seq, v) = (seq.value(), raw(value.value())?);
            lines.entry(&match is_change {
                true => Entry::Change { seq, v: &v },
                false => Entry::LogBatch { seq, v: &v },
            })?;
        }
    }
    for entry in txn.open_table(OFFSETS)?.iter()? {
        let (key, next) = entry?;
        let (topic, partition) = key.value();
        lines.entry(&Entry::Offset {
            topic: topic.to_string(),
            partition,
            next: next.value(),
        })?;
    }
    for entry in txn.open_table(META)?.iter()? {
        let (k, v) = entry?;
        let (k, v) = (k.value().to_string(), v.value().to_string());
        lines.entry(&Entry::Meta { k, v })?;
    }
    for entry in txn.open_table(COUNTERS)?.iter()? {
        let (k, v) = entry?;
        let (k, v) = (k.value().to_string(), v.value());
        lines.entry(&Entry::Counter { k, v })?;
    }
    Ok(())
}

/// A stored JSON value as it is, checked to be text.
fn raw(bytes: &[u8]) -> Result<Box<RawValue>, ImageError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ImageError::Invalid("a stored value is not UTF-8".into()))?;
    Ok(RawValue::from_string(text.to_string()).map_err(StoreError::from)?)
}

/// Writes the store at `path` from an image, after checking it is whole, intact
/// and of `layout`'s definition. The store is built beside `path` and moved in
/// place only once everything checked out, so a refused image leaves nothing.
pub fn restore(
    path: &Path,
    layout: &Layout,
    input: impl BufRead,
) -> Result<ImageSummary, ImageError> {
    let partial = path.with_extension("restoring");
    let _ = std::fs::remove_file(&partial);
    let result = restore_into(&partial, layout, input);
    match result {
        Ok(summary) => {
            std::fs::rename(&partial, path)?;
            Ok(summary)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// [`restore`] from an image file.
pub fn restore_file(
    path: &Path,
    layout: &Layout,
    image: &Path,
) -> Result<ImageSummary, ImageError> {
    let file = std::fs::File::open(image)?;
    restore(path, layout, std::io::BufReader::new(file))
}

fn restore_into(
    path: &Path,
    layout: &Layout,
    input: impl BufRead,
) -> Result<ImageSummary, ImageError> {
    let expected = definition_of(layout);
    let db = super::database().create(path)?;
    let txn = db.begin_write()?;
    let summary = {
        let mut rows = txn.open_table(ROWS)?;
        let mut held = txn.open_table(HELD)?;
        let mut embeds = txn.open_table(EMBEDS)?;
        let mut index = txn.open_table(INDEX)?;
        let mut changes = txn.open_table(CHANGES)?;
        let mut batches = txn.open_table(LOG_BATCHES)?;
        let mut offsets = txn.open_table(OFFSETS)?;
        let mut meta = txn.open_table(META)?;
        let mut counters = txn.open_table(COUNTERS)?;
        read_image(input, Some(&expected), |entry| {
            match entry {
                Entry::Row { p, k, v } => {
                    rows.insert((p.as_str(), k.as_str()), v.get().as_bytes())?;
                }
                Entry::Held { p, k, v } => {
                    held.insert((p.as_str(), k.as_str()), v.get().as_bytes())?;
                }
                Entry::Embed { e: [a, b, c, d, e] } => {
                    embeds.insert(
                        (a.as_str(), b.as_str(), c.as_str(), d.as_str(), e.as_str()),
                        (),
                    )?;
                }
                Entry::Index { e: [a, b, c, d] } => {
                    index.insert((a.as_str(), b.as_str(), c.as_str(), d.as_str()), ())?;
                }
                Entry::Change { seq, v } => {
                    changes.insert(seq, v.get().as_bytes())?;
                }
                Entry::LogBatch { seq, v } => {
                    batches.insert(seq, v.get().as_bytes())?;
                }
                Entry::Offset {
                    topic,
                    partition,
                    next,
                } => {
                    offsets.insert((topic.as_str(), partition), next)?;
                }
                Entry::Meta { k, v } => {
                    meta.insert(k.as_str(), v.as_str())?;
                }
                Entry::Counter { k, v } => {
                    counters.insert(k.as_str(), v)?;
                }
            }
            Ok(())
        })?
    };
    txn.commit()?;
    Ok(summary)
}

/// Checks that `input` is a whole, intact image (of `expected`, when given)
/// without keeping it anywhere.
pub fn verify(input: impl BufRead, expected: Option<&str>) -> Result<ImageSummary, ImageError> {
    read_image(input, expected, |_| Ok(()))
}

/// Reads an image, giving each entry to `each`, and checks its header (version and,
/// when `expected` is given, definition), its entry count and its checksum. The
/// entries have been given by the time a count or checksum fails: the caller keeps
/// them only on success.
fn read_image(
    input: impl BufRead,
    expected: Option<&str>,
    mut each: impl FnMut(Entry<'_>) -> Result<(), ImageError>,
) -> Result<ImageSummary, ImageError> {
    let mut lines = LineReader::new(input);
    let mut hash = Sha256::new();
    let first = lines.next()?.ok_or(ImageError::Truncated(0))?.to_vec();
    hash.update(&first);
    hash.update(b"\n");
    let header: Header = serde_json::from_slice(&first)
        .map_err(|e| ImageError::Invalid(format!("not a Facet image header: {e}")))?;
    if header.facet_image != IMAGE_VERSION {
        return Err(ImageError::Invalid(format!(
            "image version {} (this runtime reads {IMAGE_VERSION})",
            header.facet_image
        )));
    }
    if let Some(expected) = expected.filter(|e| *e != header.definition) {
        return Err(ImageError::OtherDefinition {
            found: header.definition,
            expected: expected.to_string(),
        });
    }
    let mut entries = 0u64;
    let trailer = loop {
        let Some(line) = lines.next()? else {
            return Err(ImageError::Truncated(entries));
        };
        if line.starts_with(b"{\"end\"") {
            #[derive(Deserialize)]
            struct End {
                end: Trailer,
            }
            let end: End = serde_json::from_slice(line)
                .map_err(|e| ImageError::Invalid(format!("a bad trailer: {e}")))?;
            break end.end;
        }
        hash.update(line);
        hash.update(b"\n");
        let entry: Entry<'_> = serde_json::from_slice(line)
            .map_err(|e| ImageError::Invalid(format!("entry {}: {e}", entries + 1)))?;
        entries += 1;
        each(entry)?;
    };
    let sha256 = format!("{:x}", hash.finalize());
    if trailer.entries != entries || trailer.sha256 != sha256 {
        return Err(ImageError::Corrupted);
    }
    Ok(ImageSummary {
        definition: header.definition,
        entries,
        sha256,
    })
}

/// The lines of an image, each at most [`MAX_LINE_BYTES`], without their `\n`;
/// a last line without one is not returned (the image was cut off there).
struct LineReader<R: BufRead> {
    input: R,
    line: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    fn new(input: R) -> Self {
        LineReader {
            input,
            line: Vec::new(),
        }
    }

    fn next(&mut self) -> Result<Option<&[u8]>, ImageError> {
        self.line.clear();
        let read = (&mut self.input)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut self.line)?;
        if read == 0 {
            return Ok(None);
        }
        if self.line.pop() == Some(b'\n') {
            return Ok(Some(&self.line));
        }
        match read as u64 > MAX_LINE_BYTES {
            true => Err(ImageError::Invalid(format!(
                "a line longer than {} MiB",
                MAX_LINE_BYTES / (1024 * 1024)
            ))),
            // Every line of a whole image ends with a line break: this one was cut off.
            false => Ok(None),
        }
    }
}
