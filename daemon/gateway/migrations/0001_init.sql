-- Sibyl gateway schema, version 1. Applied once, in one transaction, by
-- `sibyl gateway` (daemon/gateway/src/pg.rs); `schema_version` records it.

-- Verified signed reports, wire-encoded (what `sibyl verify` reads).
CREATE TABLE reports (
    round          bigint PRIMARY KEY,
    ts_ms          bigint NOT NULL,
    body           bytea  NOT NULL,
    received_at_ms bigint NOT NULL
);

CREATE TABLE feeds (
    feed_key serial PRIMARY KEY,
    feed_id  text   NOT NULL UNIQUE
);

-- One feed's value in one report. Partitioned by report time (ts_ms, ms
-- since the epoch) in weekly ranges created on demand (points_w<N> holds
-- [N * 604800000, (N + 1) * 604800000)), so old history is dropped or moved a
-- partition at a time. The primary key (feed_key, ts_ms, round) is the index
-- candles and raw history walk: a day of 1 s points of one feed is one range
-- of it, in order.
CREATE TABLE points (
    feed_key         integer  NOT NULL,
    ts_ms            bigint   NOT NULL,
    round            bigint   NOT NULL,
    price            numeric  NOT NULL,
    confidence       numeric  NOT NULL,
    num_observations integer  NOT NULL,
    observed_at_ms   bigint   NOT NULL,
    bid              numeric  NOT NULL,
    ask              numeric  NOT NULL,
    venues           integer  NOT NULL,
    status           smallint NOT NULL,
    flags            integer  NOT NULL,
    ema              numeric  NOT NULL,
    ema_confidence   numeric  NOT NULL,
    volatility       bigint   NOT NULL,
    PRIMARY KEY (feed_key, ts_ms, round)
) PARTITION BY RANGE (ts_ms);

-- Each feed's newest point, kept on insert so `latest` is one primary-key
-- lookup however many partitions the history spans.
CREATE TABLE feed_latest (
    feed_key         integer  PRIMARY KEY,
    ts_ms            bigint   NOT NULL,
    round            bigint   NOT NULL,
    price            numeric  NOT NULL,
    confidence       numeric  NOT NULL,
    num_observations integer  NOT NULL,
    observed_at_ms   bigint   NOT NULL,
    bid              numeric  NOT NULL,
    ask              numeric  NOT NULL,
    venues           integer  NOT NULL,
    status           smallint NOT NULL,
    flags            integer  NOT NULL,
    ema              numeric  NOT NULL,
    ema_confidence   numeric  NOT NULL,
    volatility       bigint   NOT NULL
);
