-- Room in every page for its rows' status updates. Each mailbox row moves `sent` →
-- `delivered` (→ `read`) soon after it is written; `status` is in no index, so PostgreSQL can
-- write the new version beside the old one in the same page (a HOT update) and touch no index,
-- but only if that page has room. Full pages (the default, 100) sent 97 % of the updates to
-- another page, each adding an entry to all three of the table's indexes; at 50 every update
-- of the full-speed benchmark stayed in its page. The price is a heap up to twice as large.
-- Pages written before this keep their packing.
ALTER TABLE messages SET (fillfactor = 50);
