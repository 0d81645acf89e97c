-- Event retention (docs/operations.md, "Event retention"): pruning deletes an event's deliveries with it, and the
-- foreign key of webhook_deliveries.event_id is checked for every deleted event. Without this index each check, and
-- the delete of the deliveries, would scan the whole outbox history.
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
