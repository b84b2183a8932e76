"""The outbox's poster: the daemon delivers the webhook events storage wrote (placeholder)."""
