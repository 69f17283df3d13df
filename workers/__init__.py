"""dlpipe workers: preprocess (CPU stages), model (batched inference), notifier (webhooks)."""
