//! The hot path's statements on SQLite through sqlx: each one statement built with
//! `QueryBuilder`, bound and sent in one round trip. The SQLite writer applies the hot path on
//! a connection of its own ([`super::sqlite_statements`]); its sqlx writer, which applies
//! everything else, reaches only [`Statements::insert_outbox`] here (federation's envelopes),
//! and the rest keeps that writer's generic commit whole.

use kith_proto::MessageStatus;
use sqlx::{QueryBuilder, Sqlite};

use super::statements::{ClientIdRow, CopyColumns, CopyRow, HandoffRow, MailboxInsert, QueueRow, Statements};
use crate::store::status::push_advances;
use crate::store::writer::Tx;
use crate::store::{OutboxEntry, StoreError};

impl Statements for Tx<Sqlite> {
    async fn insert_inbox(&mut self, keys: &[(&str, &str)], now: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("INSERT INTO inbox (origin, envelope_id, received_at) ");
        query.push_values(keys, |mut row, (origin, envelope_id)| {
            row.push_bind(*origin).push_bind(*envelope_id).push_bind(now);
        });
        query.push(" ON CONFLICT (origin, envelope_id) DO NOTHING RETURNING origin, envelope_id");
        Ok(query.build_query_as::<(String, String)>().fetch_all(&mut **self).await?)
    }

    async fn insert_client_ids(&mut self, rows: &[ClientIdRow<'_>]) -> Result<Vec<(String, String)>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO client_message_ids (sender_id, client_message_id, message_id, timestamp) ",
        );
        query.push_values(rows, |mut row, r| {
            row.push_bind(r.sender).push_bind(r.client_message_id).push_bind(r.message_id).push_bind(r.timestamp);
        });
        query.push(" ON CONFLICT (sender_id, client_message_id) DO NOTHING RETURNING sender_id, client_message_id");
        Ok(query.build_query_as::<(String, String)>().fetch_all(&mut **self).await?)
    }

    async fn earlier_send(&mut self, sender: &str, client_message_id: &str) -> Result<(String, i64), StoreError> {
        Ok(sqlx::query_as::<Sqlite, (String, i64)>(
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
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status) ",
        );
        query.push_values(rows, |mut row, r| {
            row.push_bind(r.owner)
                .push_bind(r.message_id)
                .push_bind(r.peer)
                .push_bind(r.sender)
                .push_bind(r.receiver)
                .push_bind(r.content)
                .push_bind(r.timestamp)
                .push_bind("sent");
        });
        query.push(" ON CONFLICT (owner_id, message_id) DO NOTHING RETURNING seq, owner_id, message_id");
        Ok(query.build_query_as::<(i64, String, String)>().fetch_all(&mut **self).await?)
    }

    async fn queue_for_devices(&mut self, rows: &[QueueRow<'_>]) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO device_pending (owner_id, device_id, seq) \
             SELECT d.user_id, d.device_id, v.seq FROM devices d JOIN (",
        );
        for (n, r) in rows.iter().enumerate() {
            query.push(if n == 0 { "SELECT " } else { " UNION ALL SELECT " });
            query.push_bind(r.owner);
            query.push(if n == 0 { " AS owner, " } else { ", " });
            query.push_bind(r.seq);
            query.push(if n == 0 { " AS seq, " } else { ", " });
            query.push_bind(r.except_device);
            if n == 0 {
                query.push(" AS except_device");
            }
        }
        query.push(") v ON d.user_id = v.owner WHERE d.device_id <> v.except_device");
        query.build().execute(&mut **self).await?;
        Ok(())
    }

    async fn delete_outbox(&mut self, destination: &str, seqs: &[i64]) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM outbox WHERE destination = ");
        query.push_bind(destination).push(" AND seq IN (");
        let mut list = query.separated(", ");
        for seq in seqs {
            list.push_bind(*seq);
        }
        query.push(")");
        query.build().execute(&mut **self).await?;
        Ok(())
    }

    async fn insert_outbox(&mut self, entries: &[&OutboxEntry], now: i64) -> Result<(), StoreError> {
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO outbox (destination, envelope_id, kind, body, created_at) ");
        query.push_values(entries, |mut row, entry| {
            row.push_bind(entry.destination.as_str())
                .push_bind(entry.envelope_id.as_str())
                .push_bind(entry.kind.as_str())
                .push_bind(entry.body.as_slice())
                .push_bind(now);
        });
        query.build().execute(&mut **self).await?;
        Ok(())
    }

    async fn insert_handoffs(&mut self, rows: &[HandoffRow<'_>], now: i64) -> Result<(), StoreError> {
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO handoffs (handoff_id, target_shard, body, created_at) ");
        query.push_values(rows, |mut row, h| {
            row.push_bind(h.id).push_bind(h.target_shard).push_bind(h.body).push_bind(now);
        });
        query.push(" ON CONFLICT (handoff_id) DO NOTHING");
        query.build().execute(&mut **self).await?;
        Ok(())
    }

    async fn find_copies(&mut self, keys: &[(&str, &str)]) -> Result<Vec<CopyRow>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT m.seq, m.owner_id, m.message_id, m.sender_id, m.receiver_id, m.status FROM messages m JOIN (",
        );
        for (n, (owner, id)) in keys.iter().enumerate() {
            query.push(if n == 0 { "SELECT " } else { " UNION ALL SELECT " });
            query.push_bind(*owner);
            query.push(if n == 0 { " AS owner, " } else { ", " });
            query.push_bind(*id);
            if n == 0 {
                query.push(" AS message_id");
            }
        }
        query.push(") v ON m.owner_id = v.owner AND m.message_id = v.message_id");
        let rows = query.build_query_as::<CopyColumns>().fetch_all(&mut **self).await?;
        Ok(rows.into_iter().map(CopyRow::from).collect())
    }

    async fn clear_device_pending(&mut self, rows: &[(&str, i64, i64)]) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM device_pending WHERE ");
        for (n, (owner, device, seq)) in rows.iter().enumerate() {
            query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
            query.push_bind(*owner).push(" AND seq = ").push_bind(*seq);
            query.push(" AND device_id = ").push_bind(*device).push(")");
        }
        query.build().execute(&mut **self).await?;
        Ok(())
    }

    async fn clear_all_pending(&mut self, rows: &[(&str, i64)]) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM device_pending WHERE ");
        for (n, (owner, seq)) in rows.iter().enumerate() {
            query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
            query.push_bind(*owner).push(" AND seq = ").push_bind(*seq).push(")");
        }
        query.build().execute(&mut **self).await?;
        Ok(())
    }

    async fn advance_by_seq(&mut self, status: MessageStatus, seqs: &[i64]) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE messages SET status = ");
        query.push_bind(status.as_str()).push(" WHERE seq IN (");
        let mut list = query.separated(", ");
        for seq in seqs {
            list.push_bind(*seq);
        }
        query.push(") AND ");
        push_advances(&mut query, status);
        query.build().execute(&mut **self).await?;
        Ok(())
    }

    async fn advance_by_id(&mut self, status: MessageStatus, copies: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE messages SET status = ");
        query.push_bind(status.as_str()).push(" WHERE (");
        for (n, (owner, id)) in copies.iter().enumerate() {
            query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
            query.push_bind(*owner).push(" AND message_id = ").push_bind(*id).push(")");
        }
        query.push(") AND ");
        push_advances(&mut query, status);
        query.build().execute(&mut **self).await?;
        Ok(())
    }
}
