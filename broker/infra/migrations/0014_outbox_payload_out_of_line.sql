-- The relay updates each outbox row twice (the claim's lease, then delivered). Neither update can be HOT
-- (both touch indexed or index-predicate columns), so each wrote a new copy of the whole row, and the
-- envelope (~2.8 kB, ~1.9 kB after lz4) stayed inline, just under the 2 kB TOAST threshold. With a low
-- tuple target it is stored out of line once and each update copies a small row with a pointer to it.
-- Measured on 5,000 such rows: WAL per row 2,204 B insert + 4,514 B for the two updates -> 2,360 + 569 B;
-- the heap after them 29 MB -> 1.1 MB. Affects rows written from now on.
ALTER TABLE outbox SET (toast_tuple_target = 128);
