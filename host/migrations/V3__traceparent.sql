-- The W3C trace context an instance was created under (a create request's
-- `traceparent` header): the parent of its runs' trace spans.
ALTER TABLE weft_instances ADD COLUMN traceparent text;
