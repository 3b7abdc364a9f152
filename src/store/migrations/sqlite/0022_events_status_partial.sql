-- Version 22: the index by status holds only the events that were not
-- accepted (issue 19, item 3: every byte a kept event costs). Accepted
-- events are nearly all of them and are listed in `seq` order, which the
-- table's own key gives; the quarantined and ignored ones, few, are
-- still found by status without reading the rest.
DROP INDEX events_status;
CREATE INDEX events_status ON events (status, seq) WHERE status <> 'accepted';
