-- Sibyl gateway schema, version 2: one-minute candles kept on insert, so
-- candles of a minute or longer read one row per minute (1,440 for a day)
-- instead of every point (86,400 for a day of 1 s points). `first_*` and
-- `last_*` order points inside a minute by (ts_ms, round), as open and close
-- are defined on raw points.
CREATE TABLE candles_1m (
    feed_key    integer NOT NULL,
    bucket_ms   bigint  NOT NULL,
    open        numeric NOT NULL,
    high        numeric NOT NULL,
    low         numeric NOT NULL,
    close       numeric NOT NULL,
    count       bigint  NOT NULL,
    first_ts    bigint  NOT NULL,
    first_round bigint  NOT NULL,
    last_ts     bigint  NOT NULL,
    last_round  bigint  NOT NULL,
    PRIMARY KEY (feed_key, bucket_ms)
);

INSERT INTO candles_1m
SELECT feed_key, ts_ms - ts_ms % 60000,
       (array_agg(price ORDER BY ts_ms, round))[1], max(price), min(price),
       (array_agg(price ORDER BY ts_ms DESC, round DESC))[1], count(*),
       (array_agg(ts_ms ORDER BY ts_ms, round))[1], (array_agg(round ORDER BY ts_ms, round))[1],
       (array_agg(ts_ms ORDER BY ts_ms DESC, round DESC))[1], (array_agg(round ORDER BY ts_ms DESC, round DESC))[1]
FROM points GROUP BY feed_key, ts_ms - ts_ms % 60000;
