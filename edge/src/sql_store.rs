//! The room core's storage port on the Durable Object's SQLite.
//!
//! Rows hold the core's serde records as JSON next to the columns that are queried (`seq`, ids). All calls
//! are synchronous; writes within one event are committed together by the runtime.

use homeroom_shared::protocol::ChatMessage;
use homeroom_shared::room::store::{Meta, ModerationRecord, ParticipantRecord, RoomStore, StoreError, StoreResult};
use homeroom_shared::UserId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::{SqlStorage, SqlStorageValue};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replies (n INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, rid TEXT NOT NULL,
  reply TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS replies_by_key ON replies (user, rid);
CREATE TABLE IF NOT EXISTS participants (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS moderation (user TEXT PRIMARY KEY, body TEXT NOT NULL);
";

/// [`RoomStore`] on a Durable Object's SQLite.
#[derive(Debug)]
pub struct SqlStore {
    sql: SqlStorage,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

#[derive(Deserialize)]
struct Frame {
    frame: String,
}

#[derive(Deserialize)]
struct Reply {
    reply: String,
}

#[derive(Deserialize)]
struct SeqRow {
    seq: Option<f64>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// The largest integer a JavaScript number holds exactly (2^53 − 1): SQL parameters cross into JS as numbers.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(n.min(MAX_SAFE_INTEGER)).unwrap_or_default())
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_owned())
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(err)
}

fn from_json<T: DeserializeOwned>(body: &str) -> StoreResult<T> {
    serde_json::from_str(body).map_err(|e| StoreError(format!("corrupt row: {e}")))
}

impl SqlStore {
    /// Opens the store, creating the tables if needed.
    pub fn open(sql: SqlStorage) -> StoreResult<Self> {
        sql.exec(SCHEMA, None).map_err(err)?;
        Ok(SqlStore { sql })
    }

    fn run(&self, query: &str, bindings: Vec<SqlStorageValue>) -> StoreResult<()> {
        self.sql.exec(query, Some(bindings)).map_err(err)?;
        Ok(())
    }

    fn rows<T: DeserializeOwned>(&self, query: &str, bindings: Vec<SqlStorageValue>) -> StoreResult<Vec<T>> {
        self.sql.exec(query, Some(bindings)).and_then(|c| c.to_array::<T>()).map_err(err)
    }

    fn bodies<T: DeserializeOwned>(&self, query: &str, bindings: Vec<SqlStorageValue>) -> StoreResult<Vec<T>> {
        self.rows::<Body>(query, bindings)?.iter().map(|row| from_json(&row.body)).collect()
    }

    fn first_body<T: DeserializeOwned>(&self, query: &str, bindings: Vec<SqlStorageValue>) -> StoreResult<Option<T>> {
        Ok(self.bodies(query, bindings)?.into_iter().next())
    }

    /// Bytes of SQLite storage the room uses.
    pub fn database_size(&self) -> usize {
        self.sql.database_size()
    }
}

impl RoomStore for SqlStore {
    fn load_meta(&self) -> StoreResult<Option<Meta>> {
        self.first_body("SELECT body FROM meta WHERE id = 1", vec![])
    }

    fn save_meta(&mut self, meta: &Meta) -> StoreResult<()> {
        self.run("INSERT OR REPLACE INTO meta (id, body) VALUES (1, ?)", vec![text(&to_json(meta)?)])
    }

    fn delete_meta(&mut self) -> StoreResult<()> {
        self.run("DELETE FROM meta", vec![])
    }

    fn append_event(&mut self, seq: u64, frame: &str) -> StoreResult<()> {
        self.run("INSERT OR REPLACE INTO log (seq, frame) VALUES (?, ?)", vec![int(seq), text(frame)])
    }

    fn events_after(&self, since: u64) -> StoreResult<Vec<String>> {
        Ok(self
            .rows::<Frame>("SELECT frame FROM log WHERE seq > ? ORDER BY seq", vec![int(since)])?
            .into_iter()
            .map(|row| row.frame)
            .collect())
    }

    fn first_event_seq(&self) -> StoreResult<Option<u64>> {
        let rows = self.rows::<SeqRow>("SELECT MIN(seq) AS seq FROM log", vec![])?;
        Ok(rows.first().and_then(|r| r.seq).map(|s| s as u64))
    }

    fn trim_events(&mut self, below: u64) -> StoreResult<()> {
        self.run("DELETE FROM log WHERE seq < ?", vec![int(below)])
    }

    fn put_message(&mut self, message: &ChatMessage) -> StoreResult<()> {
        self.run(
            "INSERT OR REPLACE INTO messages (seq, id, body) VALUES (?, ?, ?)",
            vec![int(message.seq), text(&message.id), text(&to_json(message)?)],
        )
    }

    fn message(&self, id: &str) -> StoreResult<Option<ChatMessage>> {
        self.first_body("SELECT body FROM messages WHERE id = ?", vec![text(id)])
    }

    fn delete_message(&mut self, id: &str) -> StoreResult<()> {
        self.run("DELETE FROM messages WHERE id = ?", vec![text(id)])
    }

    fn messages_before(&self, before: Option<u64>, limit: u32) -> StoreResult<Vec<ChatMessage>> {
        let mut page: Vec<ChatMessage> = match before {
            Some(before) => self.bodies(
                "SELECT body FROM messages WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                vec![int(before), int(u64::from(limit))],
            )?,
            None => self.bodies("SELECT body FROM messages ORDER BY seq DESC LIMIT ?", vec![int(u64::from(limit))])?,
        };
        page.reverse();
        Ok(page)
    }

    fn trim_messages(&mut self, keep: u32) -> StoreResult<()> {
        self.run(
            "DELETE FROM messages WHERE seq NOT IN (SELECT seq FROM messages ORDER BY seq DESC LIMIT ?)",
            vec![int(u64::from(keep))],
        )
    }

    fn reply(&self, user: &UserId, rid: &str) -> StoreResult<Option<String>> {
        let rows = self.rows::<Reply>(
            "SELECT reply FROM replies WHERE user = ? AND rid = ? ORDER BY n DESC LIMIT 1",
            vec![text(user.as_str()), text(rid)],
        )?;
        Ok(rows.into_iter().next().map(|r| r.reply))
    }

    fn put_reply(&mut self, user: &UserId, rid: &str, reply: &str) -> StoreResult<()> {
        self.run(
            "INSERT INTO replies (user, rid, reply) VALUES (?, ?, ?)",
            vec![text(user.as_str()), text(rid), text(reply)],
        )
    }

    fn trim_replies(&mut self, keep: u32) -> StoreResult<()> {
        self.run(
            "DELETE FROM replies WHERE n NOT IN (SELECT n FROM replies ORDER BY n DESC LIMIT ?)",
            vec![int(u64::from(keep))],
        )
    }

    fn participants(&self) -> StoreResult<Vec<ParticipantRecord>> {
        self.bodies("SELECT body FROM participants ORDER BY id", vec![])
    }

    fn put_participant(&mut self, record: &ParticipantRecord) -> StoreResult<()> {
        self.run(
            "INSERT OR REPLACE INTO participants (id, body) VALUES (?, ?)",
            vec![text(record.participant.id.as_str()), text(&to_json(record)?)],
        )
    }

    fn remove_participant(&mut self, id: &UserId) -> StoreResult<()> {
        self.run("DELETE FROM participants WHERE id = ?", vec![text(id.as_str())])
    }

    fn moderation(&self, user: &UserId) -> StoreResult<Option<ModerationRecord>> {
        self.first_body("SELECT body FROM moderation WHERE user = ?", vec![text(user.as_str())])
    }

    fn put_moderation(&mut self, user: &UserId, record: &ModerationRecord) -> StoreResult<()> {
        self.run(
            "INSERT OR REPLACE INTO moderation (user, body) VALUES (?, ?)",
            vec![text(user.as_str()), text(&to_json(record)?)],
        )
    }

    fn wipe(&mut self, keep_moderation: bool) -> StoreResult<()> {
        let moderation = (!keep_moderation).then_some("moderation");
        for table in ["log", "messages", "replies", "participants"].into_iter().chain(moderation) {
            self.run(&format!("DELETE FROM {table}"), vec![])?;
        }
        Ok(())
    }
}
