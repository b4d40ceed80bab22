//! The hot path's statements on PostgreSQL: every row list is bound as one array per column
//! (`UNNEST($1::text[], …)`, `= ANY($1)`), so each statement has one text whatever its row count.
//!
//! A `VALUES` list or an `OR` chain of one bind per value makes PostgreSQL parse, plan and set
//! up a statement that grows with its rows: an `OR` chain of 128 keys became a `BitmapOr` of
//! 128 index scans, planned afresh each time (its parameters differ), and the planner with
//! the `BitmapOr` set-up was a quarter of PostgreSQL's time at full speed. Arrays make the same
//! work a join against the index, under a plan prepared once per connection.

use kith_proto::MessageStatus;
use sqlx::{Postgres, QueryBuilder};

use super::statements::{ClientIdRow, CopyColumns, CopyRow, HandoffRow, MailboxInsert, QueueRow, Statements};
use crate::store::status::push_advances;
use crate::store::writer::Tx;
use crate::store::{OutboxEntry, StoreError};

impl Statements for Tx<Postgres> {
    async fn insert_inbox(&mut self, keys: &[(&str, &str)], now: i64) -> Result<Vec<(String, String)>, StoreError> {
        let (origins, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        Ok(sqlx::query_as(
            "INSERT INTO inbox (origin, envelope_id, received_at) \
             SELECT origin, envelope_id, $3 FROM UNNEST($1::text[], $2::text[]) AS v (origin, envelope_id) \
             ON CONFLICT (origin, envelope_id) DO NOTHING RETURNING origin, envelope_id",
        )
        .bind(origins)
        .bind(ids)
        .bind(now)
        .fetch_all(&mut **self)
        .await?)
    }

    async fn insert_client_ids(&mut self, rows: &[ClientIdRow<'_>]) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "INSERT INTO client_message_ids (sender_id, client_message_id, message_id, timestamp) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[]) \
             ON CONFLICT (sender_id, client_message_id) DO NOTHING RETURNING sender_id, client_message_id",
        )
        .bind(column(rows, |r| r.sender))
        .bind(column(rows, |r| r.client_message_id))
        .bind(column(rows, |r| r.message_id))
        .bind(column(rows, |r| r.timestamp))
        .fetch_all(&mut **self)
        .await?)
    }

    async fn earlier_send(&mut self, sender: &str, client_message_id: &str) -> Result<(String, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT message_id, timestamp FROM client_message_ids WHERE sender_id = $1 AND client_message_id = $2",
        )
        .bind(sender)
        .bind(client_message_id)
        .fetch_one(&mut **self)
        .await?)
    }

    async fn insert_mailbox_rows(
        &mut self,
        rows: &[MailboxInsert<'_>],
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "INSERT INTO messages (owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status) \
             SELECT *, 'sent' FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::int8[]) ON CONFLICT (owner_id, message_id) DO NOTHING RETURNING seq, owner_id, message_id",
        )
        .bind(column(rows, |r| r.owner))
        .bind(column(rows, |r| r.message_id))
        .bind(column(rows, |r| r.peer))
        .bind(column(rows, |r| r.sender))
        .bind(column(rows, |r| r.receiver))
        .bind(column(rows, |r| r.content))
        .bind(column(rows, |r| r.timestamp))
        .fetch_all(&mut **self)
        .await?)
    }

    async fn queue_for_devices(&mut self, rows: &[QueueRow<'_>]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_pending (owner_id, device_id, seq) \
             SELECT d.user_id, d.device_id, v.seq FROM UNNEST($1::text[], $2::int8[], $3::int8[]) \
             AS v (owner, seq, except_device) JOIN devices d ON d.user_id = v.owner \
             WHERE d.device_id <> v.except_device",
        )
        .bind(column(rows, |r| r.owner))
        .bind(column(rows, |r| r.seq))
        .bind(column(rows, |r| r.except_device))
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn delete_outbox(&mut self, destination: &str, seqs: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox WHERE destination = $1 AND seq = ANY($2)")
            .bind(destination)
            .bind(seqs)
            .execute(&mut **self)
            .await?;
        Ok(())
    }

    async fn insert_outbox(&mut self, entries: &[&OutboxEntry], now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO outbox (destination, envelope_id, kind, body, created_at) \
             SELECT *, $5 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[])",
        )
        .bind(column(entries, |e| e.destination.as_str()))
        .bind(column(entries, |e| e.envelope_id.as_str()))
        .bind(column(entries, |e| e.kind.as_str()))
        .bind(column(entries, |e| e.body.as_slice()))
        .bind(now)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn insert_handoffs(&mut self, rows: &[HandoffRow<'_>], now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO handoffs (handoff_id, target_shard, body, created_at) \
             SELECT *, $4 FROM UNNEST($1::text[], $2::int8[], $3::bytea[]) \
             ON CONFLICT (handoff_id) DO NOTHING",
        )
        .bind(column(rows, |h| h.id))
        .bind(column(rows, |h| h.target_shard))
        .bind(column(rows, |h| h.body))
        .bind(now)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn find_copies(&mut self, keys: &[(&str, &str)]) -> Result<Vec<CopyRow>, StoreError> {
        let (owners, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        let rows: Vec<CopyColumns> = sqlx::query_as(
            "SELECT m.seq, m.owner_id, m.message_id, m.sender_id, m.receiver_id, m.status \
             FROM UNNEST($1::text[], $2::text[]) AS v (owner, message_id) \
             JOIN messages m ON m.owner_id = v.owner AND m.message_id = v.message_id",
        )
        .bind(owners)
        .bind(ids)
        .fetch_all(&mut **self)
        .await?;
        Ok(rows.into_iter().map(CopyRow::from).collect())
    }

    async fn clear_device_pending(&mut self, rows: &[(&str, i64, i64)]) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM device_pending p USING UNNEST($1::text[], $2::int8[], $3::int8[]) AS v (owner, device, seq) \
             WHERE p.owner_id = v.owner AND p.device_id = v.device AND p.seq = v.seq",
        )
        .bind(column(rows, |r| r.0))
        .bind(column(rows, |r| r.1))
        .bind(column(rows, |r| r.2))
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn clear_all_pending(&mut self, rows: &[(&str, i64)]) -> Result<(), StoreError> {
        let (owners, seqs): (Vec<&str>, Vec<i64>) = rows.iter().copied().unzip();
        sqlx::query(
            "DELETE FROM device_pending p USING UNNEST($1::text[], $2::int8[]) AS v (owner, seq) \
             WHERE p.owner_id = v.owner AND p.seq = v.seq",
        )
        .bind(owners)
        .bind(seqs)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn advance_by_seq(&mut self, status: MessageStatus, seqs: &[i64]) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<Postgres>::new("UPDATE messages SET status = $1 WHERE seq = ANY($2) AND ");
        push_advances(&mut query, status);
        query.build().bind(status.as_str()).bind(seqs).execute(&mut **self).await?;
        Ok(())
    }

    async fn advance_by_id(&mut self, status: MessageStatus, copies: &[(&str, &str)]) -> Result<(), StoreError> {
        let (owners, ids): (Vec<&str>, Vec<&str>) = copies.iter().copied().unzip();
        let mut query = QueryBuilder::<Postgres>::new(
            "UPDATE messages m SET status = $1 FROM UNNEST($2::text[], $3::text[]) AS v (owner, message_id) \
             WHERE m.owner_id = v.owner AND m.message_id = v.message_id AND m.",
        );
        push_advances(&mut query, status);
        query.build().bind(status.as_str()).bind(owners).bind(ids).execute(&mut **self).await?;
        Ok(())
    }
}

/// One column of `rows`, to bind as an array.
fn column<'a, R, T>(rows: &'a [R], field: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}
